"""
The fast versions of what model.py writes out. Each computes exactly what a plain PyTorch expression
there computes (tests/test_kernels.py and tests/test_model.py check them against it, forward and
backward), only with less memory or time:

    causal_sense_mixing(q, key, C, kernel, block) -> o (B, T, d)
        the Backpack's mixture o_i = sum_l sum_{j<=i} alpha_lij C_lj with alpha_li = causal
        softmax_j(q_li . key_lj), without ever holding alpha (B, k, T, T): model.mix_senses of
        model.sense_weights is the explicit version.
    SenseLookup(network, embedding, config)(idx) -> C (B, k, T, d)
        the senses of every position, network(embedding(idx)), with the sense network run once per
        distinct token where that is exact, and at inference from a table of the ids seen so far.
    chunked_cross_entropy(x, E, y) -> mean_i CE(x_i E^T, y_i) over the targets y_i >= 0, without
        ever holding the (N, V) logits: F.cross_entropy(x @ E.T, y) is the explicit version (except
        with no target >= 0: 0 with zero gradients, where F.cross_entropy's mean is NaN).
"""
import functools

import torch
from torch.nn import functional as F

MIX_KERNELS = ('auto', 'blocks', 'sdpa')


def causal_sense_mixing(q, key, C, kernel='auto', block=64):
    """o (B, T, d) from q (pre-scaled), key: (B, k, T, d/k) and the senses C: (B, k, T, d).
    kernel 'blocks': by blocks of `block` queries (flash-style, alpha recomputed block by block in
    backward; the fastest on CPU); 'sdpa': F.scaled_dot_product_attention with the senses as values
    (the q/key dim d/k differs from the value dim d, which PyTorch's memory-efficient kernel accepts on
    CUDA); 'auto': sdpa on CUDA, blocks elsewhere. A smaller block skips more of the masked triangle.
    Fewer queries than keys is a generation step, one new token against the cached prefix: it sees
    every key, so nothing is masked and alpha (B, k, 1, T) is small."""
    if kernel == 'auto':
        kernel = 'sdpa' if q.is_cuda else 'blocks'
    if kernel not in MIX_KERNELS:
        raise ValueError(f"unknown sense mixing kernel {kernel!r}; expected one of {MIX_KERNELS}")
    if q.size(2) != key.size(2):
        return F.scaled_dot_product_attention(q, key, C, scale=1.0).sum(1)
    if kernel == 'sdpa':
        return F.scaled_dot_product_attention(q, key, C, is_causal=True, scale=1.0).sum(1)
    return _blockwise_mixing(q.device.type).apply(q, key, C, block)


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


def _mixing_forward(ctx, q, key, C, block):
    """o_i = sum_l sum_{j<=i} alpha_lij C_lj, block of queries by block, so that only a (B, k, block,
    prefix) slice of alpha exists at a time; q, key, C are saved, alpha is not."""
    q, key, C = q.contiguous(), key.contiguous(), C.contiguous()
    B, S, T, D = C.shape
    o = C.new_empty(B, T, D)
    for i0 in range(0, T, block):
        i1 = min(T, i0 + block)
        o[:, i0:i1] = torch.matmul(_alpha_block(q, key, i0, i1), C[:, :, :i1]).sum(1)
    ctx.save_for_backward(q, key, C)
    ctx.block = block
    return o


def _mixing_backward(ctx, do):
    """The gradients, alpha recomputed block by block (as flash attention does). The in-place
    accumulations are not autocast (only out-of-place ops are), so their operands are cast to the
    gradient's dtype explicitly; without autocast every cast is a no-op."""
    q, key, C = ctx.saved_tensors
    B, S, T, D = C.shape
    dq, dkey, dC = torch.empty_like(q), torch.empty_like(key), torch.empty_like(C)
    # (B*k) batches of matrices; the last block of queries sees every key, so going backwards its
    # products initialise dkey, dC (beta=0) and the earlier blocks add onto their prefixes in place
    q3, key3, C3, dq3, dkey3, dC3 = (t.view(B * S, T, -1) for t in (q, key, C, dq, dkey, dC))
    for i0 in reversed(range(0, T, ctx.block)):
        i1 = min(T, i0 + ctx.block)
        beta = 0 if i1 == T else 1
        p = _alpha_block(q, key, i0, i1).view(B * S, i1 - i0, i1)
        do_i = do[:, None, i0:i1].expand(B, S, i1 - i0, D).reshape(B * S, i1 - i0, D)  # o = sum_l o_l
        dC3[:, :i1].baddbmm_(p.transpose(1, 2).to(dC.dtype), do_i.to(dC.dtype), beta=beta)
        ds = p * torch.bmm(do_i, C3[:, :i1].transpose(1, 2))  # softmax backward: p * (dp - sum_j p dp)
        ds.addcmul_(p, ds.sum(-1, keepdim=True), value=-1)
        dq3[:, i0:i1] = torch.bmm(ds, key3[:, :i1])
        dkey3[:, :i1].baddbmm_(ds.transpose(1, 2).to(dkey.dtype), q3[:, i0:i1].to(dkey.dtype), beta=beta)
    return dq, dkey, dC, None


