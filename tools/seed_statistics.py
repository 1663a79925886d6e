"""
Seed-level statistics of the CPU reference (tools/cpu_reference.py): every metric's mean over training
seeds with an interval that includes the seeds' variance, the Backpack's paired differences with its twin and
with the wide twin across seeds, and size M beside size S.

    python tools/seed_statistics.py results/cpu_reference           # writes <size>/seeds.{json,md}, seeds.md
    python tools/seed_statistics.py results/cpu_reference --check   # exit 1 when those differ from the runs

The interval (metrics.seed_bootstrap, 95 %, 1,000 resamples, seed 0) is a two-level bootstrap: each resample
draws the training seeds with replacement and the test items with replacement (sentences, word pairs, BLI
queries, retrieval queries), so it holds both which models were trained and which items were tested. With 3
seeds the seed draw has few distinct outcomes, so the t-interval over the per-seed values (items fixed) is
given beside it, with every seed's own value. A paired difference (Backpack − Transformer) pairs the runs by
seed and draws the same seeds and items for both; it is called significant when the bootstrap interval and
(with 2 seeds or more) the t-interval both exclude 0, and `same sign` counts the seeds whose own difference agrees. Bits/byte are summed over 3,000 documents per
file: their items are not resampled (only the seeds are), which the tables say. With one seed (size M) the
interval is the items' alone and no t-interval exists (and bits/byte have no interval).

Reads results/cpu_reference/<size>/<model>_seed<s>/evaluation_results.json and translation_*.json (every run
of every seed that plan.json names and that has been collected); nothing is evaluated again.
"""
import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from sacrebleu.metrics import BLEU, CHRF  # noqa: E402

from checkpoint import json_text  # noqa: E402
from errors import MissingFileError, UserError, run_main  # noqa: E402
from experiments import metrics  # noqa: E402

MODELS = ('backpack', 'transformer', 'transformer_wide')
AGAINST = {'transformer': 'twin', 'transformer_wide': 'wide twin'}
PAIRED_REPS = ('mean_sense', 'embedding')  # the Backpack's headline representation, named in advance, and its embedding
BOOTSTRAP = {'n_resamples': 1000, 'seed': 0, 'level': 0.95}
# the rows of the markdown tables (all metrics are in seeds.json)
HEADLINE = ('bits/byte val_en', 'bits/byte val_fr', 'BLEU en-fr', 'BLEU fr-en', 'chrF en-fr', 'chrF fr-en',
            'Spearman en', 'Spearman fr', 'Spearman en-fr', 'Spearman simlex999',
            'BLI en-fr CSLS P@1 non-identical', 'BLI fr-en CSLS P@1 non-identical',
            'retrieval tatoeba hidden P@1 en→fr', 'retrieval tatoeba hidden P@1 fr→en')


def metric_items(results, extras=()):
    """{(metric, representation or None): (stat, n, items key, items resampled)} of one run, from its stored
    per-item outputs: stat(idx) scores the items idx (metrics.*_stat), and `items key` is what must be equal
    across the runs compared (the references, word pairs, queries), so that they are scored on the same items.
    extras: (name, translation results) of the run's translation_<name>.json files."""
    items = {}
    for split, r in results.get('perplexity', {}).items():
        # summed over documents whose bytes are not stored one by one: the seeds alone are resampled
        items[(f'bits/byte {split}', None)] = (metrics.mean_stat([r['bpb']] * r['documents']), r['documents'],
                                               [r['documents'], r['bytes']], False)
    for prefix, translation in [('', results.get('translation', {}))] + [(f'{n} ', t) for n, t in extras]:
        for direction, r in translation.items():
            if 'hypotheses' in r and 'references' in r:
                for name, cls in (('BLEU', BLEU), ('chrF', CHRF)):
                    items[(f'{name} {prefix}{direction}', None)] = (
                        metrics.corpus_stat(reference_metric(cls, r['references']), r['hypotheses'], r['references']),
                        len(r['references']), r['references'], True)
    for dataset, r in results.get('word_similarity', {}).items():
        for rep, cosines in r.get('cosines', {}).items():
            items[(f'Spearman {dataset}', rep)] = (metrics.spearman_stat(cosines, r['gold']), len(r['gold']),
                                                  [r['pairs'], r['gold']], True)
    for direction, r in results.get('bli', {}).items():
        for rep, scored in r.get('csls', {}).items():
            hits = scored.get('hits@1')
            if hits is None:
                continue
            items[(f'BLI {direction} CSLS P@1', rep)] = (metrics.mean_stat(hits), len(hits), r['queries'], True)
            if 'non_identical' in r:
                keep = r['non_identical']
                items[(f'BLI {direction} CSLS P@1 non-identical', rep)] = (
                    metrics.mean_stat([hits[i] for i in keep]), len(keep), [r['queries'], keep], True)
    for dataset, r in results.get('sentence_similarity', {}).items():
        hidden = r.get('hidden', {})
        for way, label in (('x2y', 'en→fr'), ('y2x', 'fr→en')):
            if f'hits_{way}' in hidden:
                items[(f'retrieval {dataset} hidden P@1 {label}', None)] = (
                    metrics.mean_stat(hidden[f'hits_{way}']), hidden['n'],
                    [hidden['n'], sorted(hidden.get('files', {}).items())], True)
    return items


