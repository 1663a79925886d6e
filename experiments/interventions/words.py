"""
The word lists the interventions read (data/interventions, each file documented in its README.md), and where
their words are in a text. A word is found by a case-insensitive whole-word match (no letter or digit on
either side), and the tokens it covers through the tokenizer's character offsets: every token overlapping the
match is a token of the word. A word of several BPE pieces is thus edited in all its pieces, where it occurs (the
pieces elsewhere, e.g. "e" of "n|urs|e" in another word, are not).
"""
import re
from pathlib import Path

from errors import DataError, MissingFileError

REPO = Path(__file__).resolve().parents[2]
DATA_DIR = REPO / 'data' / 'interventions'
LANGUAGES = ('en', 'fr')


def read_tsv(path, columns):
    """Rows of a tab-separated file with a header naming at least `columns`, as dicts."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path} not found: the intervention word lists ship with the repository in "
                               f"data/interventions (pass --data_dir to use another copy)")
    lines = [l for l in path.read_text(encoding='utf-8').splitlines() if l.strip()]
    header = lines[0].split('\t') if lines else []
    if missing := [c for c in columns if c not in header]:
        raise DataError(f"{path}: the header must name the tab-separated columns {list(columns)} (missing {missing})")
    rows = []
    for n, line in enumerate(lines[1:], 2):
        fields = line.split('\t')
        if len(fields) != len(header):
            raise DataError(f"{path}:{n}: {len(fields)} fields, the header has {len(header)}")
        rows.append(dict(zip(header, (f.strip() for f in fields))))
    return rows


def word_pattern(words):
    """A case-insensitive regex matching any of `words` as whole words (a multi-word entry matches with
    any whitespace between its words)."""
    alternatives = sorted(set(words), key=len, reverse=True)
    body = '|'.join(r'\s+'.join(map(re.escape, w.split())) for w in alternatives)
    return re.compile(rf'(?<!\w)(?:{body})(?!\w)', re.IGNORECASE)


def encode_marked(tok, lang, text, pattern):
    """([<lang>] + ids of text, [False] + for each token whether it overlaps a match of `pattern`)."""
    encoding = tok.backend.encode(text, add_special_tokens=False)
    spans = [m.span() for m in pattern.finditer(text)]
    marked = [any(s < b and e > a for a, b in spans) for s, e in encoding.offsets]
    return [tok.lang_id(lang)] + encoding.ids, [False] + marked
