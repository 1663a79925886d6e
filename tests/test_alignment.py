"""experiments/alignment.py: the Backpack's contributions sum exactly to its logits, AER / precision / recall and
grow-diag-final on hand examples, IBM 1 learns a toy dictionary, the pieces map back onto the gold words, the
section runs end to end on the tiny Backpack and its twin (evaluate.py --alignment too), verify's check recomputes
it and catches a tampered number or link, and a missing gold file is one error line."""
import copy
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO
from evaluate import load_model, load_tokenizer
from experiments import alignment
import verify_evaluation
from verify_evaluation import Checks


def test_contributions_sum_to_the_logit(tiny_backpack_dir):
    model, _ = load_model(tiny_backpack_dir)
    tok = load_tokenizer(tiny_backpack_dir)
    gold = alignment.read_gold('trial')
    g = min(gold, key=lambda g: len(g['en']) + len(g['fr']) if len(g['en']) > 3 else 99)
    ids = alignment.build_prompt(tok, g['en'], g['fr'], 'en', 'fr')['ids'][:model.config.block_size]
    contrib, error = alignment.attribution_matrix(model, ids, return_error=True)
    T = len(ids)
    assert contrib.shape == (T - 1, T)
    assert np.all(np.triu(contrib, 1) == 0)  # position p sees the prefix j <= p only
    with torch.no_grad():
        logits, _ = model(torch.tensor([ids]), return_logits=True)
    want = logits[0, :-1].gather(1, torch.tensor(ids[1:])[:, None])[:, 0].double().numpy()
    assert np.abs(contrib.sum(1) - want).max() < 1e-5 and error < 1e-5
    # in float64 the decomposition is exact to rounding
    model64 = copy.deepcopy(model).double()
    model64.clear_sense_table()
    assert alignment.attribution_matrix(model64, ids, return_error=True)[1] < 1e-10


def test_aer_precision_recall_on_a_hand_example():
    sure = [{(0, 0), (1, 2)}, {(0, 0)}]
    possible = [{(0, 0), (1, 2), (1, 1)}, {(0, 0), (0, 1)}]
    pred = [{(0, 0), (1, 1), (2, 2)}, {(0, 1)}]
    # |A n S| = 1 + 0, |A n P| = 2 + 1, |A| = 3 + 1, |S| = 2 + 1
    s = alignment.aer(pred, sure, possible)
    assert s['aer'] == pytest.approx(1 - (1 + 3) / (4 + 3))
    assert s['precision'] == pytest.approx(3 / 4) and s['recall'] == pytest.approx(1 / 3)
    assert alignment.aer([s_ for s_ in sure], sure, possible)['aer'] == 0.0  # the sure links alone: perfect
    assert alignment.aer([set(), set()], sure, possible)['aer'] == pytest.approx(1.0)
    stats = alignment.aer_stats(pred, sure, possible)
    rows = np.array([[0, 1], [1, 1]])
    assert np.allclose(stats['aer'].batch(rows), [stats['aer'](r) for r in rows])
    assert stats['aer'](np.array([0, 1])) == pytest.approx(s['aer'])
    assert alignment.parse_links('1-2 0-0') == {(0, 0), (1, 2)} and alignment.format_links({(1, 2), (0, 0)}) == '0-0 1-2'


def test_grow_diag_final_on_a_hand_example():
    e2f = {(0, 0), (1, 1), (2, 2), (3, 3)}
    f2e = {(0, 0), (1, 1), (2, 2), (2, 0), (4, 0)}
    # A = the diagonal (0..2); grow-diag adds (3, 3), a diagonal neighbour of (2, 2) with English word 3 unaligned;
    # final adds (4, 0) (English word 4 unaligned, no neighbour in A); (2, 0) joins two aligned words: left out
    assert alignment.grow_diag_final(e2f, f2e, 5, 4) == {(0, 0), (1, 1), (2, 2), (3, 3), (4, 0)}
    assert alignment.symmetrise(e2f, f2e, 'intersection', 5, 4) == {(0, 0), (1, 1), (2, 2)}
    assert alignment.symmetrise(e2f, f2e, 'union', 5, 4) == e2f | f2e
    # growing goes on from what was grown: a chain of neighbours each with a new word
    chain = {(0, 0), (1, 1), (2, 2), (3, 3)}
    assert alignment.grow_diag_final({(0, 0)}, chain, 4, 4) == chain
    with pytest.raises(ValueError):
        alignment.symmetrise(e2f, f2e, 'grow-diag', 5, 4)


