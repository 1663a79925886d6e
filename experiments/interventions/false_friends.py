"""
3. false_friends. EN-FR false friends vs cognates (data/interventions/false_friends.tsv, cognates.tsv):
   per sense, cos(C(en)_l, C(fr)_l) and the share of shared top-k next tokens of E C(en)_l and
   E C(fr)_l (EN/FR tokens); a word of several pieces gets the mean of its pieces, as experiments/lexical.py
   does, and OOV words are dropped (listed). A pair shares sense l when its cosine exceeds the 95th percentile
   of that sense's cosine over mismatched pairs (seeded derangements). The hypothesis "false friends share
   fewer senses than cognates" is tested with a one-sided permutation test (scipy) of the difference of
   group means, for the shared-sense count, the mean sense cosine, the top-k share and the embedding
   cosine (the twin's baseline), on all covered pairs and on a 'controlled' subset: both words seen at
   least MIN_COUNT times in training and no BPE piece in common (rare words and shared pieces make two
   vectors alike whatever the words mean, and false friends are much rarer in Europarl than cognates).
   Multiplicity: the family is every test reported, both subsets times every measure (8 tests for a
   Backpack, 2 for the Transformer, fewer where a subset is skipped; listed in 'holm_family'); each
   test has its raw 'p_value' and 'p_holm', Holm's step-down adjustment over that family (holm), which
   controls the family-wise error rate. The per-pair values the tests compare are stored (per_pair), so
   the tests can be recomputed (pair_tests). Per pair: the most divergent senses and what each side
   predicts.
"""
import math
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from experiments import lexical, metrics
from experiments.interventions.words import DATA_DIR, LANGUAGES, read_tsv
from experiments.senses import allowed_tokens, masked_topk
from model import is_backpack

FILES = ('false_friends.tsv', 'cognates.tsv')  # what it reads from the data dir
SHARED_QUANTILE = 0.95
MIN_COUNT = 20  # the 'controlled' subset's minimum training count of each word


