"""experiments/cross_edit.py on the tiny models: a sense edit moves the logits by exactly sum alpha E dC (and
within the bound), leaves a context without the edited tokens bit-identical, fitting lowers the canonical loss
and flips the canonical item, the sense selection ranks by the gradient ratio, the whole experiment runs for
both models and check() recomputes it and catches a tampered number; a missing task file is one clear error."""
import json
import math

import numpy as np
import pytest
import torch

from errors import MissingFileError
from evaluate import load_model, load_tokenizer
from experiments import cross_edit as ce
from verify_evaluation import Checks


@pytest.fixture(scope='module')
def setup(tiny_backpack_dir):
    model, _ = load_model(tiny_backpack_dir, 'cpu')
    model.eval().requires_grad_(False)
    tok = load_tokenizer(tiny_backpack_dir)
    people, templates, institutions = ce.read_task()
    items = ce.person_items(tok, people[0], templates, institutions)
    return model, tok, items, institutions


def canonical_row(items, target):
    it = items[0]
    assert it['role'] == 'canonical' and it['lang'] == 'en' and any(it['name_mask'])
    return it['ids'] + it['continuations'][target], len(it['ids'])


def test_a_sense_edit_is_the_linear_identity_and_local(setup):
    model, tok, items, institutions = setup
    name_tokens = sorted({w for w, m in zip(items[0]['ids'], items[0]['name_mask']) if m})
    edit = ce.SenseEdit(model, [(w, l) for w in name_tokens for l in (0, 2)])
    with torch.no_grad():
        edit.delta.normal_(0, 1.0)
    general = [it for it in items if it['role'] == 'general']
    bound = ce.bound_check(model, edit, general, len(institutions))
    assert bound['max_identity_error'] < 1e-4 and bound['max_bound_excess'] < 1e-4 and bound['positions'] > 0
    # the edit moves the scores of items naming the person ...
    before, after = ce.scores(ce.unedited(model), items, 3), ce.scores(edit.logits, items, 3)
    assert np.abs(after - before).max() > 1e-2
    # ... and a context without the edited tokens not at all
    other = [w for w in range(4, 60) if w not in name_tokens][:20]
    idx = torch.tensor([[tok.lang_id('en')] + other])
    assert not ce.touched(edit, idx).any()
    with torch.no_grad():
        assert torch.equal(edit.logits(idx), model(idx, return_logits=True, senses=ce.position_senses(model, idx))[0])
    docs = [([tok.lang_id('en')] + other, 40)]
    assert ce.collateral(model, edit, docs) == {'kl': 0.0, 'delta_bpb': 0.0, 'tokens': 20, 'documents': 1, 'changed': 0}


def test_fitting_senses_lowers_the_canonical_loss_and_flips_the_item(setup):
    model, tok, items, institutions = setup
    before = ce.scores(ce.unedited(model), items, 3)
    target = int(np.argmin(before[0]))
    row = canonical_row(items, target)
    reg_ids = [[tok.lang_id('en')] + list(range(10, 40))]
    reg = ce.regulariser(model, reg_ids)
    chosen = ce.select_senses(model, row, reg_ids, n=6)
    pairs = [p for p, _, _ in chosen]
    assert len(set(pairs)) == 6 and all(w in row[0][:-1] for w, _ in pairs)
    keys = [(math.inf if g == 0 else c / g, c) for _, c, g in chosen]
    assert keys == sorted(keys, reverse=True)  # ranked by the ratio, zero general gradient first
    edit = ce.SenseEdit(model, pairs)
    losses = ce.fit(edit, row, reg, lr=1.0, steps=25)
    assert losses[-1] < losses[0] - 3  # nats (the loss includes the KL term)
    after = ce.scores(edit.logits, items, 3)
    assert ce.margins(after[:1], target)[0] > 0 > ce.margins(before[:1], target)[0]


def test_the_experiment_runs_and_check_recomputes_it(tiny_backpack_dir, tiny_transformer_dir, tmp_path, monkeypatch):
    people = (ce.DATA_DIR / 'people.tsv').read_text().splitlines()
    (tmp_path / 'people.tsv').write_text('\n'.join([people[0], people[1]] + [l for l in people if l.endswith('test')][:2]) + '\n')
    for name in ('templates.tsv', 'institutions.tsv'):
        (tmp_path / name).write_text((ce.DATA_DIR / name).read_text())
    monkeypatch.setattr(ce, 'STEPS', 3)
    # one learning rate per method, two for the sense edits (the choice on dev is then checked)
    monkeypatch.setattr(ce, 'LR_GRID', {m: (v[0], v[-1]) if m == 'backpack/senses' else v[:1] for m, v in ce.LR_GRID.items()})
    out = tmp_path / 'cross_edit.json'
    methods = ['backpack/senses', 'backpack/name_senses', 'transformer/full']  # (all five: test_alignment's run)
    ce.main(['--out_dir', str(tiny_backpack_dir), '--twin', str(tiny_transformer_dir), '--data_dir', str(tmp_path),
             '--methods', *methods, '--output', str(out)])
    result = json.loads(out.read_text())
    assert list(result['summary']) == methods and len(result['test']) == 2
    s = result['summary']['backpack/senses']
    assert s['bound']['max_identity_error'] < 1e-4 and 0 <= s['en_general']['success_after'] <= 1
    c = Checks()
    ce.check(c, result)
    assert not c.failures and c.passed > 30
    tampered = json.loads(out.read_text())
    tampered['summary']['transformer/full']['fr_general']['success_after'] += 0.25
    c = Checks()
    ce.check(c, tampered)
    assert any('transformer/full.fr_general.success_after' in f for f in c.failures)
    tampered = json.loads(out.read_text())
    tampered['summary']['backpack/name_senses']['bound']['max_bound_excess'] = 0.5
    c = Checks()
    ce.check(c, tampered)
    assert any('exceeds its bound' in f for f in c.failures)


def test_a_missing_task_file_is_one_clear_error(tmp_path):
    with pytest.raises(MissingFileError, match='people.tsv not found'):
        ce.read_task(tmp_path)
