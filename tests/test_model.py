"""Tests of model.py: the Backpack against an independent reference (transformers.GPT2Model for the
contextual part, the sense network and the weight head written out from their equations) on a random
checkpoint in backpack-gpt2's exact HF layout; the fused mixture against the explicit alpha; the chunked
loss against the full logits; sense dedup and the inference sense table against per-position senses;
ignored targets; padding rows; cached against uncached generation; shapes, counts, the loader's errors.
The kernels themselves are tested in tests/test_kernels.py."""

import json

import pytest
import torch
import torch.nn.functional as F

from conftest import write_random_backpack_gpt2
from model import BackpackLM, KVCache, ModelConfig, StandardTransformerLM, from_pretrained_backpack

TINY = dict(block_size=24, vocab_size=97, n_layer=2, n_head=2, n_embd=32, n_senses=4, dropout=0.0)


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def grads(model, loss):
    return torch.autograd.grad(loss, list(model.parameters()))


# ----------------------------------------------------------------------------------------------------
# pretrained-weights parity

HF = dict(vocab_size=97, n_positions=24, n_layer=2, n_head=2, n_embd=32, num_senses=4, sense_intermediate_scale=3)


@pytest.fixture(scope='module')
def hf_checkpoint(tmp_path_factory):
    """A random backpack-gpt2 checkpoint in Hugging Face's exact layout (see conftest)."""
    pytest.importorskip('transformers')
    directory = tmp_path_factory.mktemp('backpack-gpt2')
    sd, gpt2_config = write_random_backpack_gpt2(directory, **HF)
    return directory, sd, gpt2_config


