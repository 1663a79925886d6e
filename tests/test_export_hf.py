"""export_hf.py (issue 13): a trained model leaves the repository in Hugging Face form, and comes back.

Round trips, all offline: the Backpack export has backpack-gpt2's layout, reloads with
from_pretrained_backpack with equal weights, and gives the logits of the official modeling code (the copy
pyvene ships, loaded by path) and, with its own modeling code (hf_backpack/, tests/test_hf_backpack.py), our
logits and greedy tokens through AutoModelForCausalLM; the Transformer export is a stock GPT2LMHeadModel whose logits and greedy
generation equal ours; AutoTokenizer gives our ids; an exported Europarl Backpack starts
`train.py --init_from backpack-small` as backpack-gpt2 does; --push_to_hub with the hub unreachable is one
error line and leaves the export whole. An export is also a release (issue 21 §4): evaluate.load_model reads it
back as the very model exported (equal weights and logits, the check slice of release.json scored as the
results' per-document NLLs), evaluate.py evaluates it on a --data_dir with the original numbers, and weights
that are not the model's are refused."""
import importlib.util
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import evaluate
import export_hf
from checkpoint import load_model, save_json
from conftest import TINY_TRAIN_ARGS, run_train, write_random_backpack_gpt2
from errors import UserError, run_main
from experiments.perplexity import document_nll, read_documents
from model import from_pretrained_backpack
from tokenizer import load_tokenizer

TIED = {'lm_head.weight', 'backpack.word_embeddings.weight', 'backpack.position_embeddings.weight'}


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def with_results(out_dir, which=('translation',)):
    """Give out_dir an evaluation_results.json of its checkpoint, as run_full_evaluation.py would; the
    translation of 2 test pairs per direction keeps it quick (the export takes whatever was evaluated)."""
    model, _ = evaluate.load_model(out_dir)
    results = evaluate.run_evaluations(model, evaluate.load_tokenizer(out_dir), 'cpu', which=list(which),
                                       translation_samples=2)
    save_json(evaluate.to_json(results), os.path.join(out_dir, 'evaluation_results.json'))
    return out_dir


def trim_held_out(out_dir, n=40):
    """Cut out_dir's val/test .bin files to their first n documents (meta.json's counts to match, the bytes those
    of the decoded text, exact for a byte-level BPE): a perplexity evaluation of a second, not of minutes."""
    tok = load_tokenizer(out_dir)
    meta = json.loads((out_dir / 'meta.json').read_text())
    for split in ('val', 'test'):
        for lang in ('en', 'fr'):
            docs = read_documents(out_dir / f'{split}_{lang}.bin', tok, lang)[:n]
            np.concatenate(docs).astype(meta['dtype']).tofile(out_dir / f'{split}_{lang}.bin')
            text = [tok.backend.decode(d[1:-1].tolist(), skip_special_tokens=False) for d in docs]
            meta['splits'][f'{split}_{lang}'] = {'sentences': n, 'tokens': sum(map(len, docs)),
                                                 'bytes': sum(len(t.encode('utf-8')) for t in text)}
    (out_dir / 'meta.json').write_text(json.dumps(meta))
    return out_dir


@pytest.fixture(scope='module')
def exports(tmp_path_factory, tiny_backpack_dir, tiny_transformer_dir):
    """{model type: (evaluated copy of its tiny out_dir, its export)}; the perplexity results give the check
    slice its per-document NLLs."""
    root = tmp_path_factory.mktemp('export_hf')
    made = {}
    for kind, src in (('backpack', tiny_backpack_dir), ('transformer', tiny_transformer_dir)):
        out = with_results(trim_held_out(shutil.copytree(src, root / f'out_{kind}')), which=('perplexity', 'translation'))
        export_hf.main(['--out_dir', str(out), '--hf_dir', str(root / f'hf_{kind}')])
        made[kind] = out, root / f'hf_{kind}'
    return made


def held_out_batch(out_dir, rows=3):
    """(rows, block_size) windows of the test split, as the model reads them."""
    model, _ = load_model(out_dir)
    T = model.config.block_size
    ids = np.fromfile(out_dir / 'test_fr.bin', dtype=load_tokenizer(out_dir).meta['dtype'])[:rows * T]
    return torch.from_numpy(ids.astype(np.int64)).view(rows, T)


