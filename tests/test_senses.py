"""experiments/senses.py: sense analysis, derived sense labels and cross-lingual sense alignment on the tiny
trained Backpack, plus a stand-in Backpack whose senses point at chosen tokens (so the label is known)."""
import json
import math
from collections import Counter

import numpy as np
import pytest
import torch

from evaluate import load_model  # the out_dir loader that records model.info (the sense tools read it)
from experiments import lexical, senses
from experiments.word_classes import categorize
from tokenizer import load_tokenizer
from test_lexical import TableBackpack


@pytest.fixture
def restore_sense_labels():
    saved = list(senses.SENSE_LABELS)
    yield
    senses.SENSE_LABELS[:] = saved


@pytest.fixture(scope="module")
def tiny(tiny_backpack_dir):
    model, _ = load_model(tiny_backpack_dir, "cpu")
    return model, load_tokenizer(tiny_backpack_dir)


def unknown_word(tok):
    word = "\u4e2d\u6587\u5b57"  # CJK: its byte pieces never occur in the Europarl sample
    assert lexical.word_ids(tok, word) is None
    return word


def test_analyze_sense_vectors_on_tiny_backpack(tiny, restore_sense_labels, capsys):
    model, tok = tiny
    k, V, top_k = model.config.n_senses, tok.vocab_size, 3
    labels = [f"label {l}" for l in range(k)]
    oov = unknown_word(tok)
    r = senses.analyze_sense_vectors(model, tok, ["parliament", "droit", oov], "cpu", top_k=top_k, labels=labels)
    allowed = tok.language_mask("en") | tok.language_mask("fr")
    assert r["oov_words"] == [oov] and r["words"][oov]["oov"] and "senses" not in r["words"][oov]
    assert r["n_allowed_tokens"] == allowed.sum() and r["max_entropy"] == pytest.approx(math.log(V))
    for word in ("parliament", "droit"):
        entry = r["words"][word]
        assert not entry["oov"] and entry["ids"] == tok.encode_word(word)
        assert len(entry["senses"]) == k
        for l, s in enumerate(entry["senses"]):
            assert s["label"] == labels[l]
            for key in ("top", "bottom", "nearest"):
                ids = [t["id"] for t in s[key]]
                assert len(ids) == top_k and allowed[ids].all()
            assert [t["score"] for t in s["top"]] == sorted((t["score"] for t in s["top"]), reverse=True)
            assert s["top"][-1]["score"] >= s["bottom"][0]["score"]
            assert 0 <= s["entropy"] <= math.log(V) + 1e-9
            assert sum(s["categories"].values()) == top_k
            assert s["categories"] == Counter(categorize(t["token"], senses.token_language(tok, t["id"]))
                                              for t in s["top"])
        cos, overlap = np.array(entry["sense_cosine"]), np.array(entry["topk_overlap"])
        assert cos.shape == overlap.shape == (k, k)
        np.testing.assert_allclose(np.diag(cos), 1.0, rtol=1e-6)
        np.testing.assert_allclose(cos, cos.T, atol=1e-6)
        assert (np.diag(overlap) == 1).all() and ((0 <= overlap) & (overlap <= 1)).all()
    out = capsys.readouterr().out
    assert "'parliament'" in out and "label 1" in out and "OOV" in out


def test_unfiltered_tokens_never_show_tags(tiny):
    model, tok = tiny
    r = senses.analyze_sense_vectors(model, tok, ["the"], "cpu", top_k=20, verbose=False, filter_tokens=False,
                                     analyze_relatedness=False, analyze_syntax=False, labels=["x"] * 4)
    s = r["words"]["the"]["senses"][0]
    assert "nearest" not in s and "categories" not in s
    shown = {t["id"] for s in r["words"]["the"]["senses"] for key in ("top", "bottom") for t in s[key]}
    assert not shown & tok.special_ids


