#!/usr/bin/env bash
# The main job on the bundled data, from a fresh clone, offline, on a CPU:
#   set up .venv, prepare the bundled Europarl sample, train a tiny Backpack and its tiny Transformer
#   twin, evaluate both, and print the side-by-side comparison (out/comparison/).
set -euo pipefail
cd "$(dirname "$0")"
[ -d .venv ] || python3 -m venv .venv
. .venv/bin/activate
python -c "import torch" 2>/dev/null || python -m pip install -q torch==2.13.0
python -m pip install -q -r requirements.txt

python data/europarl/prepare.py --language_pair en-fr --source sample --tokenizer bpe --vocab_size 8000 \
    --out_dir data/europarl_sample
python train.py --config train_europarl_tiny --model_type backpack --out_dir out/tiny_backpack
python train.py --config train_europarl_tiny --model_type transformer --out_dir out/tiny_transformer
python run_full_evaluation.py --out_dir out/tiny_backpack --device cpu --translation_samples 100
python run_full_evaluation.py --out_dir out/tiny_transformer --device cpu --translation_samples 100
python verify_evaluation.py --out_dir out/tiny_backpack
python compare_models.py --backpack_dir out/tiny_backpack --transformer_dir out/tiny_transformer \
    --device cpu --translation_samples 100
