"""
Check the results that run_full_evaluation.py wrote into out_dir before they are reported:

    python verify_evaluation.py --out_dir out/tiny_backpack
    python verify_evaluation.py --out_dir results/cpu_reference/first/backpack --committed

The checks that count RECOMPUTE every headline from the per-item outputs the results store, and fail,
naming the field, when a recorded number differs from its recomputation:
  - translation: corpus BLEU and chrF (sacreBLEU), sentence BLEU, exact match, word F1, character accuracy
    and the copy-the-source baseline from the stored hypotheses, sources and references; each bootstrap
    interval recomputed with its recorded seed and resample count;
  - word similarity: every representation's Spearman rho from the stored cosines and gold scores, each
    interval; the covered pairs and their gold scores re-read from the word-pair file with the tokenizer;
  - BLI: every P@1 and P@5 (whole dictionary, and on the non-identical queries) from the per-query hits,
    each interval; the queries and the non-identical subset re-derived from the dictionary file;
  - retrieval: every P@1 from the stored per-query ranks (or hits), each interval;
  - perplexity: the NLL sum from the stored per-document NLLs (doc_nll; older results store the sum alone), and
    ppl, nll and bits per byte from it and the token and byte counts;
  - senses: the language-filtered sense lists against the tokenizer's language masks;
  - alignment (when evaluated, --alignment): every method's symmetrisations from its stored directional links, and
    every AER, precision and recall (and test interval) from them and the bundled gold (experiments/alignment.check);
  - cross-lingual sense editing (cross_edit.json, when kept): every success rate and margin change from the stored
    per-item log-probabilities, the targets, the sense edits' identity and bound, the lr chosen on dev
    (experiments/cross_edit.check);
  - inputs: every file the results name is named relative to the repository or to the out_dir (an absolute
    path fails), and each one found here has the sha256 the results recorded; the references stored
    in the results are the first lines of the reference file, when that file is here.
Cheap checks that hold by construction or only bound a value (a range, ppl >= 1, an interval that holds
its value, "the chosen edit is the best of its grid") still run, counted apart as sanity checks.

The results must come from the checkpoint out_dir holds now (recorded by sha256): a checkpoint replaced
since is an error (one line; rerun run_full_evaluation.py). With --committed (results kept in the
repository without their weights, e.g. results/cpu_reference/first/backpack) that one comparison is left out
and said so; every other check runs, on the files found from the repository. An export of the weights beside
them (out_dir/hf with its release.json, export_hf.py) is checked to be of the checkpoint they name: its weight
files' sha256, its source checkpoint, its copy of evaluation_results.json. Each translation_<name>.json
beside the results (evaluate.py --translation --output) is checked the same way. `--interventions_file F`
checks F, the output of python -m experiments.interventions for out_dir, alone.

The model-vs-baseline gaps are printed (BASELINES). Prints `✅ ALL CHECKS PASSED - READY FOR PAPER
REPORTING` only when every check passes and every model result is above its baseline (gap > 0).
When the checks pass but some results are not above their baselines, it prints
`checks passed; N results below their baselines: ...` (a gap of exactly 0 counts as below)
and exits 0, or 1 with --strict. A failed check lists the failures and exits 1.
"""
import system  # noqa: F401  (first: the OpenMP setting torch reads when it loads)
import os
import argparse
import glob
import json
import math
import re
import sys

import numpy as np
from sacrebleu.metrics import BLEU, CHRF

import checkpoint
import evaluate
from errors import DataError, UserError, run_main
from experiments import alignment, cross_edit, eval_data, interventions, lexical, metrics, sense_roles
from experiments.eval_data import read_parallel
from experiments.interventions import intervention_lines  # printed beside the gaps

REQUIRED = ('perplexity', 'translation', 'word_similarity', 'bli', 'sentence_similarity')
PASSED = '✅ ALL CHECKS PASSED - READY FOR PAPER REPORTING'
BASELINES = ("translation: BLEU and chrF vs copying the source; word similarity (Backpack): the representation named "
             f"in advance ({lexical.HEADLINE_REPRESENTATION}) vs the embedding; BLI, on the queries whose gold translations "
             "do not contain their own spelling (a copy is found for free at cosine 1): embedding CSLS P@1 vs the copy "
             "baseline (0 there), and (Backpack) mean sense vs embedding; retrieval: each contextual sentence vector's "
             "P@1 en->fr vs the bag of embeddings")
