"""Readers for the evaluation data sets (word similarity, cross-lingual similarity, bilingual
dictionaries, parallel sentences).

Every reader fails loudly: a missing file raises errors.MissingFileError (a FileNotFoundError) and a
malformed one errors.DataError (a ValueError), each with one line naming the file (and the line
number) and how to get the data; a script's entry point (errors.run_main) prints that line.
There is never any fallback data.

The bundled copies live in data/eval/ (see the PROVENANCE.md of each folder); `DEFAULT_PATHS`
names them relative to the repository root and `default_path(name)` makes them absolute.
"""
from __future__ import annotations

import gzip
import hashlib
import math
import os
import re
from pathlib import Path

from errors import DataError, MissingFileError

REPO_ROOT = Path(__file__).resolve().parents[1]

DEFAULT_PATHS = {
    "multisimlex_en": "data/eval/multisimlex/MSL_ENG.tsv",
    "multisimlex_fr": "data/eval/multisimlex/MSL_FRA.tsv",
    "xling_en_fr": "data/eval/multisimlex/XLING_ENG_FRA_candidates.tsv",
    "simlex999": "data/eval/word_similarity/EN_SIMLEX-999.txt",
    "muse_en_fr": "data/eval/muse_dictionaries/en-fr.5000-6500.txt",
    "muse_fr_en": "data/eval/muse_dictionaries/fr-en.5000-6500.txt",
    "tatoeba_en": "data/eval/sentence_retrieval/tatoeba.fra-eng.eng",
    "tatoeba_fr": "data/eval/sentence_retrieval/tatoeba.fra-eng.fra",
}

HOW_TO_GET = ("the bundled copies are in data/eval/ (restore them with `git checkout data/eval`; "
              "sources are listed in data/eval/*/PROVENANCE.md)")


def default_path(name: str) -> Path:
    """Absolute path of a bundled evaluation file, e.g. default_path('muse_en_fr')."""
    if name not in DEFAULT_PATHS:
        raise KeyError(f"unknown evaluation data set {name!r}; known: {', '.join(DEFAULT_PATHS)}")
    return REPO_ROOT / DEFAULT_PATHS[name]


def read_lines(path, what: str) -> list[str]:
    """All lines of a UTF-8 text file (plain or .gz), split on "\n" only, without terminators.

    Raises FileNotFoundError / ValueError naming `path` (`what` says what kind of file it should be).
    """
    path = Path(path)
    if not path.is_file():
        bundled = any(path.resolve() == (REPO_ROOT / p).resolve() for p in DEFAULT_PATHS.values())
        raise MissingFileError(f"{what} file not found: {path}" + (f" ({HOW_TO_GET})" if bundled else ""))
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8", newline="") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise DataError(f"{what} file {path} is not valid UTF-8 (byte {e.start})") from None
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


TAB_RUN = re.compile(r" *\t[\t ]*")  # one separator: a run of tabs (with any spaces around them)


def split_fields(line: str) -> list[str]:
    """Tab-separated fields when the line has a tab (so multi-word entries such as `petit déjeuner`
    survive), else whitespace-separated. A run of tabs is one separator: real files exported from
    spreadsheets have doubled tabs (empty columns) between fields; a line that then has too few
    fields is still refused by the reader."""
    if "\t" not in line:
        return line.split()
    return TAB_RUN.split(line.strip(" \t"))


