"""hf_backpack/ (issue 24): the Backpack's own Hugging Face modeling code, which export_hf.py copies beside the
weights, computes what model.py computes, and loads and generates with the installed transformers.

Tiny random models, offline: a backpack-gpt2 checkpoint in the official layout (random LayerNorms and biases,
conftest.write_random_backpack_gpt2) read by pretrained.py into our BackpackLM, exported with export_hf.py's
writer and loaded with AutoModelForCausalLM(trust_remote_code=True). Checked: logits and the loss with
labels; left padding (the real positions of a padded batch as each sequence alone); the KV cache (logits
step by step as without it); greedy generate() as generation.py's; seeded sampling reproducible; the senses
and alpha of output_senses=True and the hidden states as model.py's; an official-layout pickle checkpoint
converted by `export_hf.py --from_hf`; pipeline('text-generation') and the model card's snippet on an
export with its tokenizer."""
import contextlib
import io
import json
import shutil
import types

import pytest
import torch

import export_hf
from conftest import write_random_backpack_gpt2
from model import BackpackLM, ModelConfig
from pretrained import from_pretrained_backpack
from tokenizer import load_tokenizer

transformers = pytest.importorskip('transformers')

EOS = 5  # the end-of-document id of the random models
TOKENS = 90  # of the 97 rows of their embedding: the last 7 are padding, as in backpack-gpt2


def max_diff(a, b):
    return (a - b).abs().max().item()


def report(name, diff):
    print(f"{name}: max |diff| {diff:.3g}")
    return diff


def auto_model(directory):
    return transformers.AutoModelForCausalLM.from_pretrained(directory, trust_remote_code=True).eval()


def export(ours, directory, eos=EOS):
    """ours through export_hf.py's Backpack writer (weights, config, modeling code, generation config)."""
    directory.mkdir(parents=True, exist_ok=True)
    export_hf.write_backpack(ours, types.SimpleNamespace(eos_id=eos), directory)
    return directory


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    """(our BackpackLM, the HF model of its export, the export directory): 2 layers, d=32, k=4, 24 positions."""
    root = tmp_path_factory.mktemp('hf_backpack')
    write_random_backpack_gpt2(root / 'official')
    ours = from_pretrained_backpack(root / 'official').eval()
    ours.config.tokenizer_vocab_size = TOKENS
    directory = export(ours, root / 'export')
    return ours, auto_model(directory), directory


