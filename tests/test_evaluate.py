"""evaluate.py, run_full_evaluation.py, verify_evaluation.py and compare_models.py end to end on the tiny models."""
import json
import math
import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import REPO

PASSED = '✅ ALL CHECKS PASSED - READY FOR PAPER REPORTING'


def run(script, *args, cwd=REPO, timeout=600):
    return subprocess.run([sys.executable, str(REPO / script), *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope='module')
def evaluated_backpack(tiny_backpack_dir, tmp_path_factory):
    """A copy of the tiny Backpack's out_dir after run_full_evaluation.py."""
    out = tmp_path_factory.mktemp('eval') / 'tiny_backpack'
    shutil.copytree(tiny_backpack_dir, out)
    result = run('run_full_evaluation.py', '--out_dir', out, '--translation_samples', 12, '--sentence_pairs', 40)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_full_evaluation_writes_everything_and_verify_passes(evaluated_backpack):
    out = evaluated_backpack
    for name in ('evaluation_results.json', 'evaluation_report.md', 'sense_labels.json', 'loss_curve.png',
                 'alpha_en.png', 'alpha_fr.png'):
        assert (out / name).is_file(), name
    results = json.loads((out / 'evaluation_results.json').read_text())
    assert results['translation']['en-fr']['n'] == 12 and results['translation']['fr-en']['n'] == 12
    assert results['sentence_similarity']['tatoeba']['hidden']['n'] == 40
    assert len(results['senses']['labels']) == results['model']['n_senses'] == 4
    assert set(results['word_similarity']) == {'en', 'fr', 'en-fr', 'simlex999'}
    result = run('verify_evaluation.py', '--out_dir', out)
    assert result.returncode == 0, result.stdout
    assert PASSED in result.stdout and 'vs copy-the-source' in result.stdout  # baseline gaps are printed


@pytest.mark.parametrize('corrupt, message', [
    (lambda r: r['translation']['en-fr'].__setitem__('bleu', float('nan')), 'translation.en-fr.bleu is nan'),
    (lambda r: r.pop('bli'), 'evaluation "bli" missing'),
    (lambda r: r['perplexity']['val_en'].__setitem__('ppl', 0.5), 'perplexity.val_en.ppl = 0.5'),
    (lambda r: r['translation']['fr-en'].__setitem__('n', 11), 'translation.fr-en: n = 11, requested 12'),
    (lambda r: r['senses']['labels'].pop(), 'senses: 3 labels for 4 senses'),
    (lambda r: r['senses']['probe_words']['words']['bank']['senses'][0]['top'][0].__setitem__('id', 0),
     'non-EN/FR tokens'),
])
def test_verify_fails_on_a_bad_results_file(evaluated_backpack, tmp_path, corrupt, message):
    out = tmp_path / 'bad'
    shutil.copytree(evaluated_backpack, out)
    results = json.loads((out / 'evaluation_results.json').read_text())
    corrupt(results)
    (out / 'evaluation_results.json').write_text(json.dumps(results))
    result = run('verify_evaluation.py', '--out_dir', out)
    assert result.returncode == 1 and PASSED not in result.stdout
    assert message in result.stdout, result.stdout


def test_compare_models_table(evaluated_backpack, tiny_transformer_dir, tmp_path):
    result = run('compare_models.py', '--backpack_dir', evaluated_backpack, '--transformer_dir', tiny_transformer_dir,
                 '--device', 'cpu', '--translation_samples', 12, '--sentence_pairs', 40, '--output_dir', tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'reusing' in result.stdout  # the Backpack's evaluation_results.json had these settings
    table = json.loads((tmp_path / 'comparison.json').read_text())
    rows = {row['metric']: row for row in table['rows']}
    for name in ('ppl val_en', 'bits/byte val_fr', 'BLEU en-fr', 'Spearman en embedding', 'params total'):
        row = rows[name]
        assert row['delta'] == pytest.approx(row['backpack'] - row['transformer'])
    assert rows['params total']['backpack'] > rows['params total']['transformer']
    assert 'Spearman en mean_sense' in table['backpack_only']
    md = (tmp_path / 'comparison.md').read_text()
    assert '| metric | Backpack | Transformer | Δ (B − T) |' in md and 'sense 0:' in md
    assert (tmp_path / 'loss_curves.png').is_file()


def test_evaluate_cli_selected_evaluations(tiny_transformer_dir, tmp_path):
    out = tmp_path / 'ws.json'
    result = run('evaluate.py', '--out_dir', tiny_transformer_dir, '--multisimlex', '--cross_lingual',
                 '--languages', 'en', 'fr', '--output', out)
    assert result.returncode == 0, result.stderr[-2000:]
    results = json.loads(out.read_text())
    assert set(results) >= {'word_similarity'} and 'translation' not in results
    assert set(results['word_similarity']['en']['spearman']) == {'embedding'}  # a Transformer has no senses
    assert all(math.isfinite(r['spearman']['embedding']) for r in results['word_similarity'].values())


def readme_snippets():
    """The `python -c "..."` blocks of the README, verbatim."""
    text = (REPO / 'README.md').read_text(encoding='utf-8')
    return re.findall(r'```bash\npython -c "\n(.*?)"\n```', text, flags=re.S)


def test_readme_snippets_run_verbatim_against_a_quickstart_out_dir(evaluated_backpack, tmp_path):
    snippets = readme_snippets()
    assert len(snippets) >= 4
    (tmp_path / 'out').mkdir()
    (tmp_path / 'out' / 'tiny_backpack').symlink_to(evaluated_backpack)
    for code in snippets:
        result = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, capture_output=True, text=True,
                                timeout=300, env={**os.environ, 'PYTHONPATH': str(REPO)})
        assert result.returncode == 0, code + result.stderr[-2000:]


def test_bad_inputs(evaluated_backpack, tmp_path):
    from evaluate import evaluate_word_similarity, generate_translation, load_model, load_tokenizer
    model, _ = load_model(evaluated_backpack, 'cpu')
    tok = load_tokenizer(evaluated_backpack)
    unseen = 'ꙮꙮ'  # its bytes never occur in the training text: untrained pieces, so OOV
    result = evaluate_word_similarity(model, tok, 'cpu', [('parliament', unseen, 1.0), ('the', 'a', 2.0),
                                                          ('house', 'home', 3.0), ('bank', 'river', 1.5)])
    assert result['n_oov_pairs'] == 1 and result['oov_words'] == [unseen] and result['n_covered'] == 3
    with pytest.raises(ValueError):
        generate_translation(model, tok, '', 'cpu')
    from evaluate import evaluate_multisimlex
    with pytest.raises(FileNotFoundError, match='nowhere.txt'):
        evaluate_multisimlex(model, tok, 'cpu', paths={'en': tmp_path / 'nowhere.txt'})