def test_label_senses_fills_sense_labels_and_writes_json(tiny, tmp_path, restore_sense_labels):
    model, tok = tiny
    k = model.config.n_senses
    original = senses.SENSE_LABELS
    result = senses.label_senses(model, tok, "cpu", n_words=50, top_k=5, out_dir=tmp_path)
    assert len(result) == k and [s["index"] for s in result] == list(range(k))
    assert senses.SENSE_LABELS is original and len(original) == 16
    assert original[:k] == [s["label"] for s in result] and original[k:] == [f"sense {i}" for i in range(k, 16)]
    for s in result:
        assert s["group"] in s["label"] and s["examples"] and ", ".join(s["examples"][:3]) in s["label"]
        assert s["language_skew"]["en"] + s["language_skew"]["fr"] == pytest.approx(1.0)
        assert 0 < s["category_share"] <= s["group_share"] <= 1  # a category's share <= its group's <= the top group's
        assert 0 <= s["entropy"] <= math.log(tok.vocab_size)
    saved = json.loads((tmp_path / "sense_labels.json").read_text(encoding="utf-8"))
    probe = {w for lang in ("en", "fr") for w in lexical.candidate_words(tok, lang, 50)}  # words shared by EN, FR once
    assert [s["label"] for s in saved["senses"]] == [s["label"] for s in result]
    assert saved["n_probe_words"] == len(probe) and set(saved["probe_words"]) == probe
    senses.set_sense_labels([])
    r = senses.analyze_sense_vectors(model, tok, ["parliament"], "cpu", verbose=False,
                                     labels=tmp_path / "sense_labels.json")
    assert r["labels"] == [s["label"] for s in result] == original[:k]


def test_label_rule_on_senses_pointing_at_chosen_tokens(tiny, restore_sense_labels):
    """Sense 0 of every word is 50 * E[de] and sense 1 is 50 * E[<an English content word>]: their top-1
    token is that token, so the labels must be 'FR function words: de' and 'EN content: <word>'."""
    _, tok = tiny
    en, fr = tok.language_mask("en"), tok.language_mask("fr")
    (de,) = tok.encode_word("de")
    content = next(w for w, _ in tok.words("en") if categorize(w, "en") == "content" and
                   len(tok.encode_word(w)) == 1 and en[tok.encode_word(w)[0]] and not fr[tok.encode_word(w)[0]])
    (content_id,) = tok.encode_word(content)
    torch.manual_seed(0)
    E = torch.nn.functional.normalize(torch.randn(tok.vocab_size, 64), dim=1)
    table = torch.stack([50 * E[de], 50 * E[content_id]]).expand(tok.vocab_size, 2, 64)
    result = senses.label_senses(TableBackpack(table, E), tok, "cpu", words=["the", "la", "vote"], top_k=1)
    assert [s["label"] for s in result] == ["FR function words: de", f"EN content: {content}"]
    assert result[0]["category"] == "preposition" and result[0]["category_share"] == 1.0
    assert result[0]["language_skew"]["fr"] > 2 / 3 and result[1]["language_skew"]["en"] > 2 / 3


def test_cross_lingual_sense_alignment(tiny, tmp_path):
    model, tok = tiny
    r = senses.cross_lingual_sense_alignment(model, tok, "cpu", max_pairs=100)
    assert r["n_pairs"] == 100 and r["n_identical_excluded"] > 0
    assert list(r["scores"]) == lexical.representation_names(model)
    for s in r["scores"].values():
        assert s["n"] == 100 and s["margin"] == pytest.approx(s["mean_true_cos"] - s["mean_random_cos"])
    dictionary = tmp_path / "dict.txt"
    dictionary.write_text("commission commission\nvote vote\nparliament parlement\nyear année\nyear an\n",
                          encoding="utf-8")
    small = senses.cross_lingual_sense_alignment(model, tok, "cpu", dictionary=dictionary)
    assert (small["n_pairs"], small["n_identical_excluded"], small["n_repeated_excluded"]) == (2, 2, 1)


def test_transformer_is_refused(tiny_transformer_dir):
    model, _ = load_model(tiny_transformer_dir, "cpu")
    tok = load_tokenizer(tiny_transformer_dir)
    for call in (lambda: senses.analyze_sense_vectors(model, tok, ["parliament"], "cpu", labels=["x"] * 4),
                 lambda: senses.label_senses(model, tok, "cpu"),
                 lambda: senses.cross_lingual_sense_alignment(model, tok, "cpu")):
        with pytest.raises(TypeError, match="StandardTransformerLM has no sense vectors"):
            call()


def test_probe_words_have_one_definition():
    """experiments/senses.PROBE_WORDS is the only list of probe words: evaluate.py's sense analysis and
    train.py's sense snapshots read it (they had one copy each, free to drift apart)."""
    import evaluate
    from conftest import REPO
    assert evaluate.PROBE_WORDS is senses.PROBE_WORDS
    assert set(senses.PROBE_WORDS) == {"en", "fr"} and all(senses.PROBE_WORDS.values())
    copies = [str(p.relative_to(REPO)) for p in REPO.rglob("*.py") if ".venv" not in p.parts
              and p.parent.name != "tests" and any(f"{q}livre{q}, {q}temps{q}" in p.read_text(encoding="utf-8")
                                                   for q in "'\"")]
    assert copies == ["experiments/senses.py"]
