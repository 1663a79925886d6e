"""train.py end to end on the bundled sample: learning, checkpoints, exact resume, signals, errors, DDP."""
import json
import math
import os
import shlex
import shutil
import signal
import stat
import subprocess
import sys

import numpy as np
import pytest
import torch

from checkpoint import load_model
from conftest import REPO, TINY_TRAIN_ARGS as TINY, run_train as train


def read_log(out_dir):
    return json.loads((out_dir / 'training_log.json').read_text())


def start_train(*args):
    """train.py running in the background, its stdout and stderr merged into proc.stdout."""
    return subprocess.Popen([sys.executable, str(REPO / 'train.py'), *map(str, args)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_line(proc, prefix):
    for line in proc.stdout:
        if line.startswith(prefix):
            return line
    raise AssertionError(f"train.py ended (status {proc.wait()}) without a line starting with {prefix!r}")


def same_state(a, b):
    """Whether two state dicts (nested dicts/lists of tensors and plain values) are equal."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(map(same_state, a, b))
    return a == b


def test_tiny_backpack_dir_learns_and_writes_its_outputs(tiny_backpack_dir, sample_data_dir):
    log = read_log(tiny_backpack_dir)
    vocab = json.loads((sample_data_dir / 'meta.json').read_text())['vocab_size']
    first, last = log['evals'][0], log['evals'][-1]
    assert [e['iter'] for e in log['evals']] == [0, 20, 40, 60] and len(log['train_loss']) == 60
    assert abs(first['val'] - math.log(vocab)) < 0.3  # a fresh model is close to uniform
    assert last['val'] < first['val'] - 1.0 and last['val'] < math.log(vocab) - 1.0
    for lang in ('en', 'fr'):
        assert last[f'val_{lang}_ppl'] == pytest.approx(math.exp(last[f'val_{lang}']))
        assert 0 < last[f'val_{lang}_bpb'] < first[f'val_{lang}_bpb']
    # the probe words' senses, keeping tokens of each probe's language
    senses = last['senses']
    assert set(senses) == {'en:bank', 'en:right', 'en:play', 'en:parliament',
                           'fr:droit', 'fr:livre', 'fr:temps', 'fr:parlement'}
    assert all(len(s) == 4 and all(len(top) == 5 for top in s) for s in senses.values())
    # what bit-reproducibility depends on beyond the seed: the thread count and the CPU
    assert log['machine']['threads'] == torch.get_num_threads() and log['machine']['cpu']
    for name in ('ckpt.pt', 'best.pt', 'loss_curve.png', 'meta.json', 'tokenizer/tokenizer.json', 'words.json'):
        assert (tiny_backpack_dir / name).exists(), name


def test_checkpoints_load_weights_only_and_best_reproduces_its_val_loss(tiny_backpack_dir, sample_data_dir):
    ckpt = torch.load(tiny_backpack_dir / 'ckpt.pt', weights_only=True)
    assert {'model', 'optimizer', 'scaler', 'iter_num', 'best_val_loss', 'config', 'model_args', 'meta',
            'training_log', 'rng'} <= set(ckpt)
    assert ckpt['iter_num'] == 60 and {'rng', 'sampler'} <= set(ckpt['rng'][0])
    umask = os.umask(0)
    os.umask(umask)
    for name in ('ckpt.pt', 'best.pt', 'training_log.json'):  # as any new file, not mkstemp's 0600
        assert stat.S_IMODE((tiny_backpack_dir / name).stat().st_mode) == 0o666 & ~umask, name
    best = torch.load(tiny_backpack_dir / 'best.pt', weights_only=True)
    model, info = load_model(tiny_backpack_dir, 'cpu')
    assert info['iter_num'] == best['iter_num']
    # recompute the val loss on the windows train.py's evaluation draws (split index 1, fixed seed)
    from train import Batches
    cfg = best['config']
    batches = Batches(sample_data_dir / 'val.bin', np.uint16, cfg['block_size'], cfg['batch_size'], 0)
    rng = np.random.default_rng(cfg['seed'] + 1000)
    with torch.no_grad():
        losses = [model(*batches.sample(rng))[1].item() for _ in range(cfg['eval_iters'])]
    assert np.mean(losses) == pytest.approx(best['val_loss'], abs=1e-5)


def test_resumed_run_equals_uninterrupted_run(sample_data_dir, tmp_path):
    common = [*TINY, '--data_dir', sample_data_dir, '--eval_interval', 10, '--dropout', 0.1]
    train(*common, '--out_dir', tmp_path / 'whole', '--max_iters', 30)
    train(*common, '--out_dir', tmp_path / 'split', '--max_iters', 20)
    # the resume names only what changes: every other setting (data, batch, lr schedule...) is the saved run's
    resumed = train('--init_from', 'resume', '--out_dir', tmp_path / 'split', '--max_iters', 30)
    assert 'x 8 x 32 tokens per iteration' in resumed.stdout  # TINY's batch_size and block_size, not the defaults
    notes = [line for line in resumed.stdout.splitlines() if 'saved run' in line]
    assert notes == ["note: --init_from resume continues the saved run's settings, except these given now: "
                     "--max_iters 30 (saved 20)"]
    whole, split = read_log(tmp_path / 'whole'), read_log(tmp_path / 'split')
    assert len(whole['train_loss']) == 30
    assert split['train_loss'] == whole['train_loss']  # bit-identical, dropout included
    strip = lambda evals: [{k: v for k, v in e.items() if k != 'elapsed_s'} for e in evals]  # noqa: E731
    assert strip(split['evals']) == strip(whole['evals'])
    configs = [torch.load(tmp_path / d / 'ckpt.pt', weights_only=True)['config'] for d in ('whole', 'split')]
    own = ('out_dir', 'init_from')
    assert {k: v for k, v in configs[0].items() if k not in own} == {k: v for k, v in configs[1].items()
                                                                      if k not in own}


def test_resume_names_the_settings_given_now_that_differ_from_the_saved_run(sample_data_dir, tmp_path):
    out = tmp_path / 'run'
    train(*TINY, '--data_dir', sample_data_dir, '--out_dir', out, '--max_iters', 6, '--eval_interval', 3)
    result = train('--init_from', 'resume', '--out_dir', out, '--max_iters', 9, '--learning_rate', 2e-3,
                   '--batch_size', 8, '--n_layer', 3)
    notes = [line for line in result.stdout.splitlines() if 'saved run' in line]
    # batch_size equals the saved one; n_layer is the model's, said by the warning on what the model ignores
    assert notes == ["note: --init_from resume continues the saved run's settings, except these given now: "
                     "--max_iters 9 (saved 6), --learning_rate 0.002 (saved 0.01)"]
    assert '--n_layer 3 (the model has 1)' in result.stderr
    lr = read_log(out)['evals'][-1]['lr']  # iter 9 on the saved schedule (warmup 5, decay to 100), peak 2e-3
    min_lr = 2e-4  # config/train_europarl_tiny.py's
    assert lr == pytest.approx(min_lr + 0.5 * (1 + math.cos(math.pi * 4 / 95)) * (2e-3 - min_lr))


def test_sense_probes_run_in_eval_mode_and_leave_training_untouched(sample_data_dir):
    """The probes after each evaluation use the model without dropout and draw nothing from the training
    RNG: a run that probes trains exactly as one that does not."""
    import train as train_module
    from model import BackpackLM, ModelConfig
    from tokenizer import load_tokenizer
    tokenizer = load_tokenizer(sample_data_dir)
    torch.manual_seed(0)
    model = BackpackLM(ModelConfig(block_size=16, vocab_size=tokenizer.meta['vocab_size'], n_layer=1, n_head=2,
                                   n_embd=32, n_senses=4, dropout=0.5))
    rng = torch.get_rng_state()
    first = train_module.probe_senses(model, tokenizer, 'cpu')
    assert torch.equal(torch.get_rng_state(), rng) and model.training
    assert train_module.probe_senses(model, tokenizer, 'cpu') == first  # no dropout: deterministic
    assert train_module.probe_senses(model.eval(), tokenizer, 'cpu') == first and not model.training


def test_sigterm_saves_the_resume_point_and_exits_0(sample_data_dir, tmp_path):
    out = tmp_path / 'sig'
    args = [*TINY, '--data_dir', sample_data_dir, '--out_dir', out, '--max_iters', 100000,
            '--eval_interval', 1000, '--log_interval', 1]
    proc = subprocess.Popen([sys.executable, str(REPO / 'train.py'), *map(str, args)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    for line in proc.stdout:  # wait until training really runs
        if line.startswith('iter 3:'):
            break
    proc.send_signal(signal.SIGTERM)
    rest = proc.stdout.read()
    assert proc.wait(timeout=60) == 0, rest
    ckpt = torch.load(out / 'ckpt.pt', weights_only=True)
    assert 3 <= ckpt['iter_num'] < 100000 and len(ckpt['training_log']['train_loss']) == ckpt['iter_num']
    assert f"stopped by signal at iter {ckpt['iter_num']}" in rest and str(out / 'ckpt.pt') in rest


def test_sigint_saves_the_resume_point_exits_130_and_names_the_full_resume_command(sample_data_dir, tmp_path):
    """Ctrl-C stops what the user started: ckpt.pt is saved, then exit status 130 (128 + SIGINT), so that a
    script (set -e) stops too; the hint is the whole command, --config included, and it continues the run."""
    out = tmp_path / 'ctrl-c'
    proc = start_train(*TINY, '--data_dir', sample_data_dir, '--out_dir', out, '--max_iters', 100000,
                       '--eval_interval', 1000, '--log_interval', 1, '--overwrite')
    wait_for_line(proc, 'iter 3:')
    proc.send_signal(signal.SIGINT)
    rest = proc.stdout.read()
    assert proc.wait(timeout=60) == 130, rest
    ckpt = torch.load(out / 'ckpt.pt', weights_only=True)
    done = ckpt['iter_num']
    assert 3 <= done < 100000 and len(ckpt['training_log']['train_loss']) == done
    hint = next(line for line in rest.splitlines() if line.startswith(f'stopped by signal at iter {done}; '))
    command = hint.split('; continue with: ', 1)[1]
    assert command.startswith(f'python {REPO / "train.py"} --config train_europarl_tiny ')
    assert f' --out_dir {out} ' in command and command.endswith(' --init_from resume') and '--overwrite' not in command
    argv = shlex.split(command)
    resumed = train(*argv[2:], '--max_iters', done + 2)  # the hint, 2 iterations further
    notes = [line for line in resumed.stdout.splitlines() if 'saved run' in line]
    assert notes == ["note: --init_from resume continues the saved run's settings, except these given now: "
                     f"--max_iters {done + 2} (saved 100000)"]  # every other setting as saved
    assert torch.load(out / 'ckpt.pt', weights_only=True)['iter_num'] == done + 2


def test_sigint_during_the_first_step_exits_130_too(sample_data_dir, tmp_path):
    proc = start_train(*TINY, '--data_dir', sample_data_dir, '--out_dir', tmp_path / 'sig', '--max_iters', 1,
                       '--eval_iters', 1, '--gradient_accumulation_steps', 400)
    wait_for_line(proc, 'eval 0:')
    proc.send_signal(signal.SIGINT)
    rest = proc.stdout.read()
    assert proc.wait(timeout=60) == 130, rest
    assert 'stopped by signal at iter 0; continue with: python ' in rest
    assert torch.load(tmp_path / 'sig' / 'ckpt.pt', weights_only=True)['iter_num'] == 0


STUB_PYTHON = """#!/usr/bin/env bash
# stands for python in a copy of quickstart.sh: logs each command; the Backpack's training is interrupted once
echo "$*" >> "$QUICKSTART_LOG"
if [[ "$*" == *"train.py"*"out/tiny_backpack"* && "$*" != *"--init_from resume"* ]]; then
    mkdir -p out/tiny_backpack && touch out/tiny_backpack/ckpt.pt
    echo "stopped by signal at iter 7; continue with: python train.py ... --init_from resume"
    exit 130
fi
"""


def test_quickstart_stops_at_an_interrupted_step_and_goes_on_from_it(tmp_path):
    (tmp_path / 'quickstart.sh').write_text((REPO / 'quickstart.sh').read_text())
    (tmp_path / 'bin').mkdir()
    (tmp_path / '.venv' / 'bin').mkdir(parents=True)
    (tmp_path / '.venv' / 'bin' / 'activate').write_text(f'PATH="{tmp_path / "bin"}:$PATH"\n')
    (tmp_path / 'bin' / 'python').write_text(STUB_PYTHON)
    (tmp_path / 'bin' / 'python').chmod(0o755)
    log = tmp_path / 'commands.log'
    env = {**os.environ, 'QUICKSTART_LOG': str(log)}

    def quickstart(*args):
        result = subprocess.run(['bash', str(tmp_path / 'quickstart.sh'), *args], capture_output=True, text=True,
                                timeout=60, env=env)
        commands = log.read_text().splitlines() if log.exists() else []
        log.unlink(missing_ok=True)
        return result, commands

    result, commands = quickstart()
    assert result.returncode == 130, result.stdout + result.stderr
    assert result.stderr.strip().splitlines()[-1] == ('quickstart.sh stopped at step 3/8 (exit status 130); go on '
                                                      'from there with: bash quickstart.sh --from 3')
    assert commands[-1].startswith('train.py --config train_europarl_tiny --model_type backpack')
    assert not any('tiny_transformer' in c for c in commands)  # step 4 and later did not run

    result, commands = quickstart('--from', '3')
    assert result.returncode == 0 and '[2/8] skipped (--from 3)' in result.stdout, result.stdout + result.stderr
    assert not any('prepare.py' in c for c in commands)
    trains = [c for c in commands if c.startswith('train.py')]
    assert trains == ['train.py --config train_europarl_tiny --model_type backpack --out_dir out/tiny_backpack '
                      '--init_from resume',
                      'train.py --config train_europarl_tiny --model_type transformer --out_dir out/tiny_transformer '
                      '--overwrite']
    assert commands[-1].startswith('compare_models.py') and result.stderr == ''
    assert quickstart('--from', '9')[0].returncode == 2


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_backpack_dir, sample_data_dir, tmp_path):
    out = tmp_path / 'nan'
    out.mkdir()
    good = (tiny_backpack_dir / 'ckpt.pt').read_bytes()
    (out / 'ckpt.pt').write_bytes(good)
    # an absurd learning rate without clipping blows the weights up within a few steps
    result = train(*TINY, '--data_dir', sample_data_dir, '--out_dir', out, '--init_from', 'resume', '--max_iters', 100,
                   '--learning_rate', 1e30, '--min_lr', 1e30, '--grad_clip', 0.0, '--eval_interval', 1000,
                   check=False)
    assert result.returncode == 1
    assert 'training loss is nan' in result.stderr or 'training loss is inf' in result.stderr
    assert (out / 'ckpt.pt').read_bytes() == good


@pytest.mark.parametrize('args, message', [
    (['--model_type', 'rnn'], "--model_type 'rnn'"),
    (['--init_from', 'nowhere'], "--init_from 'nowhere'"),
    (['--dtype', 'float8'], "--dtype 'float8'"),
    (['--data_dir', 'no_such_data'], 'no prepared data'),
    (['--init_from', 'resume'], 'does not exist'),
    (['--init_from', 'backpack-small'], 'needs data prepared with the GPT-2 tokenizer'),
    (['--max_iters', 'ten'], '--max_iters: expected int'),
    (['--eval_iters', '0'], '--eval_iters 0: expected a positive integer'),
    (['--device', 'gpu'], "unknown --device 'gpu'"),
    (['--device', 'cuda'] if not torch.cuda.is_available() else ['--device', 'cuda:99'], '--device cuda'),
])
def test_config_errors_are_one_line(args, message, sample_data_dir, tmp_path):
    result = train(*TINY, '--data_dir', sample_data_dir, '--out_dir', tmp_path / 'x', *args, check=False)
    assert result.returncode != 0 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / 'x').exists()  # nothing written


def test_resume_refuses_the_other_model_type(tiny_backpack_dir, sample_data_dir, tmp_path):
    out = tmp_path / 'other'
    out.mkdir()
    (out / 'ckpt.pt').write_bytes((tiny_backpack_dir / 'ckpt.pt').read_bytes())
    result = train(*TINY, '--data_dir', sample_data_dir, '--out_dir', out, '--init_from', 'resume',
                   '--model_type', 'transformer', check=False)
    assert result.returncode != 0
    assert 'holds a backpack model, but --model_type is transformer' in result.stderr


def torchrun(*args):
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    return subprocess.run([sys.executable, '-m', 'torch.distributed.run', *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=300, env=env)


def test_two_ranks_equal_one_process_with_accumulation_and_resume_across_world_sizes(sample_data_dir, tmp_path):
    # one global batch of 2 x 8 sequences per iteration: 2 ranks x 1 micro-step, or 1 process x 2 micro-steps
    args = [*TINY, '--data_dir', sample_data_dir, '--eval_interval', 5, '--gradient_accumulation_steps', 2]
    result = torchrun('--standalone', '--nproc_per_node=2', REPO / 'train.py', *args, '--out_dir', tmp_path / 'ddp',
                      '--max_iters', 10)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert '2 process(es) x 1 micro-steps x 8 x 32 tokens' in result.stdout
    assert result.stdout.count('saved ') == 2  # rank 0 alone reports (iter 5 and 10)
    train(*args, '--out_dir', tmp_path / 'one', '--max_iters', 10)
    ddp, one = (torch.load(tmp_path / d / 'ckpt.pt', weights_only=True) for d in ('ddp', 'one'))
    assert ddp['iter_num'] == one['iter_num'] == 10 and len(ddp['rng']) == 2  # both ranks' RNG states
    np.testing.assert_allclose(ddp['training_log']['train_loss'], one['training_log']['train_loss'], rtol=1e-5)
    key_bias = slice(32, 64)  # the weight head's key bias has a zero gradient (softmax ignores a shift), so
    for name, weight in one['model'].items():  # Adam's update of it is rounding noise divided by its own size
        a, b = ddp['model'][name], weight
        if name == 'sense_weight_net.bias':
            torch.testing.assert_close(a[key_bias], b[key_bias], rtol=0, atol=1e-2)
            a, b = a[:32], b[:32]
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
    # a single process resumes the 2-rank run on the same batches as the single-process run
    resumed = train(*args, '--out_dir', tmp_path / 'ddp', '--max_iters', 15, '--init_from', 'resume')
    assert 'checkpoint written by 2 process(es), resuming with 1' in resumed.stdout
    train(*args, '--out_dir', tmp_path / 'one', '--max_iters', 15, '--init_from', 'resume')
    np.testing.assert_allclose(read_log(tmp_path / 'ddp')['train_loss'], read_log(tmp_path / 'one')['train_loss'],
                               rtol=1e-5)


def test_the_readme_torchrun_command_runs(sample_data_dir, tmp_path):
    lines = [line for line in (REPO / 'README.md').read_text().splitlines() if line.startswith('torchrun ')]
    assert len(lines) == 1, lines
    argv = shlex.split(lines[0])
    assert '--nproc_per_node=4' in argv and 'train.py' in argv
    argv[argv.index('--nproc_per_node=4')] = '--nproc_per_node=2'  # two gloo processes on a CPU machine
    argv[argv.index('train.py')] = str(REPO / 'train.py')
    # the line's own settings (the scratch config: gradient_accumulation_steps=1) with a tiny model and data
    result = torchrun(*argv[1:], '--device', 'cpu', '--dtype', 'float32', '--data_dir', sample_data_dir,
                      '--out_dir', tmp_path / 'out', '--block_size', 32, '--n_layer', 1, '--n_head', 2, '--n_embd', 32,
                      '--n_senses', 4, '--batch_size', 8, '--max_iters', 2, '--eval_interval', 2, '--eval_iters', 1,
                      '--log_interval', 1)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    note = ('note: gradient_accumulation_steps=1 does not split over 2 processes: each runs 1 micro-step(s) of '
            '4 sequences, keeping the global batch of 8 sequences')
    assert result.stdout.count(note) == 1, result.stdout
    ckpt = torch.load(tmp_path / 'out' / 'ckpt.pt', weights_only=True)
    assert ckpt['iter_num'] == 2 and len(ckpt['rng']) == 2


@pytest.mark.parametrize('accumulation, batch, world, expected', [
    (8, 32, 4, (2, 32)),   # nanoGPT: accumulation divided among the processes
    (1, 32, 4, (1, 8)),    # the batch divided instead
    (3, 32, 2, (2, 24)),   # 48 sequences each, in micro-steps of at most 32
    (1, 3, 2, (1, 3)),     # 3 sequences do not split over 2 processes: the global batch grows to 6
])
def test_the_global_batch_is_kept_when_it_splits(accumulation, batch, world, expected):
    from train import split_batch
    accum, micro, note = split_batch(accumulation, batch, world)
    assert (accum, micro) == expected
    assert (note is None) == (accumulation % world == 0)
    if world * accum * micro != accumulation * batch:
        assert 'grows from 3 to 6 sequences' in note


def test_scratch_refuses_an_out_dir_holding_a_model_unless_overwrite(sample_data_dir, tmp_path):
    out = tmp_path / 'taken'
    out.mkdir()
    (out / 'best.pt').write_bytes(b'the best weights of a long run')
    args = [*TINY, '--data_dir', sample_data_dir, '--out_dir', out, '--max_iters', 0, '--eval_iters', 1]
    result = train(*args, check=False)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert str(out / 'best.pt') in result.stderr
    assert all(option in result.stderr for option in ('--init_from resume', '--out_dir', '--overwrite'))
    assert [p.name for p in out.iterdir()] == ['best.pt'] and (out / 'best.pt').read_bytes().startswith(b'the best')
    train(*args, '--overwrite')
    assert torch.load(out / 'best.pt', weights_only=True)['iter_num'] == 0


def test_resume_says_which_model_settings_it_ignores(tiny_backpack_dir, sample_data_dir, tmp_path):
    out = tmp_path / 'resumed'
    out.mkdir()
    shutil.copy(tiny_backpack_dir / 'ckpt.pt', out / 'ckpt.pt')
    result = train(*TINY, '--data_dir', sample_data_dir, '--out_dir', out, '--init_from', 'resume', '--max_iters', 60,
                   '--n_layer', 3, '--n_embd', 64)
    warnings = [line for line in result.stderr.splitlines() if line.startswith('warning:')]
    assert len(warnings) == 1, result.stderr
    assert '--n_layer 3 (the model has 1)' in warnings[0] and '--n_embd 64 (the model has 32)' in warnings[0]


@pytest.mark.parametrize('flag, message', [(['--dtype', 'float16'], '--dtype float16 on the CPU is emulated'),
                                           (['--compile'], '--compile on the CPU')])
def test_settings_pathologically_slow_on_the_cpu_are_said_at_start_up(flag, message, sample_data_dir, tmp_path):
    # --init_from resume without a checkpoint stops the run right after the start-up checks
    result = train(*TINY, '--data_dir', sample_data_dir, '--out_dir', tmp_path / 'x', '--init_from', 'resume', *flag,
                   check=False)
    warnings = [line for line in result.stderr.splitlines() if line.startswith('warning:')]
    assert len(warnings) == 1 and message in warnings[0], result.stderr


def test_sigterm_during_the_first_step_stops_at_once_in_the_state_before_it(sample_data_dir, tmp_path):
    # 400 micro-steps make the first iteration last seconds; a signal ends it between two of them, and the
    # resume point is the iteration's start: the same state as a run that stopped there (dropout RNG included)
    args = [*TINY, '--data_dir', sample_data_dir, '--eval_iters', 1, '--dropout', 0.1,
            '--gradient_accumulation_steps', 400]
    proc = start_train(*args, '--out_dir', tmp_path / 'sig', '--max_iters', 1)
    wait_for_line(proc, 'eval 0:')
    proc.send_signal(signal.SIGTERM)
    rest = proc.stdout.read()
    assert proc.wait(timeout=60) == 0, rest
    assert 'stopped by signal at iter 0' in rest
    train(*args, '--out_dir', tmp_path / 'zero', '--max_iters', 0)
    stopped, zero = (torch.load(tmp_path / d / 'ckpt.pt', weights_only=True) for d in ('sig', 'zero'))
    assert stopped['iter_num'] == zero['iter_num'] == 0 and stopped['training_log']['train_loss'] == []
    assert same_state(stopped['model'], zero['model']) and stopped['evaluated_at'] == zero['evaluated_at'] == 0
    # what the loop draws from: the sampler and torch's RNG (dropout); Python's and numpy's are seeded by the OS
    assert stopped['rng'][0]['sampler'] == zero['rng'][0]['sampler']
    assert torch.equal(stopped['rng'][0]['rng']['torch'], zero['rng'][0]['rng']['torch'])
    assert stopped['optimizer']['state'] == zero['optimizer']['state'] == {}  # no step taken (lr is set per step)


def test_a_slow_evaluation_shows_progress_and_a_sigterm_stops_it(sample_data_dir, tmp_path):
    out = tmp_path / 'sig'
    proc = start_train(*TINY, '--data_dir', sample_data_dir, '--out_dir', out, '--eval_iters', 5000, '--max_iters', 5)
    line = wait_for_line(proc, 'eval 0: train batch ')  # after EVAL_PROGRESS_S seconds of a minute's evaluation
    assert '/20000 batches in ' in line and 's left' in line
    proc.send_signal(signal.SIGTERM)
    rest = proc.stdout.read()
    assert proc.wait(timeout=30) == 0, rest
    ckpt = torch.load(out / 'ckpt.pt', weights_only=True)
    assert ckpt['iter_num'] == 0 and ckpt['evaluated_at'] == -1 and ckpt['training_log']['evals'] == []
    assert 'stopped by signal at iter 0' in rest


def test_sample_py_generates_from_the_checkpoint(tiny_backpack_dir):
    result = subprocess.run([sys.executable, str(REPO / 'sample.py'), '--out_dir', str(tiny_backpack_dir), '--start',
                             '<en> The Parliament <fr>', '--greedy', '--num_samples', '2', '--max_new_tokens', '8'],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    samples = [s.split('\n', 1)[1] for s in result.stdout.split('--- sample ')[1:]]
    assert len(samples) == 1 and 'printing 1 sample' in result.stderr  # greedy: the others would be identical
    assert samples[0].startswith('<en> The Parliament <fr>') and len(samples[0].split()) > 4


def test_finetune_from_a_backpack_gpt2_checkpoint(gpt2_data_dir, tmp_path):
    from conftest import write_random_backpack_gpt2
    pretrained = tmp_path / 'backpack-gpt2'
    write_random_backpack_gpt2(pretrained, vocab_size=50264, n_positions=64, n_layer=1, n_head=2, n_embd=16,
                               num_senses=4, sense_intermediate_scale=2)
    out = tmp_path / 'finetune'
    train('--config', 'train_europarl_finetune', '--device', 'cpu', '--data_dir', gpt2_data_dir, '--out_dir', out,
          '--pretrained_path', pretrained, '--block_size', 32, '--batch_size', 4, '--gradient_accumulation_steps', 1,
          '--max_iters', 4, '--eval_interval', 2, '--eval_iters', 2, '--log_interval', 1, '--dtype', 'float32')
    ckpt = torch.load(out / 'ckpt.pt', weights_only=True)
    assert ckpt['model_args']['block_size'] == 32 and ckpt['model_args']['vocab_size'] == 50264
    n_ids = json.loads((gpt2_data_dir / 'meta.json').read_text())['vocab_size']
    assert n_ids < 50264 and ckpt['model_args']['tokenizer_vocab_size'] == n_ids  # the rows past it are padding
    assert ckpt['model_args']['bias'] and ckpt['model_args']['scale_attn_by_inverse_layer_idx']
    assert ckpt['model']['transformer.wpe.weight'].shape == (32, 16)  # cropped from 64 positions
    log = read_log(out)
    assert len(log['train_loss']) == 4 and all(math.isfinite(v) for v in log['train_loss'])
    # and it resumes as any run
    train('--config', 'train_europarl_finetune', '--device', 'cpu', '--data_dir', gpt2_data_dir, '--out_dir', out,
          '--block_size', 32, '--batch_size', 4, '--gradient_accumulation_steps', 1, '--max_iters', 6,
          '--eval_interval', 2, '--eval_iters', 2, '--dtype', 'float32', '--init_from', 'resume')
    assert len(read_log(out)['train_loss']) == 6


def test_finetune_without_reachable_weights_is_one_line(gpt2_data_dir, tmp_path, monkeypatch):
    # the config's default is the hub name; offline mode makes it unreachable even on a connected machine
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    result = train('--config', 'train_europarl_finetune', '--device', 'cpu', '--data_dir', gpt2_data_dir,
                   '--out_dir', tmp_path / 'x', check=False, timeout=120)
    assert result.returncode != 0 and 'offline, pass a local directory' in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize('path', ['{tmp}/nowhere/backpack-gpt2', './nowhere', 'a/b/c'])
def test_a_missing_local_pretrained_path_is_named_not_sent_to_the_hub(path, gpt2_data_dir, tmp_path, monkeypatch):
    """A path no hub id can look like (absolute, ./x, several slashes) is a missing directory, not a hub
    failure; the hub is not even asked (its variables point nowhere)."""
    monkeypatch.setenv('HF_ENDPOINT', 'http://127.0.0.1:9')
    path = path.format(tmp=tmp_path)
    result = train('--config', 'train_europarl_finetune', '--device', 'cpu', '--data_dir', gpt2_data_dir,
                   '--out_dir', tmp_path / 'x', '--pretrained_path', path, check=False, timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert f'--pretrained_path {path}: no such directory' in lines[0] and 'hub' not in lines[0]
    assert not (tmp_path / 'x').exists()


def test_a_time_budget_ends_the_run_with_an_evaluation_and_counts_resumed_segments(sample_data_dir, tmp_path):
    """--max_minutes bounds the whole run's wall-clock (what equal-compute comparisons fix): past it the run
    evaluates once more, saves ckpt.pt and ends; a resumed run counts the time already spent."""
    out = tmp_path / 'budget'
    common = [*TINY, '--data_dir', sample_data_dir, '--out_dir', out, '--max_iters', 100000,
              '--lr_decay_iters', 100000, '--eval_interval', 100000]
    result = train(*common, '--max_minutes', 0.1)
    assert 'time budget of 0.1 min reached at iter' in result.stdout
    log = read_log(out)
    first_end = log['evals'][-1]['iter']
    assert len(log['evals']) == 2 and first_end == len(log['train_loss']) > 0  # iteration 0 and the end
    assert 6 <= log['elapsed_s'] < 30
    ckpt = torch.load(out / 'ckpt.pt', weights_only=True)
    assert ckpt['iter_num'] == first_end and ckpt['evaluated_at'] == first_end
    # resumed with its budget already spent: no iteration runs (the end was evaluated already)
    result = train(*common, '--init_from', 'resume', '--max_minutes', 0.1)
    assert read_log(out)['evals'][-1]['iter'] == first_end and len(read_log(out)['train_loss']) == first_end
    result = train(*common, '--init_from', 'resume', '--max_minutes', 0.2)  # 6 more seconds
    log = read_log(out)
    assert log['evals'][-1]['iter'] > first_end and 12 <= log['elapsed_s'] < 60