def reference_metric(cls, refs, cache={}):
    """One sacreBLEU metric per (metric, references), shared by every run scored on them."""
    key = (cls.__name__, tuple(refs))
    if key not in cache:
        cache[key] = metrics.reference_metric(cls, refs)
    return cache[key]


def read_run(run_dir):
    results_path = run_dir / 'evaluation_results.json'
    if not results_path.is_file():
        raise MissingFileError(f"{results_path} not found: run python tools/cpu_reference.py --steps "
                               f"evaluate collect")
    results = json.loads(results_path.read_text())
    extras = [(p.stem[len('translation_'):], json.loads(p.read_text())['translation'])
              for p in sorted(run_dir.glob('translation_*.json'))]
    return metric_items(results, extras)


def runs_of(size_dir, seeds):
    """{model: [items of each seed]} for the models whose every seed has been collected."""
    out = {}
    for model in MODELS:
        dirs = [size_dir / f'{model}_seed{s}' for s in seeds]
        if all((d / 'evaluation_results.json').is_file() for d in dirs):
            out[model] = [read_run(d) for d in dirs]
    return out


def shared(per_seed, key):
    """(stats, n, resampled) of a metric over the seeds, or None when a seed lacks it or scores other items."""
    if any(key not in items for items in per_seed):
        return None
    first = per_seed[0][key]
    if any(items[key][1:] != first[1:] for items in per_seed[1:]):
        return None
    return [items[key][0] for items in per_seed], first[1], first[3]


def row(name, rep, out, resampled):
    """One metric's entry. Without resampled items a single seed has no interval at all (low/high None). A
    paired difference is significant when its bootstrap interval and, with 2 seeds or more, its t-interval
    both exclude 0: the bootstrap's seed draw is coarse with 3 seeds, the t-interval ignores the items."""
    out = dict(out)
    if not resampled and out['n_seeds'] == 1:
        out['low'] = out['high'] = None
    if 'significant' in out:
        excludes = lambda low, high: low is not None and high is not None and (low > 0 or high < 0)  # noqa: E731
        out['significant'] = (excludes(out['low'], out['high']) and
                              (out['n_seeds'] == 1 or excludes(out['t_low'], out['t_high'])))
    return {'metric': name, 'representation': rep, 'items_resampled': resampled, **out}


