"""The seed's experiments/ scripts: sense_vector.py (per-word sense analysis, text and JSON),
analyze_results.py (any number of evaluation_results.json in one table, CSV and plots) and
visualize_senses.py (PNGs and the sense explorer's data and page; tests/test_explorer_browser.py opens the
page in a browser). The scripts run in-process through errors.run_main, as their `__main__` does."""
import csv
import json
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import evaluate
from conftest import REPO
from experiments import analyze_results, lexical, metrics, senses, sense_vector, visualize_senses
from test_entry_points import one_line_error
from test_senses import restore_sense_labels, tiny, unknown_word  # noqa: F401  (fixtures)

QUICKSTART = REPO / 'results' / 'quickstart'


# ----------------------------------------------------------------------------- sense_vector.py

def test_sense_vector_text_and_json(tiny_backpack_dir, tiny, tmp_path, capsys, restore_sense_labels):
    model, tok = tiny
    oov = unknown_word(tok)
    words = ['parliament', 'droit', oov]
    out = tmp_path / 'senses.json'
    sense_vector.main(['--out_dir', str(tiny_backpack_dir), '--words', *words, '--top_k', '3', '--json', str(out)])
    text = capsys.readouterr().out
    # the tiny run has no sense_labels.json (run_full_evaluation.py writes it): labels derived from the model
    saved = tiny_backpack_dir / 'sense_labels.json'
    labels = (senses.load_sense_labels(saved) if saved.exists()
              else [s['label'] for s in senses.label_senses(model, tok, 'cpu')])
    expected = senses.analyze_sense_vectors(model, tok, words, 'cpu', top_k=3, verbose=False, labels=labels)
    record = json.loads(out.read_text(encoding='utf-8'))
    assert record['labels_from'] == (str(saved) if saved.exists() else 'label_senses (derived now)')
    assert record['labels'] == labels
    assert record['oov_words'] == [oov] and record['words'][oov]['oov']
    for word in ('parliament', 'droit'):
        for got, want in zip(record['words'][word]['senses'], expected['words'][word]['senses']):
            assert [t['id'] for t in got['top']] == [t['id'] for t in want['top']]
            assert [t['id'] for t in got['bottom']] == [t['id'] for t in want['bottom']]
            assert got['label'] == want['label']
    counts = {lang: dict(tok.words(lang)) for lang in ('en', 'fr')}
    assert record['training_counts']['droit'] == {'en': counts['en'].get('droit', 0), 'fr': counts['fr']['droit']}
    assert record['training_counts']['parliament']['en'] == counts['en']['parliament'] > 0
    assert record['training_counts'][oov] == {'en': 0, 'fr': 0}
    # the text: the counts table, then every sense of each word with its label, and the OOV word said
    row = re.search(r'^droit\s+(\d+)\s+(\d+)', text, re.M)
    assert row and int(row.group(2)) == counts['fr']['droit']
    assert "'droit'" in text and "'parliament'" in text and 'OOV' in text
    for l, label in enumerate(labels):
        assert f'sense {l:>2} | {label} |' in text


def test_sense_vector_probe_words_labels_file_and_stdout_json(tiny_backpack_dir, tiny, tmp_path, capsys,
                                                              restore_sense_labels):
    model, tok = tiny
    mine = [f'my label {l}' for l in range(model.config.n_senses)]
    (tmp_path / 'sense_labels.json').write_text(json.dumps({'senses': [{'label': s} for s in mine]}))
    sense_vector.main(['--out_dir', str(tiny_backpack_dir), '--lang', 'fr', '--labels',
                       str(tmp_path / 'sense_labels.json'), '--json', '-'])
    record = json.loads(capsys.readouterr().out)  # stdout holds the JSON alone
    assert list(record['words']) == senses.PROBE_WORDS['fr']
    assert record['labels'] == mine and record['labels_from'] == str(tmp_path / 'sense_labels.json')
    (tmp_path / 'sense_labels.json').write_text(json.dumps({'senses': [{'label': 'one'}]}))
    line = one_line_error(capsys, sense_vector.main, ['--out_dir', tiny_backpack_dir, '--labels',
                                                      tmp_path / 'sense_labels.json'], [tmp_path])
    assert f'has 1 labels but the model in {tiny_backpack_dir} has {model.config.n_senses} senses' in line


