"""Metric functions against hand-computed values on tiny inputs."""
import math

import numpy as np
import pytest
import sacrebleu
import torch

from experiments import metrics as M
from experiments.word_classes import CATEGORIES, LEXICON, categorize


# ----------------------------------------------------------------------------- translation

HYPS = ["The cat sat on the mat today.", "Le chat est sur le tapis rouge.", "Nothing matches here at all"]
REFS = ["The cat sat on the mat today.", "Le chat dort sur le tapis.", "Completely different words , sorry"]


def test_corpus_bleu_and_chrf_match_sacrebleu():
    bleu = M.corpus_bleu(HYPS, REFS)
    assert bleu["score"] == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS]).score)
    assert "tok:13a" in bleu["signature"] and "smooth:exp" in bleu["signature"]
    chrf = M.corpus_chrf(HYPS, REFS)
    assert chrf["score"] == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS]).score)
    assert "nc:6" in chrf["signature"]


def test_perfect_translation_scores_100():
    sents = ["the quick brown fox jumps over the dog", "le renard brun saute par-dessus le chien"]
    scores = M.translation_scores(sents, sents)
    assert scores["bleu"] == pytest.approx(100.0)
    assert scores["chrf"] == pytest.approx(100.0)
    assert scores["sentence_bleu"]["min"] == pytest.approx(100.0)
    assert scores["exact_match"] == 1.0 and scores["word_f1"] == 1.0 and scores["char_accuracy"] == 1.0
    assert scores["n"] == 2


def test_sentence_bleu_stats_match_sacrebleu_sentence_bleu():
    expected = [sacrebleu.sentence_bleu(h, [r]).score for h, r in zip(HYPS, REFS)]
    stats = M.sentence_bleu_stats(HYPS, REFS)
    assert stats["mean"] == pytest.approx(sum(expected) / 3)
    assert stats["median"] == pytest.approx(sorted(expected)[1])
    assert stats["min"] == pytest.approx(min(expected)) and stats["max"] == pytest.approx(100.0)


def test_translation_inputs_checked():
    with pytest.raises(ValueError, match="empty"):
        M.translation_scores([], [])
    with pytest.raises(ValueError, match="2 hypotheses but 1"):
        M.corpus_bleu(["a", "b"], ["a"])


def test_exact_match_strips_whitespace():
    assert M.exact_match([" a b ", "c", "d"], ["a b", "C", "d\n"]) == pytest.approx(2 / 3)


def test_unigram_f1_hand_computed():
    # hyp tokens: the cat sat on the mat (6); ref: the cat is on the mat . (7); overlap the×2 cat on mat = 5
    # P = 5/6, R = 5/7, F1 = 2PR/(P+R) = 10/13
    assert M.unigram_f1("the cat sat on the mat", "the cat is on the mat.") == pytest.approx(10 / 13)
    # 13a splits punctuation: [Hello , world !] vs [Hello world]: P = 2/4, R = 1 -> 2/3
    assert M.unigram_f1("Hello, world!", "Hello world") == pytest.approx(2 / 3)
    assert M.unigram_f1("The", "the") == 0.0  # case-sensitive
    assert M.unigram_f1("", "  ") == 1.0
    assert M.unigram_f1("", "word") == 0.0 and M.unigram_f1("word", "") == 0.0


def test_levenshtein_examples():
    assert M.levenshtein("kitten", "sitting") == 3
    assert M.levenshtein("intention", "execution") == 5
    assert M.levenshtein("flaw", "lawn") == 2
    assert M.levenshtein("", "abc") == 3 and M.levenshtein("abc", "") == 3 and M.levenshtein("", "") == 0
    assert M.levenshtein("café", "cafe") == 1  # an accented letter is one character
    assert M.levenshtein("cafe\u0301", "café") == 0  # combining accent == precomposed (NFC)
    assert M.levenshtein("élève", "eleve") == 2


def test_char_accuracy():
    assert M.char_accuracy("kitten", "sitting") == pytest.approx(1 - 3 / 7)
    assert M.char_accuracy("", "") == 1.0
    assert M.char_accuracy("abc", "") == 0.0
    assert M.char_accuracy("abcd", "abcd") == 1.0
    assert M.char_accuracy("cafe\u0301", "cafe") == pytest.approx(1 - 1 / 4)  # 4 NFC characters


