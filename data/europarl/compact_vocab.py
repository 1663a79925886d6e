"""Vocabulary compaction (XLM-R, after tokenizing): keep only the ids the corpus uses, renumbered densely,
so that the model's embedding table has a row per id it can meet rather than XLM-R's 250,004. The
tokenizer and the encoded ids are rewritten in place; the saved tokenizer is the compact one."""
import json

import numpy as np

# Characters of English/French text (ASCII, Latin-1, Latin Extended-A, typographic punctuation, euro):
# their single-character XLM-R pieces survive compaction even when the corpus never uses them alone.
LATIN_CHARS = [chr(c) for c in [*range(0x21, 0x7F), *range(0xA1, 0x180), *range(0x2010, 0x2045), 0x20AC]]


def compact_vocabulary(spec, encoded):
    """Keep only the XLM-R ids the corpus uses (all splits), the special pieces and the tags, renumbered
    densely. The saved Unigram vocabulary keeps just those pieces, so the compact tokenizer encodes the
    corpus exactly as before (its best segmentations only use kept pieces) and other text falls back to
    kept pieces. The single-character pieces of LATIN_CHARS are always kept, so that any English or
    French text can still be spelled out instead of hitting <unk>. The lowest-scoring piece is kept
    too: Unigram scores an unknown character as (lowest score - 10), and keeping that score keeps
    every segmentation unchanged."""
    from tokenizers import Tokenizer
    model = spec.tokenizer_json["model"]
    scores = np.array([score for _, score in model["vocab"]])
    piece_id = {piece: i for i, (piece, _) in enumerate(model["vocab"])}
    spelling = [piece_id[p + c] for c in LATIN_CHARS for p in ("", "\u2581") if p + c in piece_id]
    always = spec.reserved_ids + spelling + [int(scores.argmin())] + list(spec.special_ids.values())
    used = [np.unique(ragged.flat) for ragged in encoded.values()]
    kept = np.unique(np.concatenate(used + [np.array(always)])).astype(np.int64)
    new_id = np.full(spec.vocab_size, -1, dtype=np.int64)
    new_id[kept] = np.arange(len(kept))

    n_pieces = len(model["vocab"])
    model["vocab"] = [model["vocab"][i] for i in kept if i < n_pieces]
    model["unk_id"] = int(new_id[model["unk_id"]])
    spec.backend = Tokenizer.from_str(json.dumps(spec.tokenizer_json))
    for ragged in encoded.values():
        ragged.flat = new_id[ragged.flat].astype(np.int32)
    before = spec.vocab_size
    spec.special_ids = {name: int(new_id[i]) for name, i in spec.special_ids.items()}
    spec.vocab_size = len(kept)
    print(f"compacted XLM-R vocabulary: {before:,} -> {spec.vocab_size:,} ids "
          f"(embedding rows x 384: {before * 384 / 1e6:.1f}M -> {spec.vocab_size * 384 / 1e6:.1f}M parameters)")
    return kept
