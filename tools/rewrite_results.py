"""
Rewrite committed results written before the instrument fixes, so that they verify on any machine:

    python tools/rewrite_results.py results/cpu_reference/backpack results/cpu_reference/transformer ...
    python tools/rewrite_results.py --paths_only results/quickstart     # text files: paths only

The weights of those runs are not kept, so nothing is re-evaluated: the results are only rewritten, and
every number kept is one that verify_evaluation.py recomputes from the per-item outputs stored beside it.
For each committed out_dir copy (evaluation_results.json, translation_*.json, evaluation_report.md):
  - every input is named by eval_data.portable_path (the out_dir's own files as out_dir/..., the rest
    relative to the repository), with the sha256 of each file found here in 'inputs';
  - translation: the sources and references are stored beside the hypotheses, read from the recorded
    test files (the out_dir copies of test.en / test.fr, ../shared for newstest2014);
  - word similarity: what was stored as 'sim_min' was max_l cos (the old code's inversion): it is renamed
    'sim_max'. The paper's Sim_min and the single senses' rho cannot be recomputed without the weights
    (their cosines were not stored): they are removed;
  - BLI: P@5 and the single senses' P@1 had no per-query hits: removed. P@1 on the non-identical queries
    (whose gold translations do not contain their own spelling) is computed from the stored hits;
  - interventions: removed (topic control was judged unevenly, counting the words it steered with, and
    nothing of it stored the per-item outputs the fixed checks recompute from);
  - 'migrated' says what was removed and why (verify_evaluation.py prints it).
Any other text file under the given folders (logs, plans, training logs, comparisons) has the absolute
paths of the machine that made it replaced by paths relative to the repository (RELATIVE).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import argparse  # noqa: E402
import glob  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from checkpoint import save_json  # noqa: E402
from experiments import eval_data, metrics  # noqa: E402

# the machines' absolute prefixes -> what they are relative to the repository (the reference runs were made in
# a clone at /work/ref, this checkout is /work/main, the shared data lies beside the repository)
RELATIVE = (('/work/ref/', ''), ('/work/main/', ''), ('/work/main', '.'), ('/work/shared/', '../shared/'))
TEXT_SUFFIXES = ('.json', '.md', '.log', '.txt', '.tsv', '.csv')
WHY = "committed before the instrument fixes of issue 19; the weights are not kept, so nothing was re-evaluated"


def relative_text(text):
    for prefix, replacement in RELATIVE:
        text = text.replace(prefix, replacement)
    return text


def portable(value, old_out_dir):
    """An old absolute (or cwd-relative) path -> a portable_path: the run's own files as out_dir/..."""
    value = str(value)
    if old_out_dir and (value == old_out_dir or value.startswith(old_out_dir.rstrip('/') + '/')):
        rest = value[len(old_out_dir.rstrip('/')):].lstrip('/')
        return eval_data.OUT_DIR_PREFIX + rest if rest else '.'
    return relative_text(value)