# ----------------------------------------------------------------------------- similarity

def test_spearman_known_ranking():
    # pred ranks 1 3 2 4 vs gold 1 2 3 4: sum d^2 = 2, rho = 1 - 6*2/(4*(16-1)) = 0.8
    result = M.spearman([0.1, 0.4, 0.35, 0.8], [1, 2, 3, 4])
    assert result["rho"] == pytest.approx(0.8) and result["n"] == 4
    assert M.spearman([1, 2, 3], [3, 2, 1])["rho"] == pytest.approx(-1.0)
    assert math.isnan(M.spearman([1, 1, 1], [1, 2, 3])["rho"])
    with pytest.raises(ValueError):
        M.spearman([1.0], [2.0])
    with pytest.raises(ValueError):
        M.spearman([1, 2, 3], [1, 2])


def test_cosine_and_matrices():
    assert M.cosine([1, 0], [1, 1]) == pytest.approx(1 / math.sqrt(2))
    assert M.cosine(torch.tensor([2.0, 0.0]), np.array([-3.0, 0.0])) == pytest.approx(-1.0)
    assert M.cosine([0, 0], [1, 1]) == 0.0
    C = M.cosine_matrix([[1, 0], [0, 2]], [[3, 0], [1, 1], [0, -1]])
    np.testing.assert_allclose(C, [[1, 1 / math.sqrt(2), 0], [0, 1 / math.sqrt(2), -1]], atol=1e-12)
    P = M.pairwise_cosine(np.array([[1.0, 0], [0, 1], [1, 1]]))
    assert P.shape == (3, 3)
    np.testing.assert_allclose(np.diag(P), 1.0)
    assert P[0, 2] == pytest.approx(1 / math.sqrt(2)) and P[0, 1] == pytest.approx(0.0)


# ----------------------------------------------------------------------------- lexicon induction

def test_csls_by_hand():
    S = np.array([[1.0, 0.0], [0.0, 1.0]])
    T = np.array([[1.0, 0.0], [0.6, 0.8]])
    # cos: s0.t0 = 1, s0.t1 = .6, s1.t0 = 0, s1.t1 = .8
    # k=1: r_T = (1, .8), r_S = (1, .8)
    np.testing.assert_allclose(M.csls_scores(S, T, k=1), [[0.0, -0.6], [-1.8, 0.0]], atol=1e-12)
    # k=2: r_T = (.8, .4), r_S = (.5, .7)
    expected_k2 = [[2 - 0.8 - 0.5, 1.2 - 0.8 - 0.7], [0 - 0.4 - 0.5, 1.6 - 0.4 - 0.7]]
    np.testing.assert_allclose(M.csls_scores(S, T, k=2), expected_k2, atol=1e-12)
    np.testing.assert_allclose(M.csls_scores(3 * S, 5 * T, k=10), expected_k2, atol=1e-12)  # k capped at 2
    np.testing.assert_allclose(M.csls_scores(S, T, k=2, queries=[1]), [expected_k2[1]], atol=1e-12)


def test_precision_at_k_toy_matrix():
    src, tgt = ["a", "b", "c"], ["w", "x", "y", "z"]
    gold = {"a": {"x"}, "b": {"z"}, "d": {"w"}}  # 'c' has no gold entry, 'd' has no row
    scores = np.array([[0.9, 0.1, 0.8, 0.0],    # a: order w y x z -> hit at rank 3
                       [0.1, 0.2, 0.3, 0.9],    # b: z first -> hit at rank 1
                       [0.0, 0.0, 0.0, 1.0]])   # c: ignored
    result = M.precision_at_k(scores, src, tgt, gold, ks=(1, 2, 5))
    assert result["p@1"] == 0.5 and result["p@2"] == 0.5 and result["p@5"] == 1.0
    assert (result["n_gold"], result["n_covered"], result["n_oov"], result["n_reachable"]) == (3, 2, 1, 2)
    # ties go to the lower column index: a's top-1 among equal scores is w (not gold)
    tied = M.precision_at_k(np.ones((3, 4)), src, tgt, {"a": {"w"}, "b": {"x"}}, ks=(1,))
    assert tied["p@1"] == 0.5
    with pytest.raises(ValueError, match="no source word"):
        M.precision_at_k(scores, src, tgt, {"q": {"w"}})
    with pytest.raises(ValueError, match="score matrix"):
        M.precision_at_k(scores[:, :3], src, tgt, gold)



