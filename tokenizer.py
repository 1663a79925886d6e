"""The one way in and out of token ids for a prepared data directory.

    from tokenizer import load_tokenizer
    tok = load_tokenizer("data/europarl")
    ids = tok.encode_document("Good morning.", "Bonjour.", src="en", tgt="fr")
    tok.decode(ids)                       # 'Good morning. Bonjour.'

A data directory made by data/europarl/prepare.py holds `meta.json` and `tokenizer/tokenizer.json`
(a `tokenizers.Tokenizer`, already in the model's id space: for a compacted XLM-R vocabulary the file
itself only has the kept pieces, and `vocab_map.npy` says which original XLM-R id each one was).

The tags `<en>`, `<fr>` and the end-of-document id are never produced from text: they are inserted
as ids here, and the saved tokenizer.json has no added tokens, so a literal "<en>" or "</s>" in a
sentence stays ordinary text.
"""
import json
import os
import shutil
from pathlib import Path

import numpy as np
import tokenizers

TAG_NAMES = {"en": "<en>", "fr": "<fr>"}


def load_tokenizer(data_dir):
    """Rebuild the tokenizer of a prepared data directory, offline, from its files alone."""
    data_dir = Path(data_dir)
    meta = json.loads((data_dir / "meta.json").read_text(encoding="utf-8"))
    backend = tokenizers.Tokenizer.from_file(str(data_dir / meta["tokenizer"]["file"]))
    vocab_map = None
    if meta["tokenizer"]["vocab_map"]:
        vocab_map = np.load(data_dir / meta["tokenizer"]["vocab_map"])
    return Tokenizer(meta, backend, vocab_map, data_dir)


def tokenizer_files(meta):
    """The files load_tokenizer reads, relative to the directory: meta.json, the tokenizer file it names
    (tokenizer/tokenizer.json) and, for a compacted vocabulary, vocab_map.npy."""
    info = meta["tokenizer"]
    return ["meta.json"] + [info[key] for key in ("file", "vocab_map") if info.get(key)]


def copy_tokenizer(src_dir, dst_dir):
    """Copy the tokenizer_files of src_dir into dst_dir, at the same relative paths, so that load_tokenizer(dst_dir)
    gives src_dir's tokenizer (an export of export_hf.py, a re-evaluation's results directory)."""
    src_dir, dst_dir = Path(src_dir), Path(dst_dir)
    for name in tokenizer_files(json.loads((src_dir / "meta.json").read_text(encoding="utf-8"))):
        (dst_dir / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src_dir / name, dst_dir / name)


def encode_texts(encoder, texts):
    """Plain text -> ids, batched and multi-threaded; never adds <s>/</s> or other specials (nor parses them:
    a literal "<|endoftext|>" stays text). `encoder`: text_encoder's (tiktoken for GPT-2) or a
    tokenizers.Tokenizer."""
    if hasattr(encoder, "encode_ordinary_batch"):  # tiktoken.Encoding
        return encoder.encode_ordinary_batch(texts, num_threads=os.cpu_count() or 1)
    return [encoding.ids for encoding in encoder.encode_batch_fast(texts, add_special_tokens=False)]


def text_encoder(backend, tokenizer_type):
    """What turns text into ids: tiktoken for GPT-2's byte-level BPE (as nanoGPT tokenizes it), the
    tokenizers.Tokenizer itself for ours and XLM-R's (tiktoken has no Unigram model). Both give the same ids
    for GPT-2 (tests/test_tokenizer.py); the backend stays for decoding and per-piece work (offsets, pieces)."""
    return gpt2_encoding(backend) if tokenizer_type == "gpt2" else backend