def batch(n=3, T=16, seed=1):
    return torch.randint(0, TOKENS, (n, T), generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------------------------------
# the export's files, and the class transformers loads

def test_the_export_carries_its_modeling_code_and_auto_map_points_at_it(tiny):
    ours, model, directory = tiny
    assert (directory / 'modeling_backpack.py').read_bytes() == (export_hf.HF_CODE_DIR / 'modeling_backpack.py').read_bytes()
    assert (directory / 'configuration_backpack.py').is_file()
    config = json.loads((directory / 'config.json').read_text())
    assert config['auto_map'] == {'AutoConfig': 'configuration_backpack.BackpackGPT2Config',
                                  'AutoModel': 'modeling_backpack.BackpackGPT2Model',
                                  'AutoModelForCausalLM': 'modeling_backpack.BackpackGPT2LMHeadModel'}
    assert (config['model_type'], config['architectures']) == ('backpack-gpt2', ['BackpackGPT2LMHeadModel'])
    generation = json.loads((directory / 'generation_config.json').read_text())
    assert generation['eos_token_id'] == EOS and generation['suppress_tokens'] == list(range(TOKENS, 97))
    assert type(model).__name__ == 'BackpackGPT2LMHeadModel' and not model.training
    assert model.lm_head.weight is model.backpack.gpt2_model.wte.weight  # tied, as in backpack-gpt2
    for name in ('n_embd', 'n_layer', 'n_head', 'num_senses', 'sense_intermediate_scale', 'vocab_size', 'n_positions'):
        assert getattr(model.config, name) == config[name]
    assert (model.config.hidden_size, model.config.num_hidden_layers) == (32, 2)


# ----------------------------------------------------------------------------------------------------
# the math: model.py's

@pytest.mark.parametrize('bias', [True, False])
def test_logits_and_the_loss_with_labels_equal_ours(tiny, tmp_path, bias):
    """bias=True: the official-layout model; bias=False: one of ours without biases (zero biases exported)."""
    ours, model, _ = tiny
    if not bias:
        ours = BackpackLM(ModelConfig(block_size=24, vocab_size=97, n_layer=2, n_head=2, n_embd=32, n_senses=4,
                                      sense_intermediate_scale=3, bias=False, dropout=0.0)).eval()
        g = torch.Generator().manual_seed(2)
        with torch.no_grad():
            for p in ours.parameters():
                p.add_(0.2 * torch.randn(p.shape, generator=g))
        model = auto_model(export(ours, tmp_path / 'no_bias'))
    idx = batch(T=24)
    with torch.no_grad():
        out = model(idx, labels=idx)
        report(f'logits (bias={bias})', max_diff(out.logits, ours(idx, return_logits=True)[0]))
        torch.testing.assert_close(out.logits, ours(idx, return_logits=True)[0], atol=1e-5, rtol=0)
        mine = ours(idx[:, :-1], targets=idx[:, 1:])[1]  # our loss: the cross-entropy on the shifted targets
        assert abs(report(f'loss (bias={bias})', abs(out.loss.item() - mine.item()))) <= 1e-5
        labels = idx.clone()
        labels[:, :5] = -100  # ignored, as our -1
        targets = idx[:, 1:].clone()
        targets[:, :4] = -1
        assert model(idx, labels=labels).loss.item() == pytest.approx(ours(idx[:, :-1], targets=targets)[1].item(),
                                                                     abs=1e-5)


def test_output_senses_and_hidden_states_are_ours(tiny):
    ours, model, _ = tiny
    idx = batch(n=2, T=12)
    with torch.no_grad():
        out = model(idx, output_senses=True, output_hidden_states=True)
        senses = ours.sense_vectors(idx.reshape(-1)).view(2, 12, 4, 32)  # C(x_j): (B, T, k, d)
        alpha = ours.contextualization(idx)  # (B, k, T, T)
        hidden = ours.hidden_states(idx)
    assert out.senses.shape == (2, 12, 4, 32) and out.contextualization.shape == (2, 4, 12, 12)
    report('senses', max_diff(out.senses, senses))
    report('alpha', max_diff(out.contextualization, alpha))
    torch.testing.assert_close(out.senses, senses, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.contextualization, alpha, atol=1e-6, rtol=0)
    assert (out.contextualization >= 0).all() and torch.allclose(out.contextualization.sum(-1), torch.ones(2, 4, 12))
    assert out.contextualization[..., 3, 4:].abs().max() == 0  # causal
    # GPT-2's (embeddings, after each block but the last, ln_f(h)), then o, what the LM head reads
    assert len(out.hidden_states) == model.config.n_layer + 2
    torch.testing.assert_close(out.hidden_states[-2], hidden['hidden'], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.hidden_states[-1], hidden['o'], atol=1e-5, rtol=0)
    torch.testing.assert_close(model.lm_head(out.hidden_states[-1]), out.logits, atol=1e-6, rtol=0)
    assert model(idx).senses is None
    with torch.no_grad():
        attended = model(idx, output_attentions=True)  # GPT-2's attention weights, explicit: the same logits
    assert [tuple(a.shape) for a in attended.attentions] == [(2, 2, 12, 12)] * 2
    torch.testing.assert_close(attended.logits, out.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(model.sense_logits(idx[0, :3]), ours.sense_vectors(idx[0, :3]) @ ours.transformer.wte.weight.t(),
                               atol=1e-5, rtol=0)


def test_left_padding_gives_each_sequence_its_own_logits(tiny):
    """A left-padded batch: positions count the real tokens, padded keys are masked (in the transformer and in
    alpha), so the real positions' logits are those of each sequence alone."""
    ours, model, _ = tiny
    lengths = [16, 9, 4]
    seqs = [batch(n=1, T=n, seed=i)[0] for i, n in enumerate(lengths)]
    T = max(lengths)
    ids = torch.full((3, T), 0)
    mask = torch.zeros(3, T, dtype=torch.long)
    for row, s in enumerate(seqs):
        ids[row, T - len(s):], mask[row, T - len(s):] = s, 1
    worst = 0.0
    with torch.no_grad():
        padded = model(ids, attention_mask=mask, output_senses=True)
        assert torch.isfinite(padded.logits).all()
        for row, s in enumerate(seqs):
            alone = model(s[None])
            worst = max(worst, max_diff(padded.logits[row, T - len(s):], alone.logits[0]))
            worst = max(worst, max_diff(padded.logits[row, T - len(s):], ours(s[None], return_logits=True)[0][0]))
            pad = T - len(s)  # a real position gives the padding no weight
            assert padded.contextualization[row, :, pad:, :pad].sum() == 0
    assert report('left padding', worst) <= 1e-5


def test_the_kv_cache_gives_the_logits_without_it(tiny):
    ours, model, _ = tiny
    idx = batch(n=2, T=20)
    with torch.no_grad():
        full = model(idx, use_cache=False, output_senses=True)
        assert getattr(full, export_hf_cache_field(full)) is None
        out = model(idx[:, :8], use_cache=True)
        cache, logits, alphas = getattr(out, export_hf_cache_field(out)), [out.logits], []
        for t in range(8, 20):
            step = model(idx[:, t:t + 1], **{export_hf_cache_field(out): cache}, use_cache=True, output_senses=True)
            cache = getattr(step, export_hf_cache_field(step))
            logits.append(step.logits)
            alphas.append(step.contextualization[:, :, 0, :t + 1])
    assert cache.get_seq_length() == 20
    worst = report('KV cache', max_diff(torch.cat(logits, 1), full.logits))
    assert worst <= 1e-5
    for t, alpha in zip(range(8, 20), alphas):
        torch.testing.assert_close(alpha, full.contextualization[:, :, t, :t + 1], atol=1e-6, rtol=0)


def export_hf_cache_field(output):
    """'cache' in transformers 5, 'past_key_values' in 4.x."""
    return 'cache' if 'cache' in type(output).__dataclass_fields__ else 'past_key_values'


# ----------------------------------------------------------------------------------------------------
# generation

def test_greedy_generate_equals_ours_with_and_without_the_cache(tiny):
    ours, model, _ = tiny
    worst = []
    for seed in range(4):
        prompt = batch(n=1, T=4 + seed, seed=10 + seed)
        new = 24 - prompt.size(1)  # to the last learned position
        mine = ours.generate(prompt, new, greedy=True, stop_ids=[EOS])
        for use_cache in (True, False):
            theirs = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new,
                                    do_sample=False, use_cache=use_cache)
            assert theirs.tolist() == mine.tolist(), (seed, use_cache)
        assert (mine[0, prompt.size(1):] < TOKENS).all()  # padding rows are never generated
        worst.append(mine.size(1) - prompt.size(1))
    print(f"greedy: {worst} new tokens equal ours")


def test_greedy_generate_of_a_left_padded_batch_is_each_prompt_alone(tiny):
    ours, model, _ = tiny
    prompts = [batch(n=1, T=n, seed=20 + n)[0] for n in (7, 3)]
    ids = torch.zeros(2, 7, dtype=torch.long)
    mask = torch.zeros(2, 7, dtype=torch.long)
    for row, p in enumerate(prompts):
        ids[row, 7 - len(p):], mask[row, 7 - len(p):] = p, 1
    gen = dict(max_new_tokens=10, do_sample=False, eos_token_id=None, pad_token_id=0)
    together = model.generate(ids, attention_mask=mask, **gen)
    for row, p in enumerate(prompts):
        alone = model.generate(p[None], attention_mask=torch.ones(1, len(p), dtype=torch.long), **gen)
        assert together[row, 7:].tolist() == alone[0, len(p):].tolist()
        assert alone.tolist() == ours.generate(p[None], 10, greedy=True).tolist()


def test_seeded_sampling_is_reproducible(tiny):
    _, model, _ = tiny
    prompt = batch(n=2, T=5)
    samples = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        samples.append(model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=True, top_k=20,
                                      temperature=1.5, max_new_tokens=15, eos_token_id=None, pad_token_id=0).tolist())
    assert samples[0] == samples[1] and samples[0] != samples[2]
    assert all(t < TOKENS for row in samples[0] for t in row[5:])  # sampled among tokens only