def _alpha_block(q, key, i0, i1):
    """alpha[:, :, i0:i1, :i1]: softmax over the keys of the prefix; only the last i1-i0 keys need the
    causal mask."""
    s = torch.matmul(q[:, :, i0:i1], key[:, :, :i1].transpose(-1, -2))
    future = torch.ones(i1 - i0, i1 - i0, dtype=torch.bool, device=q.device).triu(1)
    s[..., i0:i1].masked_fill_(future, float('-inf'))
    return torch.softmax(s, dim=-1)


class SenseLookup:
    """C(x_j) of every position of idx (B, T): (B, k, T, d), sense-major (each sense is one head of the
    mixture), exactly what network(embedding(idx)) computes. The sense network depends on the token
    alone, so (config.dedup_senses) it runs once per distinct token of the batch wherever that is
    exact: in eval mode, or with dropout 0. In training with dropout each occurrence draws its own
    dropout masks, as in backpack-gpt2's training, so it runs per position (shared masks would not be
    exact either, with or without autograd); config.sense_dropout_shared_per_batch dedups there too,
    an approximation. In eval mode without autograd (evaluation, generation) the senses come from a
    table of the C(x) of every id seen so far (k*d floats each), filled lazily: the network runs once
    per id for as long as E, the network and the autocast state are unchanged; clear() frees it.
    On the CPU reference's evaluation the sections that read it (perplexity, translation, sentence
    similarity, interventions) take 13-33 % longer without it."""

    def __init__(self, network, embedding, config):
        self.network, self.embedding, self.config = network, embedding, config
        self.clear()

    def clear(self):
        self.table = self.slot = self.key = None
        self.size = 0

    def __call__(self, idx, use_table=True):
        network, E, config = self.network, self.embedding, self.config
        if not config.dedup_senses or (network.training and config.dropout > 0
                                       and not config.sense_dropout_shared_per_batch):
            return network(E(idx)).transpose(1, 2).contiguous()
        # the table's bookkeeping (weight versions, ids new to it) is Python-side state that a
        # torch.compile'd graph cannot hold: compiled inference dedups within the batch only
        if use_table and not network.training and not torch.is_grad_enabled() and not torch.compiler.is_compiling():
            return self._from_table(idx)
        tokens, where = torch.unique(idx, return_inverse=True)
        return _gather_senses(network(E(tokens)).transpose(0, 1), where)

    def _from_table(self, idx):
        """Only the ids new to the table run through the network. The table holds what the network
        computed under the autocast state of that call, so a change of that state, of E or of the
        network starts a new one."""
        device = idx.device.type
        # a parameter's _version counts its in-place updates; data_ptr changes when it is replaced
        weights = [(p.data_ptr(), p._version) for p in (self.embedding.weight, *self.network.parameters())]
        key = (weights, idx.device, torch.is_autocast_enabled(device), torch.get_autocast_dtype(device),
               torch.is_inference_mode_enabled())
        if self.key != key:
            self.slot = torch.full((self.config.vocab_size,), -1, dtype=torch.long, device=idx.device)
            self.table, self.size, self.key = None, 0, key
        slots = self.slot[idx]
        missing = slots < 0
        if missing.any():  # ids new to the table (a cached generation step mostly has none)
            new = torch.unique(idx[missing])
            C = torch.cat([self.network(self.embedding(ids)) for ids in new.split(4096)]).transpose(0, 1)
            n0, n1 = self.size, self.size + len(new)
            if self.table is None or n1 > self.table.size(1):  # grow by doubling
                table = C.new_empty(C.size(0), max(n1, 2 * n0, 64), C.size(2))
                if self.table is not None:
                    table[:, :n0] = self.table[:, :n0]
                self.table = table
            self.table[:, n0:n1] = C
            self.slot[new] = torch.arange(n0, n1, device=idx.device)
            self.size = n1
            slots = self.slot[idx]
        # the whole (contiguous) buffer, not its filled slice [:, :size]: flattening a slice along n
        # would copy the table (k * n * d floats) at every call, i.e. at every generation step
        return _gather_senses(self.table, slots)


def _gather_senses(table, where):
    """table (k, n, d) of sense vectors, where (B, T) row ids into it -> (B, k, T, d), gathered in that
    layout at once: row l*n + where[b, j] of the flattened table is sense l of position (b, j).
    A contiguous table is flattened as a view; any other (e.g. a slice of the inference table's
    buffer along n) is copied whole first, so the inference table passes its whole buffer."""
    S, n, D = table.shape
    rows = where[:, None, :] + n * torch.arange(S, device=where.device)[:, None]
    return F.embedding(rows, table.reshape(S * n, D))


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