TRANSLATION_RANGES = {'bleu': (0, 100), 'chrf': (0, 100), 'exact_match': (0, 1), 'word_f1': (0, 1),
                      'char_accuracy': (0, 1)}
ABSOLUTE_PATH = re.compile(r'^(/|[A-Za-z]:[\\/])[^/\\\s]+[/\\]\S*$')  # /work/x, C:\\x\\y: not '/' or '/>'
REL_TOL = 1e-9  # recomputed on the same machine from the same stored outputs: equal up to float summation order


class Checks:
    """Failures, and how many recomputations (`same`, `check`) and sanity checks (`sanity`, `in_range`) passed."""

    def __init__(self):
        self.failures, self.passed, self.sanity_passed = [], 0, 0

    def check(self, ok, message):
        return self._count(ok, message, 'passed')

    def sanity(self, ok, message):
        """A check that holds by construction or only bounds a value: cheap, but it cannot catch a wrong number."""
        return self._count(ok, message, 'sanity_passed')

    def _count(self, ok, message, counter):
        if ok:
            setattr(self, counter, getattr(self, counter) + 1)
        else:
            self.failures.append(message)
        return ok

    def same(self, recorded, recomputed, where, rel=REL_TOL, abs_tol=1e-12):
        """A recorded number must equal its recomputation from the stored per-item outputs (nan equals nan)."""
        both_nan = isinstance(recorded, float) and isinstance(recomputed, float) and math.isnan(recorded) and math.isnan(recomputed)
        ok = both_nan or (isinstance(recorded, (int, float)) and not isinstance(recorded, bool)
                          and math.isclose(recorded, recomputed, rel_tol=rel, abs_tol=abs_tol))
        return self.check(ok, f'{where}: recorded {recorded!r}, recomputed {recomputed!r} from the stored per-item outputs')

    def interval(self, ci, stat, n, where):
        """A bootstrap interval (experiments.metrics.bootstrap_ci) recomputed from the per-item statistic with its
        recorded seed, resample count and level: value, low and high must be the recorded ones."""
        if not self.check(isinstance(ci, dict), f'{where}: no 95 % interval ({ci!r})'):
            return False
        again = metrics.bootstrap_ci(stat, n, n_resamples=ci['n_resamples'], seed=ci['seed'], level=ci['level'])
        return all([self.same(ci[key], again[key], f'{where}_ci.{key}') for key in ('value', 'low', 'high')]
                   + [self.check(ci['n'] == n, f'{where}_ci.n: {ci["n"]}, {n} items stored')])

    def in_range(self, value, lo, hi, where):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and lo <= value <= hi
        return self.sanity(ok, f'{where} = {value!r}, expected a finite number in [{lo}, {hi}]')

    def stored(self, obj, key, where):
        """obj[key], the per-item outputs a recomputation needs; a missing one fails, naming the field."""
        value = obj.get(key) if isinstance(obj, dict) else None
        self.check(value is not None, f'{where}.{key}: missing (the per-item outputs to recompute it from; rerun '
                                      f'run_full_evaluation.py)')
        return value


PER_ITEM = ('hypotheses', 'sources', 'references', 'hits_x2y', 'hits_y2x', 'rank_x2y', 'rank_y2x', 'hits@1', 'hits@5',
            'cosines', 'gold', 'pairs', 'queries', 'non_identical', 'generations', 'doc_nll', 'links', 'trial_grid')