# ----------------------------------------------------------------------------------------------------
# backpack-gpt2's own checkpoints: pickle weights, converted in one line

def pickled_official_checkpoint(directory):
    """A random backpack-gpt2 checkpoint as the hub has it: config.json + pytorch_model.bin (a pickle with
    the tied copies and GPT-2's attention-mask buffers), a tokenizer file beside it."""
    sd, _ = write_random_backpack_gpt2(directory, seed=3)
    (directory / 'model.safetensors').unlink()
    torch.save(sd, directory / 'pytorch_model.bin')
    (directory / 'vocab.txt').write_text('not a weight file\n')
    return directory


@pytest.mark.parametrize('in_place', [True, False])
def test_from_hf_converts_a_pickled_official_checkpoint_that_then_loads_with_our_logits(tmp_path, in_place, capsys):
    src = pickled_official_checkpoint(tmp_path / 'backpack-gpt2')
    reference = from_pretrained_backpack(src).eval()  # pretrained.py's loader, from the pickle
    argv = ['--from_hf', str(src)] + ([] if in_place else ['--hf_dir', str(tmp_path / 'converted')])
    export_hf.main(argv)
    hf = src if in_place else tmp_path / 'converted'
    assert f'wrote {hf}' in capsys.readouterr().out
    names = {'config.json', 'model.safetensors', 'modeling_backpack.py', 'configuration_backpack.py', 'vocab.txt'}
    assert {p.name for p in hf.iterdir()} == names | ({'pytorch_model.bin'} if in_place else set())
    from safetensors.torch import load_file
    weights = load_file(hf / 'model.safetensors')
    assert not any(k.endswith(('.attn.bias', '.attn.masked_bias')) or k in export_hf_aliases() for k in weights)
    config = json.loads((hf / 'config.json').read_text())
    assert config['auto_map'] == export_hf.AUTO_MAP and config['num_senses'] == 4 and config['n_positions'] == 24
    model = auto_model(hf)
    idx = batch(T=24)
    with torch.no_grad():
        diff = report('--from_hf vs pretrained.py', max_diff(model(idx).logits, reference(idx, return_logits=True)[0]))
    assert diff <= 1e-5
    assert torch.equal(from_pretrained_backpack(hf).state_dict()['transformer.wte.weight'],
                       reference.state_dict()['transformer.wte.weight'])


