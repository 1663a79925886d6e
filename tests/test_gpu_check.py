"""tools/gpu_check.py, the one-command GPU acceptance script, run here on the CPU with tiny shapes
(--tiny): the same checks, commands and report, so that it works the day a GPU is lent."""
import json
import subprocess
import sys

import pytest
import torch

from conftest import REPO

sys.path.insert(0, str(REPO / 'tools'))
import gpu_check  # noqa: E402


def test_tiny_run_passes_and_reports_every_part(tmp_path):
    result = subprocess.run([sys.executable, 'tools/gpu_check.py', '--device', 'cpu', '--tiny', '--iters', '4',
                             '--skip', 'bench', '--out', tmp_path], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    report = json.loads((tmp_path / 'gpu_check.json').read_text())
    assert report['failures'] == []
    assert {(m['kernel'], m['dtype']) for m in report['mixing']} == {
        (k, d) for k in ('sdpa', 'blocks') for d in ('float32', 'bfloat16')}
    runs = {r['run']: r for r in report['training']}
    assert set(runs) == {'backpack bfloat16', 'backpack float16', 'transformer bfloat16', 'transformer float16',
                         'backpack bfloat16 resume'}
    assert runs['backpack bfloat16 resume']['last_iter'] == 6  # resumed from ckpt.pt at 4, on to 4 + 4 // 2
    assert all(r['tokens_per_s'] > 0 for r in runs.values())


def test_a_kernel_mismatch_is_reported(monkeypatch):
    """The check compares against the explicit alpha: a kernel off by a little fails it."""
    monkeypatch.setattr(gpu_check, 'causal_sense_mixing', lambda q, k, v, kernel: gpu_check.mix_senses(
        gpu_check.sense_weights(q, k), v) * 1.001)
    result = gpu_check.check_mixing('cpu', torch.float32, 'sdpa', B=1, S=2, T=8, d=8)
    assert not result['ok'] and result['max_rel_err']['o'] == pytest.approx(1e-3, rel=1e-2)


def test_no_cuda_is_one_line():
    if torch.cuda.is_available():
        pytest.skip('a CUDA device is visible')
    result = subprocess.run([sys.executable, 'tools/gpu_check.py'], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 1 and result.stderr.strip().count('\n') == 0 and 'no CUDA device' in result.stderr
