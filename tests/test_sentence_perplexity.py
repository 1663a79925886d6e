"""Sentence vectors and retrieval, and per-language perplexity, on the tiny trained fixture models."""
import json
import math
import shutil

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from checkpoint import load_model
from experiments.perplexity import evaluate_perplexity
from experiments.sentence import evaluate_sentence_similarity, sentence_vectors
from test_translation import one_thread  # noqa: F401  (autouse: one torch thread in this module)
from tokenizer import load_tokenizer


@pytest.fixture(scope='module')
def backpack(tiny_backpack_dir):
    return load_model(tiny_backpack_dir, 'cpu')[0], load_tokenizer(tiny_backpack_dir)


@pytest.fixture(scope='module')
def transformer(tiny_transformer_dir):
    return load_model(tiny_transformer_dir, 'cpu')[0], load_tokenizer(tiny_transformer_dir)


def held_out_lines(tok, lang, n):
    return (tok.data_dir / f'test.{lang}').read_text(encoding='utf-8').splitlines()[:n]


# ----------------------------------------------------------------------------------------------------
# sentence vectors

def test_sentence_vectors_are_the_mean_over_the_text_positions(backpack):
    model, tok = backpack
    sentences = held_out_lines(tok, 'en', 6) + ['Yes.']
    block = model.config.block_size
    assert any(len(tok.encode(s)) > block - 1 for s in sentences)  # some are truncated at block_size - 1 tokens
    for kind in ('hidden', 'o', 'embedding'):
        vectors, n_truncated = sentence_vectors(model, tok, sentences, 'en', 'cpu', kind=kind, batch_size=4)
        assert vectors.shape == (len(sentences), model.config.n_embd)
        assert n_truncated == sum(len(tok.encode(s)) > block - 1 for s in sentences)
        for s, v in zip(sentences, vectors):
            alone, _ = sentence_vectors(model, tok, [s], 'en', 'cpu', kind=kind)
            torch.testing.assert_close(alone[0], v, atol=1e-5, rtol=0)  # right-padding never leaks
            ids = torch.tensor([[tok.lang_id('en')] + tok.encode(s)[:block - 1]])
            with torch.no_grad():
                states = model.hidden_states(ids) | {'embedding': model.input_embeddings()[ids]}
            torch.testing.assert_close(states[kind][0, 1:].mean(0), v, atol=1e-5, rtol=0)


def test_sentence_vector_errors(transformer):
    model, tok = transformer
    vectors, _ = sentence_vectors(model, tok, ['Oui.', 'Non merci.'], 'fr', 'cpu')
    assert vectors.shape == (2, model.config.n_embd)
    with pytest.raises(ValueError, match='Backpack'):
        sentence_vectors(model, tok, ['Yes.'], 'en', 'cpu', kind='o')
    with pytest.raises(ValueError, match='unknown sentence vector kind'):
        sentence_vectors(model, tok, ['Yes.'], 'en', 'cpu', kind='senses')
    with pytest.raises(ValueError, match='no tokens'):
        sentence_vectors(model, tok, ['Yes.', ''], 'en', 'cpu')


RETRIEVAL_KEYS = {'p@1_x2y', 'p@1_y2x', 'p@1_x2y_ci', 'p@1_y2x_ci', 'hits_x2y', 'hits_y2x', 'rank_x2y', 'rank_y2x',
                  'mean_true_cos',
                  'mean_random_cos', 'margin',
                  'n', 'vector', 'files', 'truncated'}


def check_retrieval(entry, n):
    assert set(entry) == RETRIEVAL_KEYS and entry['n'] == n
    assert 0 <= entry['p@1_x2y'] <= 1 and 0 <= entry['p@1_y2x'] <= 1
    assert -1 <= entry['mean_random_cos'] <= 1 and -1 <= entry['mean_true_cos'] <= 1
    assert entry['margin'] == pytest.approx(entry['mean_true_cos'] - entry['mean_random_cos'])
    assert entry['vector'] and set(entry['truncated']) == {'en', 'fr'}
    for way in ('x2y', 'y2x'):  # 95 % bootstrap interval over the n queries, around the value
        ci = entry[f'p@1_{way}_ci']
        assert ci['value'] == entry[f'p@1_{way}'] and 0 <= ci['low'] <= ci['value'] <= ci['high'] <= 1
        assert (ci['n'], ci['n_resamples'], ci['level']) == (n, 1000, 0.95)
        assert len(entry[f'hits_{way}']) == n and sum(entry[f'hits_{way}']) / n == entry[f'p@1_{way}']


