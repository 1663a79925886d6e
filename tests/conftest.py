"""Shared test helpers: repository paths, a runner for data/europarl/prepare.py, and a prepared copy of
the bundled Europarl sample that every test session builds once (a few seconds)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Before torch is imported anywhere (here and in the scripts the tests run): OpenMP threads that
# spin while waiting starve each other on a small, shared CPU (train.py sets the same default).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests import the repo's top-level modules (tokenizer.py, model.py, ...)
SHARED_DATA = REPO.parent / "shared" / "data"  # read-only data shared beside the repo; tests skip without it
PREPARE = REPO / "data" / "europarl" / "prepare.py"
SAMPLE_PREPARE_ARGS = ["--source", "sample", "--tokenizer", "bpe", "--vocab_size", "4096", "--max_pairs", "4000"]


def run_prepare(*args, env=None):
    """Run prepare.py as a user would; returns the CompletedProcess (text stdout/stderr)."""
    return subprocess.run([sys.executable, str(PREPARE), "--language_pair", "en-fr", *map(str, args)],
                          capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=600)


@pytest.fixture(scope="session")
def sample_data_dir(tmp_path_factory):
    """The bundled sample prepared with a small trained BPE (4,096 ids, 4,000 train pairs + the sample's
    1,000 valid and 1,000 test pairs): a data dir for load_tokenizer() and training/eval tests."""
    out_dir = tmp_path_factory.mktemp("data") / "europarl_sample_bpe"
    result = run_prepare(*SAMPLE_PREPARE_ARGS, "--out_dir", out_dir)
    assert result.returncode == 0, result.stderr
    return out_dir


@pytest.fixture(scope="session")
def gpt2_data_dir(tmp_path_factory):
    """The sample (1,000 train pairs) with the bundled GPT-2 BPE: no training, so it is quick."""
    out_dir = tmp_path_factory.mktemp("data") / "europarl_sample_gpt2"
    result = run_prepare("--source", "sample", "--tokenizer", "gpt2", "--max_pairs", "1000", "--out_dir", out_dir)
    assert result.returncode == 0, result.stderr
    return out_dir


XLMR_DIR = SHARED_DATA / "tokenizers" / "xlm-roberta"


@pytest.fixture(scope="session")
def xlmr_data_dir(tmp_path_factory):
    """The sample (1,000 train pairs) with the XLM-R tokenizer from ../shared, compacted (the default)."""
    if not (XLMR_DIR / "tokenizer.json").is_file():
        pytest.skip(f"XLM-R tokenizer.json not found in {XLMR_DIR} (shared data absent)")
    out_dir = tmp_path_factory.mktemp("data") / "europarl_sample_xlmr"
    result = run_prepare("--source", "sample", "--tokenizer", "xlm-roberta-base", "--tokenizer_path", XLMR_DIR,
                         "--max_pairs", "1000", "--out_dir", out_dir)
    assert result.returncode == 0, result.stderr
    return out_dir


# A tiny model of each type trained for a few seconds on the sample: fixtures for training and evaluation tests.
TINY_TRAIN_ARGS = ["--config", "train_europarl_tiny", "--device", "cpu", "--block_size", "32", "--n_layer", "1",
                   "--n_head", "2", "--n_embd", "32", "--n_senses", "4", "--batch_size", "8", "--eval_iters", "4",
                   "--log_interval", "5", "--warmup_iters", "5", "--lr_decay_iters", "100", "--learning_rate", "1e-2"]


def run_train(*args, check=True, timeout=600):
    """Run train.py as a user would; returns the CompletedProcess (text stdout/stderr)."""
    result = subprocess.run([sys.executable, str(REPO / "train.py"), *map(str, args)], cwd=REPO,
                            capture_output=True, text=True, timeout=timeout)
    if check:
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result


def _tiny_model(tmp_path_factory, data_dir, model_type):
    out = tmp_path_factory.mktemp("run") / f"tiny_{model_type}"
    run_train(*TINY_TRAIN_ARGS, "--model_type", model_type, "--data_dir", data_dir, "--out_dir", out,
              "--max_iters", 60, "--eval_interval", 20)
    return out


@pytest.fixture(scope="session")
def tiny_backpack_dir(tmp_path_factory, sample_data_dir):
    """out_dir of a Backpack (1 layer, d=32, k=4) trained 60 iterations on `sample_data_dir`."""
    return _tiny_model(tmp_path_factory, sample_data_dir, "backpack")


@pytest.fixture(scope="session")
def tiny_transformer_dir(tmp_path_factory, sample_data_dir):
    """out_dir of the Transformer twin of `tiny_backpack_dir`, trained the same way."""
    return _tiny_model(tmp_path_factory, sample_data_dir, "transformer")