@torch.no_grad()
def false_friend_experiment(model, tok, device, data_dir=DATA_DIR, top_k=10, n_random=20, seed=0,
                            n_resamples=9999, show=2, min_count=MIN_COUNT):
    """The per-pair sense cosines, top-k shares and embedding cosines of the covered pairs, and the tests of
    cognates > false friends on them, on all pairs and the controlled ones (module docstring)."""
    backpack = is_backpack(model)
    pairs, dropped = [], []
    for en, fr, group in load_pairs(data_dir):
        a, b = lexical.word_ids(tok, en), lexical.word_ids(tok, fr)
        if a is None or b is None:
            dropped.append({'en': en, 'fr': fr, 'group': group, 'reason': 'OOV'})
        elif a == b:
            dropped.append({'en': en, 'fr': fr, 'group': group, 'reason': 'same tokens in both languages'})
        else:
            pairs.append((en, fr, group, a, b))
    result = {'metric': 'per sense: cos(C(en)_l, C(fr)_l) and the share of shared top-k next tokens; a pair shares '
                        f'sense l when its cosine exceeds the {SHARED_QUANTILE:.0%} quantile over mismatched pairs; '
                        'one-sided permutation tests cognates > false friends (p_value), and p_holm: Holm-adjusted over '
                        'the family holm_family, every test reported (both subsets, every measure)',
              'top_k': top_k, 'n_random_derangements': n_random, 'seed': seed, 'min_count': min_count,
              'dropped': dropped, 'tests': {},
              'per_pair': []}
    groups = np.array([p[2] for p in pairs])
    if min((groups == g).sum() for g in ('false_friends', 'cognates')) < 2:
        result['skipped'] = 'fewer than 2 covered pairs in a group'
        return result
    counts = {lang: dict(tok.words(lang)) for lang in LANGUAGES}
    emb = lexical.row_cosines(lexical.word_vectors(model, [p[3] for p in pairs], device, 'embedding'),
                              lexical.word_vectors(model, [p[4] for p in pairs], device, 'embedding'))
    per_pair = [{'en': en, 'fr': fr, 'group': g, 'train_count': {'en': counts['en'].get(en, 0), 'fr': counts['fr'].get(fr, 0)},
                 'embedding_cosine': float(emb[i])} for i, (en, fr, g, _, _) in enumerate(pairs)]
    names = ['embedding_cosine']
    if backpack:
        Cen = lexical.word_vectors(model, [p[3] for p in pairs], device, 'senses')  # (n, k, d)
        Cfr = lexical.word_vectors(model, [p[4] for p in pairs], device, 'senses')
        k = Cen.shape[1]
        cos = np.stack([lexical.row_cosines(Cen[:, l], Cfr[:, l]) for l in range(k)], 1)  # (n, k)
        rand = np.concatenate([np.stack([lexical.row_cosines(Cen[:, l], Cfr[metrics.derangement(len(pairs), seed + r), l])
                                         for l in range(k)], 1) for r in range(n_random)])
        threshold = np.quantile(rand, SHARED_QUANTILE, axis=0)  # (k,)
        shared = (cos > threshold).sum(1)
        E = model.input_embeddings().float()
        allowed = allowed_tokens(tok, filter_tokens=True)
        top_en, top_fr = (torch.stack([masked_topk(C[:, l].to(E.device) @ E.T, allowed, top_k).cpu()
                                       for l in range(k)], 1) for C in (Cen, Cfr))  # (n, k, top_k)
        topk_shared = np.array([[len(set(top_en[i, l].tolist()) & set(top_fr[i, l].tolist())) / top_k
                                 for l in range(k)] for i in range(len(pairs))])
        names += ['shared_senses', 'sense_cosine', 'topk_shared']
        result['shared_threshold'] = threshold.tolist()
        for i, entry in enumerate(per_pair):
            order = np.argsort(cos[i])[:show]
            entry.update(sense_cosine=cos[i].tolist(), topk_shared=topk_shared[i].tolist(), shared_senses=int(shared[i]),
                         divergent=[{'sense': int(l), 'cosine': float(cos[i, l]),
                                     'en_top': [tok.token_str(t) for t in top_en[i, l, :5].tolist()],
                                     'fr_top': [tok.token_str(t) for t in top_fr[i, l, :5].tolist()]} for l in order])
    # 'controlled': rare words and shared BPE pieces both make two words' vectors alike whatever they
    # mean, and false friends are much rarer than cognates in Europarl; this subset removes both
    controlled = np.array([min(e['train_count'].values()) >= min_count and not set(p[3]) & set(p[4])
                           for e, p in zip(per_pair, pairs)])
    for entry, c in zip(per_pair, controlled):
        entry['controlled'] = bool(c)
    result['tests'] = pair_tests(per_pair, names, n_resamples, seed)
    result['median_train_count'] = {g: {lang: float(np.median([e['train_count'][lang] for e in per_pair if e['group'] == g]))
                                        for lang in LANGUAGES} for g in ('false_friends', 'cognates')}
    result['holm_family'] = holm_family(result['tests'])
    result['per_pair'] = per_pair
    return result


def load_pairs(data_dir):
    """[(en, fr, group)] of the false friends and the cognates."""
    return ([(r['en'], r['fr'], 'false_friends') for r in read_tsv(Path(data_dir) / 'false_friends.tsv', ('en', 'fr'))]
            + [(r['en'], r['fr'], 'cognates') for r in read_tsv(Path(data_dir) / 'cognates.tsv', ('en', 'fr'))])


def pair_measure(entry, name):
    """The value a false-friend test compares for one pair (a per_pair entry): its embedding cosine or
    shared-sense count, or the mean over senses of its per-sense cosines or top-k shares."""
    value = entry[name]
    return float(np.mean(np.asarray(value, float))) if isinstance(value, list) else float(value)