def gpt2_encoding(backend):
    """tiktoken's GPT-2 encoding (r50k) built from the vocabulary of `backend`, offline: tiktoken.get_encoding
    would download its file. In GPT-2 a token's id is its merge rank, so the vocabulary, its tokens turned back
    into bytes, is tiktoken's mergeable_ranks; the split pattern is GPT-2's (tiktoken's r50k_base)."""
    try:
        import tiktoken
    except ImportError:
        raise ImportError("the GPT-2 tokenizer encodes with tiktoken: pip install tiktoken (in requirements.txt)")
    byte_of = {char: byte for byte, char in bytes_to_unicode().items()}
    vocab = backend.get_vocab()
    eos = vocab.pop("<|endoftext|>")
    ranks = {bytes(byte_of[char] for char in token): id for token, id in vocab.items()}
    return tiktoken.Encoding("gpt2_local", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": eos}, explicit_n_vocab=len(ranks) + 1)


GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def bytes_to_unicode():
    """GPT-2's byte -> printable character map: a byte-level BPE vocabulary writes byte b as chr of this."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


class Tokenizer:
    def __init__(self, meta, backend, vocab_map=None, data_dir=None):
        self.meta = meta
        self.data_dir = data_dir  # where words.json lives (a data dir, or a training out_dir)
        self.backend = backend  # decoding and pieces
        self.encoder = text_encoder(backend, meta["tokenizer"]["type"])  # text -> ids
        self.vocab_map = vocab_map  # compact id i <-> original XLM-R id vocab_map[i]; None if not compacted
        self.vocab_size = meta["vocab_size"]
        special = meta["special_ids"]
        self.eos_id = special["eos"]
        self._lang_ids = {"en": special["en"], "fr": special["fr"]}
        self.special_ids = {special["en"], special["fr"], special["eos"]}
        self._special_names = {special["en"]: TAG_NAMES["en"], special["fr"]: TAG_NAMES["fr"],
                               special["eos"]: meta["tokenizer"]["eos_token"]}
        # Byte-level BPE (bpe, gpt2) marks a word start with a leading space; XLM-R's Metaspace
        # pre-tokenizer already treats every word, the first one included, as following a space.
        self._word_prefix = "" if meta["tokenizer"]["type"] == "xlm-roberta" else " "
        self._token_lang_counts = None
        self._readable = None

    def lang_id(self, lang):
        return self._lang_ids[lang]

    def encode(self, text):
        return encode_texts(self.encoder, [text])[0]

    def encode_batch(self, texts):
        return encode_texts(self.encoder, list(texts))

    def encode_document(self, src_text, tgt_text, src="en", tgt="fr"):
        return self.encode_prompt(src_text, src, tgt) + self.encode(tgt_text) + [self.eos_id]

    def encode_prompt(self, text, src="en", tgt="fr"):
        return [self.lang_id(src)] + self.encode(text) + [self.lang_id(tgt)]

    def encode_monolingual(self, text, lang):
        return [self.lang_id(lang)] + self.encode(text) + [self.eos_id]

    def encode_word(self, word):
        return self.encode(self._word_prefix + word)

    def decode(self, ids, skip_special=True):
        """Text of `ids`. The stretches between tags/EOS are decoded separately and joined with one
        space, so a document reads 'English French' (or '<en> English <fr> French </s>')."""
        pieces, stretch = [], []
        for i in (int(i) for i in ids):
            if i not in self.special_ids:
                stretch.append(i)
                continue
            pieces.append(self.backend.decode(stretch, skip_special_tokens=False))
            stretch = []
            if not skip_special:
                pieces.append(self._special_names[i])
        pieces.append(self.backend.decode(stretch, skip_special_tokens=False))
        if len(pieces) == 1:  # no tags: exactly the backend's decoding, so decode(encode(x)) == x
            return pieces[0]
        return " ".join(piece.strip() for piece in pieces if piece.strip())

    def id_to_token(self, ids):
        return [self._special_names.get(i) or self._piece(i) for i in (int(i) for i in ids)]

    def token_str(self, id):
        id = int(id)
        if id in self._special_names:
            return self._special_names[id]
        return self.backend.decode([id], skip_special_tokens=False).strip()

    @property
    def token_lang_counts(self):
        """(vocab_size, 2) int64: how often each id occurs on the EN and on the FR side of the train pairs."""
        if self._token_lang_counts is None:
            counts = self.meta["token_lang_counts"]
            self._token_lang_counts = np.array([counts["en"], counts["fr"]], dtype=np.int64).T
        return self._token_lang_counts

    def language_mask(self, lang, min_count=3, min_share=0.5):
        """(vocab_size,) bool: the ids that are tokens of `lang` by their train-side counts.

        An id belongs to `lang` when it occurred at least `min_count` times on that side of the train
        pairs and at least `min_share` of its occurrences were there. Shared pieces (punctuation,
        names, numbers) therefore count for both languages; ids never seen in training, the
        tags/EOS, and byte-level pieces that are not text on their own (see `readable_mask`), for
        neither."""
        counts = self.token_lang_counts
        mine = counts[:, ("en", "fr").index(lang)]
        mask = (mine >= min_count) & (mine >= min_share * counts.sum(1)) & self.readable_mask()
        mask[list(self.special_ids)] = False
        return mask

    def readable_mask(self):
        """(vocab_size,) bool: the ids that decode, alone, to valid text. A byte-level BPE (gpt2, bpe)
        has pieces holding part of a character's UTF-8 bytes (e.g. the first byte of "œ"); alone they
        decode to U+FFFD and mean nothing to a reader, however often they occur in French."""
        if self._readable is None:
            texts = self.backend.decode_batch([[i] for i in range(self.vocab_size)], skip_special_tokens=False)
            self._readable = np.array(["\ufffd" not in text for text in texts], dtype=bool)
        return self._readable

    def words(self, lang):
        """[(word, count)] of the train side of `lang`, most frequent first (words.json, made by prepare.py)."""
        path = Path(self.data_dir or ".") / "words.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: re-run data/europarl/prepare.py to make it")
        return [tuple(item) for item in json.loads(path.read_text(encoding="utf-8"))[lang]]

    def _piece(self, id):
        if not 0 <= id < self.vocab_size:
            raise IndexError(f"token id {id} is outside the vocabulary (size {self.vocab_size})")
        return self.backend.id_to_token(id)
