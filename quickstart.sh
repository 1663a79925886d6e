#!/usr/bin/env bash
# The main job on the bundled data, from a fresh clone, offline, on a CPU:
#   set up .venv, prepare the bundled Europarl sample, train a tiny Backpack and its tiny Transformer
#   twin, evaluate both, and print the side-by-side comparison (out/comparison/).
# Progress bars show on a terminal only; redirected to a file, each step prints its summary lines.
#
# A step that fails or is interrupted (Ctrl-C) stops the script, which says how to go on:
#   bash quickstart.sh --from N   skips steps 2..N-1 (step 1, the .venv, always runs); a training step N
#                                 continues its interrupted run from its ckpt.pt (--init_from resume)
set -euo pipefail
cd "$(dirname "$0")"
STEPS=8
FROM=1
case "${1:-}" in
    --from) FROM="${2:-}" ;;
    "") ;;
    *) echo "usage: bash quickstart.sh [--from STEP]" >&2; exit 2 ;;
esac
if ! [[ "$FROM" =~ ^[1-8]$ ]]; then echo "error: --from ${FROM:-(none)}: expected a step from 1 to $STEPS" >&2; exit 2; fi
CURRENT=""
stopped() {
    local status=$?
    if [ "$status" -ne 0 ] && [ -n "$CURRENT" ]; then
        echo "quickstart.sh stopped at step $CURRENT/$STEPS (exit status $status); go on from there with:" \
             "bash quickstart.sh --from $CURRENT" >&2
    fi
}
trap stopped EXIT
trap 'exit 130' INT  # Ctrl-C between two steps stops too
step() {  # step N "what": says what runs now; false when --from skips it
    if [ "$1" -gt 1 ] && [ "$1" -lt "$FROM" ]; then echo "[$1/$STEPS] skipped (--from $FROM)"; return 1; fi
    CURRENT=$1
    echo; echo "[$1/$STEPS] $2"
}
fresh_or_resume() {  # the training of step $1 into $2: resumed when quickstart goes on from it, else anew
    if [ "$1" -eq "$FROM" ] && [ -f "$2/ckpt.pt" ]; then echo "--init_from resume"; else echo "--overwrite"; fi
}

step 1 "setting up .venv (torch CPU build, then requirements.txt)…"
[ -d .venv ] || python3 -m venv .venv
. .venv/bin/activate
python -c "import torch" 2>/dev/null || python -m pip install -q torch==2.13.0
python -m pip install -q -r requirements.txt

if step 2 "preparing the bundled Europarl sample (BPE 8k) in data/europarl_sample…"; then
    python data/europarl/prepare.py --language_pair en-fr --source sample --tokenizer bpe --vocab_size 8000 \
        --out_dir data/europarl_sample
fi
if step 3 "training the tiny Backpack (out/tiny_backpack, 3–6 minutes on 2 cores)…"; then
    python train.py --config train_europarl_tiny --model_type backpack --out_dir out/tiny_backpack \
        $(fresh_or_resume 3 out/tiny_backpack)
fi
if step 4 "training the tiny Transformer twin (out/tiny_transformer, 2–3 minutes)…"; then
    python train.py --config train_europarl_tiny --model_type transformer --out_dir out/tiny_transformer \
        $(fresh_or_resume 4 out/tiny_transformer)
fi
if step 5 "evaluating the tiny Backpack…"; then
    python run_full_evaluation.py --out_dir out/tiny_backpack --device cpu --translation_samples 100
fi
if step 6 "evaluating the tiny Transformer…"; then
    python run_full_evaluation.py --out_dir out/tiny_transformer --device cpu --translation_samples 100
fi
if step 7 "verifying the Backpack's results…"; then
    python verify_evaluation.py --out_dir out/tiny_backpack
fi
if step 8 "comparing the two models (out/comparison)…"; then
    python compare_models.py --backpack_dir out/tiny_backpack --transformer_dir out/tiny_transformer \
        --device cpu --translation_samples 100
fi
CURRENT=""
