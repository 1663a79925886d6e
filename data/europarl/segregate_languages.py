"""Per-language text files (and optionally an alignment table) for a prepared data directory.

    python data/europarl/segregate_languages.py --language_pair en-fr --create_alignment

Rebuilds the exact sentence pairs of the prepared data from its meta.json (same source, max_pairs,
seed: prepare.py's own splitting code) and writes, next to the .bin files:
  en.txt / fr.txt   one pair per line, train then valid then test pairs: "<en> English" / "<fr> French"
  alignment.tsv     (--create_alignment) header + one row per pair: pair_id, en, fr, split
                    (pair_id = line number - 1 in en.txt and fr.txt; en/fr are the texts without tags;
                    plain tab-separated, no quoting)
For reference and inspection only: training reads the .bin files.
"""
import argparse
import json
import os
import sys
from pathlib import Path

from common import REPO, OneLineErrorParser, PrepareError
from fetch import HF_DATASETS
from split import load_splits

SPLIT_ORDER = ["train", "valid", "test"]


def main(argv=None):
    parser = OneLineErrorParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--language_pair", default="en-fr", help="only en-fr is supported")
    parser.add_argument("--data_dir", default=str(REPO / "data" / "europarl"), help="output of prepare.py")
    parser.add_argument("--create_alignment", action="store_true", help="also write alignment.tsv")
    args = parser.parse_args(argv)
    if args.language_pair != "en-fr":
        parser.error(f"--language_pair {args.language_pair}: only en-fr is supported")
    try:
        segregate(Path(args.data_dir), args.create_alignment)
    except PrepareError as error:
        print(f"segregate_languages.py: error: {error}", file=sys.stderr)
        sys.exit(1)


def segregate(data_dir, create_alignment):
    meta_path = data_dir / "meta.json"
    if not meta_path.is_file():
        raise PrepareError(f"missing file {meta_path}: run data/europarl/prepare.py first")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    source = meta["source"]
    splits, _ = load_splits(source["kind"], source["src_dir"], dataset_key(source), source["max_pairs"],
                            source["seed"], source["heldout_pairs"])
    for split in SPLIT_ORDER:
        expected = source["pairs"][split]
        if len(splits[split]) != expected:
            raise PrepareError(f"the source now gives {len(splits[split]):,} {split} pairs but {meta_path} "
                               f"has {expected:,}: it changed since prepare.py ran; prepare again")

    rows = [(split, en, fr) for split in SPLIT_ORDER for en, fr in zip(splits[split].en, splits[split].fr)]
    write_atomic(data_dir / "en.txt", lambda f: f.writelines(f"<en> {en}\n" for _, en, _ in rows))
    write_atomic(data_dir / "fr.txt", lambda f: f.writelines(f"<fr> {fr}\n" for _, _, fr in rows))
    written = ["en.txt", "fr.txt"]
    if create_alignment:
        # Plain TSV, no quoting (Europarl is full of '"'); a tab or CR inside a sentence cannot be stored.
        for pair_id, (split, en, fr) in enumerate(rows):
            if any(c in en + fr for c in "\t\r"):
                raise PrepareError(f"{split} pair {pair_id} contains a tab or CR: alignment.tsv cannot hold it")
        write_atomic(data_dir / "alignment.tsv", lambda f: f.writelines(
            ["pair_id\ten\tfr\tsplit\n"] + [f"{i}\t{en}\t{fr}\t{split}\n" for i, (split, en, fr) in enumerate(rows)]))
        written.append("alignment.tsv")
    print(f"wrote {', '.join(written)} ({len(rows):,} pairs) in {data_dir}")


def dataset_key(source):
    """meta.json stores the hub dataset's name; load_splits wants prepare.py's --dataset key."""
    if source["kind"] != "hf":
        return None
    return next(key for key, (name, _) in HF_DATASETS.items() if name == source["dataset"])


def write_atomic(path, write):
    """Write through a temporary file in the same directory, so `path` is never left half-written."""
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(temp, "w", encoding="utf-8", newline="") as f:
            write(f)
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.remove(temp)


if __name__ == "__main__":
    main()