def size_statistics(size_dir, seeds, bootstrap=BOOTSTRAP):
    """seeds.json's dict for one size: each model's metrics over seeds, the Backpack's paired differences (the
    difference of the two models' resamples, which seed_resamples draws alike for the same seeds and items)."""
    runs = runs_of(size_dir, seeds)
    if 'backpack' not in runs:
        raise MissingFileError(f"{size_dir}: the Backpack of seeds {seeds} has not been collected yet")
    draws = {'n_resamples': bootstrap['n_resamples'], 'seed': bootstrap['seed']}
    summary = {**draws, 'level': bootstrap['level']}
    resamples, found = {}, {}
    models, paired, not_paired = {}, {}, []
    for model, per_seed in runs.items():
        rows = []
        for key in per_seed[0]:
            found[model, key] = shared(per_seed, key)
            if found[model, key]:
                stats, n, resampled = found[model, key]
                resamples[model, key] = metrics.seed_resamples(stats, n, **draws)
                rows.append(row(*key, metrics.seed_summary(*resamples[model, key], n=n, **summary), resampled))
        models[model] = rows
    for other in AGAINST:
        if other not in runs:
            continue
        rows = []
        for key in runs['backpack'][0]:
            name, rep = key
            partner = (name, 'embedding' if rep else None)
            if rep not in (None, *PAIRED_REPS):
                continue
            a, b = found.get(('backpack', key)), found.get((other, partner))
            if a is None or b is None or a[1:] != b[1:] or any(
                    x[key][2] != y[partner][2] for x, y in zip(runs['backpack'], runs[other])):  # other items
                not_paired.append(f'{name} {rep or ""}'.strip() + f' vs {other}')
                continue
            rows.append(row(name, rep, metrics.seed_paired_summary(resamples['backpack', key], resamples[other, partner],
                                                                   n=a[1], **summary), a[2]))
        paired[other] = rows
    return {'seeds': seeds, 'method': METHOD, 'bootstrap': bootstrap, 'models': models, 'paired': paired,
            'not_paired': not_paired}


METHOD = ("mean over training seeds; interval: two-level percentile bootstrap (metrics.seed_bootstrap) drawing seeds "
          "and test items with replacement in each resample; t_low/t_high: t-interval over the per-seed values "
          "(items fixed); paired differences pair the runs by seed (metrics.seed_paired_bootstrap) and are "
          "significant when both intervals exclude 0; bits/byte: lower is better")


def fmt(x, digits=3):
    return '–' if x is None or x != x else f'{x:.{digits}f}'


def interval(r):
    return f"[{fmt(r['low'])}, {fmt(r['high'])}]"


def size_markdown(size, stats):
    seeds = stats['seeds']
    partial = stats.get('partial_seeds') or {}
    waiting = ['Not yet counted (a seed counts once all its models are collected): ' + '; '.join(
        f"seed {s}: {', '.join(models)}" for s, models in partial.items()) + '.', ''] if partial else []
    lines = [f"# Size {size}: {len(seeds)} training seed{'s' * (len(seeds) > 1)} ({', '.join(map(str, seeds))})",
             '', *waiting,
             METHOD[0].upper() + METHOD[1:] + '. Bits/byte: seeds resampled, not documents. All metrics are in '
             'seeds.json.', '', '| metric | model | mean | 95 % interval (seeds × items) | t-interval (seeds) | '
             'per seed |', '|---|---|---:|---:|---:|---|']
    for model, rows in stats['models'].items():
        for r in rows:
            if r['metric'] in HEADLINE and r['representation'] in (None, *PAIRED_REPS):
                name = r['metric'] + (f" ({r['representation']})" if r['representation'] else '')
                lines.append(f"| {name} | {model} | {fmt(r['value'])} | {interval(r)} | "
                             f"[{fmt(r['t_low'])}, {fmt(r['t_high'])}] | {', '.join(fmt(v) for v in r['per_seed'])} |")
    for other, rows in stats['paired'].items():
        lines += ['', f"## Backpack − {AGAINST[other]} ({other}), paired by seed", '',
                  '| metric | Δ mean | 95 % interval | significant | same sign | per seed |',
                  '|---|---:|---:|:---:|---:|---|']
        for r in rows:
            if r['metric'] in HEADLINE:
                name = r['metric'] + (f" (Backpack {r['representation']} − embedding)" if r['representation'] else '')
                lines.append(f"| {name} | {fmt(r['value'], 4)} | {interval(r)} | {'yes' if r['significant'] else 'no'}"
                             f" | {r['same_sign']}/{r['n_seeds']} | {', '.join(fmt(v, 4) for v in r['per_seed'])} |")
    if stats['not_paired']:
        lines += ['', 'Not paired (the runs do not share the items): ' + ', '.join(stats['not_paired']) + '.']
    return '\n'.join(lines) + '\n'


