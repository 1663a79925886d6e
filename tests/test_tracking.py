"""Experiment tracking in train.py (issue 13), nanoGPT's way: --wandb_log (with --wandb_project,
--wandb_run_name) and --tensorboard_log record every evaluation, offline here; without the package, the
flag is one error line before any work."""
import json
import subprocess
import sys

import pytest

from conftest import REPO, TINY_TRAIN_ARGS, run_train


def test_wandb_offline_and_tensorboard_record_every_evaluation(request, tmp_path, monkeypatch):
    pytest.importorskip('wandb')
    pytest.importorskip('tensorboard')
    sample_data_dir = request.getfixturevalue('sample_data_dir')  # after the skips: built only when used
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    monkeypatch.setenv('WANDB_MODE', 'offline')
    for name in ('WANDB_CONFIG_DIR', 'WANDB_CACHE_DIR', 'WANDB_DATA_DIR'):  # nothing written outside tmp_path
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    out = tmp_path / 'run'
    run_train(*TINY_TRAIN_ARGS, '--model_type', 'transformer', '--data_dir', sample_data_dir, '--out_dir', out,
              '--max_iters', 4, '--eval_interval', 2, '--wandb_log', '--wandb_project', 'tests',
              '--wandb_run_name', 'tiny', '--tensorboard_log')
    evals = json.loads((out / 'training_log.json').read_text())['evals']
    assert [e['iter'] for e in evals] == [0, 2, 4]
    keys = {'train/loss': 'train', 'val/loss': 'val', 'val_en/ppl': 'val_en_ppl', 'val_fr/bpb': 'val_fr_bpb'}

    # TensorBoard: the event files in out_dir/tensorboard, read back
    events = EventAccumulator(str(out / 'tensorboard'))
    events.Reload()
    for key, stat in keys.items():
        assert [(s.step, s.value) for s in events.Scalars(key)] == \
            [(e['iter'], pytest.approx(e[stat], rel=1e-6)) for e in evals]  # stored as float32

    # wandb: the offline run under out_dir/wandb, read back with wandb's own reader of its run files
    runs = list((out / 'wandb').glob('offline-run-*'))
    assert len(runs) == 1
    dump = subprocess.run([sys.executable, '-m', 'wandb', 'leet', 'inspect', '--json', str(runs[0])],
                          capture_output=True, text=True, timeout=120)
    assert dump.returncode == 0, dump.stderr
    records = [json.loads(line) for line in dump.stdout.splitlines() if line.startswith('{')]
    run = next(r['run'] for r in records if r['type'] == 'run')
    assert (run['project'], run['display_name']) == ('tests', 'tiny')
    assert run['config']['update']['max_iters'] == 4 and run['config']['update']['wandb_log'] is True
    history = [r['history']['item'] for r in records if r['type'] == 'history']
    assert [h['iter'] for h in history] == [0, 2, 4]
    for key, stat in {**keys, 'lr': 'lr'}.items():  # nanoGPT's keys: iter, train/loss, val/loss, lr
        assert [h[key] for h in history] == [pytest.approx(e[stat], rel=1e-12) for e in evals]


def test_a_missing_tracking_package_is_one_error_line_before_any_work(tmp_path):
    """wandb and tensorboard hidden from the import system, as on a machine without them."""
    hide = ("import runpy, sys; sys.modules['wandb'] = sys.modules['tensorboard'] = None; "
            "sys.argv[0] = 'train.py'; runpy.run_path('train.py', run_name='__main__')")
    result = subprocess.run([sys.executable, '-c', hide, '--wandb_log', '--tensorboard_log', '--out_dir',
                             str(tmp_path / 'run'), '--device', 'cpu'], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        'error: --wandb_log and --tensorboard_log need wandb and tensorboard, which are not installed: '
        'pip install wandb tensorboard, or drop the flags']
    assert not (tmp_path / 'run').exists()