def numbers(obj, path=''):
    """Every (path, number) leaf of a nested results dict (bools and strings skipped; the per-item lists
    are not results, and are skipped too)."""
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
    if results.get('migrated'):
        m = results['migrated']
        print(f"note: these results were rewritten by {m['by']} ({m['why']}); removed, as not recomputable: "
              f"{'; '.join(m['removed'])}")
    try:
        c = run_checks(results, out_dir, path)
        check_release(c, results, out_dir, path)
        for file, r in extra.items():
            where = os.path.basename(file)
            check_inputs(c, r, out_dir, where)
            check_translation(c, r, out_dir, where=where)
        roles = os.path.join(out_dir, 'sense_roles.json')  # experiments/sense_roles.py's own output, when kept
        if os.path.isfile(roles):
            with open(roles, encoding='utf-8') as f:
                sense_roles.check(c, json.load(f), where='sense_roles.json')
        aligned = os.path.join(out_dir, 'alignment.json')  # experiments/alignment.py's own output, when kept
        if os.path.isfile(aligned):
            with open(aligned, encoding='utf-8') as f:
                alignment.check(c, json.load(f), out_dir, where='alignment.json')
        edited = os.path.join(out_dir, 'cross_edit.json')  # experiments/cross_edit.py's own output, when kept
        if os.path.isfile(edited):
            with open(edited, encoding='utf-8') as f:
                cross_edit.check(c, json.load(f), where='cross_edit.json')
        lines, comparisons = gaps(results)
    except (KeyError, IndexError, TypeError, AttributeError) as e:
        # a field missing or of the wrong type: the file was not written by run_full_evaluation.py as is
        raise DataError(f"{path} is malformed ({type(e).__name__}: {e}): rerun run_full_evaluation.py "
                        f"--out_dir {out_dir}") from None
    return c, lines, comparisons


RELEASE_DIR = 'hf'  # where a run's evidence keeps the export of its weights (export_hf.py --hf_dir <evidence>/hf)


def check_release(c, results, out_dir, path):
    """When out_dir has an export with a release.json (out_dir/hf, export_hf.py), it must be the model these
    results describe: each weight file has the sha256 release.json records, release.json's source checkpoint
    is the results' model.checkpoint (file and sha256), and the evaluation_results.json the export carries,
    and the one release.json records, are the results file itself (same sha256). Each mismatch fails, naming
    the file."""
    hf = os.path.join(out_dir, RELEASE_DIR)
    release_path = os.path.join(hf, checkpoint.RELEASE)
    if not os.path.isfile(release_path):
        return
    release = checkpoint.read_release(hf)
    print(f"note: {hf}: the export of {release['source_checkpoint']['file']} is checked against these results "
          f"({checkpoint.RELEASE})")
    for name, sha in release['weights'].items():
        local = os.path.join(hf, name)
        actual = eval_data.sha256_file(local) if os.path.isfile(local) else None
        c.check(actual == sha, f"{local}: " + (f"sha256 {actual[:12]}, release.json records {sha[:12]}: not the "
                                               f"weights released" if actual else "missing (release.json lists it)"))
    source, recorded = release['source_checkpoint'], results['model'].get('checkpoint') or {}
    c.check((source['file'], source['sha256']) == (recorded.get('file'), recorded.get('sha256')),
            f"{release_path}: exported from {source['file']} sha256 {source['sha256'][:12]}, but {path} was computed "
            f"from {recorded.get('file')} sha256 {str(recorded.get('sha256'))[:12]}")
    committed = eval_data.sha256_file(path)
    copy = os.path.join(hf, 'evaluation_results.json')
    c.check(os.path.isfile(copy) and eval_data.sha256_file(copy) == committed,
            f"{copy}: not the same file as {path} (sha256 differs, or missing)")
    c.check(release['evaluation_results']['sha256'] == committed,
            f"{release_path}: records evaluation_results.json sha256 {release['evaluation_results']['sha256'][:12]}, "
            f"{path} has {committed[:12]}")