def test_sense_tools_refuse_a_transformer(tiny_transformer_dir, capsys, tmp_path):
    for main in (sense_vector.main, visualize_senses.main):
        line = one_line_error(capsys, main, ['--out_dir', tiny_transformer_dir, '--output', tmp_path / 'x']
                              if main is visualize_senses.main else ['--out_dir', tiny_transformer_dir],
                              [tiny_transformer_dir, tmp_path])
        assert 'holds a transformer, which has no sense vectors' in line


# ----------------------------------------------------------------------------- analyze_results.py

def test_analyze_results_table_csv_and_plots(tmp_path, capsys):
    b = json.loads((QUICKSTART / 'backpack' / 'evaluation_results.json').read_text())
    t = json.loads((QUICKSTART / 'transformer' / 'evaluation_results.json').read_text())
    out = tmp_path / 'same'
    analyze_results.main([str(QUICKSTART / 'backpack'), f"tf={QUICKSTART / 'transformer' / 'evaluation_results.json'}",
                          '--out', str(out)])
    printed = capsys.readouterr().out
    md = (out / 'results.md').read_text()
    assert md in printed and md.startswith('| metric | backpack | tf |')
    # every headline number, bold where it is the best of its row
    hb, ht = evaluate.headline_metrics(b), evaluate.headline_metrics(t)
    bpb = b['perplexity']['val_en']['bpb'], t['perplexity']['val_en']['bpb']
    assert f"| bits/byte val_en | **{bpb[0]:.4g}** | {bpb[1]:.4g} |" in md and bpb[0] < bpb[1]
    ppl = b['perplexity']['val_fr']['ppl'], t['perplexity']['val_fr']['ppl']
    assert f"| ppl val_fr | **{ppl[0]:.4g}** | {ppl[1]:.4g} |" in md  # one tokenizer: perplexity compares
    assert '| Spearman en mean_sense | ' in md
    assert md.count('\n| ') == len(analyze_results.model_rows({'b': b})) + len(hb)  # the transformer's are a subset
    assert '| exact match en-fr | 0 | 0 |' in md  # a tie has no bold
    assert f"| params total | {b['model']['params']['total']:,} | {t['model']['params']['total']:,} |" in md
    rows = {row[0]: row[1:] for row in csv.reader((out / 'results.csv').open())}
    assert rows['metric'] == ['backpack', 'tf', 'note']
    for name, value in hb.items():
        assert float(rows[name][0]) == value
        assert rows[name][1] == '' if name not in ht else float(rows[name][1]) == ht[name]
    assert rows['senses k'] == ['16', '', '']
    with Image.open(out / 'bits_per_byte.png') as two_panels:  # bits/byte and perplexity
        width_same = two_panels.size[0]
    for name in ('metrics.png', 'loss_curves.png'):
        assert (out / name).stat().st_size > 10_000

    # the transformer as if it had another tokenizer: perplexity rows are marked, unbolded, and not plotted
    other = tmp_path / 'other_tokenizer'
    other.mkdir()
    t['model']['tokenizer'] = {**t['model']['tokenizer'], 'type': 'xlm-roberta', 'sha256': '0' * 64}
    (other / 'evaluation_results.json').write_text(json.dumps(t))
    analyze_results.main([str(QUICKSTART / 'backpack'), str(other), '--out', str(tmp_path / 'mixed')])
    md = (tmp_path / 'mixed' / 'results.md').read_text()
    assert f"| ppl val_fr † | {ppl[0]:.4g} | {ppl[1]:.4g} |" in md and analyze_results.NOT_COMPARABLE in md
    assert f"| bits/byte val_en | **{bpb[0]:.4g}** | {bpb[1]:.4g} |" in md
    rows = {row[0]: row[1:] for row in csv.reader((tmp_path / 'mixed' / 'results.csv').open())}
    assert rows['ppl val_fr'][2] == rows['best val loss'][2] == analyze_results.NOT_COMPARABLE
    assert rows['bits/byte val_fr'][2] == ''
    with Image.open(tmp_path / 'mixed' / 'bits_per_byte.png') as one_panel:
        assert one_panel.size[0] < 0.6 * width_same
    assert (tmp_path / 'mixed' / 'loss_curves.png').exists()  # the backpack's training_log.json is beside it