def rewrite_paths(obj, old_out_dir):
    """Every path-valued key (eval_data.INPUT_KEYS) in place, as portable paths."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key in eval_data.INPUT_KEYS:
                obj[key] = (value if value is None else
                            [portable(v, old_out_dir) for v in value] if isinstance(value, list) else
                            {k: portable(v, old_out_dir) for k, v in value.items()} if isinstance(value, dict) else
                            portable(value, old_out_dir))
            else:
                rewrite_paths(value, old_out_dir)
    elif isinstance(obj, list):
        for v in obj:
            rewrite_paths(v, old_out_dir)


def rewrite_translation(results, out_dir):
    for r in results.get('translation', {}).values():
        srcs, refs = eval_data.read_parallel(eval_data.resolve_input(r['src_file'], out_dir),
                                             eval_data.resolve_input(r['ref_file'], out_dir), limit=r['n'])
        r['sources'], r['references'] = srcs, refs


def rewrite_word_similarity(results, removed):
    fields = ('spearman', 'p_value', 'spearman_ci', 'cosines')
    for dataset, r in results.get('word_similarity', {}).items():
        for field in fields:
            values = r.get(field, {})
            if 'sim_min' in values:  # the old code stored max_l cos under this name
                values['sim_max'] = values.pop('sim_min')
        for field in fields:  # then keep only what has its stored cosines
            values = r.get(field, {})
            for rep in [rep for rep in values if rep not in r['cosines']]:
                del values[rep]
        removed.append(f"word_similarity.{dataset}: sim_min (eq. 14) and sense_l rho (no stored cosines)")


def rewrite_bli(results, removed):
    for direction, r in results.get('bli', {}).items():
        gold = {}
        for s, targets in eval_data.read_dictionary(eval_data.resolve_input(r['dictionary'], '.')).items():
            gold.setdefault(s.lower(), set()).update(t.lower() for t in targets)
        r['non_identical'] = [i for i, q in enumerate(r['queries']) if q not in gold[q]]
        r['n_non_identical'], r['copy_p_at_1_non_identical'] = len(r['non_identical']), 0.0
        for method in ('cosine', 'csls'):
            for rep in list(r[method]):
                scores = r[method][rep]
                if 'hits@1' not in scores:
                    del r[method][rep]
                    continue
                scores.pop('p@5', None)
                subset = [scores['hits@1'][i] for i in r['non_identical']]
                scores['p@1_non_identical'] = float(np.mean(subset))
                scores['p@1_non_identical_ci'] = metrics.bootstrap_ci(metrics.mean_stat(subset), len(subset))
        removed.append(f"bli.{direction}: P@5 (no per-query hits@5) and the single senses' P@1 (no per-query hits)")


def rewrite_interventions(results, removed):
    """The old interventions stored neither the generations (topic shares), nor the scored bytes (edit costs), and
    topic control counted the words it steered with: none of it can be recomputed or kept."""
    if results.pop('interventions', None) is not None:
        removed.append("interventions (topic control counted the words it steered with; no stored generations or "
                       "scored bytes to recompute the shares and costs from: rerun with the weights)")
    results['settings'].pop('interventions', None)
    results.get('timing_s', {}).pop('interventions', None)


def rewrite_run(out_dir, revision):
    """Rewrite one committed out_dir copy in place."""
    out_dir = Path(out_dir)
    for path in [out_dir / 'evaluation_results.json', *sorted(out_dir.glob('translation_*.json'))]:
        with open(path, encoding='utf-8') as f:
            results = json.load(f)
        if results.get('migrated') or 'inputs' in results:
            print(f"{path}: already rewritten")
            continue
        removed = []
        old_out_dir = results['model']['out_dir']
        rewrite_paths(results, old_out_dir)
        results['model']['run'] = os.path.basename(old_out_dir.rstrip('/'))
        results['model']['out_dir'] = relative_text(old_out_dir)
        rewrite_translation(results, out_dir)
        rewrite_word_similarity(results, removed)
        rewrite_bli(results, removed)
        rewrite_interventions(results, removed)
        results['inputs'] = eval_data.record_inputs(results, out_dir)
        results['migrated'] = {'by': f'tools/rewrite_results.py of commit {revision}', 'why': WHY, 'removed': removed}
        save_json(results, path)
        print(f"{path}: rewritten ({len(results['inputs'])} inputs found here)")
    results_path = out_dir / 'evaluation_results.json'
    if results_path.is_file():
        import run_full_evaluation
        with open(results_path, encoding='utf-8') as f:
            results = json.load(f)
        pngs = sorted(p.name for p in out_dir.glob('*.png'))
        with open(out_dir / 'evaluation_report.md', 'w', encoding='utf-8') as f:
            f.write(run_full_evaluation.report(results, pngs))


def rewrite_text_files(folder):
    """Absolute paths of the machines that made them -> relative ones, in every text file under folder."""
    for path in sorted(glob.glob(os.path.join(folder, '**', '*'), recursive=True)):
        if not path.endswith(TEXT_SUFFIXES) or os.path.basename(path) == 'evaluation_results.json' \
                or os.path.basename(path).startswith('translation_'):
            continue
        with open(path, encoding='utf-8') as f:
            text = f.read()
        new = relative_text(text)
        if new != text:
            with open(path, 'w', encoding='utf-8') as f:
                f.write(new)
            print(f"{path}: paths made relative")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('folders', nargs='+', help='committed out_dir copies (or folders of them, with --paths_only)')
    p.add_argument('--paths_only', action='store_true', help='only make the paths in the text files relative')
    args = p.parse_args(argv)
    revision = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True,
                              cwd=eval_data.REPO_ROOT).stdout.strip() or 'unknown'
    for folder in args.folders:
        if not args.paths_only:
            rewrite_run(folder, revision)
        rewrite_text_files(folder)


if __name__ == '__main__':
    main()