def dense_reference(S, T, k, queries):
    """The dense float64 BLI of before (kept here as the reference): every cosine of S[queries] with T,
    r_T and r_S as means of the k largest of whole sorted rows (k capped at the row length), the CSLS
    matrix, and each row's stable descending order. Each score is an elementwise product summed, so
    identical vectors tie exactly."""
    S, T = (np.asarray(x, dtype=np.float64) for x in (S, T))
    S, T = (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12) for x in (S, T))
    cos_qt = (S[queries][:, None, :] * T[None]).sum(-1)
    cos_ts = (T[:, None, :] * S[None]).sum(-1)
    r_t = -np.sort(-cos_qt, axis=1)[:, :k].mean(1)
    r_s = -np.sort(-cos_ts, axis=1)[:, :k].mean(1)
    csls = 2 * cos_qt - r_t[:, None] - r_s[None, :]
    order = lambda x: np.argsort(-x, axis=1, kind="stable")  # noqa: E731
    return {"cos": cos_qt, "csls": csls, "r_t": r_t, "r_s": r_s, "cos_order": order(cos_qt), "csls_order": order(csls)}


def tied_vectors(seed=0, n_s=61, n_t=47, d=8):
    """Random S, T with planted exact ties: T[9] = T[3]; 20 copies of T[5] (more than k + SCREEN_PAD, so
    a row cannot tell them apart in float32 and takes the float64 path); a zero row; S rows equal to
    T rows (cosine 1) and duplicated S rows."""
    g = np.random.default_rng(seed)
    S, T = g.normal(size=(n_s, d)), g.normal(size=(n_t, d))
    T[9] = T[3]
    T[20:40] = T[5]
    T[44] = 0.0
    S[2], S[7], S[11] = T[5], 3 * T[3], T[12]
    S[30] = S[31] = S[32]
    S[40] = T[5] + 1e-3 * g.normal(size=d)  # near the 20 copies, not on them
    return S, T


def small_tiles(monkeypatch, group, pairs, tiles=(2, 3)):
    """Groups, tiles and float64 chunks small enough that the test vectors span many of each, none
    dividing the sizes (pairs 1: one row per float64 chunk)."""
    for name, value in (("SCREEN_GROUP", group), ("SCORE_PAIRS", pairs), ("TILE_GROUPS", tiles)):
        monkeypatch.setattr(M, name, value)


@pytest.mark.parametrize("seed, group, pairs, n_t", [(0, 32, 65536, 47), (1, 3, 50, 47), (2, 32, 1000, 1300),
                                                     (3, 2, 7, 47), (4, 5, 1, 47), (5, 4, 33, 47)])
def test_bli_rankings_equal_the_dense_float64_reference(seed, group, pairs, n_t, monkeypatch):
    small_tiles(monkeypatch, group, pairs)
    S, T = tied_vectors(seed, n_t=n_t)
    queries = [2, 40, 0, 7, 11, 30, 31, 13, 60, 5]  # unsorted, duplicated vectors, ties at cosine 1
    for k, top in ((10, 5), (3, 5), (1, 1), (60, 5)):  # k > len(T)
        ref = dense_reference(S, T, k, queries)
        got = M.bli_rankings(S, T, queries, csls_k=k, top=top)
        np.testing.assert_array_equal(got["cosine"].numpy(), ref["cos_order"][:, :top])
        np.testing.assert_array_equal(got["csls"].numpy(), ref["csls_order"][:, :top])
        rows = np.arange(len(queries))[:, None]
        for mine, theirs in (("cosine", "cos"), ("csls", "csls")):
            best = ref[theirs][rows, ref[f"{theirs}_order"][:, :top]]
            np.testing.assert_allclose(got[f"{mine}_scores"].numpy(), best, atol=1e-12)
        np.testing.assert_allclose(got["r_t"].numpy(), ref["r_t"], atol=1e-12)
        np.testing.assert_allclose(got["r_s"].numpy(), ref["r_s"], atol=1e-12)
        # the dense CSLS matrix (kept for callers that want every score) agrees too
        np.testing.assert_allclose(M.csls_scores(S, T, k, queries), ref["csls"], atol=1e-12)
    # query 2 is T[5] itself: its best five are the five lowest-index copies of it (columns 5, 20, 21, 22, 23)
    assert M.bli_rankings(S, T, [2], top=5)["cosine"].tolist() == [[5, 20, 21, 22, 23]]


