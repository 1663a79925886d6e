"""The kernels of kernels.py against the explicit expressions they replace (model.sense_weights +
model.mix_senses; F.cross_entropy of the full logits), forward and backward, and under autocast."""
import pytest
import torch
import torch.nn.functional as F

import kernels
from kernels import causal_sense_mixing, chunked_cross_entropy
from model import mix_senses, sense_weights


def rel_err(a, b):
    return ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()


def qkv(B=2, S=3, T=150, D=12, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(B, S, T, n, generator=g, dtype=dtype).requires_grad_() for n in (D // S, D // S, D)]


@pytest.mark.parametrize('kernel, block', [('blocks', 64), ('blocks', 7), ('blocks', 150), ('sdpa', 64)])
def test_causal_sense_mixing_equals_explicit_alpha(kernel, block):
    """Several query blocks with a partial last one (64, 7), one block (150); float64."""
    q, k, v = (t.detach().double().requires_grad_() for t in qkv())
    fused = causal_sense_mixing(q, k, v, kernel, block)
    explicit = mix_senses(sense_weights(q, k), v)
    assert rel_err(fused, explicit) <= 1e-12
    do = torch.randn_like(fused)
    for a, b in zip(torch.autograd.grad(fused, (q, k, v), do), torch.autograd.grad(explicit, (q, k, v), do)):
        assert rel_err(a, b) <= 1e-12


def test_unknown_kernel_is_refused():
    with pytest.raises(ValueError, match='unknown sense mixing kernel'):
        causal_sense_mixing(*qkv(T=4), kernel='flash')


def test_blockwise_backward_recomputes_alpha_in_the_forward_precision(monkeypatch):
    """Under CPU autocast bfloat16, fp32 inputs: the forward's alpha is bf16 (autocast matmul), and so
    must be the alpha that backward recomputes (backward runs outside the autocast region unless the
    Function carries the forward's autocast state). The gradients then match the explicit path's
    under the same autocast to bf16 accuracy."""
    dtypes = []
    alpha_block = kernels._alpha_block
    monkeypatch.setattr(kernels, '_alpha_block', lambda *args: dtypes.append(alpha_block(*args).dtype) or
                        alpha_block(*args))
    q, k, v = qkv(T=100)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        fused = causal_sense_mixing(q, k, v, 'blocks', 32)
        explicit = mix_senses(sense_weights(q, k), v)
    forward_dtypes, dtypes[:] = set(dtypes), []
    do = torch.randn(fused.shape)
    fused_grads = torch.autograd.grad(fused, (q, k, v), do)
    assert forward_dtypes == {torch.bfloat16} and set(dtypes) == forward_dtypes
    assert rel_err(fused, explicit) <= 2e-2
    for a, b in zip(fused_grads, torch.autograd.grad(explicit, (q, k, v), do)):
        assert a.dtype == torch.float32 and rel_err(a, b) <= 3e-2


def test_bf16_inputs_under_autocast_run_forward_and_backward():
    """What the model feeds it under autocast (bf16 q, k, v): mixed dtypes inside backward's in-place
    accumulations must not fail."""
    q, k, v = (t.detach().bfloat16().requires_grad_() for t in qkv(T=70))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        o = causal_sense_mixing(q, k, v, 'blocks', 32)
        reference = mix_senses(sense_weights(q, k), v)
    do = torch.randn(o.shape, dtype=o.dtype)
    for a, b in zip(torch.autograd.grad(o, (q, k, v), do), torch.autograd.grad(reference, (q, k, v), do)):
        assert a.dtype == torch.bfloat16 and rel_err(a, b) <= 3e-2


def test_chunked_loss_equals_full_logits():
    """Several row chunks (V large enough that a chunk is 119 rows), ignored targets, float64."""
    torch.manual_seed(0)
    N, d, V = 300, 8, 70_000
    x = torch.randn(N, d, dtype=torch.float64, requires_grad=True)
    E = torch.randn(V, d, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, V, (N,))
    y[::7] = -1
    loss = chunked_cross_entropy(x, E, y)
    reference = F.cross_entropy(x @ E.t(), y, ignore_index=-1)
    assert rel_err(loss, reference) <= 1e-12
    for a, b in zip(torch.autograd.grad(2 * loss, (x, E)), torch.autograd.grad(2 * reference, (x, E))):
        assert rel_err(a, b) <= 1e-12