def export_hf_aliases():
    import pretrained
    return set(pretrained.HF_LAYOUTS['backpack-gpt2'][1])


def test_our_modeling_code_reads_the_pickle_as_it_is(tmp_path):
    """The official pytorch_model.bin, every key of it, without conversion (the tied copies and mask buffers
    are known names), beside our code and auto_map."""
    src = pickled_official_checkpoint(tmp_path / 'official')
    reference = from_pretrained_backpack(src).eval()
    for name in export_hf.HF_CODE_FILES:
        shutil.copy(export_hf.HF_CODE_DIR / name, src / name)
    config = json.loads((src / 'config.json').read_text())
    (src / 'config.json').write_text(json.dumps({**config, 'auto_map': export_hf.AUTO_MAP}))
    model = auto_model(src)
    idx = batch(T=10)
    with torch.no_grad():
        assert report('pickle', max_diff(model(idx).logits, reference(idx, return_logits=True)[0])) <= 1e-5


def test_from_hf_refuses_what_is_not_a_backpack_gpt2(tmp_path, capsys):
    from errors import run_main
    src = pickled_official_checkpoint(tmp_path / 'bad')
    sd = torch.load(src / 'pytorch_model.bin', weights_only=True)
    sd['lm_head.weight'] = sd['lm_head.weight'] + 1  # a tied copy that is not a copy
    torch.save(sd, src / 'pytorch_model.bin')
    before = sorted(p.name for p in src.iterdir())
    with pytest.raises(SystemExit):
        run_main(export_hf.main, ['--from_hf', str(src)])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'not a backpack-gpt2 checkpoint' in err[0] and 'lm_head.weight' in err[0], err
    assert sorted(p.name for p in src.iterdir()) == before