def test_evaluate_sentence_similarity(backpack, transformer, tmp_path):
    model, tok = backpack
    results = evaluate_sentence_similarity(model, tok, 'cpu', max_pairs=20)
    assert set(results) == {'europarl_test', 'tatoeba'}
    for name, entries in results.items():
        assert set(entries) == {'hidden', 'o', 'embedding'}
        for entry in entries.values():
            check_retrieval(entry, 20)
    assert results['europarl_test']['o']['files']['fr'].endswith('test.fr')
    assert 'tatoeba' in results['tatoeba']['hidden']['files']['en']

    model, tok = transformer
    en, fr = tmp_path / 'p.en', tmp_path / 'p.fr'
    en.write_text('Thank you.\nI agree.\nThe debate is closed.\n', encoding='utf-8')
    fr.write_text("Merci.\nJe suis d'accord.\nLe débat est clos.\n", encoding='utf-8')
    results = evaluate_sentence_similarity(model, tok, 'cpu', datasets={'mine': (en, fr)})
    assert set(results['mine']) == {'hidden', 'embedding'}
    for entry in results['mine'].values():
        check_retrieval(entry, 3)
    with pytest.raises(FileNotFoundError, match='nope.fr'):
        evaluate_sentence_similarity(model, tok, 'cpu', datasets={'bad': (en, tmp_path / 'nope.fr')})


# ----------------------------------------------------------------------------------------------------
# perplexity

@pytest.fixture(scope='module')
def small_eval_dir(tiny_backpack_dir, tmp_path_factory):
    """tiny_backpack_dir's tokenizer and meta with test_{en,fr}.bin cut to their first 24 documents and
    their 3 longest (several sliding windows at block_size 32), meta.json's counts updated."""
    out = tmp_path_factory.mktemp('small_eval')
    shutil.copytree(tiny_backpack_dir / 'tokenizer', out / 'tokenizer')
    meta = json.loads((tiny_backpack_dir / 'meta.json').read_text())
    for lang in ('en', 'fr'):
        stream = np.fromfile(tiny_backpack_dir / f'test_{lang}.bin', dtype=meta['dtype'])
        docs = np.split(stream, np.flatnonzero(stream == meta['special_ids']['eos'])[:-1] + 1)
        lines = (tiny_backpack_dir / f'test.{lang}').read_text(encoding='utf-8').splitlines()
        keep = list(range(24)) + sorted(range(len(docs)), key=lambda i: -len(docs[i]))[:3]
        np.concatenate([docs[i] for i in keep]).tofile(out / f'test_{lang}.bin')
        meta['splits'][f'test_{lang}'] = {'sentences': len(keep), 'tokens': sum(len(docs[i]) for i in keep),
                                          'bytes': sum(len(lines[i].encode('utf-8')) for i in keep)}
    (out / 'meta.json').write_text(json.dumps(meta))
    return out


def brute_force_nll(model, doc):
    """Sum over t >= 1 of -ln p(doc[t] | context), one forward per token. The context is doc[:t] when
    t <= block_size; else, with the documented sliding windows of stride block_size // 2, token t is
    scored in window k = ceil((t - B) / stride), which ends at e = min(B + k * stride, len - 1) and
    starts at e - B: the context is doc[e - B:t]."""
    B = model.config.block_size
    stride, total = B // 2, 0.0
    for t in range(1, len(doc)):
        start = 0 if t <= B else min(B + math.ceil((t - B) / stride) * stride, len(doc) - 1) - B
        with torch.no_grad():
            logits, _ = model(torch.tensor([doc[start:t]]), return_logits=True)
        total -= F.log_softmax(logits[0, -1].double(), dim=-1)[doc[t]].item()
    return total