def absolute_paths(obj, where=''):
    """(where, value) of every string in a results dict that is an absolute path (a result must not depend on
    the machine that made it)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k not in PER_ITEM:  # texts (a generation may start with '/'), not paths
                yield from absolute_paths(v, f'{where}.{k}' if where else str(k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from absolute_paths(v, f'{where}[{i}]')
    elif isinstance(obj, str) and ABSOLUTE_PATH.match(obj):
        yield where, obj


def check_inputs(c, results, out_dir, where):
    """No absolute path anywhere; every recorded input found here (from the repository, or in out_dir) has the
    recorded sha256. Inputs not here are named in a note: the stored per-item outputs still get recomputed."""
    for field, value in absolute_paths({k: v for k, v in results.items() if k != 'machine'}):
        c.check(False, f'{where}: {field} = {value!r} is an absolute path (record inputs with eval_data.portable_path)')
    inputs = c.stored(results, 'inputs', where) or {}
    missing = []
    for name, sha in inputs.items():
        local = eval_data.resolve_input(name, out_dir)
        if local.is_file():
            c.check(eval_data.sha256_file(local) == sha, f'{where}: input {name} ({local}) has changed since the '
                                                         f'evaluation (sha256 differs from the recorded {sha[:12]})')
        else:
            missing.append(name)
    if missing:
        print(f"note: {where}: not on this machine, checked through the outputs stored in the results: {', '.join(missing)}")


def local_input(results, name, out_dir):
    """The local file a recorded input names when it is here with the recorded bytes, else None (an absolute
    path is not looked up: check_inputs fails it)."""
    if os.path.isabs(name):
        return None
    local = eval_data.resolve_input(name, out_dir)
    sha = results.get('inputs', {}).get(name)
    return local if sha and local.is_file() and eval_data.sha256_file(local) == sha else None


def check_translation(c, results, out_dir, where='translation'):
    """The translation section of a results dict (evaluation_results.json, or a translation_<name>.json of
    evaluate.py --translation --output): every score recomputed from the stored hypotheses, sources and
    references, each interval with its seed; the references are the reference file's first lines when it is here."""
    settings = results['settings']
    for direction, r in results['translation'].items():
        at = f'{where}.{direction}'
        hyps, srcs, refs = (c.stored(r, key, at) for key in ('hypotheses', 'sources', 'references'))
        if hyps is None or srcs is None or refs is None:
            continue
        if not c.check(len(hyps) == len(srcs) == len(refs) == r['n'],
                       f'{at}: {len(hyps)} hypotheses, {len(srcs)} sources, {len(refs)} references, n = {r["n"]}'):
            continue
        requested = settings['translation_samples']
        c.sanity(requested is None or r['n'] <= requested, f'{at}: n = {r["n"]}, more than the {requested} requested')
        files = [local_input(results, r[key], out_dir) for key in ('src_file', 'ref_file')]
        if all(files):
            expected = read_parallel(*files, limit=requested)
            c.check(list(expected) == [srcs, refs], f'{at}: the stored sources and references are not the first '
                                                     f'{len(expected[0])} pairs of {r["src_file"]} / {r["ref_file"]}')
        again = metrics.translation_scores(hyps, refs)
        for metric in ('bleu', 'chrf', 'exact_match', 'word_f1', 'char_accuracy'):
            c.same(r[metric], again[metric], f'{at}.{metric}')
        for stat in ('mean', 'median', 'min', 'max'):
            c.same(r['sentence_bleu'][stat], again['sentence_bleu'][stat], f'{at}.sentence_bleu.{stat}')
        copy = metrics.translation_scores(srcs, refs)
        for metric in ('bleu', 'chrf'):
            c.same(r['copy_baseline'][metric], copy[metric], f'{at}.copy_baseline.{metric}')
            c.in_range(r[metric], *TRANSLATION_RANGES[metric], f'{at}.{metric}')
            c.interval(r.get(f'{metric}_ci'), metrics.corpus_stat(BLEU() if metric == 'bleu' else CHRF(), hyps, refs),
                       len(hyps), f'{at}.{metric}')
        c.check(r['n_empty'] == sum(not h.strip() for h in hyps), f'{at}.n_empty: {r["n_empty"]}, recomputed differs')
        c.check(r['n_empty'] == 0, f'{at}: {r["n_empty"]} of {r["n"]} translations are empty')
        c.sanity(all(e == {'src': s, 'ref': t, 'hyp': h} for e, s, t, h in zip(r['examples'], srcs, refs, hyps)),
                 f'{at}.examples: not the first stored items')


def check_perplexity(c, results, tok):
    """sum_nll = the sum of the stored per-document NLLs (doc_nll, one per document; results written before
    they were kept have the sum alone, which is then taken as stored), and from it ppl = exp(sum_nll / tokens),
    nll = sum_nll / tokens, bpb = sum_nll / (bytes ln 2), per split; the document count is meta.json's."""
    for key, r in results.get('perplexity', {}).items():
        at = f'perplexity.{key}'
        sum_nll = r['sum_nll']
        if r.get('doc_nll') is not None:
            c.check(len(r['doc_nll']) == r['documents'], f"{at}.doc_nll: {len(r['doc_nll'])} values for "
                                                         f"{r['documents']} documents")
            sum_nll = math.fsum(r['doc_nll'])
            c.same(r['sum_nll'], sum_nll, f'{at}.sum_nll')
        c.same(r['nll'], sum_nll / r['tokens'], f'{at}.nll')
        c.same(r['ppl'], metrics.ppl(sum_nll, r['tokens']), f'{at}.ppl')
        c.same(r['bpb'], metrics.bits_per_byte(sum_nll, r['bytes']), f'{at}.bpb')
        c.in_range(r['ppl'], 1, float('inf'), f'{at}.ppl')
        expected = tok.meta['splits'][key]['sentences']
        c.check(r['documents'] == expected, f'{at}: {r["documents"]} documents, meta.json has {expected}')


