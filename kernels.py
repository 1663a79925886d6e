"""
The performance kernels behind model.py. Each computes exactly what a plain PyTorch expression in
model.py computes (tests/test_kernels.py checks them against it, forward and backward), only with
less memory or time:

    causal_sense_mixing(q, k, v, kernel, block) -> o (B, T, d)
        the Backpack's mixture o_i = sum_l sum_{j<=i} alpha_lij v_lj with alpha_li = causal
        softmax_j(q_li . k_lj), without ever holding alpha (B, k, T, T): model.mix_senses is the
        explicit version.
    chunked_cross_entropy(x, E, y) -> mean_i CE(x_i E^T, y_i) over the targets y_i >= 0, without
        ever holding the (N, V) logits: F.cross_entropy(x @ E.T, y) is the explicit version (except
        with no target >= 0: 0 with zero gradients, where F.cross_entropy's mean is NaN).
"""
import functools

import torch
from torch.nn import functional as F

MIX_KERNELS = ('auto', 'blocks', 'sdpa')


def causal_sense_mixing(q, k, v, kernel='auto', block=64):
    """o (B, T, d) from q (pre-scaled), k: (B, k, T, d/k) and v: (B, k, T, d).
    kernel 'blocks': by blocks of `block` queries (flash-style, alpha recomputed block by block in
    backward; the fastest on CPU); 'sdpa': F.scaled_dot_product_attention with the senses as values
    (the q/k dim d/k differs from the value dim d, which PyTorch's memory-efficient kernel accepts on
    CUDA); 'auto': sdpa on CUDA, blocks elsewhere. A smaller block skips more of the masked triangle."""
    if kernel == 'auto':
        kernel = 'sdpa' if q.is_cuda else 'blocks'
    if kernel == 'sdpa':
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0).sum(1)
    if kernel == 'blocks':
        return _blockwise_mixing(q.device.type).apply(q, k, v, block)
    raise ValueError(f"unknown sense mixing kernel {kernel!r}; expected one of {MIX_KERNELS}")


@functools.cache
def _blockwise_mixing(device_type):
    """The blockwise mixing as an autograd.Function for tensors on `device_type`. Its forward runs
    under torch.amp.custom_fwd and its backward under custom_bwd: backward recomputes alpha under the
    autocast state the forward ran under, hence in the forward's precision (the engine runs backward
    outside the caller's autocast region). Both decorators need the device type when they are
    applied, hence one class per device type."""
    return type(f'CausalSenseMixing_{device_type}', (torch.autograd.Function,), {
        'forward': staticmethod(torch.amp.custom_fwd(_mixing_forward, device_type=device_type)),
        'backward': staticmethod(torch.amp.custom_bwd(_mixing_backward, device_type=device_type)),
    })


def _mixing_forward(ctx, q, k, v, block):
    """o_i = sum_l sum_{j<=i} alpha_lij v_lj, block of queries by block, so that only a (B, k, block,
    prefix) slice of alpha exists at a time; q, k, v are saved, alpha is not."""
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    B, S, T, D = v.shape
    o = v.new_empty(B, T, D)
    for i0 in range(0, T, block):
        i1 = min(T, i0 + block)
        o[:, i0:i1] = torch.matmul(_alpha_block(q, k, i0, i1), v[:, :, :i1]).sum(1)
    ctx.save_for_backward(q, k, v)
    ctx.block = block
    return o