def pair_tests(per_pair, names, n_resamples=9999, seed=0):
    """{subset: {measure: test}} of the per_pair entries (each with 'group', 'controlled' and the measures
    `names`): one-sided permutation tests cognates > false friends on 'all' pairs and the 'controlled' ones
    (a subset with fewer than 2 pairs in a group is skipped), and Holm's adjustment over the family of
    every test made: p_value raw, p_holm adjusted. Everything it needs is stored in the results, so
    verify_evaluation.py recomputes it."""
    groups = np.array([e['group'] for e in per_pair])
    controlled = np.array([e['controlled'] for e in per_pair], bool)
    values = {name: np.array([pair_measure(e, name) for e in per_pair]) for name in names}
    tests = {}
    for subset, keep in (('all', np.ones(len(per_pair), bool)), ('controlled', controlled)):
        cog, ff = keep & (groups == 'cognates'), keep & (groups == 'false_friends')
        if min(cog.sum(), ff.sum()) < 2:
            tests[subset] = {'skipped': f'{cog.sum()} cognates and {ff.sum()} false friends (needs 2 each)'}
            continue
        tests[subset] = {}
        for name in names:
            test = permutation_greater(values[name][cog], values[name][ff], n_resamples, seed)
            tests[subset][name] = {
                'cognates_mean': test['mean_a'], 'false_friends_mean': test['mean_b'], 'difference': test['difference'],
                'p_value': test['p_value'], 'n_cognates': test['n_a'], 'n_false_friends': test['n_b'],
                'n_resamples': n_resamples}
    family = [key.split('.', 1) for key in holm_family(tests)]
    for (subset, name), p in zip(family, holm([tests[s][n]['p_value'] for s, n in family])):
        tests[subset][name]['p_holm'] = p
    return tests


def holm_family(tests):
    """['subset.measure'] of the tests Holm's adjustment is over (pair_tests: every test made)."""
    return [f'{subset}.{name}' for subset, by_name in tests.items() if 'skipped' not in by_name for name in by_name]


