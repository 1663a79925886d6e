"""tools/cpu_speed.py on a tiny config: each variant really runs with its threads and dtype, the recipe
is the reference of the ratios, and a too-short probe is one line before anything runs."""
import json
import subprocess
import sys

from conftest import REPO

TINY_CONFIG = """
block_size = 32
n_layer = 1
n_head = 2
n_embd = 32
n_senses = 4
dropout = 0.0
batch_size = 8
"""


def speed(*args):
    return subprocess.run([sys.executable, 'tools/cpu_speed.py', *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_variants_run_as_named_and_are_divided_by_the_recipe(sample_data_dir, tmp_path):
    (tmp_path / 'tiny.py').write_text(TINY_CONFIG)
    result = speed('--data_dir', sample_data_dir, '--config', tmp_path / 'tiny.py', '--models', 'transformer',
                   '--variants', '1 thread', '--dtype bfloat16', '--probe_iters', 20,
                   '--out', tmp_path / 'speed', '--work_dir', tmp_path / 'work')
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads((tmp_path / 'speed' / 'speed.json').read_text())
    rows = report['rows']
    assert [r['variant'] for r in rows] == ['recipe (2 threads, PASSIVE, float32)', '1 thread', '--dtype bfloat16']
    assert rows[0]['speedup'] == 1.0
    for r in rows:
        assert r['ms_per_iter'] > 0 and r['tokens_per_s'] == round(1000 * 8 * 32 / r['ms_per_iter'])
        assert abs(r['speedup'] - rows[0]['ms_per_iter'] / r['ms_per_iter']) < 0.01
    # each probe ran with its variant's threads and dtype, as its training log records
    logs = {slug: json.loads((tmp_path / 'work' / f'transformer-{slug}' / 'training_log.json').read_text())
            for slug in ('recipe', '1_thread', 'dtype_bfloat16')}
    assert logs['recipe']['machine']['threads'] == 2 and logs['recipe']['config']['dtype'] == 'float32'
    assert logs['1_thread']['machine']['threads'] == 1
    assert logs['dtype_bfloat16']['config']['dtype'] == 'bfloat16'
    table = (tmp_path / 'speed' / 'speed.md').read_text().splitlines()
    assert len([line for line in table if line.startswith('| transformer |')]) == 3
    assert (tmp_path / 'speed' / 'transformer-1_thread.log').read_text().count('ms/iter') >= 2


def test_a_probe_too_short_to_time_is_one_line(tmp_path):
    result = speed('--data_dir', 'x', '--probe_iters', 10, '--out', tmp_path / 's')
    assert result.returncode == 1 and '--probe_iters must be at least 20' in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / 's').exists()