def test_exact_and_mutual_top_k_on_many_columns():
    S, T = tied_vectors(6, n_s=300, n_t=2000, d=16)
    S, T = (M.normalize_rows(M.as_matrix(x)) for x in (S, T))
    dense = (S[:, None, :] * T[None]).sum(-1)
    for k in (10, 1, 40):
        (va, ia), (vb, ib) = M.mutual_top_k(S, T, k)
        assert torch.equal(ia, torch.argsort(-dense, dim=1, stable=True)[:, :k])
        assert torch.equal(ib, torch.argsort(-dense.T, dim=1, stable=True)[:, :k])
        torch.testing.assert_close(va, dense.gather(1, ia), rtol=0, atol=1e-12)
        torch.testing.assert_close(vb, dense.T.gather(1, ib), rtol=0, atol=1e-12)
        values, indices = M.exact_top_k(S, T, k)
        assert torch.equal(indices, ia) and torch.equal(values, va)


@pytest.mark.parametrize("group, pairs", [(32, 65536), (3, 20), (4, 1)])
def test_exact_top_k_with_scale_and_bias_equals_a_stable_sort(group, pairs, monkeypatch):
    small_tiles(monkeypatch, group, pairs)
    S, T = tied_vectors(3)
    S, T = (M.normalize_rows(M.as_matrix(x)) for x in (S, T))
    bias = torch.as_tensor(np.random.default_rng(0).normal(size=len(T)))
    bias[20:40] = bias[5]  # keep the copies of T[5] tied under the bias
    for scale in (2.0, 1.0, -1.0):
        values, indices = M.exact_top_k(S, T, 12, scale=scale, bias=bias)
        dense = scale * (S[:, None, :] * T[None]).sum(-1) - bias
        assert torch.equal(indices, torch.argsort(-dense, dim=1, stable=True)[:, :12])
        torch.testing.assert_close(values, dense.gather(1, indices), rtol=0, atol=1e-12)
    values, indices = M.exact_top_k(S, T, 100)  # k capped at len(T): the whole stable order
    assert indices.shape == (len(S), len(T))
    assert torch.equal(indices, torch.argsort(-(S @ T.T), dim=1, stable=True))


def test_distinct_rows_and_expand_ties():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0], [1.0, 2.0], [0.0, -0.5], [3.0, 4.0], [1.0, 2.0]], dtype=torch.float64)
    rows, inverse = M.distinct_rows(x)
    assert rows.tolist() == [[1, 2], [3, 4], [0, -0.5]] and inverse.tolist() == [0, 1, 0, 2, 1, 0]  # first-seen order
    assert M.distinct_rows(rows)[1] is None  # all distinct: the input itself
    # top 2 over distinct columns (0 then 2) -> top 4 over the originals: 0's copies 0, 2, 5, then 2's copy 3
    values, columns = M.expand_ties(torch.tensor([[0.9, 0.5]], dtype=torch.float64), torch.tensor([[0, 2]]), inverse, 4)
    assert columns.tolist() == [[0, 2, 5, 3]] and values.tolist() == [[0.9, 0.9, 0.9, 0.5]]
    # two distinct columns tied: their copies interleave by original index
    values, columns = M.expand_ties(torch.tensor([[0.7, 0.7]], dtype=torch.float64), torch.tensor([[1, 0]]), inverse, 4)
    assert columns.tolist() == [[0, 1, 2, 4]]


def test_chunks_by_width_cover_every_row_within_the_budget():
    widths = torch.tensor([3, 1, 12, 2, 2, 5, 1, 40])
    runs = M.chunks_by_width(widths, budget=10)
    assert sorted(i for rows, _ in runs for i in rows.tolist()) == list(range(8))
    for rows, width in runs:
        assert width == int(widths[rows].max()) and (len(rows) * width <= 10 or len(rows) == 1)
    assert [width for _, width in runs] == sorted(width for _, width in runs)  # narrow rows first


