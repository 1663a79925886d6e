"""tools/gpu_reference.py (the seed-shape reference on one GPU) end to end in its --tiny mode on the CPU:
one probe per model sets each model's iterations for the same probe-minutes, the three models train by
iterations, are evaluated with the stated workload and compared, and the evidence lands in the CPU reference's
layout with each run's tokens/s and MFU, naming no absolute path; a missing GPU or data dir is one line."""
import gzip
import json
import re
import subprocess
import sys

import pytest

from conftest import REPO, run_prepare

MODELS = ('backpack', 'transformer', 'transformer_wide')
PEAK_TFLOPS = 0.05  # a nominal CPU peak, so that train.py prints an MFU the driver records


def driver(*args):
    return subprocess.run([sys.executable, 'tools/gpu_reference.py', *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=900)


@pytest.fixture(scope='module')
def small_data_dir(tmp_path_factory):
    """The first 2,000 pairs of the bundled sample with a 2,000-token BPE: 1,000 train, 100 valid and 100 test
    pairs (the session's sample_data_dir, 1,000 + 1,000 held-out pairs, doubles the evaluations' time)."""
    root = tmp_path_factory.mktemp('gpu_reference_data')
    (root / 'src').mkdir()
    for lang in ('en', 'fr'):
        with gzip.open(REPO / 'data' / 'europarl' / 'sample' / f'train.{lang}.gz', 'rt', encoding='utf-8') as f:
            (root / 'src' / f'train.{lang}').write_text(''.join(next(f) for _ in range(2000)), encoding='utf-8')
    result = run_prepare('--source', 'local', '--src_dir', root / 'src', '--tokenizer', 'bpe', '--vocab_size', 2000,
                         '--max_pairs', 1000, '--heldout_pairs', 100, '--out_dir', root / 'data')
    assert result.returncode == 0, result.stderr
    return root / 'data'


@pytest.fixture(scope='module')
def reference(tmp_path_factory, small_data_dir):
    """(results, work dir) of the whole --tiny experiment: plan, train, evaluate, compare, collect."""
    tmp = tmp_path_factory.mktemp('gpu_reference')
    result = driver('--tiny', '--data_dir', small_data_dir, '--work_dir', tmp / 'work', '--results', tmp / 'results',
                    '--peak_tflops', PEAK_TFLOPS)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return tmp / 'results', tmp / 'work'


def read(path):
    return json.loads(path.read_text())


def test_the_results_have_the_cpu_reference_layout(reference):
    results, _ = reference
    for model in MODELS:
        run = results / 'tiny' / f'{model}_seed0'
        for name in ('evaluation_results.json', 'evaluation_report.md', 'training_log.json', 'train.log',
                     'loss_curve.png', 'meta.json', 'test.en', 'test.fr', 'tokenizer'):
            assert (run / name).exists(), run / name
        assert not list(run.glob('*.pt'))  # evidence, never weights
    assert (results / 'tiny' / 'backpack_seed0' / 'sense_labels.json').is_file()
    for folder in ('comparison_seed0', 'comparison_wide_seed0'):
        names = {p.name for p in (results / 'tiny' / folder).iterdir()}
        assert {'comparison.md', 'comparison.json', 'loss_curves.png'} <= names
    assert (results / 'plan.json').is_file() and (results / 'run.json').is_file()


def test_each_model_trains_the_iterations_its_probe_buys_in_the_same_budget(reference):
    from tools.cpu_sweep import fitted_iters
    results, _ = reference
    plan, run = read(results / 'plan.json'), read(results / 'run.json')
    sized = plan['sizes']['tiny']
    assert plan['device'] == run['device'] == 'cpu' and plan['seeds'] == {'tiny': [0]}
    assert sized['probe_minutes'] == run['budget_probe_minutes'] and list(sized['models']) == list(MODELS)
    for model, entry in sized['models'].items():
        assert entry['probe_minutes'] == sized['probe_minutes']
        assert entry['max_iters'] == fitted_iters(entry['probe_ms_per_iter'], entry['probe_minutes'])
        assert entry['planned_probe_minutes'] == round(entry['max_iters'] * entry['probe_ms_per_iter'] / 60_000, 2)
        assert entry['train_flops'] == entry['flops_per_token'] * entry['tokens_per_iter'] * entry['max_iters']
        log = read(results / 'tiny' / f'{model}_seed0' / 'training_log.json')
        assert log['iter_num'] == log['config']['max_iters'] == log['config']['lr_decay_iters'] == entry['max_iters']
        assert log['model_type'] == entry['settings']['model_type'] and log['config']['max_minutes'] == 0
        assert (log['config']['compile'], log['config']['dtype']) == (False, 'bfloat16')  # tiny: no compile
    models = sized['models']
    backpack, twin, wide = (models[m] for m in MODELS)
    assert twin['settings'] == {**backpack['settings'], 'model_type': 'transformer'}  # the same contextual network
    assert wide['settings']['n_embd'] > twin['settings']['n_embd']
    assert abs(wide['params'] - backpack['params']) < abs(twin['params'] - backpack['params'])
    assert backpack['flops_per_token'] > twin['flops_per_token']  # the sense network and the mixture


def test_every_model_is_evaluated_and_compared_with_the_stated_workload(reference):
    results, _ = reference
    run, plan = read(results / 'run.json'), read(results / 'plan.json')
    workload = run['evaluation']
    assert (workload['translation_samples'], workload['sentence_pairs'], workload['interventions']) == (4, 20, 'none')
    for model in MODELS:
        evaluation = read(results / 'tiny' / f'{model}_seed0' / 'evaluation_results.json')
        log = read(results / 'tiny' / f'{model}_seed0' / 'training_log.json')
        assert log['iter_num'] == plan['sizes']['tiny']['models'][model]['max_iters']
        # best.pt, which is evaluated: the lowest validation loss of the run's evaluations (every eval_interval)
        assert evaluation['model']['iter_num'] == min(log['evals'], key=lambda e: e['val'])['iter']
        assert evaluation['settings']['translation_samples'] == workload['translation_samples']
        assert evaluation['settings']['sentence_pairs'] == workload['sentence_pairs']
        assert evaluation['translation']['en-fr']['n'] == workload['translation_samples']
        assert 'interventions' not in evaluation and 'bli' in evaluation and 'perplexity' in evaluation
    for folder in ('comparison_seed0', 'comparison_wide_seed0'):
        comparison = read(results / 'tiny' / folder / 'comparison.json')
        assert comparison['settings'] == {'translation_samples': 4, 'beam_size': 1, 'sentence_pairs': 20}
    assert [(c['step'], c['model']) for c in run['commands']] == [
        *[('train', f'tiny/{m}_seed0') for m in MODELS], *[('evaluate', f'tiny/{m}_seed0') for m in MODELS],
        ('compare', 'tiny/transformer_seed0'), ('compare', 'tiny/transformer_wide_seed0')]


def test_run_json_records_each_runs_tokens_per_second_and_mfu_and_the_time_budget(reference):
    results, _ = reference
    run, models = read(results / 'run.json'), read(results / 'plan.json')['sizes']['tiny']['models']
    for model in MODELS:
        speed, entry = run['speed'][f'tiny/{model}_seed0'], models[model]
        assert speed['tokens_per_s'] > 0 and speed['log_intervals'] >= 3 and speed['peak_tflops'] == PEAK_TFLOPS
        assert speed['tflops'] == pytest.approx(entry['flops_per_token'] * speed['tokens_per_s'] / 1e12, rel=1e-4)
        # train.py's MFU lines: its FLOPs estimate at that rate over the peak (it prints one decimal)
        assert speed['mfu_percent'] == pytest.approx(100 * speed['tflops'] / PEAK_TFLOPS, abs=0.06)
        assert 0 < speed['effective_tokens_per_s'] < speed['tokens_per_s']  # start and evaluations included
        log = (results / 'tiny' / f'{model}_seed0' / 'train.log').read_text()
        assert len(re.findall(r' tok/s, mfu [\d.]+%', log)) == speed['log_intervals'] + 1  # + the first, compiling
    assert list(run['wall_s']) == ['plan', 'train', 'evaluate', 'compare'] and run['limit_s'] == 540
    assert run['total_s'] == pytest.approx(sum(run['wall_s'].values()), abs=0.2)
    assert run['wall_s']['plan'] == pytest.approx(sum(e['probe_wall_s'] for e in models.values()), abs=0.2)
    assert run['command_wall_s'] >= run['total_s']  # all steps ran in the fixture's one command
    assert run['within_limit'] == (run['command_wall_s'] <= 540)
    assert run['machine']['device'] == 'cpu' and run['git_revision']


def test_the_collected_evidence_passes_verify_as_committed_results(reference):
    results, _ = reference
    result = subprocess.run([sys.executable, 'verify_evaluation.py', '--out_dir', results / 'tiny' / 'backpack_seed0',
                             '--committed'], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert 'checks passed' in result.stdout


ABSOLUTE = re.compile(r'''(?:^|[\s"'=(`:,\[])(/(?:work|tmp|home|root|Users|mnt|opt|var|data|scratch)/[^\s"'`)]*)''')


def test_no_collected_file_names_an_absolute_path(reference):
    import verify_evaluation
    results, _ = reference
    found = []
    for path in sorted(results.rglob('*')):
        if path.suffix not in ('.json', '.md', '.log') or not path.is_file():
            continue
        text = path.read_text(encoding='utf-8')
        found += [f'{path.relative_to(results)}: {m.group(1)}' for m in ABSOLUTE.finditer(text)][:3]
        if path.suffix == '.json':
            found += [f'{path.relative_to(results)}: {where} = {value}' for where, value in
                      verify_evaluation.absolute_paths(json.loads(text)) if not where.startswith('machine')][:3]
    assert not found, '\n'.join(found[:20])
    assert 'data_dir' in read(results / 'run.json') and 'python tools/gpu_reference.py --tiny' in \
        read(results / 'run.json')['command']


def one_line_error(capsys, *argv):
    """run_main(gpu_reference.main) in-process, as its __main__ does: exit 1 and the one line it printed."""
    from errors import run_main
    from tools import gpu_reference
    with pytest.raises(SystemExit) as exit_info:
        run_main(gpu_reference.main, [str(a) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 1 and len(err) == 1 and err[0].startswith('error: '), err
    return err[0]


@pytest.mark.skipif(__import__('torch').cuda.is_available(), reason='a CUDA device is visible')
def test_cuda_without_a_gpu_is_one_line_before_any_work(capsys, small_data_dir, tmp_path):
    error = one_line_error(capsys, '--data_dir', small_data_dir, '--work_dir', tmp_path / 'w')
    assert 'sees no CUDA device' in error and '--tiny --device cpu' in error and not (tmp_path / 'w').exists()


def test_a_missing_data_dir_is_one_line_with_the_command_that_prepares_it(capsys, tmp_path):
    error = one_line_error(capsys, '--device', 'cpu', '--data_dir', tmp_path / 'bpe8k', '--work_dir', tmp_path / 'w')
    assert ('meta.json not found: prepare the data first (python data/europarl/prepare.py --language_pair en-fr '
            '--source local --src_dir ../shared/data/europarl_v7_fr_en --tokenizer bpe --vocab_size 8000 '
            f'--out_dir {tmp_path / "bpe8k"})') in error
    error = one_line_error(capsys, '--tiny', '--data_dir', tmp_path / 'sample', '--work_dir', tmp_path / 'w')
    assert '--source sample' in error and not (tmp_path / 'w').exists()


def test_the_gpu_recipe_is_the_seeds_shape_in_bfloat16_compiled_on_cuda():
    from tools.cpu_reference import read_config
    gpu, seed = read_config('train_europarl_gpu'), read_config('train_europarl_scratch')
    shape = ('block_size', 'n_layer', 'n_head', 'n_embd', 'n_senses', 'batch_size', 'gradient_accumulation_steps')
    assert {k: gpu[k] for k in shape} == {k: seed[k] for k in shape}
    assert (gpu['device'], gpu['dtype'], gpu['compile'], gpu['max_minutes']) == ('cuda', 'bfloat16', True, 0.0)