def check_word_similarity(c, results, tok, out_dir):
    """Every representation's rho from the stored cosines and gold scores, each interval; the covered pairs and their
    gold scores are those of the word-pair file (when here) whose two words the tokenizer covers."""
    for dataset, r in results.get('word_similarity', {}).items():
        at = f'word_similarity.{dataset}'
        cosines, gold, pairs = (c.stored(r, key, at) for key in ('cosines', 'gold', 'pairs'))
        if cosines is None or gold is None or pairs is None:
            continue
        c.check(len(gold) == len(pairs) == r['n_covered'] > 1, f'{at}: {len(gold)} gold scores, {len(pairs)} pairs, '
                                                              f'n_covered {r["n_covered"]}')
        local = local_input(results, r['path'], out_dir)
        if local is not None:
            all_pairs, _ = lexical.word_similarity_pairs(dataset, local, r.get('max_abs_diff', results['settings']['max_abs_diff']))
            covered, _ = lexical.encode_words(tok, [w for w1, w2, _ in all_pairs for w in (w1, w2)])
            kept = [(w1, w2, g) for w1, w2, g in all_pairs if w1 in covered and w2 in covered]
            c.check([[w1, w2] for w1, w2, _ in kept] == pairs and [g for *_, g in kept] == gold
                    and len(all_pairs) == r['n_pairs'],
                    f'{at}: the stored pairs and gold scores are not the covered pairs of {r["path"]}')
        for rep, rho in r['spearman'].items():
            values = c.stored(cosines, rep, f'{at}.cosines')
            if values is None:
                continue
            c.same(rho, metrics.spearman(values, gold)['rho'], f'{at}.spearman.{rep}')
            c.same(r['p_value'][rep], metrics.spearman(values, gold)['p'], f'{at}.p_value.{rep}', rel=1e-6, abs_tol=1e-15)
            if rep in r.get('spearman_ci', {}) or not rep.startswith('sense_'):
                c.interval(r.get('spearman_ci', {}).get(rep), metrics.spearman_stat(values, gold), len(gold),
                           f'{at}.spearman.{rep}')


def check_bli(c, results, tok, out_dir):
    """Every P@1 and P@5 from the per-query hits (whole dictionary, and the non-identical queries), each P@1
    interval; the queries and the non-identical subset re-derived from the dictionary (when here)."""
    for direction, r in results.get('bli', {}).items():
        at = f'bli.{direction}'
        queries = c.stored(r, 'queries', at)
        if queries is None:
            continue
        c.check(len(queries) == r['n_queries'], f'{at}: {len(queries)} queries stored, n_queries {r["n_queries"]}')
        non_identical = c.stored(r, 'non_identical', at)
        local = local_input(results, r['dictionary'], out_dir)
        if local is not None:
            gold = {}
            for s, targets in eval_data.read_dictionary(local).items():
                gold.setdefault(s.lower(), set()).update(t.lower() for t in targets)
            covered, _ = lexical.encode_words(tok, gold)
            c.check(sorted(covered) == queries and len(gold) == r['n_dictionary_words'],
                    f'{at}: the stored queries are not the covered source words of {r["dictionary"]}')
            if non_identical is not None:
                c.check(non_identical == [i for i, q in enumerate(queries) if q not in gold[q]],
                        f'{at}.non_identical: not the queries whose gold translations lack their own spelling')
        c.sanity(math.isclose(r['copy_p_at_1'], r['n_identical'] / r['n_queries']), f'{at}.copy_p_at_1')
        for method in ('cosine', 'csls'):
            for rep, scores in r[method].items():
                where = f'{at}.{method}.{rep}'
                for k in [k for k in (1, 5) if f'p@{k}' in scores]:  # (rewritten old results have no P@5)
                    hits = c.stored(scores, f'hits@{k}', where)
                    if hits is None or not c.check(len(hits) == len(queries), f'{where}.hits@{k}: {len(hits)} for '
                                                                               f'{len(queries)} queries'):
                        continue
                    c.same(scores[f'p@{k}'], float(np.mean(hits)), f'{where}.p@{k}')
                    if k == 1:
                        c.interval(scores.get('p@1_ci'), metrics.mean_stat(hits), len(hits), f'{where}.p@1')
                        if non_identical:
                            subset = [hits[i] for i in non_identical]
                            c.same(scores['p@1_non_identical'], float(np.mean(subset)), f'{where}.p@1_non_identical')
                            if len(subset) > 1:
                                c.interval(scores.get('p@1_non_identical_ci'), metrics.mean_stat(subset), len(subset),
                                           f'{where}.p@1_non_identical')
                    c.sanity(scores['p@1'] <= scores.get('p@5', 1.0) + 1e-12, f'{where}: P@1 above P@5')


