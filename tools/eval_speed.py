"""
How long each section of the full evaluation (run_full_evaluation.py) takes on one trained model, and,
with --reference, the lexicon-induction section of another git revision beside this one's, checked to
give the same numbers.

    python tools/eval_speed.py --out_dir out/bench_ref
    python tools/eval_speed.py --out_dir out/bench_ref --sections bli --reference HEAD \
        --reference_cache /tmp/bli_reference.json

A model of the CPU reference's size times like the trained one (the work does not depend on the
weights), so a 20-iteration run of config/train_europarl_cpu.py is enough:

    python data/europarl/prepare.py --language_pair en-fr --source local --src_dir ../shared/data/europarl_v7_fr_en \
        --tokenizer bpe --vocab_size 8000 --out_dir data/europarl_bpe8k
    python train.py --config config/train_europarl_cpu.py --data_dir data/europarl_bpe8k --out_dir out/bench_ref \
        --max_iters 20 --lr_decay_iters 20 --warmup_iters 2 --eval_interval 20 --eval_iters 2

Each section runs alone through evaluate.run_evaluations (interventions through
interventions.run_interventions), with run_full_evaluation.py's settings, and is timed as the results
file times it. --reference REV loads experiments/lexical.py and experiments/metrics.py of git revision REV
(`git show`, into temporary modules: the working tree is not touched), runs its evaluate_bli, and compares:
max |ΔP@1|, max |ΔP@5| over every direction, method and representation, and whether the per-query hits
@1 and @5 are equal (the reference's hits are taken from its own ranking, metrics.top_columns of its
score matrices). The reference's results can be cached in a JSON file (--reference_cache): the old
dense float64 path took 3.5 minutes on 2 Xeon (Sapphire Rapids) vCPUs and 18.5 on 2 AMD EPYC cores.

--sense_table both times each section twice, with the inference sense table (kernels.SenseLookup: the sense
network runs once per distinct id, and its outputs are kept between calls) and without it (the network runs for
every lookup), and prints the ratio: the measurement that decides whether the table pays for itself. On the S
reference Backpack of seed 0 (2 Xeon vCPUs shared with a training run, 2026-12-02), CPU seconds without / with:
perplexity 28.1 / 22.2 (1.26x), interventions 14.7 / 12.4 (1.18x), translation, word similarity, BLI,
sentence similarity and senses together 66.0 / 65.5 (1.01x); all sections 108.7 / 100.1 (1.09x). It is kept.

Each row gives wall seconds and the process's CPU seconds: on a machine shared with other work the
wall time grows and the CPU seconds much less, so compare CPU seconds across runs.
"""
import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import system  # noqa: E402  first: the OpenMP setting torch reads when it loads

import evaluate  # noqa: E402
import kernels  # noqa: E402
from errors import UserError, resolve_device, run_main  # noqa: E402
from experiments import interventions  # noqa: E402

SECTIONS = (*evaluate.EVALUATIONS, 'interventions')


def time_section(model, tok, device, section, out_dir):
    """(wall seconds, CPU seconds of this process, results) of one section, with run_full_evaluation.py's
    default settings. CPU seconds / threads is what the wall time would be on an idle machine."""
    t0, c0 = time.time(), time.process_time()
    if section == 'interventions':
        out = interventions.run_interventions(model, tok, device, interventions.EXPERIMENTS)
    else:
        out = evaluate.run_evaluations(model, tok, device, which=[section], out_dir=out_dir).get(section)
    return time.time() - t0, time.process_time() - c0, out


@contextlib.contextmanager
def sense_table(enabled):
    """The inference sense table on (as evaluate runs) or off: every SenseLookup call then runs the network."""
    call = kernels.SenseLookup.__call__
    if not enabled:
        kernels.SenseLookup.__call__ = lambda self, idx, use_table=True: call(self, idx, use_table=False)
    try:
        yield
    finally:
        kernels.SenseLookup.__call__ = call