def test_analyze_results_names_and_errors(tmp_path, capsys):
    for name in ('a', 'b'):
        (tmp_path / name / 'backpack').mkdir(parents=True)
        shutil.copy(QUICKSTART / 'backpack' / 'evaluation_results.json', tmp_path / name / 'backpack')
    runs = analyze_results.load_runs([str(tmp_path / 'a' / 'backpack'), str(tmp_path / 'b' / 'backpack')])
    assert list(runs) == ['a/backpack', 'b/backpack']  # the same directory names: with their parents
    line = one_line_error(capsys, analyze_results.main, [f"x={tmp_path / 'a' / 'backpack'}",
                                                         f"x={tmp_path / 'b' / 'backpack'}", '--out', tmp_path / 'o'],
                          [tmp_path])
    assert "two runs are called 'x'" in line
    line = one_line_error(capsys, analyze_results.main, [tmp_path / 'nothing', '--out', tmp_path / 'o'], [tmp_path])
    assert 'evaluation_results.json not found' in line and 'run_full_evaluation.py' in line


# ----------------------------------------------------------------------------- visualize_senses.py

@pytest.fixture(scope='module')
def explorer(tiny, tiny_backpack_dir):
    model, tok = tiny
    labels = [f'label {l}' for l in range(model.config.n_senses)]
    pairs = visualize_senses.example_sentences(tiny_backpack_dir, tok, model.config.block_size, 2)
    return visualize_senses.explorer_data(model, tok, 'cpu', labels, pairs, n_words=200, top_k=4, n_neighbours=3)


def test_explorer_data_is_the_models_analysis(tiny, explorer, tiny_backpack_dir):
    model, tok = tiny
    data, k = explorer, model.config.n_senses
    words = [w['word'] for w in data['words']]
    # the 200 most frequent covered words of each language, a word of both lists once
    lists = {lang: list(lexical.candidate_words(tok, lang, 200)) for lang in ('en', 'fr')}
    assert words == list(dict.fromkeys(lists['en'] + lists['fr']))
    assert data['settings']['n_en'] == len(lists['en']) == 200 and data['settings']['n_fr'] == 200
    both = [w for w in data['words'] if w['lists'] == ['en', 'fr']]
    assert len(words) == 400 - len(both)
    # senses: what analyze_sense_vectors gives, for an English and a French word
    check = ['parliament', 'droit'] + [w['word'] for w in both[:1]]
    expected = senses.analyze_sense_vectors(model, tok, check, 'cpu', top_k=4, verbose=False, labels=data['labels'])
    for word in check:
        entry = data['words'][words.index(word)]
        assert len(entry['senses']) == k
        for (top, bottom), want in zip(entry['senses'], expected['words'][word]['senses']):
            assert top == [t['id'] for t in want['top']] and bottom == [t['id'] for t in want['bottom']]
        counts = {lang: dict(tok.words(lang)).get(word, 0) for lang in ('en', 'fr')}
        assert entry['counts'] == counts
    # every shown token has its string and its language by the 2/3 rule
    for t, (text, lang, en, fr) in data['tokens'].items():
        assert text == tok.token_str(int(t)) and [en, fr] == tok.token_lang_counts[int(t)].tolist()
        share = en / (en + fr)
        assert lang == ('en' if share >= 2 / 3 else 'fr' if share <= 1 / 3 else 'both')
    assert {lang for _, lang, _, _ in data['tokens'].values()} >= {'en', 'fr'}


