"""
Compare a Backpack with its Transformer twin on every metric both have:

    python compare_models.py --backpack_dir out/backpack_full --transformer_dir out/transformer_full \
        --device cpu --translation_samples 500

Each model is evaluated with the same settings (evaluate.run_evaluations); a model's
evaluation_results.json from run_full_evaluation.py is reused when it was made with those settings
from the same checkpoint, by content (sha256: a model retrained since, even to the same iteration, is
evaluated again). When the two models use different tokenizers, per-token perplexities are not
comparable: their rows are marked so and have no delta; bits per byte (per UTF-8 byte of the same text)
is the comparable number. Extra translation evaluations that both out_dirs hold as translation_<name>.json
(`evaluate.py --translation --output`: another test set, beam search) are compared and paired too. Writes
comparison.md, comparison.json and loss_curves.png into --output_dir
(default: a `comparison` folder beside the Backpack's out_dir) and prints the table. comparison.json names
each side's results by file and sha256 when they were read from an evaluation_results.json, and holds them
only when they were computed here.
"""
import system  # noqa: F401  (first: the OpenMP setting torch reads when it loads)
import os
import argparse
import glob
import json
import math

from sacrebleu.metrics import BLEU, CHRF

import evaluate
from checkpoint import checkpoint_path, save_json
from errors import UserError, resolve_device, run_main
from experiments import metrics, plots
from experiments.eval_data import portable_path

SENSES_SHOWN = 4  # senses per probe word in the printed summary (all are in comparison.json)


def evaluated(out_dir, device, settings):
    """(run_evaluations() results for out_dir, the evaluation_results.json they were read from or None),
    reusing that file when it was made with these settings from the checkpoint out_dir holds now (same
    file, same sha256)."""
    path = os.path.join(out_dir, 'evaluation_results.json')
    if os.path.isfile(path):
        cached = evaluate.read_results(path)
        wanted = {**cached['settings'], **settings, 'which': list(evaluate.EVALUATIONS), 'device': str(device)}
        stale = evaluate.stale_results(cached, out_dir)
        if stale is None and cached['settings'] == evaluate.to_json(wanted):
            print(f"reusing {path}")
            return cached, path
        print(f"not reusing {path}: {stale or 'it was made with other settings'}")
    model, _ = evaluate.load_model(out_dir, device)
    print(f"evaluating {out_dir} ...")
    results = evaluate.run_evaluations(model, evaluate.load_tokenizer(out_dir), device, out_dir=out_dir, **settings)
    return evaluate.to_json(results), None


def results_record(results, path):
    """What comparison.json keeps of one side: the results file it was read from, by portable path and
    sha256 (a comparison of committed results would otherwise hold a second copy of each, megabytes), or
    the results themselves when they were computed here and exist nowhere else."""
    if path is None:
        return results
    return {'results_file': portable_path(path), 'sha256': evaluate.sha256_file(path)}


PER_TOKEN = ('ppl ',)  # metrics per token: comparable only between models that share a tokenizer
NOT_COMPARABLE = 'not comparable: different tokenizers (compare bits/byte)'


def compare(backpack, transformer):
    """Rows (metric, backpack value, transformer value, delta) for every metric both have, and the
    Backpack's own metrics (senses) as (metric, value). With different tokenizers the delta of a
    per-token metric (PER_TOKEN) is the string NOT_COMPARABLE."""
    b, t = evaluate.headline_metrics(backpack), evaluate.headline_metrics(transformer)
    same_tokenizer = backpack['model']['tokenizer']['sha256'] == transformer['model']['tokenizer']['sha256']
    shared = [(name, b[name], t[name],
               b[name] - t[name] if same_tokenizer or not name.startswith(PER_TOKEN) else NOT_COMPARABLE)
              for name in b if name in t]
    params = [(f'params {part}', backpack['model']['params'].get(part, 0), transformer['model']['params'].get(part, 0))
              for part in dict.fromkeys([*backpack['model']['params'], *transformer['model']['params']])]
    params = [(name, vb, vt, vb - vt) for name, vb, vt in params]
    training = [('training iterations', backpack['model']['iter_num'], transformer['model']['iter_num']),
                ('best val loss (training estimate)', backpack['model']['val_loss'], transformer['model']['val_loss'])]
    training = [(name, vb, vt, vb - vt) for name, vb, vt in training]
    own = [(name, value) for name, value in b.items() if name not in t]
    return params + training + shared, own


