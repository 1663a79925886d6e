"""
Check the results that run_full_evaluation.py wrote into out_dir before they are reported:

    python verify_evaluation.py --out_dir out/tiny_backpack

First, the results must come from the checkpoint out_dir holds now: evaluation_results.json records
the file and its sha256, and a checkpoint replaced since (retrained, even to the same iteration) is
an error (one line; rerun run_full_evaluation.py). A missing or malformed results file is too. With
--committed (results kept in the repository without their weights, e.g. results/cpu_reference/backpack)
that comparison is left out and said so; every other check runs. Each translation_<name>.json beside the
results (evaluate.py --translation --output: another test set, beam search) is checked the same way.

Every check is on the numbers themselves: each evaluation present; every metric finite and in its
range; sample counts as requested (translation, sentence pairs, perplexity documents = meta.json);
for a Backpack, one derived label per sense (sense_labels.json) and only English/French tokens in the
language-filtered sense lists (recomputed with the tokenizer's language masks); no empty translation;
the sense interventions (experiments/interventions.py), when run: each one asked for present, bias ratios
>= 1 before and after for EN, FR and the EN->FR transfer, each chosen edit the best of its train grid,
costs finite and consistent, shares and frequencies in [0, 1], perplexities >= 1, p-values in [0, 1].
`--interventions_file F` checks F, the output of experiments/interventions.py for out_dir, alone.

The model-vs-baseline gaps are printed (BASELINES). Prints `✅ ALL CHECKS PASSED - READY FOR PAPER
REPORTING` only when every check passes and every model result is above its baseline (gap > 0).
When the checks pass but some results are not above their baselines, it prints
`sanity checks passed; N results below their baselines: ...` (a gap of exactly 0 counts as below)
and exits 0, or 1 with --strict. A failed check lists the failures and exits 1.
"""
import system  # noqa: F401  (first: the OpenMP setting torch reads when it loads)
import os
import argparse
import glob
import json
import math
import sys

import evaluate
from errors import DataError, UserError, run_main
from experiments.eval_data import read_parallel

REQUIRED = ('perplexity', 'translation', 'word_similarity', 'bli', 'sentence_similarity')
PASSED = '✅ ALL CHECKS PASSED - READY FOR PAPER REPORTING'
BASELINES = ("translation: BLEU and chrF vs copying the source; word similarity (Backpack): the best sense "
             "representation vs the embedding; BLI: embedding CSLS P@1 vs the copy baseline, and (Backpack) mean "
             "sense vs embedding; retrieval: each contextual sentence vector's P@1 en->fr vs the bag of embeddings")
TRANSLATION_RANGES = {'bleu': (0, 100), 'chrf': (0, 100), 'exact_match': (0, 1), 'word_f1': (0, 1),
                      'char_accuracy': (0, 1)}


class Checks:
    def __init__(self):
        self.failures, self.passed = [], 0

    def check(self, ok, message):
        if ok:
            self.passed += 1
        else:
            self.failures.append(message)
        return ok

    def interval(self, ci, value, where):
        """A bootstrap interval (experiments.metrics.bootstrap_ci) of `value` must be there and hold it."""
        ok = isinstance(ci, dict) and abs(ci['value'] - value) <= 1e-9 * max(1.0, abs(value)) \
            and ci['low'] - 1e-9 <= value <= ci['high'] + 1e-9
        return self.check(ok, f'{where}: no 95 % interval holding the value {value!r} ({ci!r})')

    def in_range(self, value, lo, hi, where):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and lo <= value <= hi
        return self.check(ok, f'{where} = {value!r}, expected a finite number in [{lo}, {hi}]')


PER_ITEM = ('hypotheses', 'hits_x2y', 'hits_y2x', 'hits@1', 'cosines', 'gold', 'pairs', 'queries')  # for pairing