def sizes_markdown(all_stats):
    """The Backpack's paired advantages at each size beside each other."""
    sizes = list(all_stats)
    lines = ['# The Backpack\'s paired differences by size', '',
             'Δ = Backpack − Transformer, mean over the seeds of each size with its 95 % interval (seeds × items; '
             'one seed: items only). ✓ = significant.', '',
             '| metric | vs | ' + ' | '.join(f'{s} ({len(all_stats[s]["seeds"])} seed'
                                             f'{"s" * (len(all_stats[s]["seeds"]) > 1)})' for s in sizes) + ' |',
             '|---|---|' + '---:|' * len(sizes)]
    keys = [(r['metric'], r['representation'], other) for other, rows in all_stats[sizes[0]]['paired'].items()
            for r in rows if r['metric'] in HEADLINE]
    for name, rep, other in keys:
        cells = []
        for s in sizes:
            match = [r for r in all_stats[s]['paired'].get(other, []) if (r['metric'], r['representation']) == (name, rep)]
            cells.append(f"{fmt(match[0]['value'], 4)} {interval(match[0])}{' ✓' if match[0]['significant'] else ''}"
                         if match else '')
        label = name + (f' ({rep})' if rep else '')
        lines.append(f'| {label} | {AGAINST[other]} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def outputs(results_dir, bootstrap=BOOTSTRAP):
    """{path: text} of every file this script writes for results_dir."""
    plan_path = results_dir / 'plan.json'
    if not plan_path.is_file():
        raise MissingFileError(f"{plan_path} not found: run python tools/cpu_reference.py (its plan and collect "
                               f"steps) first")
    plan = json.loads(plan_path.read_text())
    files, all_stats = {}, {}
    for size, seeds in plan['seeds'].items():
        if not (results_dir / size / f'backpack_seed{seeds[0]}' / 'evaluation_results.json').is_file():
            continue  # nothing of this size collected yet
        have = {s: [m for m in MODELS if (results_dir / size / f'{m}_seed{s}' / 'evaluation_results.json').is_file()]
                for s in seeds}
        # the seeds with every model collected so far in any seed: all are summarised, and paired, over the same seeds
        present = {m for models in have.values() for m in models}
        complete = [s for s in seeds if set(have[s]) == present]
        used = complete or [s for s in seeds if 'backpack' in have[s]]
        stats = size_statistics(results_dir / size, used, bootstrap)
        stats['partial_seeds'] = {str(s): have[s] for s in seeds if s not in used and have[s]}
        all_stats[size] = stats
        files[results_dir / size / 'seeds.json'] = json_text(stats) + '\n'
        files[results_dir / size / 'seeds.md'] = size_markdown(size, stats)
    if not all_stats:
        raise MissingFileError(f"{results_dir}: no size has a collected Backpack yet")
    files[results_dir / 'seeds.md'] = sizes_markdown(all_stats)
    return files


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('results_dir', type=Path, nargs='?', default=REPO / 'results' / 'cpu_reference')
    p.add_argument('--check', action='store_true', help='recompute and compare with the files; exit 1 if they differ')
    p.add_argument('--n_resamples', type=int, default=BOOTSTRAP['n_resamples'])
    args = p.parse_args(argv)
    if args.n_resamples < 10:
        raise UserError(f"--n_resamples {args.n_resamples}: a percentile interval needs at least 10 resamples")
    files = outputs(args.results_dir, {**BOOTSTRAP, 'n_resamples': args.n_resamples})
    if args.check:
        stale = [str(path) for path, text in files.items() if not path.is_file() or path.read_text() != text]
        if stale:
            raise UserError(f"out of date (rerun python tools/seed_statistics.py {args.results_dir}): "
                            f"{', '.join(stale)}")
        print(f"{len(files)} seed-statistics files match their runs")
        return
    for path, text in files.items():
        path.write_text(text, encoding='utf-8')
        print(f"wrote {path}")


if __name__ == '__main__':
    run_main(main)
