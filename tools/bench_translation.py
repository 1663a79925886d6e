"""
Translation speed of a trained Backpack against its Transformer twin (two training out_dirs), as
evaluate.py runs it: greedy (or --beam_size) decoding of the first --n test sentences en->fr with the
KV cache. The Backpack runs twice, once with its inference sense table empty and once with it full
(every token id seen, as after evaluate's perplexity pass, which runs before translation), because
what a cached step costs must not depend on how much the table holds. Prints, for each variant, the
median over --repeats (the variants alternate within each repeat, so a drift of a shared machine hits
all alike) of the seconds and of the ms per generated token, and their ratio to the Transformer's.
The two Backpack runs must produce the same tokens (checked).

    python tools/bench_translation.py --backpack_dir out/tiny_backpack --transformer_dir out/tiny_transformer
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import system  # noqa: E402,F401  (before torch: OMP_WAIT_POLICY)

import torch  # noqa: E402

from checkpoint import load_model  # noqa: E402
from experiments.eval_data import read_parallel  # noqa: E402
from experiments.translation import build_prompts, generate_ids  # noqa: E402
from tokenizer import load_tokenizer  # noqa: E402


@torch.no_grad()
def fill_sense_table(model):
    """Every token id through the model once, so that the inference table holds all of them."""
    for ids in torch.arange(model.n_tokens).split(model.config.block_size):
        model(ids[None])


def run(model, tok, prompts, limits, beam_size):
    t0 = time.perf_counter()
    out = generate_ids(model, prompts, limits, tok.special_ids, 'cpu', beam_size=beam_size)
    return time.perf_counter() - t0, out


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--backpack_dir', required=True)
    p.add_argument('--transformer_dir', required=True)
    p.add_argument('--n', type=int, default=100, help='test sentences')
    p.add_argument('--beam_size', type=int, default=1)
    p.add_argument('--repeats', type=int, default=3)
    args = p.parse_args()
    models, prompts = {}, {}
    for kind, out_dir in (('transformer', args.transformer_dir), ('backpack', args.backpack_dir)):
        model, _ = load_model(out_dir, 'cpu')
        tok = load_tokenizer(out_dir)
        en, _ = read_parallel(str(Path(out_dir) / 'test.en'), str(Path(out_dir) / 'test.fr'), limit=args.n)
        models[kind] = (model.eval(), tok)
        prompts[kind] = build_prompts(tok, en, 'en', 'fr', model.config.block_size)[:2]
    variants = {'transformer': ('transformer', None),
                'backpack, sense table empty': ('backpack', lambda m: m.clear_sense_table()),
                'backpack, sense table full': ('backpack', fill_sense_table)}
    seconds = {name: [] for name in variants}
    per_token = {name: [] for name in variants}
    outputs = {}
    for _ in range(args.repeats):
        for name, (kind, prepare) in variants.items():
            model, tok = models[kind]
            if prepare is not None:
                prepare(model)
            s, out = run(model, tok, *prompts[kind], args.beam_size)
            seconds[name].append(s)
            per_token[name].append(1000 * s / sum(len(ids) for ids in out))
            outputs.setdefault(kind, out)
            assert out == outputs[kind], f"{name}: other tokens than the first run of the {kind}"
    print(f"{args.n} sentences en->fr, {'greedy' if args.beam_size == 1 else f'beam {args.beam_size}'}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}")
    ref_s, ref_t = statistics.median(seconds['transformer']), statistics.median(per_token['transformer'])
    print(f"{'variant':30s} {'s':>8s} {'ms/token':>9s} {'s ratio':>8s} {'ms/token ratio':>15s}")
    for name in variants:
        s, t = statistics.median(seconds[name]), statistics.median(per_token[name])
        print(f"{name:30s} {s:8.2f} {t:9.2f} {s / ref_s:8.2f} {t / ref_t:15.2f}")


if __name__ == '__main__':
    main()