# ----------------------------------------------------------------------------------------------------
# the Backpack: backpack-gpt2's layout, our loader, the official modeling code

def test_backpack_export_has_the_backpack_gpt2_layout(exports, tmp_path):
    from safetensors.torch import load_file
    out, hf = exports['backpack']
    cfg = load_model(out)[0].config
    assert sorted(p.name for p in hf.iterdir()) == ['README.md', 'config.json', 'configuration_backpack.py',
                                                    'evaluation_results.json', 'generation_config.json', 'meta.json',
                                                    'model.safetensors', 'modeling_backpack.py', 'release.json',
                                                    'special_tokens_map.json', 'tokenizer', 'tokenizer.json',
                                                    'tokenizer_config.json']
    assert (hf / 'tokenizer' / 'tokenizer.json').read_bytes() == (out / 'tokenizer' / 'tokenizer.json').read_bytes()
    config = json.loads((hf / 'config.json').read_text())
    assert config['auto_map'] == {  # the modeling code beside the weights (tests/test_hf_backpack.py)
        'AutoConfig': 'configuration_backpack.BackpackGPT2Config', 'AutoModel': 'modeling_backpack.BackpackGPT2Model',
        'AutoModelForCausalLM': 'modeling_backpack.BackpackGPT2LMHeadModel'}
    assert (config['model_type'], config['architectures']) == ('backpack-gpt2', ['BackpackGPT2LMHeadModel'])
    assert {k: config[k] for k in ('vocab_size', 'n_positions', 'n_layer', 'n_head', 'n_embd', 'num_senses',
                                   'sense_intermediate_scale', 'scale_attn_by_inverse_layer_idx')} == dict(
        vocab_size=cfg.vocab_size, n_positions=cfg.block_size, n_layer=cfg.n_layer, n_head=cfg.n_head,
        n_embd=cfg.n_embd, num_senses=cfg.n_senses, sense_intermediate_scale=cfg.sense_intermediate_scale,
        scale_attn_by_inverse_layer_idx=cfg.scale_attn_by_inverse_layer_idx)
    # names and shapes as Hugging Face saves a backpack-gpt2 of this size (conftest, from GPT2Model's own
    # keys), each tensor once: the tied copies and the attention-mask buffers are not weights
    reference, _ = write_random_backpack_gpt2(
        tmp_path, vocab_size=cfg.vocab_size, n_positions=cfg.block_size, n_layer=cfg.n_layer, n_head=cfg.n_head,
        n_embd=cfg.n_embd, num_senses=cfg.n_senses, sense_intermediate_scale=cfg.sense_intermediate_scale)
    expected = {k: tuple(t.shape) for k, t in reference.items()
                if k not in TIED and not k.endswith(('.attn.bias', '.attn.masked_bias'))}
    weights = load_file(hf / 'model.safetensors')
    assert {k: tuple(t.shape) for k, t in weights.items()} == expected
    ours = load_model(out)[0].state_dict()
    for conv1d in ('h.0.attn.c_attn', 'h.0.mlp.c_proj'):  # GPT-2's Conv1D: (in, out), our Linear transposed
        assert torch.equal(weights[f'backpack.gpt2_model.{conv1d}.weight'], ours[f'transformer.{conv1d}.weight'].t())
    assert torch.equal(weights['backpack.sense_weight_net.c_attn.weight'], ours['sense_weight_net.weight'])  # a Linear
    assert oct((hf / 'model.safetensors').stat().st_mode & 0o777) == oct((hf / 'config.json').stat().st_mode & 0o777)


def test_backpack_export_reloads_with_equal_weights(exports):
    out, hf = exports['backpack']
    ours, _ = load_model(out)
    back = from_pretrained_backpack(hf).eval()
    mine, theirs = ours.state_dict(), back.state_dict()
    assert not ours.config.bias and back.config.bias
    for key, tensor in mine.items():
        assert torch.equal(tensor, theirs[key]), key
    added = set(theirs) - set(mine)  # bias=False: backpack-gpt2's modules have biases, exported as zeros
    assert added and all(key.endswith('.bias') and not theirs[key].any() for key in added)
    idx = held_out_batch(out)
    with torch.no_grad():
        assert rel_err(back(idx, return_logits=True)[0], ours(idx, return_logits=True)[0]) <= 1e-6