def numbers(obj, path=''):
    """Every (path, number) leaf of a nested results dict (bools and strings skipped; the per-item lists
    kept for paired comparisons are not results, and are skipped too)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k not in PER_ITEM:
                yield from numbers(v, f'{path}.{k}' if path else str(k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from numbers(v, f'{path}[{i}]')
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield path, obj


def verify(out_dir, committed=False):
    """Run every check on out_dir/evaluation_results.json and on each translation_<name>.json beside it;
    returns (Checks, gap lines, comparisons [(name, model value, baseline value)]). Results not from out_dir's
    current checkpoint, and a missing or malformed results file, raise a UserError. committed: results kept
    without their checkpoint (results/...): the checkpoint they name cannot be compared, every other check runs."""
    path = os.path.join(out_dir, 'evaluation_results.json')
    results = evaluate.read_results(path)
    extra = {f: evaluate.read_results(f) for f in sorted(glob.glob(os.path.join(out_dir, 'translation_*.json')))}
    for file, r in [(path, results), *extra.items()]:
        recorded = r['model'].get('checkpoint') or {}
        if committed:
            if any(os.path.isfile(os.path.join(out_dir, name)) for name in ('best.pt', 'ckpt.pt')):
                raise UserError(f"{out_dir} holds a checkpoint: verify it without --committed")
            print(f"note: {os.path.basename(file)}: checked as committed results of {recorded.get('file')} "
                  f"sha256 {recorded.get('sha256', '?')[:12]} (not here)")
            continue
        stale = evaluate.stale_results(r, out_dir)
        if stale:
            raise DataError(f"{file} is stale: {stale}; rerun run_full_evaluation.py --out_dir {out_dir}")
    try:
        c = run_checks(results, out_dir, path)
        for file, r in extra.items():
            check_translation(c, r, out_dir, where=os.path.basename(file))
        lines, comparisons = gaps(results)
    except (KeyError, IndexError, TypeError, AttributeError) as e:
        # a field missing or of the wrong type: the file was not written by run_full_evaluation.py as is
        raise DataError(f"{path} is malformed ({type(e).__name__}: {e}): rerun run_full_evaluation.py "
                        f"--out_dir {out_dir}") from None
    return c, lines, comparisons


def check_translation(c, results, out_dir, where='translation'):
    """The translation section of a results dict (evaluation_results.json, or a translation_<name>.json of
    evaluate.py --translation --output): every metric in range, its interval holding it, the sentence count as
    requested, no empty translation."""
    settings = results['settings']
    files = settings.get('translation_files') or [os.path.join(out_dir, 'test.en'), os.path.join(out_dir, 'test.fr')]
    if all(os.path.isfile(f) for f in files):
        n_expected = len(read_parallel(files[0], files[1], limit=settings['translation_samples'])[0])
    else:  # committed results of a test set that is not on this machine: the request is all there is to check
        print(f"note: {where}: {' / '.join(files)} not here, the sentence count is checked against the request only")
        n_expected = settings['translation_samples']
    for direction, r in results['translation'].items():
        for metric, (lo, hi) in TRANSLATION_RANGES.items():
            c.in_range(r[metric], lo, hi, f'{where}.{direction}.{metric}')
        for stat in ('mean', 'median', 'min', 'max'):
            c.in_range(r['sentence_bleu'][stat], 0, 100, f'{where}.{direction}.sentence_bleu.{stat}')
        c.check(r['n'] == n_expected, f'{where}.{direction}: n = {r["n"]}, requested {n_expected}')
        for metric in ('bleu', 'chrf'):
            c.interval(r.get(f'{metric}_ci'), r[metric], f'{where}.{direction}.{metric}')
        c.check(r['n_empty'] == 0, f'{where}.{direction}: {r["n_empty"]} of {r["n"]} translations are empty')


def run_checks(results, out_dir, path):
    c = Checks()
    settings, model = results['settings'], results['model']
    tok = evaluate.load_tokenizer(out_dir)

    for name in REQUIRED + (('senses',) if model['model_type'] == 'backpack' else ()):
        c.check(name in results, f'evaluation "{name}" missing from {path}')
    for where, value in numbers(results):
        c.check(math.isfinite(value), f'{where} is {value}')

    for key, r in results.get('perplexity', {}).items():
        c.in_range(r['ppl'], 1, float('inf'), f'perplexity.{key}.ppl')
        c.in_range(r['bpb'], 0, 64, f'perplexity.{key}.bpb')
        expected = tok.meta['splits'][key]['sentences']
        c.check(r['documents'] == expected, f'perplexity.{key}: {r["documents"]} documents, meta.json has {expected}')

    if 'translation' in results:
        check_translation(c, results, out_dir)

    for dataset, r in results.get('word_similarity', {}).items():
        c.check(r['n_covered'] > 0, f'word_similarity.{dataset}: no covered pair')
        for rep, rho in r['spearman'].items():
            c.in_range(rho, -1, 1, f'word_similarity.{dataset}.spearman.{rep}')
            if not rep.startswith('sense_'):
                c.interval(r.get('spearman_ci', {}).get(rep), rho, f'word_similarity.{dataset}.spearman.{rep}')

    for direction, r in results.get('bli', {}).items():
        for method in ('cosine', 'csls'):
            for rep, scores in r[method].items():
                for k in ('p@1', 'p@5'):
                    c.in_range(scores[k], 0, 1, f'bli.{direction}.{method}.{rep}.{k}')
                c.interval(scores.get('p@1_ci'), scores['p@1'], f'bli.{direction}.{method}.{rep}.p@1')

    for dataset, r in results.get('sentence_similarity', {}).items():
        for kind, scores in r.items():
            for k in ('p@1_x2y', 'p@1_y2x'):
                c.in_range(scores[k], 0, 1, f'sentence_similarity.{dataset}.{kind}.{k}')
                c.interval(scores.get(f'{k}_ci'), scores[k], f'sentence_similarity.{dataset}.{kind}.{k}')
            for k in ('mean_true_cos', 'mean_random_cos'):
                c.in_range(scores[k], -1, 1, f'sentence_similarity.{dataset}.{kind}.{k}')
            available = len(read_parallel(scores['files']['en'], scores['files']['fr'])[0])
            c.check(scores['n'] == min(settings['sentence_pairs'], available),
                    f'sentence_similarity.{dataset}.{kind}: n = {scores["n"]}, requested '
                    f'{min(settings["sentence_pairs"], available)}')

    if 'senses' in results:
        check_senses(c, results, tok, out_dir)
    if 'interventions' in results or settings.get('interventions'):
        check_interventions(c, results, path)
    return c


def check_interventions(c, results, path):
    """The checks of experiments/interventions.py's results (results['interventions'])."""
    section, model = results.get('interventions', {}), results['model']
    backpack, k = model['model_type'] == 'backpack', model['n_senses']
    for name in results['settings'].get('interventions', []):
        c.check(name in section, f'interventions.{name} missing from {path}')
    if 'gender' in section:
        g = section['gender']
        expected = ('senses', 'projection') if backpack else ('projection',)
        for lang in ('en', 'fr'):
            e = g['languages'].get(lang)
            if not c.check(e is not None, f'interventions.gender: no {lang} results'):
                continue
            for split in ('train', 'test'):
                c.in_range(e['before'][split], 1, float('inf'), f'interventions.gender.{lang}.before.{split}')
            for method in expected:
                m = e['methods'].get(method)
                if not c.check(m is not None, f'interventions.gender.{lang}: no {method} results'):
                    continue
                where = f'interventions.gender.{lang}.{method}'
                for key in ('after', 'train_after'):
                    c.in_range(m[key], 1, float('inf'), f'{where}.{key}')
                grid = m['train_ratio']
                best = min(min(row) for row in grid) if method == 'senses' else min(grid)
                chosen = grid[m['sense']][g['scales'].index(m['scale'])] if method == 'senses' else \
                    grid[g['scales'].index(m['keep'])]
                c.check(abs(chosen - best) <= 1e-9 * best, f'{where}: the chosen edit is not the best of its train grid')
                # the grid is computed from alpha and C (log-linearity), train_after with the hook itself
                c.check(abs(m['train_after'] - chosen) <= 1e-3 * chosen,
                        f"{where}: train ratio {m['train_after']} with the edit, {chosen} predicted by the grid")
                if method == 'senses':
                    c.in_range(m['sense'], 0, k - 1, f'{where}.sense')
                check_cost(c, m['cost'], f'{where}.cost')
        t = g['transfer_en_to_fr']
        c.in_range(t['before'], 1, float('inf'), 'interventions.gender.transfer_en_to_fr.before')
        for method in expected:
            if c.check(method in t['methods'], f'interventions.gender.transfer_en_to_fr: no {method} results'):
                c.in_range(t['methods'][method]['after'], 1, float('inf'), f'interventions.gender.transfer.{method}.after')
                check_cost(c, t['methods'][method]['cost'], f'interventions.gender.transfer.{method}.cost')
    if 'topic' in section:
        t = section['topic']
        expected = ('senses', 'embedding') if backpack else ('embedding',)
        for lang in ('en', 'fr'):
            e = t['languages'].get(lang)
            if not c.check(e is not None, f'interventions.topic: no {lang} results'):
                continue
            c.in_range(e['unedited']['ppl'], 1, float('inf'), f'interventions.topic.{lang}.unedited.ppl')
            points = [(f'{lang}.unedited.{topic}', s) for topic, s in e['unedited']['topics'].items()]
            for topic, info in e['words'].items():
                for method in expected:
                    curve = e['methods'].get(method, {}).get(topic)
                    if info['steering_words']:
                        c.check(curve is not None and [p['strength'] for p in curve] == t['strengths'],
                                f'interventions.topic.{lang}.{method}.{topic}: not one result per strength')
                    for p in curve or []:
                        points.append((f"{lang}.{method}.{topic}.{p['strength']}", p))
                        c.in_range(p['ppl'], 1, float('inf'), f"interventions.topic.{lang}.{method}.{topic}.ppl")
            for where, p in points:
                for key in ('share', 'frequency'):
                    c.in_range(p[key], 0, 1, f'interventions.topic.{where}.{key}')
    if 'false_friends' in section and 'skipped' not in section['false_friends']:
        f = section['false_friends']
        bounds = {'embedding_cosine': (-1, 1), 'sense_cosine': (-1, 1), 'topk_shared': (0, 1), 'shared_senses': (0, k)}
        expected = list(bounds) if backpack else ['embedding_cosine']
        for subset, tests in f['tests'].items():
            if 'skipped' in tests:
                continue
            c.check(sorted(tests) == sorted(expected), f'interventions.false_friends.{subset}: tests {sorted(tests)}')
            for name, r in tests.items():
                where = f'interventions.false_friends.{subset}.{name}'
                c.in_range(r['p_value'], 0, 1, f'{where}.p_value')
                for key in ('cognates_mean', 'false_friends_mean'):
                    c.in_range(r[key], bounds[name][0] - 1e-6, bounds[name][1] + 1e-6, f'{where}.{key}')
                c.check(r['n_cognates'] >= 2 and r['n_false_friends'] >= 2, f'{where}: fewer than 2 pairs in a group')
        c.check('all' in f['tests'], 'interventions.false_friends: no test on all pairs')