def test_screen_margin_bounds_the_float32_error():
    g = torch.Generator().manual_seed(0)
    for d in (8, 128, 512):
        Q, K = (M.normalize_rows(torch.randn(300, d, generator=g, dtype=torch.float64)) for _ in range(2))
        err = (2 * (Q.float() @ K.float().T)).double() - 2 * (Q @ K.T)
        assert err.abs().max() < M.screen_margin(d, 2.0) / 8  # the worst-case bound is far above the error seen


def test_precision_from_ranking_hits_and_errors():
    tgt = ["w", "x", "y", "z"]
    gold = {"a": {"x"}, "b": {"z"}, "c": {"q"}}
    r = M.precision_from_ranking([[0, 2, 1], [3, 0, 1], [0, 1, 2]], ["a", "b", "c"], tgt, gold, ks=(1, 3))
    assert r["hits@1"] == [0, 1, 0] and r["hits@3"] == [1, 1, 0]
    assert r["p@1"] == pytest.approx(1 / 3) and r["p@3"] == pytest.approx(2 / 3)
    assert (r["n_gold"], r["n_covered"], r["n_oov"], r["n_reachable"]) == (3, 3, 0, 2)
    assert r["p@1_ci"]["value"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="duplicate"):
        M.precision_from_ranking([[0], [1]], ["a", "a"], tgt, gold, ks=(1,))
    with pytest.raises(ValueError, match="no gold entry"):
        M.precision_from_ranking([[0]], ["zz"], tgt, gold, ks=(1,))


# ----------------------------------------------------------------------------- retrieval

def test_retrieval_identity_and_shuffled():
    X = np.eye(4)
    same = M.retrieval_scores(X, X)
    assert same["p@1_x2y"] == 1.0 and same["p@1_y2x"] == 1.0
    assert same["mean_true_cos"] == pytest.approx(1.0) and same["mean_random_cos"] == pytest.approx(0.0)
    assert same["margin"] == pytest.approx(1.0) and same["n"] == 4
    shuffled = M.retrieval_scores(X, X[[1, 0, 2, 3]])  # pairs 0 and 1 swapped
    assert shuffled["p@1_x2y"] == 0.5 and shuffled["p@1_y2x"] == 0.5
    assert shuffled["mean_true_cos"] == pytest.approx(0.5)
    rng = np.random.default_rng(1)
    Z = rng.normal(size=(50, 8))
    assert M.retrieval_scores(Z, Z, seed=3) == M.retrieval_scores(Z, Z, seed=3)
    with pytest.raises(ValueError):
        M.retrieval_scores(Z[:1], Z[:1])


def test_derangement_has_no_fixed_points():
    for n in (2, 3, 10, 101):
        for seed in range(5):
            p = M.derangement(n, seed)
            assert sorted(p.tolist()) == list(range(n)) and not np.any(p == np.arange(n))


# ----------------------------------------------------------------------------- perplexity

def test_ppl_and_bits_per_byte():
    assert M.ppl(10 * math.log(4), 10) == pytest.approx(4.0)
    assert M.ppl(0.0, 5) == 1.0
    assert M.bits_per_byte(12 * math.log(2), 4) == pytest.approx(3.0)
    with pytest.raises(ValueError):
        M.ppl(1.0, 0)
    with pytest.raises(ValueError):
        M.bits_per_byte(1.0, 0)


# ----------------------------------------------------------------------------- sense helpers

