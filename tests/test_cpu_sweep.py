"""tools/cpu_sweep.py on tiny candidates: each is probed, trained for the same (tiny) budget with its
schedule fitted to it, and ranked by val bits/byte in sweep.json and sweep.md."""
import json
import subprocess
import sys

from conftest import REPO

TINY = dict(n_embd=32, n_layer=1, n_head=2, n_senses=4, batch_size=8, learning_rate=1e-2, log_interval=2,
            warmup_iters=2, eval_iters=2)


def test_sweep_ranks_candidates_trained_for_the_same_budget(sample_data_dir, tmp_path):
    candidates = {'T32': ['s', {**TINY, 'block_size': 32}], 'T64': ['s', {**TINY, 'block_size': 64}]}
    (tmp_path / 'c.json').write_text(json.dumps(candidates))
    result = subprocess.run([sys.executable, 'tools/cpu_sweep.py', '--data', f's={sample_data_dir}',
                             '--candidates', tmp_path / 'c.json', '--minutes', '0.1', '--probe_iters', '8',
                             '--out', tmp_path / 'sweep', '--work_dir', tmp_path / 'work'],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    rows = json.loads((tmp_path / 'sweep' / 'sweep.json').read_text())['rows']
    assert [r['name'] for r in rows] == ['T32', 'T64']
    for r in rows:
        assert r['iters'] > 0 and r['tokens_seen'] == r['iters'] * 8 * r['settings']['block_size']
        assert 0 < r['val_en_bpb'] < 10 and r['wall_s'] < 60
        log = json.loads((tmp_path / 'sweep' / f"{r['name']}-backpack.training_log.json").read_text())
        assert log['config']['max_minutes'] == 0.1 and log['config']['lr_decay_iters'] == r['planned_iters']
    table = (tmp_path / 'sweep' / 'sweep.md').read_text()
    best = min(rows, key=lambda r: r['val_bpb_mean'])['name']
    assert table.splitlines()[4].startswith(f'| {best} |')  # best first


def test_a_candidate_without_its_data_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, 'tools/cpu_sweep.py', '--data', 'bpe16k=x', '--only',
                             'd128-L2-k16-T128', '--out', tmp_path / 's'], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 1 and 'needs --data bpe8k=DIR' in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / 's').exists()
