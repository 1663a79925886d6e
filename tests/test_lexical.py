"""experiments/lexical.py: word similarity and bilingual lexicon induction, first on stand-in models whose
vectors are set by hand (so Spearman and P@1 are known), then on the tiny trained models."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from checkpoint import load_model
from experiments import lexical
from tokenizer import load_tokenizer


class WordTokenizer:
    """A stand-in tokenizer: word -> ids from a dict; ids in `unseen` never occurred in training."""

    def __init__(self, vocab, vocab_size, unseen=(), words=None):
        self.vocab = vocab
        self.vocab_size = vocab_size
        self.token_lang_counts = np.ones((vocab_size, 2), dtype=np.int64)
        self.token_lang_counts[list(unseen)] = 0
        self._words = words or {}

    def encode_word(self, word):
        return list(self.vocab.get(word, []))

    def words(self, lang):
        return self._words[lang]


class TableBackpack:
    """A stand-in Backpack with the model API lexical.py uses: sense vectors and E looked up in tables."""

    def __init__(self, senses, E):
        self.senses, self.E = torch.as_tensor(senses, dtype=torch.float32), torch.as_tensor(E, dtype=torch.float32)
        self.config = SimpleNamespace(n_senses=self.senses.shape[1])

    def sense_vectors(self, ids):
        return self.senses[ids]

    def input_embeddings(self):
        return self.E


class TableTransformer:
    def __init__(self, E):
        self.E = torch.as_tensor(E, dtype=torch.float32)

    def input_embeddings(self):
        return self.E


def unit(degrees):
    return [math.cos(math.radians(degrees)), math.sin(math.radians(degrees))]


# ids 0..3 = a, b, c, d; 4 = a piece never seen in training; "ad" = two pieces
SIM_VOCAB = {"a": [0], "b": [1], "c": [2], "d": [3], "unseen": [4], "ad": [0, 3]}
SENSE_0 = [0, 10, 40, 90, 0]   # angles: cos(a,b) > cos(a,c) > cos(a,d), the gold order
SENSE_1 = [0, 90, 40, 10, 0]   # the reverse order
SIM_PAIRS = [("a", "b", 9.0), ("a", "c", 5.0), ("a", "d", 1.0), ("a", "zzz", 3.0), ("unseen", "b", 2.0)]


def similarity_model():
    senses = [[unit(s0), unit(s1)] for s0, s1 in zip(SENSE_0, SENSE_1)]
    return TableBackpack(senses, [unit(s0) for s0 in SENSE_0]), WordTokenizer(SIM_VOCAB, 5, unseen=[4])


def test_word_similarity_hand_computed_spearman():
    model, tok = similarity_model()
    r = lexical.evaluate_word_similarity(model, tok, "cpu", SIM_PAIRS)
    assert (r["n_pairs"], r["n_covered"], r["n_oov_pairs"]) == (5, 3, 2)
    assert r["oov_words"] == ["unseen", "zzz"]  # not in the vocabulary / a piece never trained
    assert r["n_words"] == 6 and r["multi_piece_share"] == 0.0
    rho = r["spearman"]
    assert list(rho) == ["sense_0", "sense_1", "sim_min", "sim_max", "flat", "mean_sense", "embedding"]
    assert rho["sense_0"] == pytest.approx(1.0) and rho["embedding"] == pytest.approx(1.0)
    assert rho["sense_1"] == pytest.approx(-1.0)
    # sim_max = max over senses: ab cos10, ac cos40, ad cos10 -> ranks 2.5, 1, 2.5 vs gold 3, 2, 1 -> rho 0
    assert rho["sim_max"] == pytest.approx(0.0, abs=1e-12)
    # sim_min (eq. 14) = min over senses: ab cos90, ac cos40, ad cos90 -> ranks 1.5, 3, 1.5 -> rho 0 too
    assert rho["sim_min"] == pytest.approx(0.0, abs=1e-12)
    # flat (unit senses): (cos Δ0 + cos Δ1) / 2 = ab .49, ac .77, ad .49 -> the same ranks -> rho 0
    assert rho["flat"] == pytest.approx(0.0, abs=1e-12)


def test_sim_min_is_the_papers_minimum_over_matched_senses_and_sim_max_beside_it():
    """Hand-built senses where min and max disagree (the old code's 'sim_min' was the max: it fails here).
    Word a: senses at 0° and 0°. b: 0° and 80° (cosines with a: 1.0, 0.17). c: 30° and 30° (0.87, 0.87).
    Gold says c is closer to a than b is: Sim_min (eq. 14) ranks c first, the max ranks b first."""
    vocab = {"a": [0], "b": [1], "c": [2]}
    senses = [[unit(0), unit(0)], [unit(0), unit(80)], [unit(30), unit(30)]]
    model, tok = TableBackpack(senses, [unit(0), unit(45), unit(20)]), WordTokenizer(vocab, 3)
    sims = lexical.pair_similarities(model, [[0], [0]], [[1], [2]], "cpu")
    np.testing.assert_allclose(sims["sim_min"], [math.cos(math.radians(80)), math.cos(math.radians(30))], rtol=1e-6)
    np.testing.assert_allclose(sims["sim_max"], [1.0, math.cos(math.radians(30))], rtol=1e-6)
    r = lexical.evaluate_word_similarity(model, tok, "cpu", [("a", "b", 1.0), ("a", "c", 9.0), ("b", "c", 5.0)])
    # pair cosines b-c: min(cos 30, cos 50) = .64, max = .87
    assert r["spearman"]["sim_min"] == pytest.approx(1.0)    # a-c .87 > b-c .64 > a-b .17: the gold order
    # a-b 1.0 > a-c .87 = b-c .87: ranks (3, 1.5, 1.5) against gold (1, 3, 2) -> rho -sqrt(3)/2
    assert r["spearman"]["sim_max"] == pytest.approx(-math.sqrt(3) / 2)
    assert r["cosines"]["sim_min"] == pytest.approx([math.cos(math.radians(a)) for a in (80, 30, 50)], rel=1e-6)


def test_sim_max_is_max_over_senses_and_flat_is_concatenation():
    torch.manual_seed(0)
    model = TableBackpack(torch.randn(20, 3, 4), torch.randn(20, 4))
    ids_1, ids_2 = [[i] for i in range(10)], [[i, i + 10] for i in range(10)]
    sims = lexical.pair_similarities(model, ids_1, ids_2, "cpu")
    per_sense = np.stack([sims[f"sense_{l}"] for l in range(3)])
    np.testing.assert_allclose(sims["sim_max"], per_sense.max(0))
    np.testing.assert_allclose(sims["sim_min"], per_sense.min(0))
    second = (model.senses[:10] + model.senses[10:]) / 2  # multi-piece words: mean of the pieces
    expected = [float(torch.cosine_similarity(model.senses[i].flatten(), second[i].flatten(), dim=0)) for i in range(10)]
    np.testing.assert_allclose(sims["flat"], expected, rtol=1e-5)
    np.testing.assert_allclose(sims["sense_1"], torch.cosine_similarity(model.senses[:10, 1], second[:, 1], dim=1),
                               rtol=1e-5)


def test_multi_piece_word_is_mean_of_pieces():
    model, tok = similarity_model()
    vectors = lexical.word_vectors(model, [tok.encode_word("ad")], "cpu", "senses")
    torch.testing.assert_close(vectors[0], (model.senses[0] + model.senses[3]) / 2)
    r = lexical.evaluate_word_similarity(model, tok, "cpu", [("a", "ad", 5.0), ("b", "c", 2.0), ("c", "d", 1.0)])
    assert r["multi_piece_share"] == pytest.approx(1 / 5) and r["multi_piece_words"] == ["ad"]


def test_too_few_covered_pairs_is_an_error():
    model, tok = similarity_model()
    with pytest.raises(ValueError, match="only 1 of 2 word pairs"):
        lexical.evaluate_word_similarity(model, tok, "cpu", [("a", "b", 1.0), ("zzz", "a", 2.0)])


def test_multisimlex_reads_given_files_and_missing_file_is_an_error(tmp_path):
    model, tok = similarity_model()
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("word1\tword2\tscore\na\tb\t9\na\tc\t5\na\td\t1\n", encoding="utf-8")
    r = lexical.evaluate_multisimlex(model, tok, "cpu", languages=("en",), cross_lingual=False, simlex999=False,
                                     paths={"en": pairs})
    assert list(r) == ["en"] and r["en"]["path"] == str(pairs) and r["en"]["n_covered"] == 3
    assert r["en"]["spearman"]["sense_0"] == pytest.approx(1.0)
    with pytest.raises(FileNotFoundError, match="missing.tsv"):
        lexical.evaluate_multisimlex(model, tok, "cpu", languages=("fr",), cross_lingual=False, simlex999=False,
                                     paths={"fr": tmp_path / "missing.tsv"})
    with pytest.raises(KeyError, match="unknown word-similarity key"):
        lexical.evaluate_multisimlex(model, tok, "cpu", paths={"de": pairs})


# BLI: EN ids 0-2 (cat dog house), FR ids 3-5 (chat chien maison), 6 = a French word never seen in training.
# Sense 0 and E give a word and its translation the same vector; sense 1 gives each French word the
# vector of the *next* English concept, so sense 1 never finds the translation.
BLI_VOCAB = {"cat": [0], "dog": [1], "house": [2], "chat": [3], "chien": [4], "maison": [5], "oiseau": [6]}
BLI_WORDS = {"en": [("cat", 9), ("dog", 8), ("house", 7)], "fr": [("chat", 9), ("chien", 8), ("maison", 7), ("oiseau", 6)]}


def bli_setup(tmp_path):
    e = torch.eye(6)
    concept = [0, 1, 2, 0, 1, 2, 0]
    sense_1 = [e[3], e[4], e[5], e[4], e[5], e[3], e[3]]
    senses = torch.stack([torch.stack([e[concept[i]], sense_1[i]]) for i in range(7)])
    E = torch.stack([e[concept[i]] for i in range(7)])
    tok = WordTokenizer(BLI_VOCAB, 7, unseen=[6], words=BLI_WORDS)
    en_fr, fr_en = tmp_path / "en-fr.txt", tmp_path / "fr-en.txt"
    en_fr.write_text("cat chat\ndog chien\nhouse maison\nbird oiseau\n", encoding="utf-8")
    fr_en.write_text("chat cat\nchien dog\nmaison house\n", encoding="utf-8")
    return TableBackpack(senses, E), TableTransformer(E), tok, {"en-fr": en_fr, "fr-en": fr_en}


def test_bli_finds_identical_translations_by_cosine_and_csls(tmp_path):
    model, transformer, tok, dictionaries = bli_setup(tmp_path)
    r = lexical.evaluate_bli(model, tok, "cpu", dictionaries=dictionaries, csls_k=2)
    en_fr = r["en-fr"]
    assert (en_fr["n_dictionary_words"], en_fr["n_queries"], en_fr["n_reachable"]) == (4, 3, 3)
    assert en_fr["coverage"] == 0.75 and en_fr["n_candidates"] == 3  # oiseau: its piece was never trained
    assert en_fr["n_identical"] == 0 and en_fr["copy_p_at_1"] == 0.0
    for direction in ("en-fr", "fr-en"):
        for method in ("cosine", "csls"):
            scores = r[direction][method]
            assert list(scores) == ["sense_0", "sense_1", "mean_sense", "embedding"]
            for rep in ("sense_0", "embedding"):
                assert (scores[rep]["p@1"], scores[rep]["p@5"]) == (1.0, 1.0)
                ci = scores[rep]["p@1_ci"]  # every query a hit: every resample too
                assert (ci["value"], ci["low"], ci["high"], ci["n"]) == (1.0, 1.0, 1.0, 3)
            assert scores["sense_1"]["p@1"] == 0.0 and scores["sense_1"]["p@5"] == 1.0  # 3 candidates
    t = lexical.evaluate_bli(transformer, tok, "cpu", dictionaries=dictionaries, csls_k=2)
    assert list(t["en-fr"]["cosine"]) == ["embedding"] and t["fr-en"]["csls"]["embedding"]["p@1"] == 1.0


def test_bli_candidates_are_capped_training_words(tmp_path):
    model, _, tok, dictionaries = bli_setup(tmp_path)
    r = lexical.evaluate_bli(model, tok, "cpu", directions=("en-fr",), dictionaries=dictionaries, max_candidates=2)
    assert r["en-fr"]["n_candidates"] == 2 and r["en-fr"]["n_reachable"] == 2  # chat, chien; not maison
    assert r["en-fr"]["n_source_words"] == 3  # cat, dog (capped) + the query house
    assert r["en-fr"]["cosine"]["sense_0"]["p@1"] == pytest.approx(2 / 3)
    assert list(lexical.candidate_words(tok, "fr", 10)) == ["chat", "chien", "maison"]



def copy_word_setup(tmp_path):
    """bli_setup plus 'radio', spelled (and so encoded, id 7) the same in both languages, its own
    direction in sense 0, sense 1 and E: every representation finds it by copying."""
    model, _, tok, dictionaries = bli_setup(tmp_path)
    e = torch.eye(8)
    senses = torch.cat([torch.nn.functional.pad(model.senses, (0, 2)), torch.stack([e[7], e[7]])[None]])
    E = torch.cat([torch.nn.functional.pad(model.E, (0, 2)), e[7:8]])
    words = {lang: pairs + [("radio", 5)] for lang, pairs in BLI_WORDS.items()}
    tok = WordTokenizer({**BLI_VOCAB, "radio": [7]}, 8, unseen=[6], words=words)
    dictionaries["en-fr"].write_text("cat chat\ndog chien\nhouse maison\nradio radio\n", encoding="utf-8")
    return TableBackpack(senses, E), tok, dictionaries


def test_bli_per_query_hits_and_the_non_identical_subset(tmp_path):
    model, tok, dictionaries = copy_word_setup(tmp_path)
    r = lexical.evaluate_bli(model, tok, "cpu", dictionaries=dictionaries, csls_k=2)["en-fr"]
    assert r["queries"] == ["cat", "dog", "house", "radio"]
    assert r["non_identical"] == [0, 1, 2] and r["n_non_identical"] == 3  # radio's gold is its own spelling
    assert (r["n_identical"], r["copy_p_at_1"], r["copy_p_at_1_non_identical"]) == (1, 0.25, 0.0)
    for method in ("cosine", "csls"):
        found, copied = r[method]["sense_0"], r[method]["sense_1"]  # sense 1 finds radio only, by copying
        assert found["hits@1"] == [1, 1, 1, 1] and copied["hits@1"] == [0, 0, 0, 1]
        assert copied["hits@5"] == [1, 1, 1, 1]  # 4 candidates: each query's gold is among its top 5
        assert (copied["p@1"], copied["p@5"], copied["p@1_non_identical"]) == (0.25, 1.0, 0.0)
        assert (found["p@1"], found["p@1_non_identical"]) == (1.0, 1.0)
        for scores in r[method].values():  # P@k is the mean of hits@k; the subset P@1 its mean over non_identical
            assert scores["p@1"] == np.mean(scores["hits@1"]) and scores["p@5"] == np.mean(scores["hits@5"])
            assert scores["p@1_non_identical"] == np.mean([scores["hits@1"][i] for i in r["non_identical"]])
            ci = scores["p@1_non_identical_ci"]
            assert ci["n"] == 3 and ci["value"] == scores["p@1_non_identical"]


def test_bli_without_a_non_identical_query_reports_none(tmp_path):
    model, tok, dictionaries = copy_word_setup(tmp_path)
    dictionaries["en-fr"].write_text("radio radio\n", encoding="utf-8")
    r = lexical.evaluate_bli(model, tok, "cpu", directions=("en-fr",), dictionaries=dictionaries)["en-fr"]
    assert r["non_identical"] == [] and r["copy_p_at_1"] == 1.0
    scores = r["csls"]["embedding"]
    assert scores["p@1_non_identical"] is None and scores["p@1_non_identical_ci"] is None


# --------------------------------------------------------------------------- the tiny trained models

def test_tiny_backpack_word_similarity_and_bli(tiny_backpack_dir):
    model, _ = load_model(tiny_backpack_dir, "cpu")
    tok = load_tokenizer(tiny_backpack_dir)
    r = lexical.evaluate_multisimlex(model, tok, "cpu")
    assert list(r) == ["en", "fr", "en-fr", "simlex999"]
    k = model.config.n_senses
    for key, result in r.items():
        assert result["n_covered"] + result["n_oov_pairs"] == result["n_pairs"] > 900
        assert list(result["spearman"]) == lexical.representation_names(model, word_similarity=True)
        assert len(result["spearman"]) == k + 5
        assert all(-1 <= rho <= 1 for rho in result["spearman"].values())
        assert set(result["spearman_ci"]) == {"sim_min", "sim_max", "flat", "mean_sense", "embedding"}
        assert set(result["cosines"]) == set(result["spearman"])  # every rho can be recomputed
        for rep, ci in result["spearman_ci"].items():  # the fast resample statistic is scipy's rho on all pairs
            assert ci["value"] == pytest.approx(result["spearman"][rep], abs=1e-12)
            assert ci["low"] <= ci["value"] <= ci["high"] and ci["n"] == result["n_covered"]
    assert r["en-fr"]["max_abs_diff"] == 1.0 and r["en-fr"]["n_pairs"] == 1516 and "mean" in r["en-fr"]["rule"]
    b = lexical.evaluate_bli(model, tok, "cpu", max_candidates=500)
    for direction in ("en-fr", "fr-en"):
        assert b[direction]["n_candidates"] == 500 and 0 < b[direction]["coverage"] <= 1
        for method in ("cosine", "csls"):
            assert list(b[direction][method]) == [f"sense_{l}" for l in range(k)] + ["mean_sense", "embedding"]
            assert all(0 <= s["p@1"] <= s["p@5"] <= 1 for s in b[direction][method].values())


def test_tiny_transformer_has_embeddings_only(tiny_transformer_dir):
    model, _ = load_model(tiny_transformer_dir, "cpu")
    tok = load_tokenizer(tiny_transformer_dir)
    r = lexical.evaluate_multisimlex(model, tok, "cpu", languages=("fr",), cross_lingual=False, simlex999=False)
    assert list(r["fr"]["spearman"]) == ["embedding"]
    b = lexical.evaluate_bli(model, tok, "cpu", directions=("fr-en",), max_candidates=300)
    assert list(b["fr-en"]["cosine"]) == list(b["fr-en"]["csls"]) == ["embedding"]


def test_tiny_backpack_bli_ranks_as_the_dense_float64_matrices(tiny_backpack_dir):
    """evaluate_bli's per-query hits equal those of the dense float64 cosine and CSLS matrices, built here
    as the code before the chunked top-k did (every score, r_T and r_S by a top-k of whole rows), ranked by
    metrics.precision_at_k, on a trained model."""
    from experiments import metrics
    model, _ = load_model(tiny_backpack_dir, "cpu")
    tok = load_tokenizer(tiny_backpack_dir)
    b = lexical.evaluate_bli(model, tok, "cpu", max_candidates=500)
    for direction, r in b.items():
        src, tgt = direction.split("-")
        sources, targets = lexical.candidate_words(tok, src, 500), lexical.candidate_words(tok, tgt, 500)
        queries = {q: lexical.word_ids(tok, q) for q in r["queries"]}
        source = {**sources, **queries}
        gold = {}
        for s, ts in lexical.eval_data.read_dictionary(r["dictionary"]).items():
            gold.setdefault(s.lower(), set()).update(t.lower() for t in ts)
        gold = {q: gold[q] for q in r["queries"]}
        rows = [list(source).index(q) for q in r["queries"]]
        for rep in ("sense_0", "mean_sense", "embedding"):
            S, T = (metrics.normalize_rows(metrics.as_matrix(lexical.word_vectors(model, list(w.values()), "cpu", rep)))
                    for w in (source, targets))
            cos = S[rows] @ T.T
            csls = 2 * cos - cos.topk(10, dim=1).values.mean(1)[:, None] - (T @ S.T).topk(10, dim=1).values.mean(1)
            for method, scores in (("cosine", cos), ("csls", csls)):
                dense = metrics.precision_at_k(scores, r["queries"], list(targets), gold)
                assert r[method][rep]["hits@1"] == dense["hits@1"] and r[method][rep]["hits@5"] == dense["hits@5"]