def test_backpack_export_loads_with_its_own_modeling_code_and_generates_our_tokens(exports):
    """AutoModelForCausalLM(trust_remote_code=True) runs the modeling_backpack.py copied beside the weights:
    our logits on held-out windows, and greedy generate() gives our generate()'s tokens."""
    import transformers
    out, hf = exports['backpack']
    model = transformers.AutoModelForCausalLM.from_pretrained(hf, trust_remote_code=True).eval()
    ours = assert_our_logits(model, out, 'modeling_backpack.py')
    tok = load_tokenizer(out)
    for source in (out / 'test.en').read_text(encoding='utf-8').splitlines()[:3]:
        prompt = torch.tensor([tok.encode_prompt(' '.join(source.split()[:4]), 'en', 'fr')])
        new = ours.config.block_size - prompt.size(1)  # up to the last learned position
        mine = ours.generate(prompt, new, greedy=True, stop_ids=[tok.eos_id])
        theirs = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new, do_sample=False)
        assert theirs.tolist() == mine.tolist()


def official_backpack_gpt2():
    """backpack-gpt2's modeling file as pyvene ships it (pyvene/models/backpack_gpt2/), loaded by path: the
    file needs only torch and transformers, where `import pyvene` would need all of pyvene's dependencies."""
    spec = importlib.util.find_spec('pyvene')
    if spec is None:
        pytest.skip('pyvene is not installed (pip install --no-deps pyvene==0.1.8): it ships the official '
                    'backpack-gpt2 modeling code')
    path = Path(spec.submodule_search_locations[0]) / 'models' / 'backpack_gpt2' / 'modelings_backpack_gpt2.py'
    module_spec = importlib.util.spec_from_file_location('official_backpack_gpt2', path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def test_backpack_export_gives_the_logits_of_the_official_modeling_code(request):
    """The official class built from the exported config.json, with the exported weights. (Its
    from_pretrained needs transformers 4.x: the code never calls post_init(), which transformers 5 requires;
    load_state_dict checks the same names, shapes and orientation.)"""
    from safetensors.torch import load_file
    official = official_backpack_gpt2()
    out, hf = request.getfixturevalue('exports')['backpack']  # after the skip: built only when it is used
    model = official.BackpackGPT2LMHeadModel(official.BackpackGPT2Config.from_pretrained(hf)).eval()
    result = model.load_state_dict(load_file(hf / 'model.safetensors'), strict=False)
    assert not result.unexpected_keys
    assert set(result.missing_keys) == TIED  # other names of the GPT-2 embeddings, loaded under those
    assert model.lm_head.weight is model.backpack.word_embeddings.weight is model.backpack.gpt2_model.wte.weight
    assert_our_logits(model, out, 'official backpack-gpt2 code')


def assert_our_logits(model, out, name):
    """The exported model's logits on held-out sentences equal our model's (relative 1e-5); returns ours."""
    ours, _ = load_model(out)
    idx = held_out_batch(out)
    with torch.no_grad():
        theirs, mine = model(idx).logits, ours(idx, return_logits=True)[0]
    print(f"{name} vs ours: max |diff| {(theirs - mine).abs().max().item():.3g}, relative {rel_err(theirs, mine):.3g}")
    assert rel_err(theirs, mine) <= 1e-5
    return ours


# ----------------------------------------------------------------------------------------------------
# the Transformer twin: a stock GPT2LMHeadModel

def test_transformer_export_is_a_stock_gpt2_with_our_logits_and_generation(exports):
    import transformers
    out, hf = exports['transformer']
    config = json.loads((hf / 'config.json').read_text())
    assert config['model_type'] == 'gpt2' and 'auto_map' not in config
    model = transformers.AutoModelForCausalLM.from_pretrained(hf).eval()
    assert type(model) is transformers.GPT2LMHeadModel
    ours = assert_our_logits(model, out, 'GPT2LMHeadModel')

    tok, hf_tok = load_tokenizer(out), transformers.AutoTokenizer.from_pretrained(hf)
    generate = transformers.pipeline('text-generation', model=str(hf))
    sources = (out / 'test.en').read_text(encoding='utf-8').splitlines()[:3]
    new = ours.config.block_size // 2  # prompt + new tokens within the context, which GPT-2 cannot exceed
    for source in sources:
        text = ' '.join(source.split()[:4])
        prompt = torch.tensor([tok.encode_prompt(text, 'en', 'fr')])
        mine = ours.generate(prompt, new, greedy=True, stop_ids=[tok.eos_id])
        theirs = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new, do_sample=False)
        assert theirs.tolist() == mine.tolist()
        piped = generate(f'<en> {text} <fr>', max_new_tokens=new, do_sample=False, return_full_text=False)
        assert piped[0]['generated_text'] == hf_tok.decode(mine[0, prompt.size(1):], skip_special_tokens=True)


