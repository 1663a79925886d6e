"""The evaluation scripts' mistakes a user can make give one line (`error: ...` on stderr), exit status 1,
no traceback and nothing written (issue 14, item 3): a wrong --device, a missing or corrupt checkpoint,
test files of different lengths, a malformed evaluation_results.json.

Each script's cases run in-process through errors.run_main (what its `__main__` does), which is fast; one
subprocess per script checks that the entry point really goes through run_main."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

import compare_models
import evaluate
import run_full_evaluation
import verify_evaluation
from conftest import REPO
from errors import run_main

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason='--device cuda is valid on this machine')


def listing(*dirs):
    """Every file under dirs with its size and mtime: to check that nothing was written."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for d in dirs if d.exists() for p in d.rglob('*')}


def one_line_error(capsys, main, argv, watched):
    before = listing(*watched)
    with pytest.raises(SystemExit) as exit_info:
        run_main(main, [str(a) for a in argv])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1
    lines = [line for line in err.splitlines() if not line.startswith('warning: ')]
    assert len(lines) == 1 and lines[0].startswith('error: '), err
    assert listing(*watched) == before
    return lines[0]


@pytest.fixture(scope='module')
def dirs(tiny_backpack_dir, tmp_path_factory):
    """A copy of the tiny Backpack, one with a truncated best.pt, and an empty dir (no checkpoint)."""
    root = tmp_path_factory.mktemp('entry_points')
    good, corrupt, empty = root / 'good', root / 'corrupt', root / 'empty'
    shutil.copytree(tiny_backpack_dir, good)
    shutil.copytree(tiny_backpack_dir, corrupt)
    data = (corrupt / 'best.pt').read_bytes()
    (corrupt / 'best.pt').write_bytes(data[:len(data) // 2])  # a copy cut short, as by a full disk
    empty.mkdir()
    (root / 'a.en').write_text('one\ntwo\nthree\n', encoding='utf-8')
    (root / 'a.fr').write_text('un\ndeux\n', encoding='utf-8')
    return {'root': root, 'good': good, 'corrupt': corrupt, 'empty': empty}


CHECKPOINT_CASES = [
    pytest.param('--device', 'cuda', 'good', 'CPU-only torch', marks=NO_CUDA, id='cuda-on-cpu-torch'),
    pytest.param('--device', 'gpu', 'good', "unknown --device 'gpu'", id='gpu'),
    pytest.param('--device', 'cpu', 'empty', 'no checkpoint in', id='missing-checkpoint'),
    pytest.param('--device', 'cpu', 'corrupt', 'best.pt is truncated or corrupt', id='corrupt-checkpoint'),
]


@pytest.mark.parametrize('option, value, which, message', CHECKPOINT_CASES + [
    pytest.param('--src_file', 'a.en', 'good', 'parallel files differ in length', id='src-tgt-lengths')])
def test_evaluate_py_one_line_errors(dirs, capsys, tmp_path, option, value, which, message):
    extra = ['--tgt_file', dirs['root'] / 'a.fr'] if option == '--src_file' else []
    value = dirs['root'] / value if option == '--src_file' else value
    out = tmp_path / 'results.json'
    line = one_line_error(capsys, evaluate.main, ['--out_dir', dirs[which], option, value, *extra, '--output', out],
                          [dirs[which]])
    assert message in line and not out.exists()


@pytest.mark.parametrize('option, value, which, message', CHECKPOINT_CASES)
def test_run_full_evaluation_py_one_line_errors(dirs, capsys, option, value, which, message):
    line = one_line_error(capsys, run_full_evaluation.main, ['--out_dir', dirs[which], option, value], [dirs[which]])
    assert message in line


def write_results(directory, text):
    (directory / 'evaluation_results.json').write_text(text, encoding='utf-8')


@pytest.mark.parametrize('case, message', [
    ('gpu', "unknown --device 'gpu'"),
    ('missing-checkpoint', 'no checkpoint in'),
    ('invalid-json', 'evaluation_results.json is not valid JSON'),
    ('not-results', "no 'model' and 'settings' objects"),
])
def test_compare_models_py_one_line_errors(dirs, capsys, tmp_path, case, message):
    backpack = tmp_path / 'backpack'
    shutil.copytree(dirs['good'], backpack)
    if case == 'invalid-json':
        write_results(backpack, '{"model": {"iter_num": 60}, "settings": ')  # cut short
    if case == 'not-results':
        write_results(backpack, '[1, 2, 3]')
    argv = ['--backpack_dir', backpack, '--transformer_dir', dirs['empty'] if case == 'missing-checkpoint' else backpack,
            '--device', 'gpu' if case == 'gpu' else 'cpu', '--output_dir', tmp_path / 'comparison']
    line = one_line_error(capsys, compare_models.main, argv, [backpack, dirs['empty']])
    assert message in line and not (tmp_path / 'comparison').exists()


@pytest.mark.parametrize('case, message', [
    ('missing', 'evaluation_results.json not found: run run_full_evaluation.py'),
    ('invalid-json', 'is not valid JSON'),
    ('malformed', 'evaluation_results.json is malformed ('),
])
def test_verify_evaluation_py_one_line_errors(dirs, capsys, tmp_path, case, message):
    out = tmp_path / 'model'
    shutil.copytree(dirs['good'], out)
    if case == 'invalid-json':
        write_results(out, '{"model": ')
    if case == 'malformed':
        # results of this very checkpoint, with one section of the wrong shape
        record = evaluate.checkpoint_record(out)
        write_results(out, json.dumps({'model': {'model_type': 'backpack', 'iter_num': 60, 'checkpoint': record},
                                       'settings': {}, 'perplexity': ['not', 'a', 'dict']}))
    line = one_line_error(capsys, verify_evaluation.main, ['--out_dir', out], [out])
    assert message in line


@pytest.mark.parametrize('script, args', [
    ('evaluate.py', ['--device', 'gpu']),
    ('run_full_evaluation.py', ['--device', 'gpu']),
    ('compare_models.py', ['--transformer_dir', '.', '--device', 'gpu']),
    ('verify_evaluation.py', []),
    ('sample.py', ['--device', 'gpu']),
    ('export_hf.py', ['--hf_dir', 'out/never_written']),
])
def test_entry_point_goes_through_run_main(dirs, script, args):
    flag = '--backpack_dir' if script == 'compare_models.py' else '--out_dir'
    result = subprocess.run([sys.executable, str(REPO / script), flag, str(dirs['empty']), *args], cwd=REPO,
                            capture_output=True, text=True, timeout=120, env={**os.environ, 'PYTHONWARNINGS': 'ignore'})
    assert result.returncode == 1 and result.stderr.startswith('error: '), result.stderr
    assert result.stderr.count('\n') == 1 and 'Traceback' not in result.stderr, result.stderr


def test_nothing_in_experiments_imports_evaluate():
    """The house's layering: experiments/ holds what evaluate.py composes (and the seed's three scripts), so it
    must not import evaluate.py; what both need (outdir.py: a run's model, tokenizer, results) lives below both.
    Checked on the source (any import form) and by importing every experiments module in a fresh interpreter."""
    import ast
    offenders = []
    for path in sorted((REPO / 'experiments').rglob('*.py')):
        for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            offenders += [f'{path.relative_to(REPO)}:{node.lineno}' for n in names if n.split('.')[0] == 'evaluate']
    assert not offenders, offenders
    modules = sorted('.'.join(p.relative_to(REPO).with_suffix('').parts) for p in (REPO / 'experiments').rglob('*.py')
                     if p.name not in ('__main__.py',))
    probe = f"import sys, importlib; [importlib.import_module(m) for m in {modules!r}]; print('evaluate' in sys.modules)"
    result = subprocess.run([sys.executable, '-c', probe], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == 'False'