def reference_logits(sd, gpt2_config, idx):
    """backpack-gpt2's forward from its equations; only the contextual transformer is borrowed."""
    import transformers
    d, k = HF['n_embd'], HF['num_senses']
    gpt2 = transformers.GPT2Model._from_config(gpt2_config, attn_implementation='eager').eval()
    prefix = 'backpack.gpt2_model.'
    gpt2.load_state_dict({key[len(prefix):]: t for key, t in sd.items()
                          if key.startswith(prefix) and not key.endswith(('.attn.bias', '.attn.masked_bias'))})
    p = {key[len('backpack.sense_network.'):]: t for key, t in sd.items() if key.startswith('backpack.sense_network.')}

    def ln(x, name):
        return F.layer_norm(x, (d,), p[name + '.weight'], p[name + '.bias'], eps=1e-5)

    def mlp(x, name):  # Conv1D: x @ W + b with W stored (in, out)
        h = F.gelu(x @ p[name + '.c_fc.weight'] + p[name + '.c_fc.bias'], approximate='tanh')
        return h @ p[name + '.c_proj.weight'] + p[name + '.c_proj.bias']

    B, T = idx.shape
    E = sd['backpack.gpt2_model.wte.weight']
    r0 = E[idx]
    h0 = ln(r0, 'ln')
    r1 = h0 + r0
    r2 = r1 + mlp(ln(r1, 'block.ln_1'), 'block.mlp')
    senses = mlp(ln(r2, 'block.ln_2'), 'final_mlp').view(B, T, k, d).transpose(1, 2)  # (B, k, T, d)
    with torch.no_grad():
        hidden = gpt2(idx).last_hidden_state
    qk = (hidden @ sd['backpack.sense_weight_net.c_attn.weight'].t() + sd['backpack.sense_weight_net.c_attn.bias'])
    q, key = qk.view(B, T, 2, k, d // k).unbind(2)
    scores = torch.einsum('bthd,bshd->bhts', q, key / (d // k) ** 0.5)
    alpha = torch.softmax(scores + torch.triu(torch.full((T, T), -10000.0), 1), dim=-1)
    return torch.sum(alpha @ senses, dim=1) @ E.t()


def test_pretrained_backpack_matches_reference(hf_checkpoint):
    directory, sd, gpt2_config = hf_checkpoint
    model = from_pretrained_backpack(directory).eval()
    assert model.config.scale_attn_by_inverse_layer_idx and model.config.bias and model.config.dropout == 0.1
    idx = torch.randint(0, HF['vocab_size'], (3, HF['n_positions']), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits, _ = model(idx, return_logits=True)
    assert rel_err(logits, reference_logits(sd, gpt2_config, idx)) <= 1e-5
    assert model.lm_head.weight is model.transformer.wte.weight


def test_pretrained_backpack_from_pytorch_model_bin(hf_checkpoint, tmp_path):
    directory, sd, _ = hf_checkpoint
    torch.save(sd, tmp_path / 'pytorch_model.bin')
    (tmp_path / 'config.json').write_text((directory / 'config.json').read_text())
    a, b = from_pretrained_backpack(directory).eval(), from_pretrained_backpack(tmp_path, dropout=0.0).eval()
    assert b.config.dropout == 0.0
    idx = torch.randint(0, HF['vocab_size'], (2, 10))
    with torch.no_grad():
        assert torch.equal(a(idx, return_logits=True)[0], b(idx, return_logits=True)[0])


def write_checkpoint(directory, sd, config_dir, **config_changes):
    from safetensors.torch import save_file
    directory.mkdir()
    save_file(sd, str(directory / 'model.safetensors'))
    config = json.loads((config_dir / 'config.json').read_text())
    (directory / 'config.json').write_text(json.dumps({**config, **config_changes}))
    return directory


@pytest.mark.parametrize('change, message', [
    (lambda sd: sd.pop('backpack.sense_network.final_mlp.c_fc.bias'), 'missing keys'),
    (lambda sd: sd.update({'backpack.extra.weight': torch.zeros(1)}), 'unexpected keys'),
    (lambda sd: sd['lm_head.weight'].add_(1.0), 'tied copy'),
    (lambda sd: sd['backpack.word_embeddings.weight'].add_(1.0), 'tied copy'),
    (lambda sd: sd['backpack.position_embeddings.weight'].add_(1.0), 'tied copy'),
])
def test_loader_rejects_mismatched_checkpoints(hf_checkpoint, tmp_path, change, message):
    directory, sd, _ = hf_checkpoint
    sd = {key: t.clone() for key, t in sd.items()}
    change(sd)
    with pytest.raises(ValueError, match=message):
        from_pretrained_backpack(write_checkpoint(tmp_path / 'ckpt', sd, directory))


def test_loader_rejects_unsupported_config(hf_checkpoint, tmp_path):
    directory, sd, _ = hf_checkpoint
    with pytest.raises(ValueError, match='gelu_new'):
        from_pretrained_backpack(write_checkpoint(tmp_path / 'ckpt', sd, directory, activation_function='relu'))


def test_loader_missing_weights_file(hf_checkpoint, tmp_path):
    (tmp_path / 'config.json').write_text((hf_checkpoint[0] / 'config.json').read_text())
    with pytest.raises(FileNotFoundError, match='no model.safetensors or pytorch_model.bin'):
        from_pretrained_backpack(tmp_path)


def test_loader_offline_hub_name_says_how_to_pass_a_directory(monkeypatch):
    hub = pytest.importorskip('huggingface_hub')
    monkeypatch.setattr(hub.constants, 'HF_HUB_OFFLINE', True)  # never touch the network here
    with pytest.raises(FileNotFoundError, match='pass a local directory') as error:
        from_pretrained_backpack('nonexistent-org/no-such-backpack')
    assert '\n' not in str(error.value)


# ----------------------------------------------------------------------------------------------------
# the fast paths equal the plain ones

@pytest.mark.parametrize("kernel", ["blocks", "sdpa"])
def test_fused_mixture_equals_explicit_alpha(kernel):
    """Both training kernels (blocks: several query blocks, the last one partial; sdpa: what CUDA
    uses), chosen by the config, forward and backward, fp32."""
    torch.manual_seed(0)
    model = BackpackLM(ModelConfig(**dict(TINY, block_size=160, n_layer=1, mix_kernel=kernel, mix_block=48)))
    idx, targets = torch.randint(0, 97, (2, 150)), torch.randint(0, 97, (2, 150))
    assert 150 > 3 * model.config.mix_block
    fused_logits, fused_loss = model(idx, targets, return_logits=True)
    explicit_logits, explicit_loss = model(idx, targets, return_logits=True, alpha=model.contextualization(idx))
    assert rel_err(fused_logits, explicit_logits) <= 1e-5
    for a, b in zip(grads(model, fused_loss), grads(model, explicit_loss)):
        assert rel_err(a, b) <= 1e-5


def test_checkpoints_of_the_seed_layout_still_load():
    """model_args saved before the config grew (no tokenizer_vocab_size, mix_kernel, ...) still build a
    config, and the parameter names are the seed's (the weight head is still sense_weight_net.*)."""
    seed_args = dict(block_size=24, vocab_size=97, n_layer=2, n_head=2, n_embd=32, n_senses=4, dropout=0.0,
                     bias=False, sense_intermediate_scale=4, scale_attn_by_inverse_layer_idx=False, dedup_senses=True)
    model = BackpackLM(ModelConfig(**seed_args))
    assert model.n_tokens == 97 and model.config.mix_kernel == 'auto'
    assert {'sense_weight_net.weight', 'sense_weight_net.bias', 'lm_head.weight'} <= set(model.state_dict())


def test_config_rejects_unknown_kernel_and_bad_token_count():
    with pytest.raises(ValueError, match='mix_kernel'):
        ModelConfig(mix_kernel='flash')
    with pytest.raises(ValueError, match='tokenizer_vocab_size'):
        ModelConfig(vocab_size=10, tokenizer_vocab_size=11)


@pytest.mark.parametrize('cls', [BackpackLM, StandardTransformerLM])
def test_loss_without_logits_equals_loss_with_logits(cls):
    torch.manual_seed(0)
    model = cls(ModelConfig(**TINY))
    idx, targets = torch.randint(0, 97, (3, 20)), torch.randint(0, 97, (3, 20))
    targets[0, :4] = -1
    logits, loss = model(idx, targets)
    full_logits, full_loss = model(idx, targets, return_logits=True)
    assert logits is None and full_logits.shape == (3, 20, 97)
    assert rel_err(loss, full_loss) <= 1e-6
    for a, b in zip(grads(model, loss), grads(model, full_loss)):
        assert rel_err(a, b) <= 1e-5


@pytest.mark.parametrize('return_logits', [False, True])
def test_loss_ignores_minus_1_and_minus_100_and_refuses_other_negatives(return_logits):
    """-1 (nanoGPT) and -100 (Hugging Face) are ignored on the chunked path and on the full-logits
    path; any other negative target is an error, not a class."""
    torch.manual_seed(0)
    model = BackpackLM(ModelConfig(**TINY))
    idx, targets = torch.randint(0, 97, (2, 12)), torch.randint(0, 97, (2, 12))
    targets[0, :3], targets[1, 5:9] = -1, -100
    _, loss = model(idx, targets, return_logits=return_logits)
    logits, _ = model(idx, return_logits=True)
    keep = targets >= 0
    assert rel_err(loss, F.cross_entropy(logits[keep], targets[keep])) <= 1e-6
    targets[1, 0] = -5
    with pytest.raises(ValueError, match='targets must be token ids >= 0, or -1 / -100.*got -5'):
        model(idx, targets, return_logits=return_logits)


def test_training_with_dropout_draws_a_dropout_mask_per_occurrence():
    """The default config trains as backpack-gpt2 does: with dropout, every occurrence of a token
    gets its own sense network dropout masks (with or without autograd), so a token repeated in the
    batch gets different sense vectors. Only the opt-in sense_dropout_shared_per_batch shares one
    mask per distinct token; in eval there is no mask."""
    T = 6
    idx = torch.full((2, T), 7)  # one token, 12 occurrences
    alpha = torch.eye(T).expand(2, 4, T, T)  # o_i = sum_l C(x_i)_l: each position shows its own senses

    def distinct_rows(model):
        logits, _ = model(idx, alpha=alpha, return_logits=True)
        rows = logits.reshape(2 * T, -1)
        return len({tuple(r.tolist()) for r in rows})

    torch.manual_seed(0)
    model = BackpackLM(ModelConfig(**dict(TINY, dropout=0.5))).train()
    assert model.config.dedup_senses and not model.config.sense_dropout_shared_per_batch
    assert distinct_rows(model) == 2 * T
    with torch.no_grad():
        assert distinct_rows(model) == 2 * T
    shared = BackpackLM(ModelConfig(**dict(TINY, dropout=0.5, sense_dropout_shared_per_batch=True))).train()
    assert distinct_rows(shared) == 1
    assert distinct_rows(model.eval()) == 1


def test_default_training_step_is_the_per_position_one():
    """With dropout, the default (dedup_senses=True) draws exactly the masks of the per-position
    sense network (dedup_senses=False): same seed, same loss and gradients, bit for bit."""
    torch.manual_seed(0)
    model = BackpackLM(ModelConfig(**dict(TINY, dropout=0.3)))
    plain = BackpackLM(ModelConfig(**dict(TINY, dropout=0.3, dedup_senses=False)))
    plain.load_state_dict(model.state_dict())
    idx, targets = torch.randint(0, 10, (3, 20)), torch.randint(0, 97, (3, 20))  # many repeated tokens
    torch.manual_seed(1)
    loss = model(idx, targets)[1]
    torch.manual_seed(1)
    plain_loss = plain(idx, targets)[1]
    assert torch.equal(loss, plain_loss)
    for a, b in zip(grads(model, loss), grads(plain, plain_loss)):
        assert torch.equal(a, b)


@pytest.mark.parametrize('dropout, mode, grad', [(0.0, 'train', True), (0.3, 'eval', True), (0.3, 'eval', False)])
def test_sense_dedup_is_exact_where_it_is_used(dropout, mode, grad):
    """Where the sense network runs once per distinct token (dropout 0, eval mode; eval without
    autograd through the sense table), it computes what running it per position computes."""
    torch.manual_seed(0)
    model = BackpackLM(ModelConfig(**dict(TINY, dropout=dropout))).train(mode == 'train')
    plain = BackpackLM(ModelConfig(**dict(TINY, dropout=dropout, dedup_senses=False))).train(mode == 'train')
    plain.load_state_dict(model.state_dict())
    idx, targets = torch.randint(0, 10, (3, 20)), torch.randint(0, 97, (3, 20))  # many repeated tokens
    runs = []
    model.sense_network.register_forward_hook(lambda module, args, out: runs.append(out.shape[:-2].numel()))
    with torch.set_grad_enabled(grad):
        loss, plain_loss = model(idx, targets)[1], plain(idx, targets)[1]
    assert runs == [len(idx.unique())]  # once per distinct token
    assert rel_err(loss, plain_loss) <= 1e-6
    if grad:
        for a, b in zip(grads(model, loss), grads(plain, plain_loss)):
            assert rel_err(a, b) <= 1e-5


def test_inference_sense_table_runs_the_sense_network_once_per_id_until_weights_change():
    torch.manual_seed(0)
    model = BackpackLM(ModelConfig(**TINY)).eval()
    plain = BackpackLM(ModelConfig(**dict(TINY, dedup_senses=False))).eval()
    runs = []
    model.sense_network.register_forward_hook(lambda module, args, out: runs.append(out.shape[:-2].numel()))

    def logits(m, idx):
        with torch.no_grad():
            plain.load_state_dict(model.state_dict())
            return m(idx, return_logits=True)[0]

    a, b = torch.tensor([[1, 2, 3, 2]]), torch.tensor([[3, 4, 1, 5, 4]])
    for idx, new_ids in ((a, 3), (a, 0), (b, 2)):
        runs.clear()
        assert rel_err(logits(model, idx), logits(plain, idx)) <= 1e-6
        assert sum(runs) == new_ids  # only ids new to the table run through the sense network
    generated = model.generate(torch.tensor([[1, 2]]), 30, greedy=True)
    assert torch.equal(generated, plain.generate(torch.tensor([[1, 2]]), 30, greedy=True))
    model.train()
    assert model.sense_lookup.table is None  # freed while training (an optimizer step would make it stale)
    model(b, torch.zeros_like(b))[1].backward()
    torch.optim.SGD(model.parameters(), lr=1.0).step()
    model.eval()
    runs.clear()
    assert rel_err(logits(model, b), logits(plain, b)) <= 1e-6  # a stale table is never read
    assert sum(runs) == 4
    runs.clear()
    with torch.autocast('cpu', dtype=torch.bfloat16), torch.no_grad():
        model(b)  # senses computed under autocast are not mixed with the fp32 ones
    assert sum(runs) == 4
    model.clear_sense_table()
    runs.clear()
    logits(model, b)
    assert sum(runs) == 4


# ----------------------------------------------------------------------------------------------------
# padding rows: embedding rows that are no token id (backpack-gpt2's 50,264 rows, 50,259 ids)

def padded(cls, n_tokens=90):
    """A model whose padding rows (n_tokens..96) win every argmax of the full distribution: the
    last hidden state (ln_f(h), or o) is made the constant u, and the padding rows of E are 50 u/|u|^2
    (logit 50, the token rows' logits stay near 0)."""
    torch.manual_seed(0)
    model = cls(ModelConfig(**dict(TINY, bias=True, tokenizer_vocab_size=n_tokens))).eval()
    u = torch.randn(32)
    with torch.no_grad():
        if cls is BackpackLM:  # C(x)_l = u / k for every token and sense, so o = sum_l u / k = u
            model.sense_network.final_mlp.c_proj.weight.zero_()
            model.sense_network.final_mlp.c_proj.bias.copy_((u / 4).repeat(4))
        else:
            model.transformer.ln_f.weight.zero_()
            model.transformer.ln_f.bias.copy_(u)
        model.transformer.wte.weight[n_tokens:] = 50 * u / u.dot(u)
    return model


@pytest.mark.parametrize('cls', [BackpackLM, StandardTransformerLM])
def test_padding_rows_are_never_generated(cls):
    model = padded(cls)
    assert model.n_tokens == 90 and cls(ModelConfig(**TINY)).n_tokens == 97
    prompt = torch.randint(0, 90, (3, 5))
    with torch.no_grad():
        full = model(prompt)[0]
    assert (full.argmax(-1) >= 90).all()  # the full distribution (forward) does favour padding
    assert model.step(prompt, KVCache(24)).shape == (3, 90)
    torch.manual_seed(0)
    for kwargs in (dict(greedy=True), dict(greedy=True, use_cache=False), dict(temperature=1.0),
                   dict(temperature=2.0, top_k=5), dict(temperature=2.0, use_cache=False)):
        out = model.generate(prompt, 30, **kwargs)  # 30 > block_size - 5: the cache restarts too
        assert out.shape == (3, 35) and (out < 90).all(), kwargs


def test_padding_rows_are_left_out_of_embeddings_and_sense_logits():
    model = padded(BackpackLM)
    assert model.input_embeddings().shape == (90, 32)
    assert torch.equal(model.input_embeddings(), model.transformer.wte.weight[:90])
    ids = torch.tensor([0, 5, 89])
    assert model.sense_logits(ids).shape == (3, 4, 90)
    with torch.no_grad():
        assert model(ids[None], return_logits=True)[0].shape == (1, 3, 97)  # forward keeps every row


# ----------------------------------------------------------------------------------------------------
# generation

@pytest.mark.parametrize('cls', [BackpackLM, StandardTransformerLM])
def test_cached_generation_equals_uncached(cls):
    """Greedy, batch 3, past block_size (24): the cache is rebuilt on the cropped window."""
    torch.manual_seed(0)
    model = cls(ModelConfig(**TINY)).eval()
    prompt = torch.randint(0, 97, (3, 5))
    graphs = []  # generation records no autograd graph, cached or not
    model.transformer.register_forward_hook(lambda module, args, out: graphs.append(out.requires_grad))
    cached = model.generate(prompt, 40, greedy=True)
    uncached = model.generate(prompt, 40, greedy=True, use_cache=False)
    assert cached.shape == (3, 45) and torch.equal(cached[:, :5], prompt)
    assert torch.equal(cached, uncached)
    assert graphs and not any(graphs)


def test_a_cached_step_never_copies_the_inference_sense_table():
    """A step reads the senses of its new token from the table without copying the table: a copy of
    it (k * ids seen * d floats, 7,000 ids x 16 x 128 after a perplexity pass) at every step made
    greedy translation several times slower than the Transformer's. Checked by the sizes of the
    tensors each op allocates; the tokens stay those of the uncached reference."""
    from torch.utils._pytree import tree_flatten
    from torch.utils._python_dispatch import TorchDispatchMode

    class Allocations(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.numels = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            inputs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0]
                      if isinstance(t, torch.Tensor)}
            self.numels += [t.numel() for t in tree_flatten(out)[0]
                            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs]
            return out

    torch.manual_seed(0)
    model = BackpackLM(ModelConfig(**TINY)).eval()
    with torch.no_grad():
        model(torch.arange(97)[None, :24])
        model(torch.arange(97)[None, 24:48])  # the table grows past its first buffer
    table = model.sense_lookup.table
    assert model.sense_lookup.size == 48 and table.size(1) > 48  # a partly filled buffer
    prompt = torch.randint(0, 48, (3, 5))
    cache = KVCache(24)
    model.step(prompt, cache)
    with Allocations() as allocations:
        model.step(prompt[:, -1:], cache)
    assert model.sense_lookup.table is table  # no id new to the table
    assert max(allocations.numels) < table.numel() // 4
    cached = model.generate(prompt, 12, greedy=True)  # ids 48..96 join the table as they are generated
    assert torch.equal(cached, model.generate(prompt, 12, greedy=True, use_cache=False))


def test_generation_stops_and_samples_within_top_k():
    torch.manual_seed(0)
    model = BackpackLM(ModelConfig(**TINY)).eval()
    prompt = torch.randint(0, 97, (2, 4))
    stop = int(model.generate(prompt, 1, greedy=True)[0, -1])  # row 0's first new token
    out = model.generate(prompt, 30, greedy=True, stop_ids=[stop])
    free = model.generate(prompt, out.size(1) - 4, greedy=True)
    for row in range(2):
        hits = (out[row, 4:] == stop).nonzero()
        first = 4 + int(hits[0]) if len(hits) else out.size(1)
        assert torch.equal(out[row, :first + 1], free[row, :first + 1])
        assert (out[row, first:] == stop).all()  # a stopped row repeats its stop token
    assert out.size(1) == 34 or (out[:, 4:] == stop).any(1).all()  # ends early only once all stopped
    assert model.generate(prompt[:1], 30, greedy=True, stop_ids=[stop]).size(1) == 5
    top1 = model.generate(prompt, 5, temperature=0.7, top_k=1)
    assert torch.equal(top1, model.generate(prompt, 5, greedy=True))


# ----------------------------------------------------------------------------------------------------
# shapes, analysis API, counts, optimizer groups, init

def test_shapes_and_analysis_api():
    torch.manual_seed(0)
    model = BackpackLM(ModelConfig(**TINY)).eval()
    B, T, k, d, V = 2, 7, 4, 32, 97
    idx = torch.randint(0, V, (B, T))
    with torch.no_grad():
        logits, loss = model(idx)
        assert logits.shape == (B, 1, V) and loss is None
        assert torch.allclose(logits[:, 0], model(idx, return_logits=True)[0][:, -1], atol=1e-6)
        hidden = model.hidden_states(idx)
        assert hidden['hidden'].shape == hidden['o'].shape == (B, T, d)
        assert torch.allclose(hidden['o'] @ model.input_embeddings().t(), model(idx, return_logits=True)[0], atol=1e-5)
        alpha = model.contextualization(idx)
        assert alpha.shape == (B, k, T, T)
        assert torch.allclose(alpha.sum(-1), torch.ones(B, k, T)) and (alpha.triu(1) == 0).all()
        senses = model.sense_vectors(idx.flatten(), chunk=3)
        assert senses.shape == (B * T, k, d)
        assert torch.allclose(model.sense_logits(idx[0]), senses[:T] @ model.input_embeddings().t(), atol=1e-6)
        # interventions: o is linear in the senses; an edited alpha replaces the computed one
        per_position = senses.view(B, T, k, d)
        base = model(idx, return_logits=True)[0]
        assert torch.allclose(model(idx, return_logits=True, senses=per_position)[0], base, atol=1e-5)
        assert torch.allclose(model(idx, return_logits=True, senses=2 * per_position)[0], 2 * base, atol=1e-5)
        uniform = torch.tril(torch.ones(T, T)) / torch.arange(1, T + 1)[:, None]
        mean_senses = model(idx, return_logits=True, alpha=uniform.expand(B, k, T, T))[0]
        expected = (torch.cumsum(per_position.sum(2), 1) / torch.arange(1, T + 1)[:, None]) @ model.input_embeddings().t()
        assert torch.allclose(mean_senses, expected, atol=1e-5)
    transformer = StandardTransformerLM(ModelConfig(**dict(TINY, n_senses=1)))
    assert set(transformer.hidden_states(idx)) == {'hidden'}
    with pytest.raises(AssertionError):
        model(torch.zeros(1, TINY['block_size'] + 1, dtype=torch.long))


def test_parameter_counts():
    with torch.device('meta'):
        backpack = BackpackLM(ModelConfig(vocab_size=50264, block_size=512, n_layer=12, n_head=12, n_embd=768,
                                          n_senses=16, bias=True, scale_attn_by_inverse_layer_idx=True))
        gpt2 = StandardTransformerLM(ModelConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12,
                                                 n_embd=768, bias=True))
    assert gpt2.get_num_params(non_embedding=False) == 124_439_808  # GPT-2 small
    assert backpack.get_num_params(non_embedding=False) == 170_083_584  # Backpack-Small, "170M"
    counts = backpack.param_counts()
    assert counts['sense_network'] == 44_850_432 and counts['weight_head'] == 768 * 1536 + 1536
    assert counts['total'] == sum(v for key, v in counts.items() if key != 'total')
    assert backpack.get_num_params() == counts['total'] - counts['positions']
    tiny = StandardTransformerLM(ModelConfig(**TINY)).param_counts()
    assert tiny['contextual_transformer'] == 2 * (2 * 32 + 12 * 32 * 32) + 32  # per layer 2 LN gains + 12 d^2; ln_f


def test_configure_optimizers_groups():
    model = BackpackLM(ModelConfig(**dict(TINY, bias=True)))
    optimizer = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), 'cpu')
    decay, no_decay = optimizer.param_groups
    assert decay['weight_decay'] == 0.1 and no_decay['weight_decay'] == 0.0
    assert all(p.dim() >= 2 for p in decay['params']) and all(p.dim() < 2 for p in no_decay['params'])
    assert len(decay['params']) + len(no_decay['params']) == len(list(model.parameters()))