def check_cost(c, cost, where):
    """An edit's val cost: scored documents among the affected ones, each with an edited token, and finite
    NLL / bits per byte exactly when some were scored."""
    scored = cost['documents_scored']
    c.check(0 <= scored <= cost['documents_affected'] and cost['edited_positions'] >= scored,
            f'{where}: {scored} documents scored of {cost["documents_affected"]}, {cost["edited_positions"]} edited tokens')
    for key in ('nll_before', 'nll_after', 'bpb_before', 'bpb_after'):
        if scored:
            c.in_range(cost[key], 0, 64, f'{where}.{key}')
        else:
            c.check(cost[key] is None, f'{where}.{key}: {cost[key]!r} without a scored document')
    c.in_range(cost['delta_bpb_val'], -64, 64, f'{where}.delta_bpb_val')


def intervention_lines(section):
    """One line per intervention result, next to its baseline (printed; not part of the banner's gaps)."""
    lines = []
    for lang, e in section.get('gender', {}).get('languages', {}).items():
        after = ', '.join(f"{m} {r['after']:.3f}" for m, r in e['methods'].items())
        lines.append(f"gender bias ratio {lang.upper()} (test professions): {e['before']['test']:.3f} before; after {after}")
    if 'gender' in section:
        t = section['gender']['transfer_en_to_fr']
        lines.append(f"gender bias ratio EN->FR transfer: {t['before']:.3f} before; after "
                     + ', '.join(f"{m} {r['after']:.3f}" for m, r in t['methods'].items()))
    for lang, e in section.get('topic', {}).get('languages', {}).items():
        for method, by_topic in e['methods'].items():
            top = {topic: curve[-1] for topic, curve in by_topic.items()}
            lines.append(f"topic {lang.upper()} {method}, strongest setting: " + '; '.join(
                f"{topic} share {p['share']:.2f} (unedited {e['unedited']['topics'][topic]['share']:.2f}), ppl {p['ppl']:.1f}"
                for topic, p in top.items()) + f" (unedited ppl {e['unedited']['ppl']:.1f})")
    for subset, tests in section.get('false_friends', {}).get('tests', {}).items():
        if 'skipped' not in tests:
            lines.append(f"false friends vs cognates ({subset}): " + '; '.join(
                f"{name} {r['cognates_mean']:.3f} vs {r['false_friends_mean']:.3f}, p {r['p_value']:.3g}"
                for name, r in tests.items()))
    return lines