def check_retrieval(c, results, out_dir):
    """Every retrieval P@1 from the stored per-query ranks (1 = the translation came first; hits where ranks are not
    stored), each interval; n as requested."""
    settings = results['settings']
    for dataset, r in results.get('sentence_similarity', {}).items():
        for kind, scores in r.items():
            at = f'sentence_similarity.{dataset}.{kind}'
            for way in ('x2y', 'y2x'):
                ranks = scores.get(f'rank_{way}')
                hits = [int(x == 1) for x in ranks] if ranks is not None else c.stored(scores, f'hits_{way}', at)
                if hits is None:
                    continue
                if ranks is not None and f'hits_{way}' in scores:
                    c.check(scores[f'hits_{way}'] == hits, f'{at}.hits_{way}: not the queries ranked first')
                c.check(len(hits) == scores['n'], f'{at}: {len(hits)} per-query outputs, n = {scores["n"]}')
                c.same(scores[f'p@1_{way}'], float(np.mean(hits)), f'{at}.p@1_{way}')
                c.interval(scores.get(f'p@1_{way}_ci'), metrics.mean_stat(hits), len(hits), f'{at}.p@1_{way}')
            c.same(scores['margin'], scores['mean_true_cos'] - scores['mean_random_cos'], f'{at}.margin')
            for k in ('mean_true_cos', 'mean_random_cos'):
                c.in_range(scores[k], -1, 1, f'{at}.{k}')
            files = [local_input(results, scores['files'][lang], out_dir) for lang in ('en', 'fr')]
            if all(files):
                available = len(read_parallel(*files)[0])
                c.check(scores['n'] == min(settings['sentence_pairs'], available),
                        f'{at}: n = {scores["n"]}, requested {min(settings["sentence_pairs"], available)}')


def run_checks(results, out_dir, path):
    c = Checks()
    model = results['model']
    tok = evaluate.load_tokenizer(out_dir)

    for name in REQUIRED + (('senses',) if model['model_type'] == 'backpack' else ()):
        c.check(name in results, f'evaluation "{name}" missing from {path}')
    for where, value in numbers(results):
        c.sanity(math.isfinite(value), f'{where} is {value}')
    check_inputs(c, results, out_dir, os.path.basename(path))
    check_perplexity(c, results, tok)
    if 'translation' in results:
        check_translation(c, results, out_dir)
    check_word_similarity(c, results, tok, out_dir)
    check_bli(c, results, tok, out_dir)
    check_retrieval(c, results, out_dir)
    if 'senses' in results:
        check_senses(c, results, tok, out_dir)
    if 'interventions' in results or results['settings'].get('interventions'):
        check_interventions(c, results, path)
    if 'cross_edit' in results or 'cross_edit' in results['settings']:
        c.check('cross_edit' in results, f'evaluation "cross_edit" missing from {path}')
        if 'cross_edit' in results:
            cross_edit.check(c, results['cross_edit'])
    if 'alignment' in results or 'alignment' in results['settings'].get('which', []):
        c.check('alignment' in results, f'evaluation "alignment" missing from {path}')
        if 'alignment' in results:
            alignment.check(c, results['alignment'], out_dir)
    return c


