"""tokenizer.py on prepared data dirs: exact round trips, tags only ever inserted as ids, GPT-2 ids."""
import numpy as np
import pytest

from tokenizer import load_tokenizer

# Normal English and French text: accents, both apostrophes, French spacing, dashes, quotes, numbers.
TEXTS = [
    "The Commission's proposal – which we welcome – isn't enough: it costs €3.5 million (20%)!",
    'Mr President, I\'d like to ask a question; is that "possible"?',
    "“Quoted” words and the Parliament’s role — as always.",
    "L'Union européenne doit agir : « c'est maintenant ou jamais » !",
    "Où en est-on ? Ça coûte 3,5 % de plus qu'en 1999 ; voilà.",
    "Les députés ont voté pour l’amendement n° 12, à l'unanimité.",
    "Œuvre, cœur, naïve, Noël, hôtel, dégât, français, aïeul.",
]
# Byte-level BPE is lossless for any string; XLM-R's NFKC normaliser is not (e.g. '…' -> '...',
# no-break space -> space, runs of spaces collapsed), so these are checked for bpe and gpt2 only.
BYTE_LEVEL_TEXTS = ["  leading, double  and trailing spaces ", "tab\there", "…\u00a0!\u202f;",
                    "emoji 🙂 and 日本語"]
TAG_TEXT = "<en> <fr> </s> <s> <pad> <mask> <|endoftext|> text"


@pytest.fixture(params=["bpe", "gpt2", "xlmr"])
def tok(request):
    fixture = {"bpe": "sample_data_dir", "gpt2": "gpt2_data_dir", "xlmr": "xlmr_data_dir"}[request.param]
    return load_tokenizer(request.getfixturevalue(fixture))


def test_round_trip_normal_text(tok):
    for text in TEXTS:
        assert tok.decode(tok.encode(text)) == text
    assert tok.encode_batch(TEXTS) == [tok.encode(text) for text in TEXTS]


@pytest.mark.parametrize("fixture", ["sample_data_dir", "gpt2_data_dir"])
def test_byte_level_round_trip_is_lossless(fixture, request):
    tok = load_tokenizer(request.getfixturevalue(fixture))
    for text in BYTE_LEVEL_TEXTS:
        assert tok.decode(tok.encode(text)) == text


def test_tag_strings_in_text_stay_text(tok):
    ids = tok.encode(TAG_TEXT)
    assert not set(ids) & tok.special_ids
    assert tok.decode(ids) == TAG_TEXT


def test_documents_prompts_and_monolingual(tok):
    en, fr = TEXTS[0], TEXTS[3]
    doc = tok.encode_document(en, fr)
    assert doc == [tok.lang_id("en")] + tok.encode(en) + [tok.lang_id("fr")] + tok.encode(fr) + [tok.eos_id]
    assert tok.encode_document(fr, en, src="fr", tgt="en")[0] == tok.lang_id("fr")
    assert tok.encode_prompt(en) == doc[:len(tok.encode(en)) + 2]
    assert tok.encode_monolingual(fr, "fr") == [tok.lang_id("fr")] + tok.encode(fr) + [tok.eos_id]
    assert tok.decode(doc) == f"{en} {fr}"
    eos_name = tok.meta["tokenizer"]["eos_token"]
    assert tok.decode(doc, skip_special=False) == f"<en> {en} <fr> {fr} {eos_name}"
    assert max(doc) < tok.vocab_size


def test_display_helpers(tok):
    assert tok.id_to_token([tok.lang_id("en"), tok.lang_id("fr")]) == ["<en>", "<fr>"]
    assert tok.token_str(tok.eos_id) == tok.meta["tokenizer"]["eos_token"]
    word = tok.encode_word("Parlement")
    assert "".join(tok.token_str(i) for i in word) == "Parlement"
    # A word inside a sentence is tokenised like the stand-alone encode_word().
    assert tok.encode("Le Parlement")[-len(word):] == word
    assert tok.token_lang_counts.shape == (tok.vocab_size, 2)
    with pytest.raises(IndexError):
        tok.id_to_token([tok.vocab_size])