def test_explorer_neighbours_are_csls_best(tiny, explorer):
    model, tok = tiny
    data = explorer
    words = [w['word'] for w in data['words']]
    lists = {lang: lexical.candidate_words(tok, lang, 200) for lang in ('en', 'fr')}
    for rep in ('mean_sense', 'embedding'):
        S = lexical.word_vectors(model, list(lists['fr'].values()), 'cpu', rep)
        T = lexical.word_vectors(model, list(lists['en'].values()), 'cpu', rep)
        scores = metrics.csls_scores(S, T, 10)
        row = list(lists['fr']).index('droit')
        best = np.argsort(-scores[row], kind='stable')[:3]
        got = data['words'][words.index('droit')]['neighbours']['en'][rep]
        assert [words[j] for j, _ in got] == [list(lists['en'])[c] for c in best]
        assert [s for _, s in got] == pytest.approx(scores[row, best], abs=1e-4)
    entry = data['words'][words.index('parliament')]
    assert set(entry['neighbours']) == {'fr'}  # an English-only word looks for French ones
    # MUSE test translations come with the words that have them
    muse = {}
    for line in open(REPO / 'data/eval/muse_dictionaries/en-fr.5000-6500.txt', encoding='utf-8'):
        s, t = line.split()
        muse.setdefault(s.lower(), set()).add(t.lower())
    for w in data['words']:
        if 'en' in w['lists']:
            assert set(w['gold'].get('fr', [])) == muse.get(w['word'], set())


def test_explorer_sentences_and_alpha(tiny, explorer, tiny_backpack_dir):
    model, tok = tiny
    en_lines = (tiny_backpack_dir / 'test.en').read_text(encoding='utf-8').splitlines()
    fr_lines = (tiny_backpack_dir / 'test.fr').read_text(encoding='utf-8').splitlines()
    sentences = explorer['sentences']
    assert [(s['pair'], s['lang']) for s in sentences] == [(0, 'en'), (0, 'fr'), (1, 'en'), (1, 'fr')]
    for s in sentences:
        assert 6 <= len(s['text'].split()) <= 14 and len(s['tokens']) <= model.config.block_size
        other = next(x for x in sentences if x['pair'] == s['pair'] and x['lang'] != s['lang'])
        lines, other_lines = (en_lines, fr_lines) if s['lang'] == 'en' else (fr_lines, en_lines)
        assert other_lines[lines.index(s['text'])] == other['text']  # a held-out translation pair
        ids = [tok.lang_id(s['lang'])] + tok.encode(s['text'])
        assert s['tokens'] == [tok.token_str(i) for i in ids] and s['tokens'][0] == f"<{s['lang']}>"
        with torch.no_grad():
            alpha = model.contextualization(torch.tensor([ids]))[0].numpy()
        assert len(s['alpha']) == model.config.n_senses
        for l, rows in enumerate(s['alpha']):
            assert [len(r) for r in rows] == list(range(1, len(ids) + 1))  # causal: j <= i
            for i, r in enumerate(rows):
                np.testing.assert_allclose(r, alpha[l, i, :i + 1], atol=5e-4)
                assert sum(r) == pytest.approx(1, abs=len(r) * 5e-4)


def test_explorer_page_is_self_contained_and_escapes_its_data(explorer):
    data = json.loads(json.dumps(explorer))
    data['labels'][0] = 'a </script><script>alert(1)</script> label'
    html = visualize_senses.render_html(data)
    assert html.count('<script') == 2 and '</script><script>alert' not in html
    start = html.index('type="application/json">') + len('type="application/json">')
    assert json.loads(html[start:html.index('</script>', start)]) == data
    assert not re.search(r'''(src|href)\s*=\s*["']?(https?:)?//''', html, re.I)  # nothing to fetch
    assert not re.search(r'@import|url\(', html)


def test_visualize_senses_writes_pngs_and_page(tiny_backpack_dir, tmp_path, capsys, restore_sense_labels):
    out = tmp_path / 'viz'
    oov = '\u4e2d\u6587\u5b57'
    visualize_senses.main(['--out_dir', str(tiny_backpack_dir), '--output', str(out), '--words', 'droit', oov,
                           '--n_words', '50', '--n_sentences', '1'])
    printed = capsys.readouterr().out
    names = sorted(p.name for p in out.iterdir())
    assert names == ['alpha_0_en.png', 'alpha_0_fr.png', 'sense_explorer.html', 'senses_droit.png']
    assert f"'{oov}' is OOV" in printed and 'explorer: ' in printed
    for png in out.glob('*.png'):
        with Image.open(png) as image:
            assert image.size[0] > 300 and image.size[1] > 200
    html = (out / 'sense_explorer.html').read_text(encoding='utf-8')
    assert '<title>Backpack sense explorer</title>' in html and '"n_words":50' in html