# ----------------------------------------------------------------------------------------------------
# a release: release.json, and the export read back as the model exported

@pytest.mark.parametrize('kind', ['backpack', 'transformer'])
def test_an_export_loads_as_the_model_exported_and_scores_its_check_slice_as_the_results(exports, kind):
    out, hf = exports[kind]
    release = json.loads((hf / 'release.json').read_text())
    results = json.loads((out / 'evaluation_results.json').read_text())
    assert (hf / 'release.json').stat().st_size < 64_000
    lines = (out / 'evaluation_results.json').read_text().splitlines()  # save_json: a list of numbers on one line
    assert [line.count(',') for line in lines if '"doc_nll": [' in line] == [39] * 4  # 40 documents per file
    assert release['source_checkpoint'] == results['model']['checkpoint'] and release['model_type'] == kind
    assert release['weights'] == {'model.safetensors': evaluate.sha256_file(hf / 'model.safetensors')}
    assert release['evaluation_results']['sha256'] == evaluate.sha256_file(out / 'evaluation_results.json')
    original, _ = load_model(out)
    model, meta = evaluate.load_model(hf)  # config.json + model.safetensors, no best.pt
    assert model.info['iter_num'] == release['iter_num'] and model.info['run'] == results['model']['run']
    source = json.loads((out / 'meta.json').read_text())
    assert meta == {**source, 'source': {**source['source'], 'src_dir': 'data/europarl/sample'}}  # no machine path
    record = model.info['checkpoint']
    assert (record['file'], record['sha256']) == ('model.safetensors', release['weights']['model.safetensors'])
    assert record['exported_from'] == {k: results['model']['checkpoint'][k] for k in ('file', 'sha256')}
    mine, theirs = original.state_dict(), model.state_dict()  # bias=False: the export's zero biases dropped
    assert not model.config.bias and set(mine) == set(theirs) and all(torch.equal(mine[k], theirs[k]) for k in mine)
    idx = held_out_batch(out)
    with torch.no_grad():
        torch.testing.assert_close(model(idx, return_logits=True)[0], original(idx, return_logits=True)[0],
                                   atol=1e-6, rtol=0)
    tok = evaluate.load_tokenizer(hf)  # the export carries meta.json and our tokenizer files
    for lang in ('en', 'fr'):
        checks = release['check_slice'][f'val_{lang}']
        first = read_documents(out / f'val_{lang}.bin', tok, lang)[:release['check_slice']['documents']]
        assert checks['ids'] == [d.tolist() for d in first] and len(first) == 32
        assert [tok.encode_monolingual(t, lang) for t in checks['text']] == checks['ids']
        assert checks['bytes'] == [len(t.encode('utf-8')) for t in checks['text']]
        nll = document_nll(model, [np.array(ids) for ids in checks['ids']], 'cpu', batch_size=16)
        recorded = results['perplexity'][f'val_{lang}']['doc_nll'][:len(nll)]
        assert nll == pytest.approx(recorded, rel=1e-5)


def test_evaluate_py_scores_an_export_on_its_data_dir_with_the_original_numbers(exports, tmp_path, capsys):
    """`evaluate.py --out_dir <export> --data_dir <data>`: the perplexity of the original evaluation, recorded as
    computed from model.safetensors; without the data dir, one line names the missing files and the option."""
    out, hf = exports['backpack']
    before = listing(hf)
    output = tmp_path / 'perplexity.json'
    evaluate.main(['--out_dir', str(hf), '--data_dir', str(out), '--perplexity', '--output', str(output)])
    again, original = json.loads(output.read_text()), json.loads((out / 'evaluation_results.json').read_text())
    assert again['model']['checkpoint']['file'] == 'model.safetensors' and again['model']['run'] == 'out_backpack'
    for key, r in original['perplexity'].items():
        assert again['perplexity'][key]['doc_nll'] == pytest.approx(r['doc_nll'], rel=1e-9, abs=0)
        assert again['perplexity'][key]['bpb'] == pytest.approx(r['bpb'], rel=1e-9)
        assert again['inputs'][again['perplexity'][key]['file']] == original['inputs'][r['file']]  # the same bytes
    capsys.readouterr()
    with pytest.raises(SystemExit):
        run_main(evaluate.main, ['--out_dir', str(hf), '--perplexity'])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'no val_en.bin, val_fr.bin, test_en.bin, test_fr.bin in' in err[0], err
    assert 'export of export_hf.py' in err[0] and '--data_dir' in err[0]
    assert listing(hf) == before  # nothing written into the release