def same_inputs(results_a, files_a, results_b, files_b):
    """Whether two results read the same bytes, file by file: each names its inputs by portable path with
    their sha256 in results['inputs'] (each out_dir has its own copy of the held-out test files, so the
    names differ where the sentences do not). An input without a recorded sha256 is not the same."""
    hashes_a = [results_a.get('inputs', {}).get(f) for f in files_a]
    hashes_b = [results_b.get('inputs', {}).get(f) for f in files_b]
    return len(hashes_a) == len(hashes_b) and all(a is not None and a == b for a, b in zip(hashes_a, hashes_b))


def paired_differences(backpack, transformer):
    """Backpack − Transformer on the same test items, with the 95 % paired bootstrap interval
    (experiments.metrics.paired_bootstrap: 1,000 resamples, seed 0, the same items drawn for both models):
    [{'metric', 'difference', 'low', 'high', 'significant'}], significant when the interval excludes 0.
    Covers translation BLEU/chrF (resampling sentences), word similarity ρ (pairs), BLI P@1 with CSLS
    (queries) and retrieval P@1 of the hidden state (queries), wherever both results hold the same items;
    the Backpack is compared with both its mean sense and its embedding where it has both. Returns
    (rows, skipped): skipped names each evaluation whose per-item outputs the two results do not share
    (results from before per-item outputs were kept, other tokenizers, other settings)."""
    rows, skipped = [], []  # skipped: what the two results do not hold on the same items

    def add(name, stat_b, stat_t, n):
        d = metrics.paired_bootstrap(stat_b, stat_t, n)
        rows.append({'metric': name, 'difference': d['value'], 'low': d['low'], 'high': d['high'],
                     'significant': d['significant'], 'n': n})

    for direction, rb in backpack.get('translation', {}).items():
        rt = transformer.get('translation', {}).get(direction)
        if not rt or 'hypotheses' not in rb or 'hypotheses' not in rt or 'references' not in rb \
                or rb.get('references') != rt.get('references'):
            skipped.append(f'translation {direction}')
            continue
        refs = rb['references']
        for name, metric in (('BLEU', BLEU()), ('chrF', CHRF())):
            add(f'{name} {direction}', metrics.corpus_stat(metric, rb['hypotheses'], refs),
                metrics.corpus_stat(metric, rt['hypotheses'], refs), len(refs))
    for dataset, rb in backpack.get('word_similarity', {}).items():
        rt = transformer.get('word_similarity', {}).get(dataset, {})
        if 'cosines' not in rb or rb.get('pairs') != rt.get('pairs'):
            skipped.append(f'word similarity {dataset}')
            continue
        for rep in ('mean_sense', 'embedding'):
            add(f'Spearman {dataset}: Backpack {rep} − Transformer embedding',
                metrics.spearman_stat(rb['cosines'][rep], rb['gold']),
                metrics.spearman_stat(rt['cosines']['embedding'], rt['gold']), len(rb['gold']))
    for direction, rb in backpack.get('bli', {}).items():
        rt = transformer.get('bli', {}).get(direction, {})
        if 'queries' not in rb or rb['queries'] != rt.get('queries'):
            skipped.append(f'BLI {direction}')
            continue
        for rep in ('mean_sense', 'embedding'):
            hits_b, hits_t = rb['csls'][rep]['hits@1'], rt['csls']['embedding']['hits@1']
            add(f'BLI {direction} CSLS P@1: Backpack {rep} − Transformer embedding', metrics.mean_stat(hits_b),
                metrics.mean_stat(hits_t), len(hits_b))
            if 'non_identical' in rb:  # without the copies that any representation finds at cosine 1
                keep = rb['non_identical']
                add(f'BLI {direction} CSLS P@1, non-identical queries: Backpack {rep} − Transformer embedding',
                    metrics.mean_stat([hits_b[i] for i in keep]), metrics.mean_stat([hits_t[i] for i in keep]), len(keep))
    for dataset, rb in backpack.get('sentence_similarity', {}).items():
        hb, ht = rb.get('hidden', {}), transformer.get('sentence_similarity', {}).get(dataset, {}).get('hidden', {})
        if 'hits_x2y' not in hb or 'hits_x2y' not in ht or hb['n'] != ht['n'] \
                or not same_inputs(backpack, hb['files'].values(), transformer, ht['files'].values()):
            skipped.append(f'retrieval {dataset}')
            continue
        for way, label in (('x2y', 'en→fr'), ('y2x', 'fr→en')):
            add(f'retrieval {dataset} hidden P@1 {label}', metrics.mean_stat(hb[f'hits_{way}']),
                metrics.mean_stat(ht[f'hits_{way}']), hb['n'])
    return rows, skipped