def test_softmax_entropy_and_topk_overlap():
    H = M.softmax_entropy(torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, -math.inf, -math.inf, -math.inf]]))
    np.testing.assert_allclose(H, [math.log(4), 0.0], atol=1e-12)
    assert M.softmax_entropy(np.array([math.log(3), 0.0]))[()] == pytest.approx(
        -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert M.topk_overlap([1, 2, 3], [2, 3, 4]) == pytest.approx(0.5)
    assert M.topk_overlap(torch.tensor([5, 6]), [6, 5]) == 1.0
    assert M.topk_overlap([1], [2]) == 0.0
    with pytest.raises(ValueError):
        M.topk_overlap([], [])


# ----------------------------------------------------------------------------- word classes

@pytest.mark.parametrize("token, lang, category", [
    ("▁The", None, "article"), ("Ġa", None, "article"), ("a", "fr", "auxiliary"), ("l'", "fr", "article"),
    ("▁l", None, "article"), ("aux", "fr", "article"), ("dans", None, "preposition"),
    ("between", "en", "preposition"), ("Nous", None, "pronoun"), ("quelqu’un", "fr", "pronoun"),
    ("their", "en", "pronoun"), ("été", None, "auxiliary"), ("could", None, "auxiliary"),
    ("'s", "en", "auxiliary"), ("parce", "fr", "conjunction"), ("because", None, "conjunction"),
    ("…", None, "punctuation"), (",", "fr", "punctuation"), ("▁", None, "punctuation"),
    ("1,000", None, "number"), ("21st", "en", "number"), ("vingt", "fr", "number"),
    ("maison", "fr", "content"), ("▁house", None, "content"), ("pas", "fr", "content"),
])
def test_categorize(token, lang, category):
    assert categorize(token, lang) == category


def test_word_class_lists():
    assert set(LEXICON) == {"en", "fr"}
    for lang, classes in LEXICON.items():
        assert set(classes) == set(CATEGORIES) - {"punctuation", "content"}
        assert all(w == w.lower() and w.strip() == w for words in classes.values() for w in words)
    with pytest.raises(ValueError):
        categorize("le", "de")


def test_top_columns_equals_a_stable_descending_sort_with_ties():
    from experiments.metrics import top_columns
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 4, (25, 40), generator=g).double()  # many ties
    for k in (1, 5, 40):
        assert torch.equal(top_columns(scores, k), torch.argsort(-scores, dim=1, stable=True)[:, :k])


# ----------------------------------------------------------------------------- bootstrap intervals

def test_bootstrap_interval_of_a_mean_matches_the_normal_approximation():
    hits = np.random.default_rng(1).random(1000) < 0.3
    ci = M.bootstrap_ci(M.mean_stat(hits), len(hits))
    half = 1.96 * math.sqrt(hits.mean() * (1 - hits.mean()) / len(hits))  # ≈ 0.028
    assert ci['value'] == hits.mean() and ci['low'] < ci['value'] < ci['high']
    assert ci['high'] - ci['low'] == pytest.approx(2 * half, rel=0.15)
    assert ci == M.bootstrap_ci(M.mean_stat(hits), len(hits))  # a fixed seed: the same interval
    assert ci != M.bootstrap_ci(M.mean_stat(hits), len(hits), seed=1)
    assert (ci['n_resamples'], ci['level'], ci['n_nan']) == (1000, 0.95, 0)


def test_paired_bootstrap_tells_a_real_difference_from_none():
    rng = np.random.default_rng(0)
    a = rng.random(300)
    same = M.paired_bootstrap(M.mean_stat(a), M.mean_stat(a), 300)
    assert same['low'] == same['high'] == 0 and not same['significant']
    better = M.paired_bootstrap(M.mean_stat(a + 0.05), M.mean_stat(a), 300)
    assert better['significant'] and better['low'] == pytest.approx(0.05) == better['high']
    noisy = M.paired_bootstrap(M.mean_stat(a + rng.normal(0, 0.3, 300)), M.mean_stat(a), 300)
    assert noisy['low'] < 0 < noisy['high'] and not noisy['significant']  # noise of mean 0: not significant


def test_corpus_bleu_and_chrf_resampled_from_sentence_statistics():
    hyps = ['the cat sat on the mat', 'a dog barked loudly', 'hello world', 'the parliament adopted it']
    refs = ['the cat sat on a mat', 'the dog barked', 'hello there world', 'parliament adopted the text']
    from sacrebleu.metrics import BLEU, CHRF
    bleu, chrf = M.corpus_stat(BLEU(), hyps, refs), M.corpus_stat(CHRF(), hyps, refs)
    assert bleu(np.arange(4)) == pytest.approx(M.corpus_bleu(hyps, refs)['score'], abs=1e-9)
    assert chrf(np.arange(4)) == pytest.approx(M.corpus_chrf(hyps, refs)['score'], abs=1e-9)
    idx = np.array([0, 0, 3, 1])  # a resample with a repeat is the corpus of those sentences
    pick = lambda xs: [xs[i] for i in idx]  # noqa: E731
    assert bleu(idx) == pytest.approx(M.corpus_bleu(pick(hyps), pick(refs))['score'], abs=1e-9)
    assert chrf(idx) == pytest.approx(M.corpus_chrf(pick(hyps), pick(refs))['score'], abs=1e-9)