def permutation_greater(a, b, n_resamples=9999, seed=0):
    """One-sided permutation test of mean(a) > mean(b) (scipy.stats.permutation_test, independent
    samples; exact when there are fewer distinct splits than n_resamples)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    test = stats.permutation_test((a, b), lambda x, y, axis: x.mean(axis) - y.mean(axis), vectorized=True,
                                  permutation_type='independent', alternative='greater',
                                  n_resamples=n_resamples, random_state=seed)
    return {'mean_a': float(a.mean()), 'mean_b': float(b.mean()), 'difference': float(a.mean() - b.mean()),
            'p_value': float(test.pvalue), 'n_a': len(a), 'n_b': len(b), 'n_resamples': n_resamples}


def holm(p_values):
    """Holm's (1979) step-down adjustment of a family of m p-values: with p_(1) <= ... <= p_(m) sorted
    ascending, the adjusted p_(i) = max_{j<=i} min(1, (m - j + 1) p_(j)), returned in the input order.
    Rejecting each hypothesis whose adjusted p is <= a controls the family-wise error rate at a, under any
    dependence between the tests. (scipy has no Holm: stats.false_discovery_control is Benjamini-Hochberg
    / -Yekutieli, which control the false discovery rate; statsmodels' multipletests is not a dependency.)"""
    p = np.asarray(p_values, float)
    order = np.argsort(p, kind='stable')
    adjusted = np.maximum.accumulate(np.minimum(1.0, (len(p) - np.arange(len(p))) * p[order]))
    out = np.empty(len(p))
    out[order] = adjusted
    return out.tolist()


def check(c, f, model):
    """false_friend_experiment's result `f` on verify_evaluation's Checks `c`, for the model results['model']
    describes. Recomputed: each p_holm, Holm over holm_family's raw p-values; each shared-sense count from its
    per-sense cosines and shared_threshold; every test (means, counts, p_value, p_holm) by pair_tests from the
    stored per_pair values. Sanity: p-values in [0, 1], p_holm >= p_value, means within their measure's bounds."""
    if 'skipped' in f:
        return
    backpack, k = model['model_type'] == 'backpack', model['n_senses']
    bounds = {'embedding_cosine': (-1, 1), 'sense_cosine': (-1, 1), 'topk_shared': (0, 1), 'shared_senses': (0, k)}
    expected = list(bounds) if backpack else ['embedding_cosine']
    for subset, tests in f['tests'].items():
        if 'skipped' in tests:
            continue
        c.check(sorted(tests) == sorted(expected), f'interventions.false_friends.{subset}: tests {sorted(tests)}')
        for name, r in tests.items():
            where = f'interventions.false_friends.{subset}.{name}'
            c.in_range(r['p_value'], 0, 1, f'{where}.p_value')
            c.in_range(r['p_holm'], 0, 1, f'{where}.p_holm')
            c.sanity(r['p_holm'] >= r['p_value'], f"{where}.p_holm = {r['p_holm']} < its p_value {r['p_value']}")
            for key in ('cognates_mean', 'false_friends_mean'):
                c.in_range(r[key], bounds[name][0] - 1e-6, bounds[name][1] + 1e-6, f'{where}.{key}')
            c.sanity(r['n_cognates'] >= 2 and r['n_false_friends'] >= 2, f'{where}: fewer than 2 pairs in a group')
    c.check('all' in f['tests'], 'interventions.false_friends: no test on all pairs')
    # Holm over the family of every test reported, from the raw p-values
    family = [(subset, name) for subset, tests in f['tests'].items() if 'skipped' not in tests for name in tests]
    c.check(f['holm_family'] == [f'{s}.{n}' for s, n in family],
            f"interventions.false_friends.holm_family = {f['holm_family']}, not every test reported")
    for (subset, name), q in zip(family, holm([f['tests'][s][n]['p_value'] for s, n in family])):
        r = f['tests'][subset][name]
        c.same(r['p_holm'], q, f'interventions.false_friends.{subset}.{name}.p_holm (Holm over the {len(family)} '
                               f'p_values of holm_family)')
    # the per-pair values behind the tests, and the tests recomputed from them
    for i, e in enumerate(f['per_pair']):
        where = f"interventions.false_friends.per_pair[{i}] ({e['en']}/{e['fr']})"
        if e['controlled']:
            c.check(min(e['train_count'].values()) >= f['min_count'],
                    f"{where}.controlled: train_count {e['train_count']} under min_count {f['min_count']}")
        if backpack:
            shared = sum(x > th for x, th in zip(e['sense_cosine'], f['shared_threshold']))
            c.check(e['shared_senses'] == shared,
                    f"{where}.shared_senses = {e['shared_senses']}, its sense_cosine over shared_threshold gives "
                    f"{shared}")
    n_resamples = f['tests'][family[0][0]][family[0][1]]['n_resamples'] if family else 9999
    again = pair_tests(f['per_pair'], expected, n_resamples, f['seed'])
    c.check(sorted(again) == sorted(f['tests']) and all(('skipped' in again[s]) == ('skipped' in f['tests'][s])
                                                          for s in again),
            f"interventions.false_friends.tests: subsets {sorted(f['tests'])}, per_pair gives {sorted(again)} "
            f"(skipped: {[s for s in again if 'skipped' in again[s]]})")
    for subset, name in family:
        r, q = f['tests'][subset][name], again.get(subset, {}).get(name, {})
        for key in ('cognates_mean', 'false_friends_mean', 'n_cognates', 'n_false_friends', 'p_value', 'p_holm'):
            c.same(r[key], q.get(key, math.nan), f'interventions.false_friends.{subset}.{name}.{key} (from per_pair)')