def test_weights_that_are_not_the_exported_model_are_refused(exports, tmp_path):
    """A bias where the exported model (bias=False, release.json's model_args) has none must be the zero the
    export wrote; without release.json the directory loads as a GPT-2 with its biases, as from the hub."""
    from safetensors.torch import load_file, save_file
    out, hf = exports['transformer']
    copy = shutil.copytree(hf, tmp_path / 'hf')
    weights = load_file(copy / 'model.safetensors')
    weights['transformer.h.0.mlp.c_fc.bias'][3] = 0.5
    save_file(weights, str(copy / 'model.safetensors'))
    with pytest.raises(UserError, match=r'transformer\.h\.0\.mlp\.c_fc\.bias is not zero.*bias=False'):
        evaluate.load_model(copy)
    (copy / 'release.json').unlink()
    model, _ = evaluate.load_model(copy)
    assert model.config.bias and model.info['iter_num'] is None and 'exported_from' not in model.info['checkpoint']
    assert model.state_dict()['transformer.h.0.mlp.c_fc.bias'][3] == 0.5


# ----------------------------------------------------------------------------------------------------
# the tokenizer: our ids, the tags special

@pytest.mark.parametrize('data_fixture', ['sample_data_dir', 'gpt2_data_dir', 'xlmr_data_dir'])
def test_auto_tokenizer_gives_our_ids_with_the_tags_special(request, data_fixture, tmp_path):
    from transformers import AutoTokenizer
    data_dir = request.getfixturevalue(data_fixture)
    tok = load_tokenizer(data_dir)
    export_hf.write_tokenizer(tok, 64, tmp_path)
    hf = AutoTokenizer.from_pretrained(tmp_path)
    en = (data_dir / 'test.en').read_text(encoding='utf-8').splitlines()[:20]
    fr = (data_dir / 'test.fr').read_text(encoding='utf-8').splitlines()[:20]
    for e, f in zip(en, fr):
        assert hf(f'<en> {e} <fr> {f}')['input_ids'] == tok.encode_prompt(e, 'en', 'fr') + tok.encode(f)
        assert hf(f'<fr>{f}<en>')['input_ids'] == tok.encode_prompt(f, 'fr', 'en')
        assert hf(e)['input_ids'] == tok.encode(e)  # nothing added around plain text
        assert hf.decode(tok.encode(f)) == tok.decode(tok.encode(f))
    assert hf.convert_tokens_to_ids(['<en>', '<fr>']) == [tok.lang_id('en'), tok.lang_id('fr')]
    assert {'<en>', '<fr>'} <= set(hf.all_special_tokens) and hf.eos_token_id == tok.eos_id
    assert len(hf) == tok.vocab_size and hf.model_max_length == 64


# ----------------------------------------------------------------------------------------------------
# an exported Europarl Backpack as a starting point, like backpack-gpt2