def load_revision(rev):
    """experiments/lexical.py with its experiments/metrics.py as of git revision `rev`, as fresh modules
    (the revision's lexical.py is made to use the revision's metrics.py)."""
    def module(name, path):
        source = subprocess.run(['git', 'show', f'{rev}:{path}'], cwd=REPO, check=True, capture_output=True,
                                text=True).stdout
        mod = types.ModuleType(name)
        mod.__file__ = str(REPO / path)
        exec(compile(source, f'{rev}:{path}', 'exec'), mod.__dict__)
        return mod
    old_metrics = module('reference_metrics', 'experiments/metrics.py')
    old_lexical = module('reference_lexical', 'experiments/lexical.py')
    old_lexical.metrics = old_metrics
    return old_lexical, old_metrics


def reference_bli(model, tok, device, rev):
    """(wall seconds, CPU seconds, results) of revision `rev`'s evaluate_bli, every representation's
    per-query 'hits@1' and 'hits@5' added (from the revision's own ranking of each score matrix)."""
    old_lexical, old_metrics = load_revision(rev)
    calls = []
    precision_at_k = old_metrics.precision_at_k

    def recording(scores, src_words, tgt_words, gold, ks=(1, 5)):
        p = precision_at_k(scores, src_words, tgt_words, gold, ks)
        top = old_metrics.top_columns(old_metrics.as_matrix(scores), min(5, len(tgt_words))).tolist()
        calls.append({k: [int(any(tgt_words[j] in gold[s] for j in row[:k])) for s, row in zip(src_words, top)]
                      for k in (1, 5)})
        return p
    old_metrics.precision_at_k = recording
    t0, c0 = time.time(), time.process_time()
    results = old_lexical.evaluate_bli(model, tok, device)
    seconds, cpu = time.time() - t0, time.process_time() - c0
    # evaluate_bli calls precision_at_k for rep, then direction, then cosine before csls
    order = [(rep, d, m) for rep in results[next(iter(results))]['cosine'] for d in results for m in ('cosine', 'csls')]
    for (rep, direction, method), hits in zip(order, calls, strict=True):
        results[direction][method][rep]['hits@1'], results[direction][method][rep]['hits@5'] = hits[1], hits[5]
    return seconds, cpu, results


def cached_reference(model, tok, device, rev, cache):
    """{'revision', 'checkpoint' (sha256), 'seconds', 'cpu_seconds', 'results'} of reference_bli, read from the
    JSON file `cache` when it holds a run of the same checkpoint, else computed (and written there)."""
    sha = model.info['checkpoint']['sha256']
    if cache and os.path.isfile(cache):
        with open(cache, encoding='utf-8') as f:
            cached = json.load(f)
        if cached.get('checkpoint') == sha and cached.get('revision') == rev:
            return cached
        print(f"{cache} is of another checkpoint or revision: recomputing", flush=True)
    seconds, cpu, results = reference_bli(model, tok, device, rev)
    run = {'revision': rev, 'checkpoint': sha, 'seconds': seconds, 'cpu_seconds': cpu,
           'results': evaluate.to_json(results)}
    if cache:
        with open(cache, 'w', encoding='utf-8') as f:
            json.dump(run, f)
    return run