def _mixing_backward(ctx, do):
    """The gradients, alpha recomputed block by block (as flash attention does). The in-place
    accumulations are not autocast (only out-of-place ops are), so their operands are cast to the
    gradient's dtype explicitly; without autocast every cast is a no-op."""
    q, k, v = ctx.saved_tensors
    B, S, T, D = v.shape
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    # (B*k) batches of matrices; the last block of queries sees every key, so going backwards its
    # products initialise dk, dv (beta=0) and the earlier blocks add onto their prefixes in place
    q3, k3, v3, dq3, dk3, dv3 = (t.view(B * S, T, -1) for t in (q, k, v, dq, dk, dv))
    for i0 in reversed(range(0, T, ctx.block)):
        i1 = min(T, i0 + ctx.block)
        beta = 0 if i1 == T else 1
        p = _alpha_block(q, k, i0, i1).view(B * S, i1 - i0, i1)
        do_i = do[:, None, i0:i1].expand(B, S, i1 - i0, D).reshape(B * S, i1 - i0, D)  # o = sum_l o_l
        dv3[:, :i1].baddbmm_(p.transpose(1, 2).to(dv.dtype), do_i.to(dv.dtype), beta=beta)
        ds = p * torch.bmm(do_i, v3[:, :i1].transpose(1, 2))  # softmax backward: p * (dp - sum_j p dp)
        ds.addcmul_(p, ds.sum(-1, keepdim=True), value=-1)
        dq3[:, i0:i1] = torch.bmm(ds, k3[:, :i1])
        dk3[:, :i1].baddbmm_(ds.transpose(1, 2).to(dk.dtype), q3[:, i0:i1].to(dk.dtype), beta=beta)
    return dq, dk, dv, None


def _alpha_block(q, k, i0, i1):
    """alpha[:, :, i0:i1, :i1]: softmax over the keys of the prefix; only the last i1-i0 keys need the
    causal mask."""
    s = torch.matmul(q[:, :, i0:i1], k[:, :, :i1].transpose(-1, -2))
    future = torch.ones(i1 - i0, i1 - i0, dtype=torch.bool, device=q.device).triu(1)
    s[..., i0:i1].masked_fill_(future, float('-inf'))
    return torch.softmax(s, dim=-1)


def chunked_cross_entropy(x, E, y):
    """mean_i CE(x_i E^T, y_i) over the rows with y_i >= 0 (negative targets are ignored): x (N, d),
    E (V, d), y (N,). Gradients flow to x and E when autograd records. With every target ignored the
    loss is 0 and its gradients zero: a batch with nothing to score contributes nothing."""
    need_grad = torch.is_grad_enabled() and (x.requires_grad or E.requires_grad)
    return _ChunkedLinearCrossEntropy.apply(x, E, y, need_grad)


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    """By chunks of rows so that only (chunk, V) logits exist at a time. The gradients are formed in
    the same pass (dlogits = softmax - onehot, / n) and kept, (N, d) + (V, d), instead of the (N, V)
    logits: backward only scales them, so no matmul is redone (and no autocast state is needed)."""

    @staticmethod
    def forward(ctx, x, E, y, need_grad):
        N, V = x.size(0), E.size(0)
        valid = y >= 0
        n = valid.sum().clamp(min=1)  # no valid row: a sum of 0 over 1, not NaN
        acc = torch.promote_types(x.dtype, torch.float32)  # the softmax in fp32 at least
        loss = x.new_zeros((), dtype=acc)
        dx = torch.empty_like(x) if need_grad else None
        dE = torch.zeros_like(E, dtype=acc) if need_grad else None
        Ex = E.to(x.dtype)  # under autocast x may be half precision while E stays fp32
        rows = max(1, 2 ** 23 // V)  # 32 MB of fp32 logits per chunk
        for r0 in range(0, N, rows):
            xc, yc, vc = x[r0:r0 + rows], y[r0:r0 + rows], valid[r0:r0 + rows]
            logits = (xc @ Ex.t()).to(acc)
            lse = torch.logsumexp(logits, dim=-1)
            target = logits.gather(1, yc.clamp(min=0)[:, None])[:, 0]
            loss += ((lse - target) * vc).sum()
            if need_grad:
                g = logits.sub_(lse[:, None]).exp_()  # softmax, in place of the logits
                g.scatter_add_(1, yc.clamp(min=0)[:, None], -torch.ones_like(g[:, :1]))
                g.mul_((vc.to(acc) / n)[:, None])
                dx[r0:r0 + rows] = g.to(x.dtype) @ Ex
                dE.addmm_(g.t(), xc.to(acc))  # accumulated over chunks in fp32 (a no-op cast in fp32)
        if need_grad:
            ctx.save_for_backward(dx, dE.to(E.dtype))
        return loss / n

    @staticmethod
    def backward(ctx, dloss):
        dx, dE = ctx.saved_tensors
        return dx * dloss, dE * dloss, None, None
