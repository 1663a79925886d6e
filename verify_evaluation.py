"""
Check the results that run_full_evaluation.py wrote into out_dir before they are reported:

    python verify_evaluation.py --out_dir out/tiny_backpack

Every check is on the numbers themselves: each evaluation present; every metric finite and in its
range; sample counts as requested (translation, sentence pairs, perplexity documents = meta.json);
for a Backpack, one derived label per sense (sense_labels.json) and only English/French tokens in the
language-filtered sense lists (recomputed with the tokenizer's language masks); no empty translation.
The model-vs-baseline gaps are printed. Prints `✅ ALL CHECKS PASSED - READY FOR PAPER REPORTING`
only when every check passes; otherwise lists the failures and exits with status 1.
"""
import os
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')  # before torch loads OpenMP: spinning threads starve
                                                     # each other on small CPUs (8x slower at load 2)
import argparse
import json
import math
import sys

import evaluate
from experiments.eval_data import read_parallel

REQUIRED = ('perplexity', 'translation', 'word_similarity', 'bli', 'sentence_similarity')
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

    def in_range(self, value, lo, hi, where):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and lo <= value <= hi
        return self.check(ok, f'{where} = {value!r}, expected a finite number in [{lo}, {hi}]')


def numbers(obj, path=''):
    """Every (path, number) leaf of a nested results dict (bools and strings skipped)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from numbers(v, f'{path}.{k}' if path else str(k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from numbers(v, f'{path}[{i}]')
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield path, obj


def verify(out_dir):
    """Run every check on out_dir/evaluation_results.json; returns (Checks, gap lines)."""
    c = Checks()
    path = os.path.join(out_dir, 'evaluation_results.json')
    if not c.check(os.path.isfile(path), f'{path} not found: run run_full_evaluation.py --out_dir {out_dir} first'):
        return c, []
    with open(path) as f:
        results = json.load(f)
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
            c.check(r['n_empty'] == 0, f'translation.{direction}: {r["n_empty"]} of {r["n"]} translations are empty')

    for dataset, r in results.get('word_similarity', {}).items():
        c.check(r['n_covered'] > 0, f'word_similarity.{dataset}: no covered pair')
        for rep, rho in r['spearman'].items():
            c.in_range(rho, -1, 1, f'word_similarity.{dataset}.spearman.{rep}')

    for direction, r in results.get('bli', {}).items():
        for method in ('cosine', 'csls'):
            for rep, scores in r[method].items():
                for k in ('p@1', 'p@5'):
                    c.in_range(scores[k], 0, 1, f'bli.{direction}.{method}.{rep}.{k}')

    for dataset, r in results.get('sentence_similarity', {}).items():
        for kind, scores in r.items():
            for k in ('p@1_x2y', 'p@1_y2x'):
                c.in_range(scores[k], 0, 1, f'sentence_similarity.{dataset}.{kind}.{k}')
            for k in ('mean_true_cos', 'mean_random_cos'):
                c.in_range(scores[k], -1, 1, f'sentence_similarity.{dataset}.{kind}.{k}')
            available = len(read_parallel(scores['files']['en'], scores['files']['fr'])[0])
            c.check(scores['n'] == min(settings['sentence_pairs'], available),
                    f'sentence_similarity.{dataset}.{kind}: n = {scores["n"]}, requested '
                    f'{min(settings["sentence_pairs"], available)}')

    if 'senses' in results:
        check_senses(c, results, tok, out_dir)
    return c, gaps(results)


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
    """Lines stating each model number next to its baseline."""
    lines = []
    for direction, r in results.get('translation', {}).items():
        lines.append(f"translation {direction}: BLEU {r['bleu']:.2f} vs copy-the-source {r['copy_baseline']['bleu']:.2f}; "
                     f"chrF {r['chrf']:.2f} vs {r['copy_baseline']['chrf']:.2f}")
    for dataset, r in results.get('word_similarity', {}).items():
        rho = r['spearman']
        best = max((v, rep) for rep, v in rho.items() if rep != 'embedding' and not math.isnan(v)) if len(rho) > 1 else None
        text = f"word similarity {dataset}: embedding baseline ρ {rho['embedding']:.3f}"
        lines.append(text + (f"; best Backpack representation {best[1]} ρ {best[0]:.3f} (gap {best[0] - rho['embedding']:+.3f})"
                             if best else ''))
    for direction, r in results.get('bli', {}).items():
        emb = r['csls']['embedding']['p@1']
        text = f"BLI {direction} (CSLS P@1): embedding {emb:.3f}, copy baseline {r['copy_p_at_1']:.3f}"
        if 'mean_sense' in r['csls']:
            text += f", mean sense {r['csls']['mean_sense']['p@1']:.3f} (gap {r['csls']['mean_sense']['p@1'] - emb:+.3f})"
        lines.append(text)
    for dataset, r in results.get('sentence_similarity', {}).items():
        base = r['embedding']
        for kind, s in r.items():
            if kind != 'embedding':
                lines.append(f"retrieval {dataset} {kind}: P@1 en→fr {s['p@1_x2y']:.3f} vs bag-of-embeddings "
                             f"{base['p@1_x2y']:.3f}; margin {s['margin']:.3f} vs {base['margin']:.3f}")
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out_dir', required=True)
    args = p.parse_args(argv)
    c, gap_lines = verify(args.out_dir)
    print('Model vs baseline:')
    for line in gap_lines:
        print(f'  {line}')
    if c.failures:
        print(f'\n❌ {len(c.failures)} CHECK(S) FAILED ({c.passed} passed):')
        for failure in c.failures:
            print(f'  - {failure}')
        return 1
    print(f'\n{c.passed} checks passed')
    print('✅ ALL CHECKS PASSED - READY FOR PAPER REPORTING')
    return 0


if __name__ == '__main__':
    sys.exit(main())
