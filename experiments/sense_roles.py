"""Do sense indices mean the same thing in both languages? A Backpack has one set of k senses for English and
French: is sense l of "nurse" the same role as sense l of "infirmière"?

On MUSE en-fr test pairs with different spellings (senses.alignment_pairs: both words covered, each word once),
with C(w) the (k, d) sense vectors of a word (lexical.word_vectors, a multi-piece word the mean of its pieces):
  role matrix        M[l, m] = mean_i cos(C(en_i)_l, C(fr_i)_m)              (k x k)
  shuffled baseline  M0 the same with the French words deranged (metrics.derangement, seed)
  dominance          D(M) = mean_l M[l, l] - mean_{l != m} M[l, m]
  permutation test   p = (1 + #{pi : D(M[:, pi]) >= D(M)}) / (1 + N), pi N uniform relabellings of the
                     French senses: under H0 the French index carries no role of the English one
  pair contrast      d_i = D_i(true) - D_i(shuffled), D_i a pair's own dominance; its mean with a bootstrap
                     interval over pairs: is the shared-role structure about translations, or about any two words?
  matching           the one-to-one sense matching pi* maximising sum_l M[l, pi(l)] (Hungarian,
                     scipy.optimize.linear_sum_assignment) against the identity: its value, its fixed points.
Per sense: its diagonal cosine (true and shuffled), BLI P@1 of the sense alone (lexical.evaluate_bli's
'sense_l', both directions, non-identical queries) and its language share (senses.label_senses'
language_skew): which senses carry translation, and which carry language.

    python experiments/sense_roles.py --out_dir out/backpack --output sense_roles.json --figure roles.png
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments import eval_data, lexical, metrics, senses  # noqa: E402

N_PERMUTATIONS = 10_000


def role_matrices(X, Y) -> np.ndarray:
    """(n, k, k) per-pair cosines R[i, l, m] = cos(X[i, l], Y[i, m]) of the sense vectors X (n, k, d) of the
    English words and Y (n, k, d) of their translations; M = R.mean(0). A zero vector gives 0."""
    X, Y = torch.as_tensor(X, dtype=torch.float64), torch.as_tensor(Y, dtype=torch.float64)
    X = X / X.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    Y = Y / Y.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return torch.einsum('nld,nmd->nlm', X, Y).numpy()


def dominance(M) -> np.ndarray | float:
    """D(M) = mean of the diagonal − mean of the off-diagonal entries of a (k, k) matrix, or of each of a
    stack (..., k, k)."""
    M = np.asarray(M, dtype=np.float64)
    k = M.shape[-1]
    diag = np.trace(M, axis1=-2, axis2=-1) / k
    off = (M.sum((-2, -1)) - diag * k) / (k * k - k)
    return diag - off


def permutation_test(M, n_permutations: int = N_PERMUTATIONS, seed: int = 0) -> dict:
    """p = (1 + #{pi : D(M[:, pi]) >= D(M)}) / (1 + N) over N seeded uniform permutations pi of the columns
    (the French sense labels). Returns {'statistic' D(M), 'p', 'null_mean', 'null_sd', 'n_permutations', 'seed'}."""
    M = np.asarray(M, dtype=np.float64)
    rng = np.random.default_rng(seed)
    perms = np.argsort(rng.random((n_permutations, M.shape[1])), axis=1)
    null = dominance(M[:, perms].transpose(1, 0, 2))  # (N, k, k): column-permuted copies
    observed = float(dominance(M))
    return {'statistic': observed, 'p': float((1 + np.sum(null >= observed - 1e-12)) / (1 + n_permutations)),
            'null_mean': float(null.mean()), 'null_sd': float(null.std()), 'n_permutations': n_permutations,
            'seed': seed}


def best_matching(M) -> dict:
    """The permutation pi* maximising sum_l M[l, pi(l)] (Hungarian) against the identity. Returns {'matching'
    (pi*[l] for each English sense l), 'value' mean_l M[l, pi*(l)], 'identity_value' mean_l M[l, l],
    'gain' value − identity_value (>= 0), 'n_fixed' #{l : pi*(l) = l}, 'k'}."""
    from scipy.optimize import linear_sum_assignment
    M = np.asarray(M, dtype=np.float64)
    rows, cols = linear_sum_assignment(M, maximize=True)
    matching = cols[np.argsort(rows)]
    value, identity = float(M[np.arange(len(M)), matching].mean()), float(np.trace(M) / len(M))
    return {'matching': matching.tolist(), 'value': value, 'identity_value': identity, 'gain': value - identity,
            'n_fixed': int(np.sum(matching == np.arange(len(M)))), 'k': len(M)}


def contrast(true_R, shuffled_R) -> dict:
    """Per pair, d_i = D(R_true[i]) − D(R_shuffled[i]); their mean with metrics.bootstrap_ci over pairs.
    Returns {'per_pair' d_i, 'mean', 'ci'}."""
    d = dominance(true_R) - dominance(shuffled_R)
    return {'per_pair': d.tolist(), 'mean': float(d.mean()), 'ci': metrics.bootstrap_ci(metrics.mean_stat(d), len(d))}


def per_sense(M, M0, bli=None, labels=None) -> list[dict]:
    """One row per sense l: 'diagonal' M[l, l], 'shuffled_diagonal' M0[l, l], 'margin' their difference, the
    sense's BLI P@1 on non-identical queries per direction (from lexical.evaluate_bli's results, csls), and its
    English share of predicted tokens (label_senses' language_skew['en']) with its label."""
    rows = []
    for l in range(len(M)):
        row = {'sense': l, 'diagonal': float(M[l, l]), 'shuffled_diagonal': float(M0[l, l]),
               'margin': float(M[l, l] - M0[l, l])}
        for direction, result in (bli or {}).items():
            scores = result['csls'].get(f'sense_{l}')
            if scores is not None:
                row[f'bli_p@1_{direction}'] = scores['p@1_non_identical']
        if labels:
            row['en_share'], row['label'] = labels[l]['language_skew']['en'], labels[l]['label']
        rows.append(row)
    return rows


@torch.no_grad()
def evaluate_sense_roles(model, tokenizer, device, dictionary=None, max_pairs=1000, seed=0,
                         n_permutations=N_PERMUTATIONS, bli=None, labels=None) -> dict:
    """The analysis of the module docstring on a Backpack. bli: lexical.evaluate_bli's results of the same model
    (computed here when None); labels: senses.label_senses' (likewise). Returns {'pairs' [(en, fr)], 'matrix' M,
    'shuffled_matrix' M0, 'dominance' {'true', 'shuffled'}, 'permutation_test' (of M), 'shuffled_permutation_test'
    (of M0), 'pair_contrast', 'matching' (of M), 'per_sense', 'n_pairs', 'n_dictionary_pairs', 'dictionary',
    'seed'}."""
    senses.require_backpack(model, 'evaluate_sense_roles')
    path = dictionary or eval_data.default_path('muse_en_fr')
    pairs, counts = senses.alignment_pairs(tokenizer, eval_data.read_dictionary(path))
    pairs = pairs[:max_pairs]
    if len(pairs) < 2:
        raise ValueError(f"sense roles need >= 2 usable translation pairs from {path}, got {len(pairs)}")
    X = lexical.word_vectors(model, [lexical.word_ids(tokenizer, en) for en, _ in pairs], device, 'senses')
    Y = lexical.word_vectors(model, [lexical.word_ids(tokenizer, fr) for _, fr in pairs], device, 'senses')
    true_R = role_matrices(X, Y)
    shuffled_R = role_matrices(X, Y[metrics.derangement(len(pairs), seed)])
    M, M0 = true_R.mean(0), shuffled_R.mean(0)
    if bli is None:
        bli = lexical.evaluate_bli(model, tokenizer, device)
    if labels is None:
        labels = senses.label_senses(model, tokenizer, device)
    return {'pairs': [list(p) for p in pairs], 'matrix': M.tolist(), 'shuffled_matrix': M0.tolist(),
            'dominance': {'true': float(dominance(M)), 'shuffled': float(dominance(M0))},
            'permutation_test': permutation_test(M, n_permutations, seed),
            'shuffled_permutation_test': permutation_test(M0, n_permutations, seed),
            'pair_contrast': contrast(true_R, shuffled_R), 'matching': best_matching(M),
            'per_sense': per_sense(M, M0, bli, labels), 'n_pairs': len(pairs),
            'n_dictionary_pairs': counts['dictionary'], 'dictionary': eval_data.portable_path(path), 'seed': seed}


def check(c, result, where='senses.roles'):
    """evaluate_sense_roles' result on verify_evaluation's Checks `c`, recomputed from the stored matrices and
    per-pair contrasts: both dominances, both permutation tests (same seed and N), the matching and its value,
    the contrast's mean and interval, each sense's diagonal."""
    M, M0 = np.asarray(result['matrix']), np.asarray(result['shuffled_matrix'])
    c.same(result['dominance']['true'], float(dominance(M)), f'{where}.dominance.true')
    c.same(result['dominance']['shuffled'], float(dominance(M0)), f'{where}.dominance.shuffled')
    for key, matrix in (('permutation_test', M), ('shuffled_permutation_test', M0)):
        stored = result[key]
        again = permutation_test(matrix, stored['n_permutations'], stored['seed'])
        c.same(stored['p'], again['p'], f'{where}.{key}.p')
        c.same(stored['statistic'], again['statistic'], f'{where}.{key}.statistic')
    again = best_matching(M)
    c.check(again['matching'] == result['matching']['matching'],
            f"{where}.matching: recorded {result['matching']['matching']}, recomputed {again['matching']}")
    c.same(result['matching']['value'], again['value'], f'{where}.matching.value')
    d = result['pair_contrast']['per_pair']
    c.check(len(d) == result['n_pairs'] == len(result['pairs']), f"{where}: {len(d)} per-pair contrasts, "
            f"{len(result['pairs'])} pairs, n_pairs {result['n_pairs']}")
    c.same(result['pair_contrast']['mean'], float(np.mean(d)), f'{where}.pair_contrast.mean')
    c.interval(result['pair_contrast']['ci'], metrics.mean_stat(d), len(d), f'{where}.pair_contrast')
    for row in result['per_sense']:
        c.same(row['diagonal'], float(M[row['sense'], row['sense']]), f"{where}.per_sense[{row['sense']}].diagonal")


def plot_roles(result, path, title=None):
    """The k x k heatmap of M (left) and of the shuffled-pairs M0 (right), on one colour scale; the Hungarian
    matching's cells outlined where it leaves the diagonal."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    M, M0 = np.asarray(result['matrix']), np.asarray(result['shuffled_matrix'])
    lo, hi = min(M.min(), M0.min()), max(M.max(), M0.max())
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), constrained_layout=True)
    for ax, matrix, name in ((axes[0], M, 'translation pairs'), (axes[1], M0, 'shuffled pairs')):
        image = ax.imshow(matrix, vmin=lo, vmax=hi, cmap='viridis')
        ax.set_title(f"{name}: D = {dominance(matrix):.3f}")
        ax.set_xlabel('French sense m')
        ax.set_ylabel('English sense l')
    for l, m in enumerate(result['matching']['matching']):
        if l != m:
            axes[0].add_patch(plt.Rectangle((m - 0.5, l - 0.5), 1, 1, fill=False, edgecolor='red', lw=1.5))
    fig.colorbar(image, ax=axes, shrink=0.8, label='mean cos(C(en)_l, C(fr)_m)')
    p = result['permutation_test']['p']
    fig.suptitle(title or f"Sense roles across languages ({result['n_pairs']} MUSE pairs; permutation p = {p:.4f})")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report_lines(result) -> list[str]:
    """Markdown lines for evaluation_report.md."""
    t, c, m = result['permutation_test'], result['pair_contrast'], result['matching']
    lines = [f"On {result['n_pairs']} MUSE en-fr test pairs (different spellings), M[l, m] = mean cos(C(en)_l, "
             f"C(fr)_m). Diagonal dominance D = {t['statistic']:.4f} (shuffled pairs: "
             f"{result['dominance']['shuffled']:.4f}); permutation test over {t['n_permutations']:,} relabellings "
             f"of the French senses: p = {t['p']:.4g} (shuffled pairs: p = "
             f"{result['shuffled_permutation_test']['p']:.4g}: a shared index structure, whoever the words). "
             f"Per-pair contrast D(true) − D(shuffled) = {c['mean']:.4f} "
             f"[{c['ci']['low']:.4f}, {c['ci']['high']:.4f}]. Best one-to-one matching (Hungarian): mean "
             f"{m['value']:.4f} against the identity's {m['identity_value']:.4f}, {m['n_fixed']}/{m['k']} senses "
             f"matched to themselves.", '',
             '| sense | label | cos diag | shuffled | BLI P@1 en→fr | BLI P@1 fr→en | EN share |',
             '|---:|---|---:|---:|---:|---:|---:|']
    for row in result['per_sense']:
        def f(key):
            value = row.get(key)
            return '–' if value is None else f'{value:.3f}'
        lines.append(f"| {row['sense']} | {row.get('label', '')} | {row['diagonal']:.3f} | "
                     f"{row['shuffled_diagonal']:.3f} | {f('bli_p@1_en-fr')} | {f('bli_p@1_fr-en')} | {f('en_share')} |")
    return lines


def main(argv=None):
    import outdir
    from errors import resolve_device
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out_dir', required=True, help='a trained Backpack (train.py out_dir or an export)')
    p.add_argument('--device', default='cpu')
    p.add_argument('--dictionary', help='a `source target` en-fr dictionary (default: MUSE en-fr test)')
    p.add_argument('--max_pairs', type=int, default=1000)
    p.add_argument('--n_permutations', type=int, default=N_PERMUTATIONS)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--output', help='JSON file (default: OUT_DIR/sense_roles.json)')
    p.add_argument('--figure', help='heatmap PNG (default: OUT_DIR/sense_roles.png)')
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    model, _ = outdir.load_model(args.out_dir, device)
    tok = outdir.load_tokenizer(args.out_dir)
    result = evaluate_sense_roles(model, tok, device, args.dictionary, args.max_pairs, args.seed, args.n_permutations)
    result['model'] = {'checkpoint': outdir.checkpoint_record(args.out_dir), 'model_type': 'backpack',
                       'n_senses': model.config.n_senses}
    output = Path(args.output or Path(args.out_dir) / 'sense_roles.json')
    output.write_text(json.dumps(result, ensure_ascii=False, indent=1) + '\n', encoding='utf-8')
    plot_roles(result, args.figure or Path(args.out_dir) / 'sense_roles.png')
    print('\n'.join(report_lines(result)))
    print(f"wrote {output}")


if __name__ == '__main__':
    from errors import run_main
    run_main(main)
