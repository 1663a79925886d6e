"""From sentences to the arrays of the .bin files: every sentence is tokenized once (Ragged holds the
ids of a split), checked against the saved tokenizer, then the documents are assembled from those ids
with the tags and EOS inserted as ids."""
import itertools

import numpy as np
from tqdm import tqdm

import common  # noqa: F401  (puts the repo root on sys.path, for tokenizer.py)
from tokenizer import encode_texts, text_encoder  # noqa: E402, F401  (text_encoder: for prepare.py)

ENCODE_CHUNK = 10_000  # sentences per encode_batch call: bounds memory, drives the progress bar


class Ragged:
    """Token ids of many sentences in one flat array: sentence i is flat[starts[i]:starts[i] + lens[i]].
    A split's sentences are its English sides (0..n-1) followed by its French sides (n..2n-1)."""

    def __init__(self, flat, lens):
        self.flat, self.lens = flat, lens
        self.starts = np.cumsum(lens) - lens

    def sentence(self, i):
        return self.flat[self.starts[i]:self.starts[i] + self.lens[i]]

    def language(self, lang):
        """A view on the English (first half) or French (second half) sentences."""
        n = len(self.lens) // 2
        lens = self.lens[:n] if lang == "en" else self.lens[n:]
        start = 0 if lang == "en" else self.starts[n]
        return Ragged(self.flat[start:start + lens.sum()], lens)


def encode_split(encoder, pairs, name):
    """The token ids of a split's English sides, then its French sides, as one Ragged (encoder: tokenizer.py's
    text_encoder)."""
    texts = pairs.en + pairs.fr
    flats, lens = [], []
    # disable=None: a bar on a terminal only; in a log file its carriage returns make one endless line
    with tqdm(total=len(texts), desc=f"tokenize {name}", unit=" sentences", mininterval=1.0, disable=None) as bar:
        for begin in range(0, len(texts), ENCODE_CHUNK):
            ids = encode_texts(encoder, texts[begin:begin + ENCODE_CHUNK])
            chunk_lens = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
            flats.append(np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32,
                                     count=int(chunk_lens.sum())))
            lens.append(chunk_lens)
            bar.update(len(ids))
    return Ragged(np.concatenate(flats), np.concatenate(lens))


def check_round_trip(spec, pairs, ragged):
    """The saved tokenizer must reproduce the ids written to disk (guards compaction and the
    special-piece renaming); checked on the valid split, which is small. It is read with the tokenizers
    library, so for GPT-2 (written with tiktoken) this also checks tiktoken's ids against it."""
    texts = pairs.en + pairs.fr
    again = encode_texts(spec.backend, texts)
    for i, ids in enumerate(again):
        if ids != ragged.sentence(i).tolist():
            raise AssertionError(f"tokenizer does not reproduce the ids of valid sentence {texts[i]!r}")


def choose_dtype(vocab_size):
    """uint16 holds ids up to 65,535; a larger vocabulary (e.g. uncompacted XLM-R) needs uint32."""
    return np.uint16 if vocab_size <= 65_535 else np.uint32


def make_documents(splits, encoded, spec, directions, rng):
    """The .bin arrays and their counts for meta.json.
    train/val: `<src> SRC <tgt> TGT EOS` per pair and direction, documents shuffled.
    val_en/val_fr/test_en/test_fr: `<lang> TEXT EOS` per sentence, in corpus order (line i of test.en
    is document i of test_en.bin)."""
    ids = spec.special_ids
    arrays, meta = {}, {}
    for split, prefix in (("train", "train"), ("valid", "val")):
        n = len(splits[split])
        if directions == "both":
            pair, en_first = np.concatenate([np.arange(n), np.arange(n)]), np.repeat([True, False], n)
        else:
            pair, en_first = np.arange(n), np.full(n, directions == "en-fr")
        order = rng.permutation(len(pair))
        pair, en_first = pair[order], en_first[order]
        en_sentence, fr_sentence = pair, n + pair
        layout = [np.where(en_first, ids["en"], ids["fr"]), np.where(en_first, en_sentence, fr_sentence),
                  np.where(en_first, ids["fr"], ids["en"]), np.where(en_first, fr_sentence, en_sentence),
                  np.full(len(pair), ids["eos"])]
        arrays[prefix] = assemble(encoded[split], layout, is_sentence=[False, True, False, True, False])
        meta[prefix] = {"pairs": n, "documents": len(pair), "tokens": len(arrays[prefix]),
                        "bytes": {"en": utf8_bytes(splits[split].en), "fr": utf8_bytes(splits[split].fr)}}

    for split, prefix in (("valid", "val"), ("test", "test")):
        n = len(splits[split])
        for k, lang in enumerate(("en", "fr")):
            layout = [np.full(n, ids[lang]), k * n + np.arange(n), np.full(n, ids["eos"])]
            name = f"{prefix}_{lang}"
            arrays[name] = assemble(encoded[split], layout, is_sentence=[False, True, False])
            meta[name] = {"sentences": n, "tokens": len(arrays[name]),
                          "bytes": utf8_bytes(getattr(splits[split], lang))}
    return arrays, meta


def assemble(sentences, layout, is_sentence):
    """Concatenate documents without a Python loop per document. Document d is the slots
    layout[0][d], layout[1][d], ...: a slot is a token id, or (is_sentence) the index of a sentence
    in `sentences` whose ids are spliced in."""
    n_docs = len(layout[0])
    lengths = np.stack([sentences.lens[slot] if is_sent else np.ones(n_docs, dtype=np.int64)
                        for slot, is_sent in zip(layout, is_sentence)], axis=1)
    slot_start = (np.cumsum(lengths.ravel()) - lengths.ravel()).reshape(lengths.shape)
    out = np.empty(int(lengths.sum()), dtype=np.int64)
    for k, (slot, is_sent) in enumerate(zip(layout, is_sentence)):
        if not is_sent:
            out[slot_start[:, k]] = slot
            continue
        lens = sentences.lens[slot]
        within = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)
        source = np.repeat(sentences.starts[slot], lens) + within
        out[np.repeat(slot_start[:, k], lens) + within] = sentences.flat[source]
    return out


def utf8_bytes(texts):
    return sum(len(text.encode("utf-8")) for text in texts)