def test_ibm1_learns_the_obvious_dictionary():
    corpus = [('the house', 'la maison'), ('the book', 'le livre'), ('a book', 'un livre'), ('a house', 'une maison'),
              ('the small house', 'la petite maison'), ('the house is small', 'la maison est petite')]
    en_vocab, fr_vocab = {alignment.NULL: 0}, {alignment.NULL: 0}
    en = [np.array([en_vocab.setdefault(w, len(en_vocab)) for w in e.split()]) for e, _ in corpus]
    fr = [np.array([fr_vocab.setdefault(w, len(fr_vocab)) for w in f.split()]) for _, f in corpus]
    keys, t = alignment.ibm1_train(en, fr, len(en_vocab), len(fr_vocab), iterations=20, chunk=2)
    n_f = len(fr_vocab)
    table = {(k // n_f, k % n_f): p for k, p in zip(keys, t)}
    for e in range(len(en_vocab)):  # each t(. | e) a distribution over the French words it met
        assert sum(p for (a, _), p in table.items() if a == e) == pytest.approx(1.0)
    best = {}
    for (e, f), p in table.items():
        if e and p > best.get(e, (None, -1))[1]:
            best[e] = (f, p)
    words = {i: w for w, i in fr_vocab.items()}
    learned = {w: words[best[i][0]] for w, i in en_vocab.items() if i}
    assert learned['house'] == 'maison' and learned['book'] == 'livre' and learned['small'] == 'petite'
    ibm = alignment.IBM1Table({'en-fr': {(e_w, f_w): table[(e, f)] for e_w, e in en_vocab.items()
                                         for f_w, f in fr_vocab.items() if (e, f) in table}}, {})
    assert (1, 1) in ibm.align(['the', 'house'], ['la', 'maison'], 'en-fr')  # maison -> house
    assert alignment.hansards_tokens("L'homme du Parlement, aujourd'hui.", 'fr') == \
        ['le', 'homme', 'de', 'le', 'parlement', ',', "aujourd'", 'hui', '.']
    assert alignment.hansards_tokens("The Minister's answer.", 'en') == ['the', 'minister', "'s", 'answer', '.']


def test_pieces_map_onto_the_gold_words(tiny_backpack_dir):
    tok = load_tokenizer(tiny_backpack_dir)
    for g in alignment.read_gold('trial')[:10]:
        p = alignment.build_prompt(tok, g['en'], g['fr'], 'en', 'fr')
        ids = p['ids']
        assert ids[0] == tok.lang_id('en') and ids[p['tgt_spans'][0][0] - 1] == tok.lang_id('fr')
        assert [i for span in p['src_spans'] for i in span] == list(range(1, p['tgt_spans'][0][0] - 1))
        assert not p['retokenised']  # byte-level BPE: the word-by-word pieces are the sentence's own
        assert ids == tok.encode_prompt(' '.join(g['en']), 'en', 'fr') + tok.encode(' '.join(g['fr']))


def test_word_scores_and_links():
    # 2 source words (positions 1-2 and 3), target word 0 = pieces at 5, 6; word 1 = piece 7; tag at 0 and 4
    M = np.zeros((8, 8))
    M[4, :5] = [0.5, 0.1, 0.1, 2.0, 0.3]   # predicting piece 5
    M[5, :6] = [0.0, 1.0, 1.0, 0.0, 0.0, 1.0]  # predicting piece 6
    M[6, :7] = [4.0, 0.1, 0.0, 0.1, 0.0, 0.0, 0.0]  # predicting piece 7: mostly the tag
    spans = [[1, 2], [3]], [[5, 6], [7]]
    W, share = alignment.word_scores(M, *spans, agg='first', row_shift=1)
    assert np.allclose(W, [[0.2, 2.0], [0.1, 0.1]]) and share[0, 1] == pytest.approx(2.0 / 3.0)
    W, share = alignment.word_scores(M, *spans, agg='sum', row_shift=1)
    assert np.allclose(W[0], [2.2, 2.0]) and share[0, 0] == pytest.approx(2.2 / 6.0)
    W, _ = alignment.word_scores(M, *spans, agg='last', row_shift=1)
    assert np.allclose(W[0], [2.0, 0.0])
    W, share = alignment.word_scores(M, *spans, agg='first', row_shift=1)
    assert alignment.align_words(W, share, 0.0) == [(0, 1), (1, 0)]
    assert alignment.align_words(W, share, 0.1) == [(0, 1)]  # word 1 takes 0.1 / 4.2 from the source: NULL
    assert alignment.oriented([(0, 1)], 'en-fr') == {(1, 0)} and alignment.oriented([(0, 1)], 'fr-en') == {(0, 1)}
    assert alignment.diagonal_links(3, 6) == [(0, 0), (1, 0), (2, 1), (3, 1), (4, 2), (5, 2)]


@pytest.fixture(scope='module')
def ibm1_table(tmp_path_factory):
    path = tmp_path_factory.mktemp('ibm1') / 'ibm1.json.gz'
    files = [(REPO / 'data' / 'europarl' / 'sample' / 'train.en.gz', REPO / 'data' / 'europarl' / 'sample' / 'train.fr.gz')]
    table = alignment.cached_ibm1(path, files=files, max_pairs=500, iterations=3, log=lambda *a: None)
    assert path.is_file() and alignment.cached_ibm1(path, files=files, max_pairs=500, iterations=3,
                                                    log=lambda *a: None).meta == table.meta
    return path


def test_alignment_end_to_end_and_its_check(tiny_backpack_dir, tiny_transformer_dir, ibm1_table):
    model, _ = load_model(tiny_backpack_dir)
    tok = load_tokenizer(tiny_backpack_dir)
    twin, _ = load_model(tiny_transformer_dir)
    section = alignment.evaluate_alignment(model, tok, 'cpu', twin=twin, twin_tok=load_tokenizer(tiny_transformer_dir),
                                           ibm1=alignment.IBM1Table.load(ibm1_table), n_resamples=50)
    assert set(section['methods']) == {'attribution', 'twin_attention', 'ibm1', 'diagonal'}
    n_test = len(section['sentences']['test'])
    assert n_test >= 2 and section['sentences']['trial'] and n_test + section['n_skipped']['test'] == 447
    assert section['exactness']['max_abs_error'] < 1e-5 and section['exactness']['max_abs_error_float64'] < 1e-10
    for method in section['methods'].values():
        assert set(method['scores']) == set(alignment.ALIGNMENTS)
        assert all(len(method['links'][d]['test']) == n_test for d in alignment.DIRECTIONS)
        s = method['scores']['grow_diag_final']['test']
        assert 0 <= s['aer'] <= 1 and s['aer_ci']['low'] <= s['aer'] <= s['aer_ci']['high']
    options = section['methods']['twin_attention']['options']['en-fr']
    assert set(options) == {'layer', 'row', 'agg', 'tau'} and options['tau'] in alignment.THRESHOLDS
    assert '| Backpack sense attribution |' in '\n'.join(alignment.report_lines(section))

    stored = json.loads(json.dumps(section))  # as read back from a results file
    assert all(math.isfinite(v) for _, v in verify_evaluation.numbers(stored))  # no NaN (verify flags one)
    c = Checks()
    alignment.check(c, stored)
    assert not c.failures and c.passed > 100
    tampered = copy.deepcopy(stored)
    tampered['methods']['attribution']['scores']['grow_diag_final']['test']['aer'] += 0.01
    c = Checks()
    alignment.check(c, tampered)
    assert any('attribution.scores.grow_diag_final.test.aer' in f for f in c.failures)
    tampered = copy.deepcopy(stored)  # a stored link changed: the scores no longer follow from the links
    links = tampered['methods']['diagonal']['links']['en-fr']['test']
    links[0] = '' if links[0] else '0-0'
    c = Checks()
    alignment.check(c, tampered)
    assert any('diagonal.scores.en-fr.test' in f for f in c.failures)


def run(*args):
    return subprocess.run([sys.executable, *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=600)


def test_evaluate_cli_alignment_section_verifies(tiny_backpack_dir, tiny_transformer_dir, ibm1_table, tmp_path):
    out = tmp_path / 'alignment_results.json'
    result = run('evaluate.py', '--out_dir', tiny_backpack_dir, '--alignment', '--alignment_twin', tiny_transformer_dir,
                 '--alignment_ibm1', ibm1_table, '--output', out)
    assert result.returncode == 0, result.stderr[-2000:]
    results = json.loads(out.read_text())
    assert results['settings']['which'] == ['alignment'] and 'perplexity' not in results
    assert any(k.startswith('alignment AER attribution') for k in
               __import__('outdir').headline_metrics(results)), 'the headline table names the alignment AER'
    assert 'data/word_alignment/hansards_wpt03.sure' in results['inputs']
    import run_full_evaluation
    assert '## Word alignment' in run_full_evaluation.report({**results, 'timing_s': {}}, [])
    c = Checks()
    verify_evaluation.check_inputs(c, results, tiny_backpack_dir, 'alignment_results.json')
    alignment.check(c, results['alignment'], tiny_backpack_dir)
    assert not c.failures
    bad = run('evaluate.py', '--out_dir', tiny_backpack_dir, '--alignment_twin', tiny_transformer_dir)
    assert bad.returncode == 1 and 'go with --alignment' in bad.stderr


def test_a_missing_gold_file_is_one_error_line(tiny_backpack_dir, tmp_path):
    result = run('experiments/alignment.py', '--out_dir', tiny_backpack_dir, '--gold_dir', tmp_path, '--ibm1_pairs', 0,
                 '--output', tmp_path / 'a.json')
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: no hansards_wpt03_trial.en in') and 'PROVENANCE' in lines[0]


def test_run_full_evaluation_alignment_cross_edit_and_verify_catches_a_tampered_aer(tiny_backpack_dir,
                                                                                     tiny_transformer_dir, tmp_path):
    import shutil
    from experiments import cross_edit
    out = tmp_path / 'backpack'
    shutil.copytree(tiny_backpack_dir, out)
    task = tmp_path / 'task'  # (one run also covers --cross_edit: the full evaluation is the costly part)
    shutil.copytree(cross_edit.DATA_DIR, task)
    people = (task / 'people.tsv').read_text().splitlines()
    (task / 'people.tsv').write_text('\n'.join(people[:2] + [l for l in people if l.endswith('test')][:2]) + '\n')
    result = run('run_full_evaluation.py', '--out_dir', out, '--translation_samples', 10, '--sentence_pairs', 50,
                 '--interventions', 'none', '--alignment', '--alignment_twin', tiny_transformer_dir,
                 '--cross_edit', '--cross_edit_twin', tiny_transformer_dir, '--cross_edit_task', task)
    assert result.returncode == 0, result.stderr[-2000:]
    report = (out / 'evaluation_report.md').read_text()
    assert '## Word alignment' in report and '## Cross-lingual sense editing' in report
    assert set(json.loads((out / 'evaluation_results.json').read_text())['cross_edit']['summary']) == set(cross_edit.METHODS)
    verified = run('verify_evaluation.py', '--out_dir', out)
    assert verified.returncode == 0 and 'FAILED' not in verified.stdout, verified.stdout[-2000:]
    path = out / 'evaluation_results.json'
    results = json.loads(path.read_text())
    results['alignment']['methods']['attribution']['scores']['union']['test']['aer'] += 0.02
    path.write_text(json.dumps(results))
    tampered = run('verify_evaluation.py', '--out_dir', out)
    assert tampered.returncode == 1 and 'alignment.methods.attribution.scores.union.test.aer' in tampered.stdout
    results['alignment']['methods']['attribution']['scores']['union']['test']['aer'] -= 0.02
    results['cross_edit']['summary']['backpack/senses']['fr_general']['margin_change'] += 0.5
    path.write_text(json.dumps(results))
    tampered = run('verify_evaluation.py', '--out_dir', out)
    assert tampered.returncode == 1 and 'cross_edit.backpack/senses.fr_general.margin_change' in tampered.stdout