def test_spearman_resamples_that_are_constant_are_left_out_and_counted():
    pred, gold = [1.0, 2.0, 3.0], [1.0, 3.0, 2.0]
    ci = M.bootstrap_ci(M.spearman_stat(pred, gold), 3, n_resamples=200)
    assert 0 < ci['n_nan'] < 200 and -1 <= ci['low'] <= ci['high'] <= 1
    with pytest.raises(ValueError):
        M.bootstrap_ci(M.mean_stat([1.0]), 1)


def test_seed_bootstrap_resamples_seeds_and_items_together():
    """Against a plain loop over the same draws; the seeds' spread shows when the items do not matter, the
    items' when the seeds agree; the t-interval is mean ± t(2) sd / √3."""
    from scipy.stats import t as student_t
    from experiments.metrics import mean_stat, seed_bootstrap
    rng = np.random.default_rng(1)
    hits = [rng.integers(0, 2, size=50) for _ in range(3)]
    out = seed_bootstrap([mean_stat(h) for h in hits], 50, n_resamples=200, seed=7)
    draws = np.random.default_rng(7)
    seeds = draws.integers(0, 3, size=(200, 3))
    idx = draws.integers(0, 50, size=(200, 50))
    loop = [np.mean([hits[s][row].mean() for s in drawn]) for drawn, row in zip(seeds, idx)]
    assert (out['low'], out['high']) == pytest.approx(tuple(np.percentile(loop, [2.5, 97.5])))
    per_seed = [h.mean() for h in hits]
    assert out['per_seed'] == pytest.approx(per_seed) and out['value'] == pytest.approx(np.mean(per_seed))
    half = student_t.ppf(0.975, 2) * np.std(per_seed, ddof=1) / np.sqrt(3)
    assert (out['t_low'], out['t_high']) == pytest.approx((np.mean(per_seed) - half, np.mean(per_seed) + half))
    # seeds 0, 1, 2 points apart on items that do not matter: the interval is the seeds' spread
    constant = [mean_stat(np.full(50, float(v))) for v in (0, 1, 2)]
    spread = seed_bootstrap(constant, 50, n_resamples=500)
    assert 0 <= spread['low'] < 1 < spread['high'] <= 2
    # three equal seeds: no seed spread (t-interval of width 0), only the items'
    same = seed_bootstrap([mean_stat(hits[0])] * 3, 50, n_resamples=500)
    assert same['t_low'] == same['t_high'] == pytest.approx(hits[0].mean())
    assert same['low'] < hits[0].mean() < same['high']


def test_seed_paired_bootstrap_is_significant_only_when_every_draw_agrees():
    from experiments.metrics import mean_stat, seed_paired_bootstrap
    rng = np.random.default_rng(2)
    b = [rng.random(40) for _ in range(3)]
    shifted = seed_paired_bootstrap([mean_stat(x + 0.1) for x in b], [mean_stat(x) for x in b], 40, n_resamples=300)
    assert shifted['value'] == pytest.approx(0.1) and shifted['low'] == pytest.approx(0.1)
    assert shifted['significant'] and shifted['same_sign'] == 3
    # one seed better, one worse, one equal: not significant
    mixed = seed_paired_bootstrap([mean_stat(b[0] + 0.2), mean_stat(b[1] - 0.2), mean_stat(b[2])],
                                  [mean_stat(x) for x in b], 40, n_resamples=300)
    assert not mixed['significant'] and mixed['low'] < 0 < mixed['high']
    with pytest.raises(ValueError, match='3 seeds of one model and 2'):
        seed_paired_bootstrap([mean_stat(x) for x in b], [mean_stat(x) for x in b[:2]], 40)