def compare_bli(new, old):
    """{'max_abs_diff_p@1', 'max_abs_diff_p@5', 'hits_equal', 'n_compared', 'different'} between two
    evaluate_bli results over every direction, method and representation."""
    diffs = {'p@1': 0.0, 'p@5': 0.0}
    different = []
    n = 0
    for direction, r in old.items():
        if new[direction]['queries'] != r['queries']:
            different.append(f'{direction} queries')
        for method in ('cosine', 'csls'):
            for rep, scores in r[method].items():
                mine = new[direction][method][rep]
                n += 1
                for key in diffs:
                    diffs[key] = max(diffs[key], abs(mine[key] - scores[key]))
                if mine['hits@1'] != scores['hits@1'] or mine['hits@5'] != scores['hits@5']:
                    different.append(f'{direction} {method} {rep}')
    return {'max_abs_diff_p@1': diffs['p@1'], 'max_abs_diff_p@5': diffs['p@5'], 'hits_equal': not different,
            'n_compared': n, 'different': different}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out_dir', default='out/bench_ref', help='a trained model (train.py out_dir)')
    p.add_argument('--device', default='cpu')
    p.add_argument('--sections', nargs='+', default=list(SECTIONS), choices=SECTIONS)
    p.add_argument('--reference', metavar='REV',
                   help='also run the BLI of this git revision (e.g. HEAD) and compare its numbers and time')
    p.add_argument('--reference_cache', help='JSON file of the reference BLI run: read when present, else written')
    p.add_argument('--sense_table', choices=('on', 'off', 'both'), default='on',
                   help="the Backpack's inference sense table: on (as evaluate runs), off, or both (times each "
                        "section with and without it and prints the ratio)")
    p.add_argument('--output', help='write the times (and the comparison) here as JSON')
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    model, _ = evaluate.load_model(args.out_dir, device)
    tok = evaluate.load_tokenizer(args.out_dir)
    print(f"{args.out_dir}: {model.info['model_type']}, {model.param_counts()['total']:,} parameters; "
          f"{system.machine(device)}", flush=True)

    times, cpu, outputs = {}, {}, {}
    for section in args.sections:
        with sense_table(args.sense_table != 'off'):
            times[section], cpu[section], outputs[section] = time_section(model, tok, device, section, args.out_dir)
        print(f"{section}: {times[section]:.1f} s ({cpu[section]:.1f} CPU s)", flush=True)
    total = sum(times.values())
    print('\n| section | seconds | CPU seconds | share |\n|---|---:|---:|---:|')
    for section, seconds in times.items():
        print(f'| {section} | {seconds:.1f} | {cpu[section]:.1f} | {seconds / total:.0%} |')
    print(f'| total | {total:.1f} | {sum(cpu.values()):.1f} | |')
    report = {'out_dir': args.out_dir, 'machine': system.machine(device), 'sense_table': args.sense_table != 'off',
              'seconds': times, 'cpu_seconds': cpu}

    if args.sense_table == 'both':
        if model.info['model_type'] != 'backpack':
            raise UserError('--sense_table both times the Backpack\'s sense table: give a Backpack out_dir')
        without = {}
        for section in args.sections:
            with sense_table(False):
                _, without[section], _ = time_section(model, tok, device, section, args.out_dir)
        print('\n| section | CPU s with the table | CPU s without | without / with |\n|---|---:|---:|---:|')
        for section in args.sections:
            print(f'| {section} | {cpu[section]:.1f} | {without[section]:.1f} | '
                  f'{without[section] / max(cpu[section], 1e-9):.2f}x |')
        print(f'| total | {sum(cpu.values()):.1f} | {sum(without.values()):.1f} | '
              f'{sum(without.values()) / max(sum(cpu.values()), 1e-9):.2f}x |')
        report['cpu_seconds_without_sense_table'] = without

    if args.reference:
        if 'bli' not in outputs:
            raise UserError('--reference compares the BLI section: include bli in --sections')
        ref = cached_reference(model, tok, device, args.reference, args.reference_cache)
        agreement = compare_bli(evaluate.to_json(outputs['bli']), ref['results'])
        ref_cpu = f"{ref['cpu_seconds']:.1f}" if ref.get('cpu_seconds') is not None else '?'
        print(f"\nBLI of {args.reference}: {ref['seconds']:.1f} s ({ref_cpu} CPU s); this tree: {times['bli']:.1f} s "
              f"({cpu['bli']:.1f} CPU s): {ref['seconds'] / times['bli']:.1f}x faster")
        print(json.dumps(agreement, indent=1))
        report['reference'] = {key: ref.get(key) for key in ('revision', 'seconds', 'cpu_seconds')}
        report['reference']['agreement'] = agreement
    if args.output:
        with open(args.output, 'w', encoding='utf-8') as f:
            json.dump(report, f, indent=1)


if __name__ == '__main__':
    run_main(main)