def parse_float(text: str, path, lineno: int, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise DataError(f"{path}:{lineno}: {column} {text!r} is not a finite number")
    return value


SCORE_COLUMNS = ("score", "simlex999")  # header names of the gold score (Multi-SimLex; the original SimLex-999.txt)


def read_word_pairs(path) -> list[tuple[str, str, float]]:
    """Read a word-similarity file into [(word1, word2, score), ...] in file order.

    Accepted formats: any `word1 word2 score` file, tab- or whitespace-separated (a line with a tab
    is split on runs of tabs only, so multi-word entries such as `petit déjeuner` are kept whole and
    doubled tabs do not make empty fields), with an
    optional header line. A header that names columns `word1`, `word2` and `score` (the
    Multi-SimLex TSVs: `id word1 word2 pos score ...`; or `SimLex999`, as in the original
    SimLex-999.txt: `word1 word2 POS SimLex999 ...`) selects those columns, and every row must then
    have as many fields as the header; otherwise the first
    three columns are word1, word2, score, and a first line whose score column is not a number is
    taken as a header and skipped. Blank lines are skipped. Words are returned exactly as in the
    file (no case folding). Any other malformed line raises DataError (a ValueError) naming file and line.
    """
    lines = read_lines(path, "word-pair")
    rows = [(i + 1, split_fields(line)) for i, line in enumerate(lines) if line.strip()]
    if not rows:
        raise DataError(f"word-pair file {path} is empty")
    i1, i2, isc = 0, 1, 2
    width = None  # with a header naming the columns, every row must have exactly its fields
    first = [f.lower() for f in rows[0][1]]
    score = next((name for name in SCORE_COLUMNS if name in first), None)
    if {"word1", "word2"} <= set(first) and score:
        i1, i2, isc = first.index("word1"), first.index("word2"), first.index(score)
        width = len(first)
        rows = rows[1:]
    elif len(first) >= 3 and not is_number(first[2]):
        rows = rows[1:]
    pairs = []
    for lineno, fields in rows:
        if len(fields) <= max(i1, i2, isc):
            raise DataError(f"{path}:{lineno}: expected `word1 word2 score`, got {len(fields)} field(s)")
        if width is not None and len(fields) != width:
            # a missing (empty) column would shift the others: which field is word1 is then unknown
            raise DataError(f"{path}:{lineno}: {len(fields)} fields, the header has {width}")
        w1, w2 = fields[i1], fields[i2]
        if not w1 or not w2:
            raise DataError(f"{path}:{lineno}: empty word")
        pairs.append((w1, w2, parse_float(fields[isc], path, lineno, "score")))
    if not pairs:
        raise DataError(f"word-pair file {path} has a header but no pairs")
    return pairs


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


XLING_COLUMNS = ["id", "pos", "direction", "eng_word", "fra_word",
                 "eng_score", "fra_score", "mean_score", "abs_diff"]


def cross_lingual_pairs(candidates_path, max_abs_diff: float = 1.0) -> list[tuple[str, str, float]]:
    """EN–FR cross-lingual word pairs reconstructed from Multi-SimLex EN and FR.

    The official Multi-SimLex ENG–FRA file is not available, so the pairs are rebuilt from the two
    monolingual sets following the paper's recipe (Camacho-Collados et al., 2015). The candidates
    file (columns `id pos direction eng_word fra_word eng_score fra_score mean_score abs_diff`)
    holds, for every concept pair (a, b) of Multi-SimLex, the two mixed pairs (a_EN, b_FR)
    (direction `eng1-fra2`) and (a_FR, b_EN) (direction `fra1-eng2`), each with the English score
    of (a, b), the French score of (a, b), their mean and |EN − FR|.

    Rule: a mixed pair is kept when |eng_score − fra_score| <= max_abs_diff (the `abs_diff`
    column, rounded to 6 decimals in the file) and is scored with the mean of the two monolingual
    scores (`mean_score`, 0–6 scale). Both mixed pairs of a concept pair share the decision, so
    the default threshold 1.0 keeps 758 concept pairs = 1,516 mixed pairs (0.5 → 436 / 872,
    2.0 → 1,540 / 3,080). Rows are returned in file order as (english_word, french_word, mean_score); the
    15 (eng_word, fra_word) duplicates of the file are kept as separate rows.

    The file's mean_score/abs_diff columns are checked against the two score columns.
    """
    if max_abs_diff < 0:
        raise ValueError(f"max_abs_diff must be >= 0, got {max_abs_diff}")
    lines = read_lines(candidates_path, "cross-lingual candidates")
    if not lines or split_fields(lines[0]) != XLING_COLUMNS:
        raise DataError(f"{candidates_path}: expected the header {' '.join(XLING_COLUMNS)} "
                         "(XLING_ENG_FRA_candidates.tsv from data/eval/multisimlex/)")
    kept = []
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = split_fields(line)
        if len(fields) != len(XLING_COLUMNS):
            raise DataError(f"{candidates_path}:{lineno}: expected {len(XLING_COLUMNS)} columns, "
                             f"got {len(fields)}")
        row = dict(zip(XLING_COLUMNS, fields))
        en, fr, mean, diff = (parse_float(row[c], candidates_path, lineno, c)
                              for c in ("eng_score", "fra_score", "mean_score", "abs_diff"))
        if abs(mean - (en + fr) / 2) > 1e-5 or abs(diff - abs(en - fr)) > 1e-5:
            raise DataError(f"{candidates_path}:{lineno}: mean_score/abs_diff disagree with the scores")
        if diff <= max_abs_diff:
            kept.append((row["eng_word"], row["fra_word"], mean))
    return kept


def read_dictionary(path) -> dict[str, set[str]]:
    """Read a bilingual dictionary in MUSE format: `source target` per line (whitespace-separated),
    several lines for a source word with several translations. Returns {source: {targets}}.
    Blank lines are skipped; a line without exactly two fields raises ValueError.
    """
    lines = read_lines(path, "dictionary")
    gold: dict[str, set[str]] = {}
    for lineno, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise DataError(f"{path}:{lineno}: expected `source target`, got {len(fields)} field(s)")
        gold.setdefault(fields[0], set()).add(fields[1])
    if not gold:
        raise DataError(f"dictionary file {path} is empty")
    return gold


def read_parallel(src_path, tgt_path, limit: int | None = None) -> tuple[list[str], list[str]]:
    """Read two line-aligned files (line i of tgt translates line i of src) into two lists of
    stripped sentences, the first `limit` pairs when given. Raises ValueError when the line counts
    differ or any line (in the whole files) is empty.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of pairs, got {limit}")
    src = read_lines(src_path, "parallel source")
    tgt = read_lines(tgt_path, "parallel target")
    if len(src) != len(tgt):
        raise DataError(f"parallel files differ in length: {src_path} has {len(src)} lines, "
                         f"{tgt_path} has {len(tgt)}")
    for path, lines in ((src_path, src), (tgt_path, tgt)):
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                raise DataError(f"{path}:{lineno}: empty line in a parallel file")
    if not src:
        raise DataError(f"parallel files {src_path} and {tgt_path} are empty")
    n = len(src) if limit is None else min(limit, len(src))
    return [s.strip() for s in src[:n]], [t.strip() for t in tgt[:n]]


# ----------------------------------------------------------------------------- portable input records

OUT_DIR_PREFIX = "out_dir/"  # a recorded input inside the evaluated run's own directory (its test.en copy, ...)


def portable_path(path, out_dir=None) -> str:
    """How a results file names an input, so that it means the same file on any machine: relative to the
    evaluated run's out_dir when the file lies inside it ('out_dir/test.en'), else relative to the
    repository root ('data/eval/muse_dictionaries/en-fr.5000-6500.txt', '../shared/data/...'), '/'
    separators either way. Never absolute: a copy of the results elsewhere (results/cpu_reference/...)
    resolves it with resolve_input."""
    path = Path(path).resolve()
    if out_dir is not None:
        base = Path(out_dir).resolve()
        if path == base or base in path.parents:
            return OUT_DIR_PREFIX + path.relative_to(base).as_posix()
    return Path(os.path.relpath(path, REPO_ROOT)).as_posix()


def resolve_input(portable: str, out_dir) -> Path:
    """The file a portable_path names, for the results of `out_dir` (the run's directory, or the committed
    copy of its results)."""
    portable = str(portable)
    if Path(portable).is_absolute():
        raise DataError(f"{portable} is an absolute path: results name their inputs relative to the repository "
                        f"or to the out_dir (rerun the evaluation, or rewrite the results with portable paths)")
    if portable.startswith(OUT_DIR_PREFIX):
        return Path(out_dir) / portable[len(OUT_DIR_PREFIX):]
    return REPO_ROOT / portable


INPUT_KEYS = ("file", "src_file", "ref_file", "path", "dictionary", "files", "translation_files", "data_dir")


def sha256_file(path) -> str:
    """Hex sha256 of a file's bytes (read 1 MiB at a time)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def record_inputs(results: dict, out_dir=None) -> dict:
    """Rewrite, in place, every input a results dict names (the values of INPUT_KEYS: a path, a list or a
    {lang: path} dict of paths) as a portable_path, and return {portable path: sha256} of those that are
    files, so that a copy of the file elsewhere is recognised by its content (verify_evaluation.py checks
    it). An input already portable is left as it is, and hashed where it can be found."""
    inputs = {}

    def convert(value):
        if isinstance(value, (list, tuple)):
            return [convert(v) for v in value]
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        if not isinstance(value, (str, Path)):
            return value
        value = str(value)
        if Path(value).is_absolute() or os.path.exists(value):
            local, value = Path(value), portable_path(value, out_dir)
        else:  # already portable
            local = resolve_input(value, out_dir if out_dir is not None else ".")
        if local.is_file():
            inputs[value] = sha256_file(local)
        return value

    def walk(obj):
        if isinstance(obj, dict):
            for key, value in obj.items():
                if key == "checkpoint":  # the record of the weights (file name and sha256), not an input
                    continue
                if key in INPUT_KEYS:
                    obj[key] = convert(value)
                else:
                    walk(value)
        elif isinstance(obj, list):
            for v in obj:
                walk(v)
    walk(results)
    return dict(sorted(inputs.items()))
