"""experiments/sense_roles.py: the role matrix is the mean of the per-pair cosines, dominance and its
permutation test behave on matrices whose answer is known, the Hungarian matching recovers a planted
relabelling, check() recomputes the stored numbers and catches a tampered one, and the analysis runs on a
tiny Backpack (and refuses a Transformer)."""
import json

import numpy as np
import pytest

from evaluate import load_model, load_tokenizer
from experiments import sense_roles
from verify_evaluation import Checks


def test_role_matrices_are_per_pair_cosines():
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(5, 3, 4)), rng.normal(size=(5, 3, 4))
    R = sense_roles.role_matrices(X, Y)
    for i in range(5):
        for l in range(3):
            for m in range(3):
                want = X[i, l] @ Y[i, m] / np.linalg.norm(X[i, l]) / np.linalg.norm(Y[i, m])
                assert R[i, l, m] == pytest.approx(want, abs=1e-12)


def test_dominance_and_its_permutation_test():
    k = 8
    planted = np.full((k, k), 0.1) + 0.5 * np.eye(k)
    assert sense_roles.dominance(planted) == pytest.approx(0.5)
    test = sense_roles.permutation_test(planted, n_permutations=2000, seed=1)
    # only the identity relabelling (chance 1/8!) reaches D = 0.5
    assert test['statistic'] == pytest.approx(0.5) and test['p'] < 0.01
    flat = np.random.default_rng(3).normal(size=(k, k))
    flat[np.arange(k), np.arange(k)] = flat.mean()  # a diagonal no higher than the rest on average
    assert sense_roles.permutation_test(flat, n_permutations=2000, seed=1)['p'] > 0.05
    stack = np.stack([planted, flat])
    assert np.allclose(sense_roles.dominance(stack), [sense_roles.dominance(planted), sense_roles.dominance(flat)])


def test_matching_recovers_a_planted_relabelling():
    k = 6
    perm = np.array([2, 0, 1, 3, 5, 4])
    M = np.random.default_rng(0).uniform(0, 0.2, size=(k, k))
    M[np.arange(k), perm] += 1.0
    match = sense_roles.best_matching(M)
    assert match['matching'] == perm.tolist() and match['n_fixed'] == 1
    assert match['gain'] > 0.5 and match['value'] == pytest.approx(M[np.arange(k), perm].mean())


def test_sense_roles_on_a_tiny_backpack(tiny_backpack_dir, tiny_transformer_dir, tmp_path):
    model, _ = load_model(tiny_backpack_dir)
    tok = load_tokenizer(tiny_backpack_dir)
    result = sense_roles.evaluate_sense_roles(model, tok, 'cpu', max_pairs=200, n_permutations=500, bli={},
                                              labels=[])
    k = model.config.n_senses
    assert np.asarray(result['matrix']).shape == (k, k) and result['n_pairs'] == 200
    assert all(en.lower() != fr.lower() for en, fr in result['pairs'])
    assert len(result['pair_contrast']['per_pair']) == 200 and len(result['per_sense']) == k
    stored = json.loads(json.dumps(result))  # as read back from the results file
    c = Checks()
    sense_roles.check(c, stored)
    assert c.failures == [] and c.passed > 2 * k
    stored['permutation_test']['p'] = 0.5
    stored['dominance']['true'] += 0.01
    c = Checks()
    sense_roles.check(c, stored)
    assert len(c.failures) == 2 and any('permutation_test.p' in f for f in c.failures)
    sense_roles.plot_roles(result, tmp_path / 'roles.png')
    assert (tmp_path / 'roles.png').stat().st_size > 10_000
    assert 'permutation test' in '\n'.join(sense_roles.report_lines(result))
    twin, _ = load_model(tiny_transformer_dir)
    with pytest.raises(Exception, match='Backpack'):
        sense_roles.evaluate_sense_roles(twin, tok, 'cpu', max_pairs=50, bli={}, labels=[])