def check_interventions(c, results, path):
    """The checks of the sense interventions' results (results['interventions']): every experiment the settings
    name is there, and each experiment's own check (the `check` of its module in experiments/interventions/,
    beside the code that made its numbers) recomputes what its stored outputs give."""
    section = results.get('interventions', {})
    for name in results['settings'].get('interventions', []):
        c.check(name in section, f'interventions.{name} missing from {path}')
    for name, experiment in interventions.MODULES.items():
        if name in section:
            experiment.check(c, section[name], results['model'])


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
    if 'roles' in results['senses']:  # (results made before sense_roles have none)
        sense_roles.check(c, results['senses']['roles'])


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
    headline = lexical.HEADLINE_REPRESENTATION
    for dataset, r in results.get('word_similarity', {}).items():
        rho = r['spearman']
        text = f"word similarity {dataset}: embedding baseline ρ {rho['embedding']:.3f}"
        if headline in rho:  # a Backpack: the representation named in advance, not the best on these pairs
            text += f"; {headline} ρ {rho[headline]:.3f} (gap {rho[headline] - rho['embedding']:+.3f})"
            text += ''.join(f"; {rep} ρ {rho[rep]:.3f}" for rep in ('sim_min', 'sim_max') if rep in rho)
            comparisons.append((f'word similarity {dataset} {headline} ρ', rho[headline], rho['embedding']))
        lines.append(text)
    for direction, r in results.get('bli', {}).items():
        emb = r['csls']['embedding']
        text = (f"BLI {direction} (CSLS P@1): embedding {emb['p@1']:.3f} (copy baseline {r['copy_p_at_1']:.3f}); on the "
                f"{len(r['non_identical'])} non-identical queries {emb['p@1_non_identical']:.3f} (copy baseline 0)")
        comparisons.append((f'BLI {direction} embedding CSLS P@1 (non-identical queries)', emb['p@1_non_identical'], 0.0))
        if 'mean_sense' in r['csls']:
            mean_sense = r['csls']['mean_sense']['p@1_non_identical']
            text += f", mean sense {mean_sense:.3f} (gap {mean_sense - emb['p@1_non_identical']:+.3f})"
            comparisons.append((f'BLI {direction} mean_sense CSLS P@1 (non-identical queries)', mean_sense,
                                emb['p@1_non_identical']))
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
    """Check an output of python -m experiments.interventions on its own: (Checks, lines, no comparisons)."""
    results = evaluate.read_results(path)
    stale = None if committed else evaluate.stale_results(results, out_dir)
    if stale:
        raise DataError(f"{path} is stale: {stale}; rerun python -m experiments.interventions --out_dir {out_dir}")
    c = Checks()
    try:
        for where, value in numbers(results):
            c.sanity(math.isfinite(value), f'{where} is {value}')
        check_inputs(c, results, out_dir, os.path.basename(path))
        check_interventions(c, results, path)
        lines = intervention_lines(results.get('interventions', {}))
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as e:
        raise DataError(f"{path} is malformed ({type(e).__name__}: {e}): rerun python -m experiments.interventions "
                        f"--out_dir {out_dir}") from None
    return c, lines, []


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out_dir', required=True)
    p.add_argument('--interventions_file', help='check only this output of python -m experiments.interventions for out_dir')
    p.add_argument('--strict', action='store_true',
                   help='also exit 1 when a result is not above its baseline (the sanity checks passing is not enough)')
    p.add_argument('--committed', action='store_true',
                   help='results kept without their checkpoint (e.g. results/cpu_reference/first/backpack): every check '
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
        print(f'\n❌ {len(c.failures)} CHECK(S) FAILED ({c.passed} checks and {c.sanity_passed} sanity checks passed):')
        for failure in c.failures:
            print(f'  - {failure}')
        return 1
    print(f'\n{c.passed} checks (recomputations from the stored outputs) and {c.sanity_passed} sanity checks passed')
    if args.interventions_file:  # only a part of the results: no banner
        return 0
    below = below_baselines(comparisons)
    if below:
        print(f"checks passed; {len(below)} results below their baselines: "
              + '; '.join(f'{name} ({gap:+.3g})' for name, gap in below))
        return 1 if args.strict else 0
    print(PASSED)
    return 0


if __name__ == '__main__':
    sys.exit(run_main(main))
