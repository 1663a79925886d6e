"""Getting the raw parallel text: aligned X.en / X.fr files from a local directory or the bundled
sample, or a dataset from the Hugging Face hub. Returns the pairs of each split the source names
(train / valid / test) and where they came from; split.py makes the held-out splits from them."""
import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

from common import REPO, PrepareError, one_line, require_hub

SAMPLE_DIR = REPO / "data" / "europarl" / "sample"
HF_DATASETS = {"europarl": ("Helsinki-NLP/europarl", "en-fr"), "opus100": ("Helsinki-NLP/opus-100", "en-fr")}
SPLIT_NAMES = {"train": "train", "valid": "valid", "validation": "valid", "val": "valid", "dev": "valid",
               "test": "test"}


@dataclass
class Pairs:
    en: list
    fr: list

    def __len__(self):
        return len(self.en)

    def select(self, index):
        return Pairs([self.en[i] for i in index], [self.fr[i] for i in index])


def read_source(source, src_dir, dataset):
    """The pairs of --source, by split name: ({split: Pairs}, {split: [file labels]}, location), where
    location is the hub dataset's name or the directory read (the sample's for --source sample)."""
    if source == "hf":
        raw, files = read_hf(dataset)
        return raw, files, HF_DATASETS[dataset][0]
    src_dir = SAMPLE_DIR if source == "sample" else Path(src_dir).resolve()
    raw, files = read_local(src_dir)
    return raw, files, str(src_dir)


def read_local(src_dir):
    """Aligned files DIR/X.en + DIR/X.fr (each plain or .gz). X names the split by its first dot-separated
    part: train*, valid/val/dev*, test*; any other name is training data. Files of one split are
    concatenated in name order."""
    if not src_dir.is_dir():
        raise PrepareError(f"missing directory {src_dir}")
    sides = {}
    for path in sorted(src_dir.iterdir()):
        name = path.name[:-3] if path.name.endswith(".gz") else path.name
        stem, _, lang = name.rpartition(".")
        if lang in ("en", "fr") and stem:
            if (stem, lang) in sides:
                raise PrepareError(f"both {path} and its plain/.gz twin exist in {src_dir}")
            sides[stem, lang] = path
    if not sides:
        raise PrepareError(f"no aligned *.en / *.fr files in {src_dir}")

    raw, files = {}, {}
    for stem in sorted({stem for stem, _ in sides}):
        if (stem, "en") not in sides or (stem, "fr") not in sides:
            have, lack = ("en", "fr") if (stem, "en") in sides else ("fr", "en")
            raise PrepareError(f"missing file {src_dir / (stem + '.' + lack)} to match {sides[stem, have]}")
        en, fr = read_lines(sides[stem, "en"]), read_lines(sides[stem, "fr"])
        if len(en) != len(fr):
            raise PrepareError(f"{sides[stem, 'en']} has {len(en):,} lines but {sides[stem, 'fr']} has {len(fr):,}")
        add_pairs(raw, files, SPLIT_NAMES.get(stem.split(".")[0], "train"), en, fr, stem)
    return raw, files


def add_pairs(raw, files, split, en, fr, label):
    """Append pairs to raw[split] and record where they came from in files[split]."""
    pairs = raw.setdefault(split, Pairs([], []))
    pairs.en += en
    pairs.fr += fr
    files.setdefault(split, []).append(label)


def read_lines(path):
    """Lines of a UTF-8 file (plain or gzip). Split on '\\n' only: str.splitlines() would also split on
    U+2028, U+0085 etc. inside a sentence and break the line alignment between languages."""
    try:
        data = gzip.open(path, "rb").read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as error:
        raise PrepareError(f"{path}: cannot read ({one_line(error)})")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise PrepareError(f"{path}: line {line}: undecodable bytes, not UTF-8 ({error.reason})")
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


def read_hf(dataset):
    """The "translation" rows of every split of a hub dataset (HF_DATASETS[dataset])."""
    name, config = HF_DATASETS[dataset]
    hint = "offline, use --source local --src_dir DIR (aligned X.en/X.fr files) or --source sample"
    require_hub(f"the {name} dataset", hint)
    import datasets
    try:
        loaded = datasets.load_dataset(name, config)
    except Exception as error:  # any hub/dataset failure ends the run with the hint
        raise PrepareError(f"could not load {name} ({config}) with datasets.load_dataset ({one_line(error)}); {hint}")
    raw, files = {}, {}
    for split_name, split in loaded.items():
        rows = split["translation"]
        add_pairs(raw, files, SPLIT_NAMES.get(split_name, "train"), [row["en"] for row in rows],
                  [row["fr"] for row in rows], f"{name}:{config}:{split_name}")
    return raw, files
