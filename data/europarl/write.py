"""The output directory: the word counts of words.json, and writing every file into a staging
directory that replaces the previous outputs only once all of it is written (data/europarl/README.md
describes each file)."""
import json
import os
import re
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from documents import ENCODE_CHUNK

# Outputs of prepare.py in --out_dir (meta.json aside), and those segregate_languages.py derives from them.
OUTPUT_FILES = ["train.bin", "val.bin", "val_en.bin", "val_fr.bin", "test_en.bin", "test_fr.bin",
                "test.en", "test.fr", "words.json", "vocab_map.npy", "tokenizer"]
DERIVED_FILES = ["en.txt", "fr.txt", "alignment.tsv"]
# words.json: the words of each language's train side with their counts (lexicon-induction candidates)
# a word: letters, possibly joined by hyphens/apostrophes; a French elided article or pronoun in front
# ("l'", "qu'", ...) is matched but left out of the captured word
WORD = re.compile(r"(?:(?:l|d|j|m|n|s|t|c|qu|jusqu|lorsqu|puisqu|quoiqu)['’](?=[^\W\d_]))?"
                  r"([^\W\d_]+(?:[-'’][^\W\d_]+)*)")
MIN_WORD_COUNT = 2


def word_counts(texts):
    """[[word, count], ...] most frequent first, for words seen at least MIN_WORD_COUNT times.

    A word is a lower-cased run of letters, possibly joined by hyphens or apostrophes
    ("aujourd'hui", "vice-président"); a French elided article or pronoun is split off its host
    ("l'homme" -> "homme"), as dictionary entries such as MUSE's are written."""
    counts = Counter()
    for start in range(0, len(texts), ENCODE_CHUNK):  # one regex pass per chunk of sentences
        counts.update(WORD.findall("\n".join(texts[start:start + ENCODE_CHUNK]).lower()))
    return [[w, c] for w, c in counts.most_common() if c >= MIN_WORD_COUNT]


def write_outputs(out_dir, arrays, dtype, test_pairs, backend, vocab_map, meta, words):
    """Write everything into a temporary directory next to out_dir, then move it into place. meta.json
    goes first out and last in, so a directory with meta.json always holds one complete, matching set."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        for name, array in arrays.items():
            array.astype(dtype).tofile(staging / f"{name}.bin")
        (staging / "test.en").write_text("".join(text + "\n" for text in test_pairs.en), encoding="utf-8")
        (staging / "test.fr").write_text("".join(text + "\n" for text in test_pairs.fr), encoding="utf-8")
        (staging / "words.json").write_text(json.dumps(words, ensure_ascii=False) + "\n", encoding="utf-8")
        (staging / "tokenizer").mkdir()
        backend.save(str(staging / "tokenizer" / "tokenizer.json"))
        if vocab_map is not None:
            np.save(staging / "vocab_map.npy", vocab_map)
        (staging / "meta.json").write_text(json.dumps(meta) + "\n", encoding="utf-8")

        out_dir.mkdir(exist_ok=True)
        discarded = staging / "previous"
        discarded.mkdir()
        # Out: the old meta.json first, then every earlier output, including those this run does not
        # make (a vocab_map.npy of an earlier compacted run, segregate_languages.py files of old data).
        for name in ["meta.json"] + OUTPUT_FILES + DERIVED_FILES:
            if (out_dir / name).exists():
                os.replace(out_dir / name, discarded / name)
        for name in OUTPUT_FILES + ["meta.json"]:
            if (staging / name).exists():
                os.replace(staging / name, out_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
