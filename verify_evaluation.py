"""
Check the results that run_full_evaluation.py wrote into out_dir before they are reported:

    python verify_evaluation.py --out_dir out/tiny_backpack

First, the results must come from the checkpoint out_dir holds now: evaluation_results.json records
the file and its sha256, and a checkpoint replaced since (retrained, even to the same iteration) is
an error (one line; rerun run_full_evaluation.py). A missing or malformed results file is too.

Every check is on the numbers themselves: each evaluation present; every metric finite and in its
range; sample counts as requested (translation, sentence pairs, perplexity documents = meta.json);
for a Backpack, one derived label per sense (sense_labels.json) and only English/French tokens in the
language-filtered sense lists (recomputed with the tokenizer's language masks); no empty translation.

The model-vs-baseline gaps are printed (BASELINES). Prints `✅ ALL CHECKS PASSED - READY FOR PAPER
REPORTING` only when every check passes and every model result is above its baseline (gap > 0).
When the checks pass but some results are not above their baselines, it prints
`sanity checks passed; N results below their baselines: ...` (a gap of exactly 0 counts as below)
and exits 0, or 1 with --strict. A failed check lists the failures and exits 1.
"""
import system  # noqa: F401  (first: the OpenMP setting torch reads when it loads)
import os
import argparse
import json
import math
import sys

import evaluate
from errors import DataError, run_main
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


def verify(out_dir):
    """Run every check on out_dir/evaluation_results.json; returns (Checks, gap lines, comparisons
    [(name, model value, baseline value)]). Results not from out_dir's current checkpoint, and a
    missing or malformed results file, raise a UserError."""
    path = os.path.join(out_dir, 'evaluation_results.json')
    results = evaluate.read_results(path)
    stale = evaluate.stale_results(results, out_dir)
    if stale:
        raise DataError(f"{path} is stale: {stale}; rerun run_full_evaluation.py --out_dir {out_dir}")
    try:
        c = run_checks(results, out_dir, path)
        lines, comparisons = gaps(results)
    except (KeyError, IndexError, TypeError, AttributeError) as e:
        # a field missing or of the wrong type: the file was not written by run_full_evaluation.py as is
        raise DataError(f"{path} is malformed ({type(e).__name__}: {e}): rerun run_full_evaluation.py "
                        f"--out_dir {out_dir}") from None
    return c, lines, comparisons


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

    files = settings.get('translation_files') or [os.path.join(out_dir, 'test.en'), os.path.join(out_dir, 'test.fr')]
    if 'translation' in results:
        n_expected = len(read_parallel(files[0], files[1], limit=settings['translation_samples'])[0])
        for direction, r in results['translation'].items():
            for metric, (lo, hi) in TRANSLATION_RANGES.items():
                c.in_range(r[metric], lo, hi, f'translation.{direction}.{metric}')
            for stat in ('mean', 'median', 'min', 'max'):
                c.in_range(r['sentence_bleu'][stat], 0, 100, f'translation.{direction}.sentence_bleu.{stat}')
            c.check(r['n'] == n_expected, f'translation.{direction}: n = {r["n"]}, requested {n_expected}')
            for metric in ('bleu', 'chrf'):
                c.interval(r.get(f'{metric}_ci'), r[metric], f'translation.{direction}.{metric}')
            c.check(r['n_empty'] == 0, f'translation.{direction}: {r["n_empty"]} of {r["n"]} translations are empty')

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
    return c


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
    return lines, comparisons


def below_baselines(comparisons):
    """[(name, gap)] of the comparisons whose model value is not above its baseline (gap <= 0, or nan)."""
    return [(name, model - base) for name, model, base in comparisons if not model - base > 0]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out_dir', required=True)
    p.add_argument('--strict', action='store_true',
                   help='also exit 1 when a result is not above its baseline (the sanity checks passing is not enough)')
    args = p.parse_args(argv)
    c, gap_lines, comparisons = verify(args.out_dir)
    print('Model vs baseline:')
    for line in gap_lines:
        print(f'  {line}')
    if c.failures:
        print(f'\n❌ {len(c.failures)} CHECK(S) FAILED ({c.passed} passed):')
        for failure in c.failures:
            print(f'  - {failure}')
        return 1
    print(f'\n{c.passed} checks passed')
    below = below_baselines(comparisons)
    if below:
        print(f"sanity checks passed; {len(below)} results below their baselines: "
              + '; '.join(f'{name} ({gap:+.3g})' for name, gap in below))
        return 1 if args.strict else 0
    print(PASSED)
    return 0


if __name__ == '__main__':
    sys.exit(run_main(main))