def test_exported_backpack_starts_train_py_like_backpack_gpt2(sample_data_dir, gpt2_data_dir, tmp_path):
    """A Backpack trained on Europarl with its own BPE, exported, is loaded by
    `train.py --init_from backpack-small --pretrained_path hf_dir` on data of that tokenizer: its first evaluation
    gives the loss the exported model had on the same batches, and training goes on. Data of another tokenizer
    is one error line."""
    short = ['--max_iters', 2, '--eval_interval', 2, '--eval_iters', 2]
    first, hf, again = tmp_path / 'first', tmp_path / 'hf', tmp_path / 'again'
    run_train(*TINY_TRAIN_ARGS, '--data_dir', sample_data_dir, '--out_dir', first, *short)
    export_hf.main(['--out_dir', str(with_results(first)), '--hf_dir', str(hf)])
    result = run_train(*TINY_TRAIN_ARGS, '--init_from', 'backpack-small', '--pretrained_path', hf,
                       '--data_dir', sample_data_dir, '--out_dir', again, *short)
    refused = run_train(*TINY_TRAIN_ARGS, '--init_from', 'backpack-small', '--pretrained_path', hf,
                        '--data_dir', gpt2_data_dir, '--out_dir', tmp_path / 'refused', *short, check=False)
    assert refused.returncode == 1 and 'was trained with another tokenizer' in refused.stderr
    assert refused.stderr.count('\n') == 1
    exported = torch.load(first / 'best.pt', weights_only=True)
    before = next(e for e in json.loads((first / 'training_log.json').read_text())['evals']
                  if e['iter'] == exported['iter_num'])
    after = json.loads((again / 'training_log.json').read_text())['evals']
    assert [e['iter'] for e in after] == [0, 2]
    for split in ('train', 'val', 'val_en', 'val_fr'):
        assert after[0][split] == pytest.approx(before[split], rel=1e-5)
    started = torch.load(again / 'ckpt.pt', weights_only=True)
    assert started['model_args']['bias'] and started['iter_num'] == 2
    assert {k: started['model_args'][k] for k in ('n_layer', 'n_embd', 'n_senses', 'vocab_size')} == \
        {k: exported['model_args'][k] for k in ('n_layer', 'n_embd', 'n_senses', 'vocab_size')}
    assert 'error' not in result.stderr


# ----------------------------------------------------------------------------------------------------
# errors and --push_to_hub

def listing(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob('*'))


@pytest.mark.parametrize('case, message', [
    ('no results', 'evaluation_results.json not found: run run_full_evaluation.py'),
    ('stale results', 'has changed since'),
    ('hf_dir not empty', 'pass --overwrite'),
])
def test_export_errors_are_one_line_and_write_nothing(exports, tmp_path, capsys, case, message):
    out = shutil.copytree(exports['backpack'][0], tmp_path / 'out')
    hf = tmp_path / 'hf'
    if case == 'no results':
        (out / 'evaluation_results.json').unlink()
    elif case == 'stale results':
        results = json.loads((out / 'evaluation_results.json').read_text())
        results['model']['checkpoint']['sha256'] = '0' * 64  # as if computed from another checkpoint
        (out / 'evaluation_results.json').write_text(json.dumps(results))
    else:
        hf.mkdir()
        (hf / 'notes.txt').write_text('mine')
    before = listing(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        run_main(export_hf.main, ['--out_dir', str(out), '--hf_dir', str(hf)])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: ') and message in err[0], err
    assert listing(tmp_path) == before
    if case == 'hf_dir not empty':  # --overwrite replaces the directory as a whole
        export_hf.main(['--out_dir', str(out), '--hf_dir', str(hf), '--overwrite'])
        assert sorted(p.name for p in hf.iterdir()) == sorted(p.name for p in exports['backpack'][1].iterdir())
        assert not list(tmp_path.glob('.hf.*'))


def test_push_to_hub_unreachable_is_one_error_line_and_keeps_the_export(exports, tmp_path, capsys, monkeypatch):
    """The real huggingface_hub calls, against an endpoint where nothing listens."""
    from huggingface_hub import constants
    monkeypatch.setattr(constants, 'ENDPOINT', 'http://127.0.0.1:9')  # the discard port: connection refused
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', False)
    monkeypatch.setenv('HF_TOKEN', 'hf_test_token_not_real')
    out, reference = exports['backpack']
    hf = tmp_path / 'hf'
    with pytest.raises(SystemExit) as exit_info:
        run_main(export_hf.main, ['--out_dir', str(out), '--hf_dir', str(hf), '--push_to_hub', 'someone/tiny-backpack'])
    assert exit_info.value.code == 1
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: could not push') and 'someone/tiny-backpack' in err[0], err
    assert f'hf upload someone/tiny-backpack {hf}' in err[0] and f'wrote {hf}' in captured.out
    # the local export is whole: the files of an export without --push_to_hub, and it loads
    assert sorted(p.name for p in hf.iterdir()) == sorted(p.name for p in reference.iterdir())
    for name in ('model.safetensors', 'config.json', 'tokenizer.json'):
        assert (hf / name).read_bytes() == (reference / name).read_bytes()
    from_pretrained_backpack(hf)
