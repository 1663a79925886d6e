"""Shared test helpers: repository paths, a runner for data/europarl/prepare.py, and a prepared copy of
the bundled Europarl sample that every test session builds once (a few seconds)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests import the repo's top-level modules (tokenizer.py, model.py, ...)
import system  # noqa: E402,F401  (before torch, here and, through the environment, in the scripts the tests run)
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


def write_random_backpack_gpt2(directory, vocab_size=97, n_positions=24, n_layer=2, n_head=2, n_embd=32,
                               num_senses=4, sense_intermediate_scale=3, seed=0):
    """Write a random backpack-gpt2 checkpoint exactly as Hugging Face saves one (config.json +
    model.safetensors): GPT-2 Conv1D weights stored (in, out), the weight head an nn.Linear (out, in),
    the tied copies, the attention-mask buffers. LayerNorm gains and biases are random too, so no
    parameter can be silently dropped or swapped. Returns (state dict, the GPT2Config of its transformer)."""
    import json

    import torch
    import transformers
    from safetensors.torch import save_file
    V, P, d, k, s = vocab_size, n_positions, n_embd, num_senses, sense_intermediate_scale
    gpt2_config = transformers.GPT2Config(
        vocab_size=V, n_positions=P, n_embd=d, n_layer=n_layer, n_head=n_head, activation_function='gelu_new',
        layer_norm_epsilon=1e-5, scale_attn_by_inverse_layer_idx=True, resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, mean=0.0):
        return mean + 0.2 * torch.randn(*shape, generator=g)

    sd = {}
    for name, t in transformers.GPT2Model(gpt2_config).state_dict().items():
        sd['backpack.gpt2_model.' + name] = rand(*t.shape, mean=1.0 if 'ln_' in name and name.endswith('weight') else 0.0)
    for layer in range(n_layer):
        sd[f'backpack.gpt2_model.h.{layer}.attn.bias'] = torch.tril(torch.ones(P, P, dtype=torch.bool))[None, None]
        sd[f'backpack.gpt2_model.h.{layer}.attn.masked_bias'] = torch.tensor(-1e4)
    sn = 'backpack.sense_network.'
    for ln in ('ln', 'block.ln_1', 'block.ln_2'):
        sd[sn + ln + '.weight'], sd[sn + ln + '.bias'] = rand(d, mean=1.0), rand(d)
    for conv, n_in, n_out in (('block.mlp.c_fc', d, 4 * d), ('block.mlp.c_proj', 4 * d, d),
                              ('final_mlp.c_fc', d, s * d), ('final_mlp.c_proj', s * d, k * d)):
        sd[sn + conv + '.weight'], sd[sn + conv + '.bias'] = rand(n_in, n_out), rand(n_out)
    sd['backpack.sense_weight_net.c_attn.weight'] = rand(2 * d, d)
    sd['backpack.sense_weight_net.c_attn.bias'] = rand(2 * d)
    sd['lm_head.weight'] = sd['backpack.gpt2_model.wte.weight'].clone()
    sd['backpack.word_embeddings.weight'] = sd['backpack.gpt2_model.wte.weight'].clone()
    sd['backpack.position_embeddings.weight'] = sd['backpack.gpt2_model.wpe.weight'].clone()

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(directory / 'model.safetensors'))
    config = dict(vocab_size=V, n_positions=P, n_layer=n_layer, n_head=n_head, n_embd=d, num_senses=k,
                  sense_intermediate_scale=s, model_type='backpack-gpt2', activation_function='gelu_new',
                  layer_norm_epsilon=1e-5, scale_attn_by_inverse_layer_idx=True, resid_pdrop=0.1, embd_pdrop=0.1,
                  attn_pdrop=0.1, n_inner=None)
    (directory / 'config.json').write_text(json.dumps(config))
    return sd, gpt2_config
