"""experiments/cpu_reference.py (the reference experiment's one command) on a tiny config: the plan fits each
schedule to the budget and widens the Transformer to the Backpack's size, finished runs are not retrained, an
unfinished one is resumed; and the committed results of the real run pass verify_evaluation.py --committed."""
import json
import subprocess
import sys

import pytest

from conftest import REPO

TINY_CONFIG = """
block_size = 32
n_layer = 1
n_head = 2
n_embd = 32
n_senses = 16
dropout = 0.0
batch_size = 8
learning_rate = 1e-2
warmup_iters = 2
min_lr = 1e-3
eval_iters = 2
log_interval = 2
"""


def driver(*args):
    return subprocess.run([sys.executable, 'experiments/cpu_reference.py', *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope='module')
def planned(tmp_path_factory, sample_data_dir):
    tmp = tmp_path_factory.mktemp('cpu_reference')
    config = tmp / 'tiny.py'
    config.write_text(TINY_CONFIG)
    args = ['--config', config, '--data_dir', sample_data_dir, '--minutes', 0.05, '--probe_iters', 6,
            '--steps', 'plan', 'train', '--work_dir', tmp / 'work', '--test_sets']
    result = driver(*args)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return tmp / 'work', args


def test_plan_fits_each_schedule_and_widens_the_transformer_to_the_backpack(planned):
    work, _ = planned
    plan = json.loads((work / 'plan.json').read_text())
    assert list(plan) == ['backpack', 'transformer', 'transformer_wide']
    wide, twin, backpack = plan['transformer_wide'], plan['transformer'], plan['backpack']
    assert wide['settings']['n_embd'] > 32 and wide['settings']['n_embd'] % (8 * 2) == 0
    assert abs(wide['params'] - backpack['params']) < abs(twin['params'] - backpack['params'])
    for model, entry in plan.items():
        log = json.loads((work / model / 'training_log.json').read_text())
        assert log['config']['max_minutes'] == 0.05 and log['config']['lr_decay_iters'] == entry['max_iters']
        assert log['model_type'] == entry['settings']['model_type']
    commands = json.loads((work / 'commands.json').read_text())
    assert [c['model'] for c in commands if c['step'] == 'train'] == list(plan)
    assert not (work / 'probe').exists()  # the probes' checkpoints are not kept


def test_finished_runs_are_kept_and_an_unfinished_one_resumes(planned):
    work, args = planned
    log_path = work / 'transformer' / 'training_log.json'
    log = json.loads(log_path.read_text())
    log['elapsed_s'], log['iter_num'], log['evals'] = 0.0, 0, log['evals'][:1]  # as if it stopped early
    log_path.write_text(json.dumps(log))
    before = len(json.loads((work / 'commands.json').read_text()))
    result = driver(*args)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    new = json.loads((work / 'commands.json').read_text())[before:]
    assert [(c['step'], c['model']) for c in new] == [('train', 'transformer')]
    assert '--init_from resume' in new[0]['command'] and '[train] backpack: finished' in result.stdout


def test_a_run_that_reached_max_iters_between_evaluations_is_finished(tmp_path):
    # eval_interval = max_iters // 5 need not divide max_iters: the last evaluation is then short of it
    from experiments.cpu_reference import finished
    log = {'iter_num': 6992, 'elapsed_s': 2360.0, 'evals': [{'iter': 6990}]}
    (tmp_path / 'training_log.json').write_text(json.dumps(log))
    assert finished(tmp_path, 45, 6992)
    (tmp_path / 'training_log.json').write_text(json.dumps({**log, 'iter_num': 6990}))
    assert not finished(tmp_path, 45, 6992)


def test_a_missing_test_set_is_one_line_before_anything_runs(tmp_path):
    result = driver('--test_sets', 'news=nope.en,nope.fr', '--work_dir', tmp_path / 'w')
    assert result.returncode == 1 and 'test set news: nope.en not found' in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / 'w').exists()


@pytest.mark.parametrize('model', ['backpack', 'transformer', 'transformer_wide'])
def test_committed_reference_results_pass_verify(model):
    out_dir = REPO / 'results' / 'cpu_reference' / model
    if not (out_dir / 'evaluation_results.json').is_file():
        pytest.skip(f'{out_dir} is not committed yet')
    result = subprocess.run([sys.executable, 'verify_evaluation.py', '--out_dir', out_dir, '--committed'], cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert 'checks passed' in result.stdout and 'checked as committed results' in result.stdout