def test_perplexity_equals_the_brute_force_per_document_computation(backpack, small_eval_dir):
    model, _ = backpack
    tok = load_tokenizer(small_eval_dir)
    results = evaluate_perplexity(model, tok, 'cpu', splits=('test',), batch_size=5)
    assert set(results) == {'test_en', 'test_fr'}
    B = model.config.block_size
    for lang in ('en', 'fr'):
        r = results[f'test_{lang}']
        stream = np.fromfile(small_eval_dir / f'test_{lang}.bin', dtype=tok.meta['dtype']).astype(np.int64)
        docs = [d.tolist() for d in np.split(stream, np.flatnonzero(stream == tok.eos_id)[:-1] + 1)]
        assert max(len(d) for d in docs) > 2 * B + 1  # several windows
        assert r['documents'] == len(docs) == 27
        assert r['tokens'] == sum(len(d) - 1 for d in docs) == tok.meta['splits'][f'test_{lang}']['tokens'] - 27
        assert r['truncated'] == sum(len(d) > B + 1 for d in docs) > 0
        # each document's own sum (doc_nll, in file order), and sum_nll exactly their sum
        assert r['doc_nll'] == pytest.approx([brute_force_nll(model, d) for d in docs], rel=1e-5)
        assert r['sum_nll'] == math.fsum(r['doc_nll'])
        assert r['bytes'] == tok.meta['splits'][f'test_{lang}']['bytes']
        assert r['nll'] == pytest.approx(r['sum_nll'] / r['tokens'])
        assert r['ppl'] == pytest.approx(math.exp(r['sum_nll'] / r['tokens']))
        assert r['bpb'] == pytest.approx(r['sum_nll'] / (r['bytes'] * math.log(2)))
    again = evaluate_perplexity(model, tok, 'cpu', splits=('test',), batch_size=27)  # other batches, same sums
    assert again['test_fr']['sum_nll'] == pytest.approx(results['test_fr']['sum_nll'], rel=1e-6)
    assert again['test_fr']['doc_nll'] == pytest.approx(results['test_fr']['doc_nll'], rel=1e-6)


def test_perplexity_on_a_whole_file_and_its_errors(transformer, small_eval_dir):
    model, tok = transformer
    r = evaluate_perplexity(model, tok, 'cpu', splits=('val',), languages=('fr',), batch_size=64)['val_fr']
    split = tok.meta['splits']['val_fr']
    assert (r['documents'], r['tokens'], r['bytes']) == (split['sentences'], split['tokens'] - split['sentences'],
                                                        split['bytes'])
    assert math.isfinite(r['ppl']) and 1 < r['ppl'] < tok.vocab_size and 0 < r['bpb'] < 20
    small = load_tokenizer(small_eval_dir)
    with pytest.raises(FileNotFoundError, match='val_en.bin'):
        evaluate_perplexity(model, small, 'cpu', splits=('val',))
    small.meta['splits']['test_en']['tokens'] += 1
    with pytest.raises(ValueError, match='stale'):
        evaluate_perplexity(model, small, 'cpu', splits=('test',), languages=('en',))


# ----------------------------------------------------------------------------------------------------
# what evaluation crops is said in one line (issue 14, item 4)

def test_cropped_sentences_and_long_documents_are_said_in_one_line(backpack, small_eval_dir, capsys):
    model, tok = backpack
    sentences = held_out_lines(tok, 'en', 6)
    block = model.config.block_size
    n_cut = sum(len(tok.encode(s)) > block - 1 for s in sentences)
    assert n_cut > 0
    sentence_vectors(model, tok, sentences, 'en', 'cpu', kind='hidden')
    err = capsys.readouterr().err
    assert err == (f"warning: {n_cut} of 6 en sentences are longer than the context ({block - 1} tokens after the "
                   f"tag): their vectors use only their first {block - 1} tokens\n")
    sentence_vectors(model, tok, ['Yes.'], 'en', 'cpu', kind='hidden')
    assert capsys.readouterr().err == ''  # nothing cropped, nothing said
    evaluate_perplexity(model, load_tokenizer(small_eval_dir), 'cpu', splits=('test',), languages=('fr',))
    err = capsys.readouterr().err
    assert err.startswith('warning: test_fr.bin: ') and err.count('\n') == 1
    assert f'of 27 documents are longer than the context ({block} tokens)' in err and 'sliding window' in err