def test_init_scales_residual_projections():
    torch.manual_seed(0)
    model = StandardTransformerLM(ModelConfig(**dict(TINY, n_layer=8, n_embd=128)))
    std = model.transformer.h[0].attn.c_proj.weight.std().item()
    assert abs(std / (0.02 / 4.0) - 1) < 0.05  # 0.02 / sqrt(2 * 8)
    assert abs(model.transformer.h[0].attn.c_attn.weight.std().item() / 0.02 - 1) < 0.05


@pytest.mark.parametrize('ignore', [-1, -100])
@pytest.mark.parametrize('return_logits', [False, True])
@pytest.mark.parametrize('cls', [BackpackLM, StandardTransformerLM])
def test_a_batch_with_every_target_ignored_has_loss_0_and_a_zero_gradient(cls, return_logits, ignore):
    """Nothing to score contributes nothing: 0, not NaN (F.cross_entropy's mean of no rows), on both paths."""
    torch.manual_seed(0)
    model = cls(ModelConfig(**TINY))
    idx = torch.randint(0, 97, (2, 12))
    _, loss = model(idx, torch.full((2, 12), ignore), return_logits=return_logits)
    assert loss.item() == 0.0
    assert all(torch.equal(g, torch.zeros_like(g)) for g in grads(model, loss))
