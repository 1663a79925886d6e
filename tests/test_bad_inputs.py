"""Every bad input is one line (issue 20, §2): `error: ...` on stderr, exit status 1, no traceback, nothing
written, and said before any work (before data or a model is loaded): train.py's settings (each number in its
range, the settings that must agree, --out_dir, a finetune's data), sample.py's and the evaluation scripts'
options, a full disk while a checkpoint is saved, --senses on a Transformer, and two run_full_evaluation.py on
one out_dir at once.

Most cases run in-process (fast); one subprocess per kind checks the entry point itself."""
import errno
import os
import shutil
import subprocess
import sys

import pytest
import torch

import checkpoint
import evaluate
import run_full_evaluation
import sample
import train
from checkpoint import OutDirLock
from conftest import REPO, TINY_TRAIN_ARGS as TINY
from errors import OutOfSpaceError, UserError
from test_entry_points import listing, one_line_error


def run_script(script, *args, cwd=REPO, prefix=()):
    return subprocess.run([sys.executable, *prefix, str(REPO / script), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300, env={**os.environ, 'PYTHONWARNINGS': 'ignore'})


def the_error(result):
    """The one stderr line of a failed run (status 1, no traceback)."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith('error: '), result.stderr
    return lines[0]


# ---- train.py

@pytest.mark.parametrize('args, message', [
    (['--learning_rate', -1], '--learning_rate -1.0: expected a number > 0'),
    (['--n_head', 3, '--n_embd', 128], '--n_embd 128 does not split into --n_head 3 attention heads'),
    (['--n_senses', 0], '--n_senses 0: expected a positive integer'),
    (['--n_senses', 3, '--n_embd', 32], '--n_embd 32 does not split into --n_senses 3'),
    (['--dropout', 1.0], '--dropout 1.0: expected a number in [0, 1)'),
    (['--min_lr', 1.0], '--min_lr 1 is above --learning_rate 0.01'),
    (['--lr_decay_iters', 2, '--warmup_iters', 5], '--lr_decay_iters 2 is below --warmup_iters 5'),
])
def test_train_py_bad_settings_are_one_line_before_any_work(args, message, tmp_path):
    # a data dir that does not exist: the settings are refused before it is even looked for
    result = run_script('train.py', *TINY, '--data_dir', tmp_path / 'no_data', '--out_dir', tmp_path / 'x', *args)
    assert message in the_error(result)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_train_py_out_dir_that_is_a_file_is_one_line(tmp_path):
    taken = tmp_path / 'results.txt'
    taken.write_text('not a directory')
    for out in (taken, taken / 'run'):
        line = the_error(run_script('train.py', *TINY, '--data_dir', tmp_path / 'no_data', '--out_dir', out))
        assert f'--out_dir {out}: {taken} is a file, not a directory' in line
    assert [p.name for p in tmp_path.iterdir()] == ['results.txt'] and taken.read_text() == 'not a directory'


def test_every_numeric_setting_of_train_py_has_a_range_and_a_bad_value_is_refused(monkeypatch):
    numeric = {k for k in train.CONFIG_KEYS if isinstance(getattr(train, k), (int, float))
               and not isinstance(getattr(train, k), bool)}
    assert numeric == set(train.SETTING_RANGES)
    for key, rule in train.SETTING_RANGES.items():
        low = float(rule.split()[-1]) if rule[0] == '>' else float(rule[1:].split(',')[0])
        bad = low if rule.startswith('> ') else low - 1  # just below the range
        with monkeypatch.context() as m:
            m.setattr(train, key, type(getattr(train, key))(bad))
            with pytest.raises(UserError, match=f'^--{key} '):
                train.check_settings()
    for key in ('dropout', 'beta1', 'beta2'):  # the upper end of [0, 1)
        with monkeypatch.context() as m:
            m.setattr(train, key, 1.0)
            with pytest.raises(UserError, match=rf'^--{key} 1.0: expected a number in \[0, 1\)'):
                train.check_settings()
    monkeypatch.setattr(train, 'learning_rate', float('inf'))  # 1e999 on the command line
    with pytest.raises(UserError, match='^--learning_rate inf: expected a number > 0'):
        train.check_settings()


def test_finetune_on_bpe_data_names_pretrained_path_and_the_data_it_needs(sample_data_dir, tmp_path):
    env_offline = {**os.environ, 'HF_HUB_OFFLINE': '1'}
    result = subprocess.run([sys.executable, str(REPO / 'train.py'), *map(str, TINY), '--data_dir', sample_data_dir,
                             '--out_dir', tmp_path / 'x', '--init_from', 'backpack-small'], cwd=REPO,
                            capture_output=True, text=True, timeout=120, env=env_offline)
    line = the_error(result)
    assert '--init_from backpack-small finetunes the Backpack of --pretrained_path stanfordnlp/backpack-gpt2' in line
    assert "needs data prepared with the GPT-2 tokenizer, but" in line and "uses 'bpe'" in line
    assert '--tokenizer gpt2 --out_dir data/europarl_gpt2 and pass --data_dir europarl_gpt2' in line
    assert not (tmp_path / 'x').exists()


# ---- a full disk while saving

def full_disk(obj, f, *args, **kwargs):
    f.write(b'half a checkpoint')
    raise OSError(errno.ENOSPC, 'No space left on device')


def test_a_full_disk_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / 'ckpt.pt'
    checkpoint.save_checkpoint({'w': torch.ones(4)}, path)
    before = path.read_bytes()
    monkeypatch.setattr(checkpoint.torch, 'save', full_disk)
    with pytest.raises(OutOfSpaceError) as info:
        checkpoint.save_checkpoint({'w': torch.zeros(3 * 2**20)}, path)  # 12 MB of float32
    assert str(info.value) == (f"no space left on {tmp_path} (12 MB needed); the previous ckpt.pt is left whole: "
                               f"free some space and run again") and info.value.errno == errno.ENOSPC
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ['ckpt.pt']  # no temp file
    def fsync_on_a_full_disk(fd):
        raise OSError(errno.ENOSPC, 'No space left on device')
    monkeypatch.setattr(os, 'fsync', fsync_on_a_full_disk)
    with pytest.raises(OutOfSpaceError, match='nothing was written'):
        checkpoint.save_json({'a': 1}, tmp_path / 'log.json')
    assert [p.name for p in tmp_path.iterdir()] == ['ckpt.pt']


FULL_DISK_TRAIN = """import system, errno, runpy, sys, torch
def full_disk(obj, f, *args, **kwargs):
    f.write(b'half a checkpoint')
    raise OSError(errno.ENOSPC, 'No space left on device')
torch.save = full_disk
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
"""


def test_train_py_on_a_full_disk_is_one_line_and_keeps_ckpt_pt(tiny_backpack_dir, tmp_path):
    out = tmp_path / 'run'
    out.mkdir()
    shutil.copy(tiny_backpack_dir / 'ckpt.pt', out / 'ckpt.pt')
    good = (out / 'ckpt.pt').read_bytes()
    result = run_script('train.py', '--init_from', 'resume', '--out_dir', out, '--max_iters', 61,
                        '--eval_interval', 1000, prefix=('-c', FULL_DISK_TRAIN))
    line = the_error(result)
    assert line.startswith(f'error: no space left on {out} (') and ' MB needed); the previous ckpt.pt is left whole' in line
    assert (out / 'ckpt.pt').read_bytes() == good and not list(out.glob('.*.tmp'))


# ---- sample.py

@pytest.fixture(scope='module')
def no_checkpoint(tmp_path_factory):
    """An out_dir without a checkpoint: an option error there (not 'no checkpoint') is said before any loading."""
    return tmp_path_factory.mktemp('no_checkpoint')


@pytest.mark.parametrize('args, message', [
    (['--top_k', '0'], '--top_k 0: expected a positive integer or None'),
    (['--max_new_tokens', '-5'], '--max_new_tokens -5: expected a positive integer'),
    (['--num_samples', '0'], '--num_samples 0: expected a positive integer'),
    (['--temperature', '0'], '--temperature 0.0: expected a number > 0'),
    (['--temperature', 'nan'], '--temperature nan: expected a number > 0'),
])
def test_sample_py_bad_options_are_one_line_before_loading(no_checkpoint, capsys, args, message):
    assert message in one_line_error(capsys, sample.main, ['--out_dir', no_checkpoint, *args], [no_checkpoint])


def test_sample_py_non_utf8_prompt_file_is_one_line(tiny_backpack_dir, tmp_path):
    prompt = tmp_path / 'prompt.txt'
    text = '<en> ' + 'Thank you. ' * 1000 + 'Merci, Monsieur le Pr\u00e9sident.'  # past the first 8 KiB read
    prompt.write_bytes(text.encode('latin-1'))
    line = the_error(run_script('sample.py', '--out_dir', tiny_backpack_dir, '--start', f'FILE:{prompt}'))
    offset = text.index('\u00e9')
    assert line == f"error: --start FILE:{prompt}: {prompt} is not UTF-8 text (byte 0xe9 at offset {offset}); " \
                   f"save it as UTF-8"


def test_sample_py_top_k_none_samples_from_every_token(tiny_backpack_dir, capsys):
    sample.main(['--out_dir', str(tiny_backpack_dir), '--start', '<en> The', '--top_k', 'none', '--num_samples', '1',
                 '--max_new_tokens', '3'])
    assert capsys.readouterr().out.startswith('--- sample 1\n<en> The')


# ---- evaluate.py and run_full_evaluation.py

EVALUATION_CASES = [
    (['--translation_samples', '-1'], '--translation_samples -1: expected an integer >= 0'),
    (['--beam_size', '0'], '--beam_size 0: expected a positive integer'),
    (['--sentence_pairs', '1'], '--sentence_pairs 1: expected an integer >= 2'),
]


@pytest.mark.parametrize('args, message', EVALUATION_CASES + [
    (['--max_abs_diff', '-0.5'], '--max_abs_diff -0.5: expected a number >= 0')])
def test_evaluate_py_bad_options_are_one_line_before_loading(no_checkpoint, capsys, args, message):
    line = one_line_error(capsys, evaluate.main, ['--out_dir', no_checkpoint, *args], [no_checkpoint])
    assert message in line


@pytest.mark.parametrize('args, message', EVALUATION_CASES)
def test_run_full_evaluation_py_bad_options_are_one_line_before_loading(no_checkpoint, capsys, args, message):
    line = one_line_error(capsys, run_full_evaluation.main, ['--out_dir', no_checkpoint, *args], [no_checkpoint])
    assert message in line


def test_evaluate_py_beam_size_0_as_a_user_runs_it(tiny_backpack_dir):
    before = listing(tiny_backpack_dir)
    assert '--beam_size 0: expected a positive integer' in the_error(
        run_script('evaluate.py', '--out_dir', tiny_backpack_dir, '--beam_size', 0))
    assert listing(tiny_backpack_dir) == before


def test_senses_of_a_transformer_is_one_line(tiny_transformer_dir, tmp_path):
    out = tmp_path / 'results.json'
    line = the_error(run_script('evaluate.py', '--out_dir', tiny_transformer_dir, '--senses', '--output', out))
    assert line == (f"error: --senses: {tiny_transformer_dir} holds a Transformer, which has no senses; drop --senses, "
                    f"or pass the out_dir of a Backpack")
    assert not out.exists()


@pytest.fixture
def evaluated_copy(tiny_backpack_dir, tmp_path):
    out = tmp_path / 'model'
    shutil.copytree(tiny_backpack_dir, out)
    return out


def test_a_second_run_full_evaluation_on_the_same_out_dir_is_refused(evaluated_copy, capsys):
    with OutDirLock(evaluated_copy, 'run_full_evaluation.py') as lock:  # as the first run holds it
        assert open(lock.path).read() == f'{os.getpid()}\n'
        before = listing(evaluated_copy)
        line = the_error(run_script('run_full_evaluation.py', '--out_dir', evaluated_copy))
        assert line == (f"error: {evaluated_copy} is being written by another run_full_evaluation.py (pid {os.getpid()}, "
                        f"lock {lock.path}): wait for it to end, or use another --out_dir")
        assert listing(evaluated_copy) == before
        assert 'is being written by another' in one_line_error(
            capsys, run_full_evaluation.main, ['--out_dir', evaluated_copy], [evaluated_copy])
    assert not os.path.exists(lock.path)  # removed at the end


def test_a_stale_lock_is_taken_over(evaluated_copy):
    dead = subprocess.Popen([sys.executable, '-c', 'pass'])
    dead.wait()  # a pid that no process has now
    lock = OutDirLock(evaluated_copy, 'run_full_evaluation.py')
    for stale in (f'{dead.pid}\n', 'garbage', ''):
        with open(lock.path, 'w') as f:
            f.write(stale)
        with lock:
            assert open(lock.path).read() == f'{os.getpid()}\n'
        assert not os.path.exists(lock.path)
