#!/usr/bin/env bash
# The main job on the bundled data, from a fresh clone, offline, on a CPU:
#   set up .venv, prepare the bundled Europarl sample, train a tiny Backpack and its tiny Transformer
#   twin, evaluate both, and print the side-by-side comparison (out/comparison/).
# Progress bars show on a terminal only; redirected to a file, each step prints its summary lines.
set -euo pipefail
cd "$(dirname "$0")"
STEPS=8
step() { echo; echo "[$1/$STEPS] $2"; }

step 1 "setting up .venv (torch CPU build, then requirements.txt)…"
[ -d .venv ] || python3 -m venv .venv
. .venv/bin/activate
python -c "import torch" 2>/dev/null || python -m pip install -q torch==2.13.0
python -m pip install -q -r requirements.txt

step 2 "preparing the bundled Europarl sample (BPE 8k) in data/europarl_sample…"
python data/europarl/prepare.py --language_pair en-fr --source sample --tokenizer bpe --vocab_size 8000 \
    --out_dir data/europarl_sample
step 3 "training the tiny Backpack (out/tiny_backpack, 3–6 minutes on 2 cores)…"
python train.py --config train_europarl_tiny --model_type backpack --out_dir out/tiny_backpack --overwrite
step 4 "training the tiny Transformer twin (out/tiny_transformer, 2–3 minutes)…"
python train.py --config train_europarl_tiny --model_type transformer --out_dir out/tiny_transformer --overwrite
step 5 "evaluating the tiny Backpack…"
python run_full_evaluation.py --out_dir out/tiny_backpack --device cpu --translation_samples 100
step 6 "evaluating the tiny Transformer…"
python run_full_evaluation.py --out_dir out/tiny_transformer --device cpu --translation_samples 100
step 7 "verifying the Backpack's results…"
python verify_evaluation.py --out_dir out/tiny_backpack
step 8 "comparing the two models (out/comparison)…"
python compare_models.py --backpack_dir out/tiny_backpack --transformer_dir out/tiny_transformer \
    --device cpu --translation_samples 100