def extra_translations(backpack_dir, transformer_dir, committed=False):
    """The translation_<name>.json files (evaluate.py --translation --output: other test sets, beam sizes) that
    both out_dirs hold, computed from the checkpoints they hold now (committed: results kept without their
    checkpoints, taken as they are): {name: (backpack, transformer) results}, and the names left out because one
    side is missing or stale."""
    pairs, left_out = {}, []
    for path in sorted(glob.glob(os.path.join(backpack_dir, 'translation_*.json'))):
        name = os.path.basename(path)[len('translation_'):-len('.json')]
        other = os.path.join(transformer_dir, os.path.basename(path))
        results = [evaluate.read_results(f) for f in (path, other) if os.path.isfile(f)]
        stale = not committed and any(evaluate.stale_results(r, d) for r, d in zip(results, (backpack_dir, transformer_dir)))
        if len(results) < 2 or stale or results[0]['settings'] != results[1]['settings']:
            left_out.append(name)
            continue
        pairs[name] = tuple(results)
    return pairs, left_out


def extra_rows(pairs):
    """Table rows and paired differences of the extra translation evaluations, their names suffixed."""
    rows, differences, skipped = [], [], []
    for name, (rb, rt) in pairs.items():
        for direction in rb['translation']:
            for metric in ('bleu', 'chrf'):
                vb, vt = rb['translation'][direction][metric], rt['translation'].get(direction, {}).get(metric)
                if vt is not None:
                    rows.append((f'{metric} {direction} ({name})', vb, vt, vb - vt))
        d, s = paired_differences({'translation': rb['translation']}, {'translation': rt['translation']})
        differences += [{**r, 'metric': f"{r['metric']} ({name})"} for r in d]
        skipped += [f'{x} ({name})' for x in s]
    return rows, differences, skipped


def json_row(name, vb, vt, d):
    """A row of comparison.json; a row that is not comparable has delta None and 'comparable': false."""
    if d == NOT_COMPARABLE:
        return dict(metric=name, backpack=vb, transformer=vt, delta=None, comparable=False, note=NOT_COMPARABLE)
    return dict(metric=name, backpack=vb, transformer=vt, delta=d, comparable=True)


def fmt(value):
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return f'{value:,}'
    return 'n/a' if value is None or (isinstance(value, float) and math.isnan(value)) else f'{value:.4g}'


