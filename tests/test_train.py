"""train.py end to end on the bundled sample: learning, checkpoints, exact resume, signals, errors, DDP."""
import json
import math
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from checkpoint import load_model
from conftest import REPO, TINY_TRAIN_ARGS as TINY, run_train as train


def read_log(out_dir):
    return json.loads((out_dir / 'training_log.json').read_text())


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
    for name in ('ckpt.pt', 'best.pt', 'loss_curve.png', 'meta.json', 'tokenizer/tokenizer.json', 'words.json'):
        assert (tiny_backpack_dir / name).exists(), name


def test_checkpoints_load_weights_only_and_best_reproduces_its_val_loss(tiny_backpack_dir, sample_data_dir):
    ckpt = torch.load(tiny_backpack_dir / 'ckpt.pt', weights_only=True)
    assert {'model', 'optimizer', 'scaler', 'iter_num', 'best_val_loss', 'config', 'model_args', 'meta',
            'training_log', 'rng'} <= set(ckpt)
    assert ckpt['iter_num'] == 60 and {'rng', 'sampler'} <= set(ckpt['rng'][0])
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
    train(*common, '--out_dir', tmp_path / 'split', '--max_iters', 30, '--init_from', 'resume')
    whole, split = read_log(tmp_path / 'whole'), read_log(tmp_path / 'split')
    assert len(whole['train_loss']) == 30
    assert split['train_loss'] == whole['train_loss']  # bit-identical, dropout included
    strip = lambda evals: [{k: v for k, v in e.items() if k != 'elapsed_s'} for e in evals]  # noqa: E731
    assert strip(split['evals']) == strip(whole['evals'])


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
])
def test_config_errors_are_one_line(args, message, sample_data_dir, tmp_path):
    result = train(*TINY, '--data_dir', sample_data_dir, '--out_dir', tmp_path / 'x', *args, check=False)
    assert result.returncode != 0 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_resume_refuses_the_other_model_type(tiny_backpack_dir, sample_data_dir, tmp_path):
    out = tmp_path / 'other'
    out.mkdir()
    (out / 'ckpt.pt').write_bytes((tiny_backpack_dir / 'ckpt.pt').read_bytes())
    result = train(*TINY, '--data_dir', sample_data_dir, '--out_dir', out, '--init_from', 'resume',
                   '--model_type', 'transformer', check=False)
    assert result.returncode != 0
    assert 'holds a backpack model, but --model_type is transformer' in result.stderr


def test_torchrun_two_cpu_processes_then_single_process_resume(sample_data_dir, tmp_path):
    out = tmp_path / 'ddp'
    args = [*TINY, '--data_dir', sample_data_dir, '--out_dir', out, '--eval_interval', 5,
            '--gradient_accumulation_steps', 2]
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    result = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
                             str(REPO / 'train.py'), *map(str, args), '--max_iters', '10'],
                            cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    ckpt = torch.load(out / 'ckpt.pt', weights_only=True)
    assert ckpt['iter_num'] == 10 and len(ckpt['rng']) == 2  # both ranks' RNG and sampler states
    assert all(math.isfinite(v) for v in ckpt['training_log']['train_loss'])
    assert result.stdout.count('saved ') == 2  # rank 0 alone reports (iter 5 and 10)
    resumed = train(*args, '--max_iters', 15, '--init_from', 'resume')
    assert 'checkpoint written by 2 process(es), resuming with 1' in resumed.stdout
    assert len(read_log(out)['train_loss']) == 15


def test_sample_py_generates_from_the_checkpoint(tiny_backpack_dir):
    result = subprocess.run([sys.executable, str(REPO / 'sample.py'), '--out_dir', str(tiny_backpack_dir), '--start',
                             '<en> The Parliament <fr>', '--greedy', '--num_samples', '2', '--max_new_tokens', '8'],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    samples = [s.split('\n', 1)[1] for s in result.stdout.split('--- sample ')[1:]]
    assert len(samples) == 2 and samples[0] == samples[1]  # greedy: identical
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