def check_senses(c, results, tok, out_dir):
    k = results['model']['n_senses']
    labels = results['senses']['labels']
    c.check(len(labels) == k and all(l['label'].strip() for l in labels),
            f'senses: {len(labels)} labels for {k} senses (or an empty label)')
    label_file = os.path.join(out_dir, 'sense_labels.json')
    if c.check(os.path.isfile(label_file), f'{label_file} missing'):
        with open(label_file) as f:
            c.check(len(json.load(f)['senses']) == k, f'{label_file}: not {k} senses')
    allowed = tok.language_mask('en') | tok.language_mask('fr')
    analysis = results['senses']['probe_words']
    if analysis['filter_tokens']:
        for word, entry in analysis['words'].items():
            for sense in entry.get('senses', []):
                for field in ('top', 'bottom', 'nearest'):
                    bad = [t['token'] for t in sense.get(field, []) if not allowed[t['id']]]
                    c.check(not bad, f'senses.{word}.sense {sense["sense"]}.{field}: non-EN/FR tokens {bad}')
    for entry in analysis['words'].values():
        for sense in entry.get('senses', []):
            c.in_range(sense['entropy'], 0, analysis['max_entropy'] + 1e-6, f'senses entropy of sense {sense["sense"]}')


def gaps(results):
    """(lines stating each model number next to its baseline, comparisons [(name, model value,
    baseline value)] whose gap model - baseline must be > 0 for the banner; see BASELINES)."""
    lines, comparisons = [], []
    for direction, r in results.get('translation', {}).items():
        copy = r['copy_baseline']
        lines.append(f"translation {direction}: BLEU {r['bleu']:.2f} vs copy-the-source {copy['bleu']:.2f}; "
                     f"chrF {r['chrf']:.2f} vs {copy['chrf']:.2f}")
        comparisons += [(f'translation {direction} BLEU', r['bleu'], copy['bleu']),
                        (f'translation {direction} chrF', r['chrf'], copy['chrf'])]
    for dataset, r in results.get('word_similarity', {}).items():
        rho = r['spearman']
        best = max(((v, rep) for rep, v in rho.items() if rep != 'embedding' and not math.isnan(v)), default=None)
        text = f"word similarity {dataset}: embedding baseline ρ {rho['embedding']:.3f}"
        lines.append(text + (f"; best Backpack representation {best[1]} ρ {best[0]:.3f} (gap {best[0] - rho['embedding']:+.3f})"
                             if best else ''))
        if best:
            comparisons.append((f'word similarity {dataset} {best[1]} ρ', best[0], rho['embedding']))
    for direction, r in results.get('bli', {}).items():
        emb = r['csls']['embedding']['p@1']
        text = f"BLI {direction} (CSLS P@1): embedding {emb:.3f}, copy baseline {r['copy_p_at_1']:.3f}"
        comparisons.append((f'BLI {direction} embedding CSLS P@1', emb, r['copy_p_at_1']))
        if 'mean_sense' in r['csls']:
            mean_sense = r['csls']['mean_sense']['p@1']
            text += f", mean sense {mean_sense:.3f} (gap {mean_sense - emb:+.3f})"
            comparisons.append((f'BLI {direction} mean_sense CSLS P@1', mean_sense, emb))
        lines.append(text)
    for dataset, r in results.get('sentence_similarity', {}).items():
        base = r['embedding']
        for kind, s in r.items():
            if kind != 'embedding':
                lines.append(f"retrieval {dataset} {kind}: P@1 en→fr {s['p@1_x2y']:.3f} vs bag-of-embeddings "
                             f"{base['p@1_x2y']:.3f}; margin {s['margin']:.3f} vs {base['margin']:.3f}")
                comparisons.append((f'retrieval {dataset} {kind} P@1 en→fr', s['p@1_x2y'], base['p@1_x2y']))
    lines += intervention_lines(results.get('interventions', {}))
    return lines, comparisons