def sense_summary(backpack):
    """The derived labels and, for each probe word, the top tokens of its first SENSES_SHOWN senses."""
    if 'senses' not in backpack:
        return []
    lines = ['### Backpack sense labels (derived from the model)', '']
    lines += [f"- sense {s['index']}: {s['label']}" for s in backpack['senses']['labels']]
    lines += ['', f'### Top next tokens of the probe words\' first {SENSES_SHOWN} senses', '']
    for word, entry in backpack['senses']['probe_words']['words'].items():
        if entry.get('oov'):
            lines.append(f'- {word}: OOV')
            continue
        shown = '; '.join(f"s{s['sense']}: {' '.join(tok['token'] for tok in s['top'])}"
                          for s in entry['senses'][:SENSES_SHOWN])
        lines.append(f'- {word}: {shown}')
    return lines + ['']


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--backpack_dir', required=True)
    p.add_argument('--transformer_dir', required=True)
    p.add_argument('--device', default='cpu')
    p.add_argument('--translation_samples', type=int, default=500, help='test pairs per direction (0 = all)')
    p.add_argument('--beam_size', type=int, default=1)
    p.add_argument('--sentence_pairs', type=int, default=1000)
    p.add_argument('--output_dir', help='default: <parent of --backpack_dir>/comparison')
    p.add_argument('--committed', action='store_true',
                   help='compare results kept without their checkpoints (e.g. results/cpu_reference/first/backpack) as they '
                        'are: nothing is evaluated, the settings are those the results record')
    args = p.parse_args(argv)
    output_dir = args.output_dir or os.path.join(os.path.dirname(os.path.abspath(args.backpack_dir)), 'comparison')

    if args.committed:
        paths = [os.path.join(d, 'evaluation_results.json') for d in (args.backpack_dir, args.transformer_dir)]
        backpack, transformer = (evaluate.read_results(path) for path in paths)
        settings = {key: backpack['settings'][key] for key in ('translation_samples', 'beam_size', 'sentence_pairs')}
    else:
        args.device = resolve_device(args.device)
        for out_dir in (args.backpack_dir, args.transformer_dir):
            checkpoint_path(out_dir)  # both are there, before the first (long) evaluation
        settings = {'translation_samples': args.translation_samples or None, 'beam_size': args.beam_size,
                    'sentence_pairs': args.sentence_pairs}
        (backpack, backpack_path), (transformer, transformer_path) = (
            evaluated(d, args.device, settings) for d in (args.backpack_dir, args.transformer_dir))
        paths = [backpack_path, transformer_path]
    if backpack['model']['model_type'] != 'backpack' or transformer['model']['model_type'] != 'transformer':
        raise UserError(f"--backpack_dir holds a {backpack['model']['model_type']} and --transformer_dir a "
                        f"{transformer['model']['model_type']}")
    rows, own = compare(backpack, transformer)
    extra, extra_left_out = extra_translations(args.backpack_dir, args.transformer_dir, args.committed)
    if extra_left_out:
        print(f"note: not compared: translation_{{{','.join(extra_left_out)}}}.json (missing in one out_dir, computed "
              f"from an older checkpoint, or with other settings)")
    more_rows, more_differences, more_skipped = extra_rows(extra)
    rows += more_rows
    if any(d == NOT_COMPARABLE for *_, d in rows):
        print(f"note: the two models use different tokenizers ({backpack['model']['tokenizer']['name']}; "
              f"{transformer['model']['tokenizer']['name']}): the per-token perplexity rows are not comparable, "
              f"compare bits/byte")
    os.makedirs(output_dir, exist_ok=True)

    lines = [f"# Backpack vs Transformer", '', f"Backpack: `{portable_path(args.backpack_dir)}`; Transformer: "
             f"`{portable_path(args.transformer_dir)}`; "
             f"settings: {json.dumps(settings)}", '', '| metric | Backpack | Transformer | Δ (B − T) |', '|---|---:|---:|---:|']
    lines += [f'| {name} | {fmt(vb)} | {fmt(vt)} | {fmt(d)} |' for name, vb, vt, d in rows]
    lines += ['', '## Backpack only', '', '| metric | Backpack |', '|---|---:|']
    lines += [f'| {name} | {fmt(v)} |' for name, v in own]
    differences, skipped = paired_differences(backpack, transformer)
    differences, skipped = differences + more_differences, skipped + more_skipped
    if skipped:
        print(f"note: no paired difference for {', '.join(skipped)}: the two results do not hold per-item outputs "
              f"on the same items (older results, other tokenizers or settings); rerun run_full_evaluation.py")
    lines += ['', '## Paired differences with 95 % bootstrap intervals', '',
              'Backpack − Transformer on the same items, 1,000 paired resamples (seed 0); significant when the '
              'interval excludes 0.', '', '| metric | Δ | 95 % interval | significant | items |', '|---|---:|---:|:---:|---:|']
    lines += [f"| {r['metric']} | {r['difference']:.4g} | [{r['low']:.4g}, {r['high']:.4g}] | "
              f"{'yes' if r['significant'] else 'no'} | {r['n']:,} |" for r in differences]
    if skipped:
        lines += ['', f"Not paired (the results do not share per-item outputs): {', '.join(skipped)}."]
    lines += [''] + sense_summary(backpack)
    logs = {}
    for label, out_dir in (('backpack', args.backpack_dir), ('transformer', args.transformer_dir)):
        log_path = os.path.join(out_dir, 'training_log.json')
        if os.path.isfile(log_path):
            with open(log_path) as f:
                logs[label] = json.load(f)
    if logs:
        plots.plot_loss_curves(logs, os.path.join(output_dir, 'loss_curves.png'))
        lines += ['![loss curves](loss_curves.png)', '']
    text = '\n'.join(lines)
    with open(os.path.join(output_dir, 'comparison.md'), 'w', encoding='utf-8') as f:
        f.write(text)
    save_json({'settings': settings, 'rows': [json_row(*row) for row in rows], 'paired_differences': differences,
               'not_paired': skipped, 'extra_translations': {name: {'backpack': rb['settings'], 'transformer': rt['settings']}
                                                           for name, (rb, rt) in extra.items()},
               'backpack_only': dict(own), 'backpack': results_record(backpack, paths[0]),
               'transformer': results_record(transformer, paths[1])},
              os.path.join(output_dir, 'comparison.json'))
    print(text)
    print(f"wrote comparison.md, comparison.json and loss_curves.png to {output_dir}")


if __name__ == '__main__':
    run_main(main)