def test_gpt2_matches_the_original_ids(gpt2_data_dir):
    tok = load_tokenizer(gpt2_data_dir)
    assert tok.encode("Hello world") == [15496, 995]
    assert (tok.eos_id, tok.lang_id("en"), tok.lang_id("fr"), tok.vocab_size) == (50256, 50257, 50258, 50259)
    assert tok.encode_word("world") == [995]
    assert tok.meta["dtype"] == "uint16"


def test_language_mask_follows_train_side_counts(tok):
    en, fr = tok.language_mask("en"), tok.language_mask("fr")
    assert en.shape == fr.shape == (tok.vocab_size,)
    assert not en[list(tok.special_ids)].any() and not fr[list(tok.special_ids)].any()
    (the,), (les,) = tok.encode_word("the"), tok.encode_word("les")
    assert en[the] and not fr[the]
    assert fr[les] and not en[les]
    counts = tok.token_lang_counts
    assert not (en | fr)[(counts.sum(1) == 0)].any()  # never seen in training: neither language


def test_train_word_lists(tok):
    en, fr = dict(tok.words("en")), dict(tok.words("fr"))
    assert en["the"] > en.get("parliament", 0) > 0 and fr["parlement"] > 0
    assert "l'homme" not in fr and not any(w.startswith(("l'", "d'", "qu'")) for w in fr)
    assert min(en.values()) >= 2 and all(w == w.lower() for w in en)
    counts = [c for _, c in tok.words("fr")]
    assert counts == sorted(counts, reverse=True)


def test_language_masks_hold_only_readable_tokens(gpt2_data_dir):
    """Byte-level pieces such as the first byte of a French accented character occur often on the FR
    side, but alone they decode to U+FFFD: no language mask (and so no sense listing) may show them."""
    tok = load_tokenizer(gpt2_data_dir)
    fr_side = tok.token_lang_counts[:, 1] >= 3
    partial = [i for i in range(256) if fr_side[i] and "\ufffd" in tok.token_str(i)]
    assert partial, "the sample's French side should use some partial-byte pieces"
    en, fr = tok.language_mask("en"), tok.language_mask("fr")
    assert not (en | fr)[partial].any()
    assert not any("\ufffd" in tok.token_str(i) for i in np.flatnonzero(en | fr))
    assert fr[tok.encode_word("les")[0]] and en[tok.encode_word("the")[0]]


def test_gpt2_ids_come_from_tiktoken_equal_to_transformers(gpt2_data_dir):
    """GPT-2 text is encoded with tiktoken (built offline from the bundled vocabulary), as nanoGPT does; its ids
    equal transformers' GPT-2 tokenizer on every sentence of the bundled sample's valid and test splits and on
    the awkward strings."""
    import tiktoken
    from transformers import AutoTokenizer

    from conftest import REPO
    tok = load_tokenizer(gpt2_data_dir)
    assert isinstance(tok.encoder, tiktoken.Encoding)
    reference = AutoTokenizer.from_pretrained(REPO / "data" / "tokenizers" / "gpt2")
    texts = [line.rstrip("\n") for path in sorted((REPO / "data" / "europarl" / "sample").glob("*.[ef][nr]"))
             for line in path.read_text(encoding="utf-8").splitlines()]
    # (not TAG_TEXT: transformers parses "<|endoftext|>" in text as the special token; we keep it text)
    texts += TEXTS + BYTE_LEVEL_TEXTS + ["", "  ", "\n\nnew lines\n", "l’amendement d'aujourd'hui 's"]
    assert len(texts) > 2000
    expected = [reference(text, add_special_tokens=False)["input_ids"] for text in texts]
    assert tok.encode_batch(texts) == expected
    assert [tok.encode(text) for text in texts[-12:]] == expected[-12:]
    assert tok.encoder.eot_token not in tok.encode("<|endoftext|> text")