# ----------------------------------------------------------------------------------------------------
# with the exported tokenizer: pipeline('text-generation') and the model card's snippet

@pytest.fixture(scope='module')
def with_tokenizer(tmp_path_factory, sample_data_dir):
    """A random Backpack on the sample's BPE (3 padding rows past its ids), exported with its tokenizer."""
    tok = load_tokenizer(sample_data_dir)
    torch.manual_seed(0)
    ours = BackpackLM(ModelConfig(block_size=48, vocab_size=tok.vocab_size + 3, n_layer=1, n_head=2, n_embd=32,
                                  n_senses=4, dropout=0.0, tokenizer_vocab_size=tok.vocab_size)).eval()
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(0.1 * torch.randn_like(p))
    directory = export(ours, tmp_path_factory.mktemp('hf_backpack_tok') / 'export', eos=tok.eos_id)
    export_hf.write_tokenizer(tok, ours.config.block_size, directory)
    return ours, tok, directory


def test_pipeline_text_generation_gives_our_greedy_text(with_tokenizer):
    ours, tok, directory = with_tokenizer
    generate = transformers.pipeline('text-generation', model=str(directory), trust_remote_code=True)
    hf_tok = generate.tokenizer
    for text in ('Thank you, Mr President.', 'The debate is closed.'):
        prompt = torch.tensor([tok.encode_prompt(text, 'en', 'fr')])
        mine = ours.generate(prompt, 20, greedy=True, stop_ids=[tok.eos_id])
        piped = generate(f'<en> {text} <fr>', max_new_tokens=20, do_sample=False, return_full_text=False)
        assert piped[0]['generated_text'] == hf_tok.decode(mine[0, prompt.size(1):], skip_special_tokens=True)


def test_the_model_cards_snippet_loads_generates_and_prints_senses(with_tokenizer):
    ours, tok, directory = with_tokenizer
    lines = export_hf.backpack_snippet(str(directory), 20)
    assert len(lines) == 5
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec('\n'.join(lines), {})
    translation, senses = printed.getvalue().splitlines()
    prompt = torch.tensor([tok.encode_prompt('Thank you, Mr President.', 'en', 'fr')])
    mine = ours.generate(prompt, 20, greedy=True, stop_ids=[tok.eos_id])
    assert translation == tok.backend.decode(mine[0, prompt.size(1):].tolist(), skip_special_tokens=True)
    word = tok.encode('Parliament')[0]
    top = ours.sense_logits(torch.tensor([word]))[0].topk(5).indices  # (k, 5), token rows only
    assert senses == str([[tok.backend.id_to_token(i) for i in row] for row in top.tolist()])


def test_save_pretrained_round_trip(tiny, tmp_path):
    _, model, _ = tiny
    model.save_pretrained(tmp_path / 'saved')
    assert (tmp_path / 'saved' / 'modeling_backpack.py').is_file()  # the remote code travels with it
    again = auto_model(tmp_path / 'saved')
    idx = batch(T=8)
    with torch.no_grad():
        assert torch.equal(again(idx).logits, model(idx).logits)
    from safetensors.torch import load_file
    assert 'lm_head.weight' not in load_file(tmp_path / 'saved' / 'model.safetensors')  # tied: stored once
