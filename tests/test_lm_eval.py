"""lm_eval_tasks/ through lm-evaluation-harness (the optional extra of requirements-lm_eval.txt; skipped without it).

On exports of the tiny Transformer and Backpack (export_hf.write_model; the Backpack through its modeling code,
trust_remote_code), run from a working directory that is neither the repository nor the out_dir, with relative
paths: the log-likelihood lm_eval logs for each test sentence (log_samples) equals ours,
log p(sentence tokens | <lang>) = -experiments.perplexity.document_nll of `<lang> tokens` (no EOS) by model.py,
to 1e-4 nats (absolute), in both languages, through simple_evaluate and once through the CLI; a missing out_dir,
a missing test file and a missing or wrong prefix_token_id are each one error line."""
import importlib.util
import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

# the repository's folder is lm_eval_tasks/, not lm_eval/: without the package, a folder lm_eval/ at the root (on
# sys.path) would import as a namespace package and this would not skip
pytest.importorskip('lm_eval', reason='lm-eval is not installed (.venv/bin/pip install -r requirements-lm_eval.txt)')

import export_hf  # noqa: E402
from checkpoint import load_model  # noqa: E402
from conftest import REPO  # noqa: E402
from experiments.perplexity import document_nll  # noqa: E402
from tokenizer import load_tokenizer  # noqa: E402

TASKS = REPO / 'lm_eval_tasks'
N_SENTENCES = 6  # per language
TOL = 1e-4  # nats


@pytest.fixture(scope='module')
def work(tmp_path_factory, tiny_transformer_dir, tiny_backpack_dir):
    """The working directory `root`, holding the exports hf_transformer/ and hf_backpack/ of `models` (ours, by
    kind) and od/, the task's out_dir: the first N_SENTENCES test sentences of the sample per language whose
    `<lang> tokens` fit the context (so that lm_eval's windows and ours are the same one row)."""
    root = tmp_path_factory.mktemp('lm_eval')
    models = {}
    for kind, out_dir in (('transformer', tiny_transformer_dir), ('backpack', tiny_backpack_dir)):
        models[kind], _ = load_model(out_dir)
        tok = load_tokenizer(out_dir)  # the same for both: they were trained on one data dir
        (root / f'hf_{kind}').mkdir()
        export_hf.write_model(models[kind], tok, root / f'hf_{kind}')
    block_size = models['transformer'].config.block_size
    (root / 'od').mkdir()
    for lang in ('en', 'fr'):
        lines = (tiny_transformer_dir / f'test.{lang}').read_text(encoding='utf-8').split('\n')
        fit = [s for s in lines if s and len(tok.encode(s)) <= block_size][:N_SENTENCES]
        assert len(fit) == N_SENTENCES
        (root / 'od' / f'test.{lang}').write_text('\n'.join(fit) + '\n', encoding='utf-8')
    return SimpleNamespace(root=root, models=models, tok=tok)


@pytest.fixture
def in_work(work, monkeypatch):
    monkeypatch.chdir(work.root)
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setenv('HF_DATASETS_OFFLINE', '1')
    return work


def sentences(work, lang):
    return (work.root / 'od' / f'test.{lang}').read_text(encoding='utf-8').splitlines()


def ours(work, kind, lang):
    """[log p(tokens of s | <lang>)] by model.py for the sentences s of od/test.{lang}, in order."""
    docs = [np.array(work.tok.encode_monolingual(s, lang)[:-1]) for s in sentences(work, lang)]  # without the EOS
    return -np.array(document_nll(work.models[kind], docs, 'cpu', batch_size=8))


def max_diff(samples, work, kind, lang):
    """max |lm_eval's - ours| over the sentences, lm_eval's from its logged samples (resps: [[loglik]])."""
    samples = sorted(samples, key=lambda s: s['doc_id'])
    assert [s['doc']['text'] for s in samples] == sentences(work, lang)
    theirs = np.array([float(s['resps'][0][0]) for s in samples])
    diff = np.abs(theirs - ours(work, kind, lang)).max()
    print(f"{kind} {lang}: max |lm_eval - ours| = {diff:.2e} nats over {len(samples)} sentences")
    return diff


def model_args(work, kind, lang):
    return {'pretrained': f'hf_{kind}', 'prefix_token_id': work.tok.lang_id(lang),
            'trust_remote_code': kind == 'backpack'}


@pytest.mark.parametrize('kind', ['transformer', 'backpack'])
def test_loglikelihoods_equal_ours(in_work, kind):
    import lm_eval
    from lm_eval.tasks import TaskManager
    for lang in ('en', 'fr'):
        args = model_args(in_work, kind, lang)
        # simple_evaluate has no include_path: the TaskManager the CLI builds, with the CLI's metadata
        # (--model_args merged with --metadata), without indexing lm_eval's own tasks (5 s each time)
        manager = TaskManager(include_path=str(TASKS), include_defaults=False, metadata={**args, 'out_dir': 'od'})
        out = lm_eval.simple_evaluate(model='hf', model_args=args, tasks=[f'europarl_test_{lang}'], device='cpu',
                                      batch_size=1, log_samples=True, task_manager=manager)
        assert max_diff(out['samples'][f'europarl_test_{lang}'], in_work, kind, lang) < TOL


def test_the_cli_from_another_directory(in_work):
    """The README's command with relative paths from the working directory: the Backpack in French."""
    args = ','.join(f'{k}={v}' for k, v in model_args(in_work, 'backpack', 'fr').items())
    cmd = [sys.executable, '-m', 'lm_eval', '--model', 'hf', '--model_args', args, '--include_path', str(TASKS),
           '--tasks', 'europarl_test_fr', '--metadata', 'out_dir=od', '--device', 'cpu',
           '--log_samples', '--output_path', 'lm_eval_out']
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    [path] = (in_work.root / 'lm_eval_out').glob('*/samples_europarl_test_fr_*.jsonl')
    samples = [json.loads(line) for line in path.read_text(encoding='utf-8').splitlines()]
    assert max_diff(samples, in_work, 'backpack', 'fr') < TOL


def test_mistakes_are_one_line(in_work):
    """The task's loader called as lm_eval calls it: the module loaded by path, the metadata as keywords."""
    spec = importlib.util.spec_from_file_location('europarl', TASKS / 'europarl.py')
    europarl = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(europarl)
    args = model_args(in_work, 'transformer', 'en')
    assert europarl.test_en(**args, out_dir='od')['test']['text'] == sentences(in_work, 'en')
    missing = in_work.root / 'hf_transformer' / 'test.en'
    en, fr = in_work.tok.lang_id('en'), in_work.tok.lang_id('fr')
    cases = (({**args}, 'add --metadata out_dir=DIR'),
             ({**args, 'out_dir': 'hf_transformer'}, f'{missing} not found'),
             ({'pretrained': 'hf_transformer', 'out_dir': 'od'}, f'add prefix_token_id={en} to --model_args'),
             ({**args, 'prefix_token_id': fr, 'out_dir': 'od'}, f'prefix_token_id={fr} is not the <en> tag'))
    for metadata, says in cases:
        with pytest.raises(SystemExit) as e:
            europarl.test_en(**metadata)
        message = str(e.value)
        assert message.startswith('error: europarl_test_en') and says in message and '\n' not in message