def below_baselines(comparisons):
    """[(name, gap)] of the comparisons whose model value is not above its baseline (gap <= 0, or nan)."""
    return [(name, model - base) for name, model, base in comparisons if not model - base > 0]


def verify_interventions_file(path, out_dir, committed=False):
    """Check an experiments/interventions.py output on its own: (Checks, lines, no comparisons)."""
    results = evaluate.read_results(path)
    stale = None if committed else evaluate.stale_results(results, out_dir)
    if stale:
        raise DataError(f"{path} is stale: {stale}; rerun experiments/interventions.py --out_dir {out_dir}")
    c = Checks()
    try:
        for where, value in numbers(results):
            c.check(math.isfinite(value), f'{where} is {value}')
        check_interventions(c, results, path)
        lines = intervention_lines(results.get('interventions', {}))
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as e:
        raise DataError(f"{path} is malformed ({type(e).__name__}: {e}): rerun experiments/interventions.py "
                        f"--out_dir {out_dir}") from None
    return c, lines, []


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out_dir', required=True)
    p.add_argument('--interventions_file', help='check only this output of experiments/interventions.py for out_dir')
    p.add_argument('--strict', action='store_true',
                   help='also exit 1 when a result is not above its baseline (the sanity checks passing is not enough)')
    p.add_argument('--committed', action='store_true',
                   help='results kept without their checkpoint (e.g. results/cpu_reference/backpack): every check '
                        'but the one that compares the checkpoint')
    args = p.parse_args(argv)
    if args.interventions_file:
        c, gap_lines, comparisons = verify_interventions_file(args.interventions_file, args.out_dir, args.committed)
    else:
        c, gap_lines, comparisons = verify(args.out_dir, committed=args.committed)
    print('Model vs baseline:')
    for line in gap_lines:
        print(f'  {line}')
    if c.failures:
        print(f'\n❌ {len(c.failures)} CHECK(S) FAILED ({c.passed} passed):')
        for failure in c.failures:
            print(f'  - {failure}')
        return 1
    print(f'\n{c.passed} checks passed')
    if args.interventions_file:  # only a part of the results: no banner
        return 0
    below = below_baselines(comparisons)
    if below:
        print(f"sanity checks passed; {len(below)} results below their baselines: "
              + '; '.join(f'{name} ({gap:+.3g})' for name, gap in below))
        return 1 if args.strict else 0
    print(PASSED)
    return 0


if __name__ == '__main__':
    sys.exit(run_main(main))
