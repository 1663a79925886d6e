"""Turn aligned English-French sentence pairs into token-id files for Backpack LM training.

    python data/europarl/prepare.py --language_pair en-fr --source sample --tokenizer bpe
    python data/europarl/prepare.py --language_pair en-fr --source local \
        --src_dir ../shared/data/europarl_v7_fr_en --tokenizer xlm-roberta-base \
        --tokenizer_path ../shared/data/tokenizers/xlm-roberta
    python data/europarl/prepare.py --language_pair en-fr            # online: Europarl from the HF hub

Pairs are split into train / valid / test first (any train pair whose English or French side equals a
held-out side is dropped), and only then turned into documents `<en> English <fr> French EOS` and
`<fr> French <en> English EOS`. The tags and EOS are inserted as ids, never parsed from text.
Everything is written to a temporary directory next to --out_dir and moved into place only when all
of it succeeded. data/europarl/README.md describes every output file; tokenizer.py reads them back.
"""
import argparse
import gzip
import itertools
import json
import os
import re
import shutil
import sys
import tempfile
import time
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # run as a script from anywhere: tokenizer.py lives at the repo root
from errors import UserError  # noqa: E402
from tokenizer import encode_texts  # noqa: E402

SAMPLE_DIR = REPO / "data" / "europarl" / "sample"
GPT2_DIR = REPO / "data" / "tokenizers" / "gpt2"
SHARED_XLMR_HINT = "../shared/data/tokenizers/xlm-roberta"
HF_DATASETS = {"europarl": ("Helsinki-NLP/europarl", "en-fr"), "opus100": ("Helsinki-NLP/opus-100", "en-fr")}
XLMR_HUB_NAME = "xlm-roberta-base"
TOKENIZERS = ["bpe", "gpt2", "xlm-roberta-base"]
SPLIT_NAMES = {"train": "train", "valid": "valid", "validation": "valid", "val": "valid", "dev": "valid",
               "test": "test"}
# Characters of English/French text (ASCII, Latin-1, Latin Extended-A, typographic punctuation, euro):
# their single-character XLM-R pieces survive compaction even when the corpus never uses them alone.
LATIN_CHARS = [chr(c) for c in [*range(0x21, 0x7F), *range(0xA1, 0x180), *range(0x2010, 0x2045), 0x20AC]]
ENCODE_CHUNK = 10_000  # sentences per encode_batch call: bounds memory, drives the progress bar
# Outputs of this script in --out_dir (meta.json aside), and those segregate_languages.py derives from them.
OUTPUT_FILES = ["train.bin", "val.bin", "val_en.bin", "val_fr.bin", "test_en.bin", "test_fr.bin",
                "test.en", "test.fr", "words.json", "vocab_map.npy", "tokenizer"]
# words.json: the words of each language's train side with their counts (lexicon-induction candidates)
# a word: letters, possibly joined by hyphens/apostrophes; a French elided article or pronoun in front
# ("l'", "qu'", ...) is matched but left out of the captured word
WORD = re.compile(r"(?:(?:l|d|j|m|n|s|t|c|qu|jusqu|lorsqu|puisqu|quoiqu)['’](?=[^\W\d_]))?"
                  r"([^\W\d_]+(?:[-'’][^\W\d_]+)*)")
MIN_WORD_COUNT = 2
DERIVED_FILES = ["en.txt", "fr.txt", "alignment.tsv"]


class PrepareError(UserError):
    """Bad input or environment: reported as one line on stderr, exit status 1, nothing written."""


def main(argv=None):
    args = parse_args(argv)
    try:
        run(args)
    except PrepareError as error:
        print(f"prepare.py: error: {error}", file=sys.stderr)
        sys.exit(1)


def parse_args(argv):
    parser = OneLineErrorParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--language_pair", default="en-fr", help="only en-fr is supported")
    parser.add_argument("--source", default="hf", choices=["hf", "local", "sample"],
                        help="hf: datasets.load_dataset (online); local: --src_dir; sample: the bundled slice")
    parser.add_argument("--dataset", default="europarl", choices=sorted(HF_DATASETS), help="for --source hf")
    parser.add_argument("--src_dir", help="for --source local: aligned X.en / X.fr files, plain or .gz")
    parser.add_argument("--max_pairs", type=positive_int, help="keep at most this many train pairs (random, by --seed)")
    parser.add_argument("--heldout_pairs", type=positive_int, default=3000,
                        help="size of valid and of test when the source has none (capped at 10%% of the pairs)")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--out_dir", default=str(REPO / "data" / "europarl"))
    parser.add_argument("--directions", default="both", choices=["both", "en-fr", "fr-en"])
    parser.add_argument("--tokenizer", default="xlm-roberta-base", choices=TOKENIZERS)
    parser.add_argument("--tokenizer_path", help="xlm-roberta-base: dir (or file) with tokenizer.json; "
                        "gpt2: dir with vocab.json + merges.txt (default: the bundled data/tokenizers/gpt2)")
    parser.add_argument("--vocab_size", type=positive_int, help="bpe only (default 32000)")
    parser.add_argument("--compact_vocab", dest="compact_vocab", action="store_true", default=None,
                        help="keep only the ids the corpus uses (xlm-roberta-base only; its default)")
    parser.add_argument("--no_compact_vocab", dest="compact_vocab", action="store_false")
    args = parser.parse_args(argv)

    if args.language_pair != "en-fr":
        parser.error(f"--language_pair {args.language_pair}: only en-fr is supported")
    if args.source == "local" and not args.src_dir:
        parser.error("--source local needs --src_dir DIR")
    if args.src_dir and args.source != "local":
        parser.error("--src_dir is only used with --source local")
    if args.tokenizer == "bpe":
        if args.tokenizer_path:
            parser.error("--tokenizer_path does not apply to bpe: it is trained on the train split")
        args.vocab_size = args.vocab_size or 32000
    elif args.vocab_size:
        parser.error(f"--vocab_size only applies to --tokenizer bpe, not {args.tokenizer}")
    if args.compact_vocab is None:
        args.compact_vocab = args.tokenizer == "xlm-roberta-base"
    elif args.compact_vocab and args.tokenizer != "xlm-roberta-base":
        parser.error("--compact_vocab is implemented for xlm-roberta-base only")
    return args


class OneLineErrorParser(argparse.ArgumentParser):
    def error(self, message):
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def run(args):
    started = time.time()
    out_dir = Path(args.out_dir).resolve()
    # Every check that needs no reading comes before the minutes of reading and tokenizing.
    if out_dir.exists() and not out_dir.is_dir():
        raise PrepareError(f"--out_dir {args.out_dir} is an existing file, not a directory; choose another --out_dir")
    # A downloaded or bundled tokenizer is resolved first: failing there is cheap, reading is not.
    spec = None if args.tokenizer == "bpe" else load_pretrained(args)
    splits, source_meta = load_splits(args.source, args.src_dir, args.dataset, args.max_pairs,
                                      args.seed, args.heldout_pairs)
    if spec is None:
        spec = train_bpe(splits["train"], args.vocab_size)

    encoded = {name: encode_split(spec.backend, pairs, name) for name, pairs in splits.items()}
    vocab_map = None
    if args.compact_vocab:
        vocab_map = compact_vocabulary(spec, encoded)
    check_round_trip(spec, splits["valid"], encoded["valid"])

    dtype = choose_dtype(spec.vocab_size)
    rng = np.random.default_rng([args.seed, 1])  # document order; [seed, 0] drives load_splits
    arrays, split_meta = make_documents(splits, encoded, spec, args.directions, rng)
    for name, array in arrays.items():
        assert array.max() < spec.vocab_size, f"{name}: id {array.max()} >= vocab_size {spec.vocab_size}"
        assert array.max() <= np.iinfo(dtype).max, f"{name}: id {array.max()} does not fit {np.dtype(dtype).name}"
    train_ids = {lang: encoded["train"].language(lang).flat for lang in ("en", "fr")}
    meta = {
        "format_version": 1, "language_pair": args.language_pair, "directions": args.directions,
        "source": source_meta,
        "tokenizer": {"type": spec.type, "name_or_path": spec.name_or_path, "file": "tokenizer/tokenizer.json",
                      "compact": vocab_map is not None, "vocab_map": "vocab_map.npy" if vocab_map is not None else None,
                      "original_vocab_size": spec.original_vocab_size, "eos_token": spec.eos_token},
        "vocab_size": spec.vocab_size,
        "dtype": np.dtype(dtype).name,
        "special_ids": spec.special_ids,
        "splits": split_meta,
        "token_lang_counts": {lang: np.bincount(ids, minlength=spec.vocab_size).tolist()
                              for lang, ids in train_ids.items()},
    }
    words = {lang: word_counts(getattr(splits["train"], lang)) for lang in ("en", "fr")}
    write_outputs(out_dir, arrays, dtype, splits["test"], spec.backend, vocab_map, meta, words)
    print(f"vocab_size {spec.vocab_size:,} ({meta['dtype']}); train {split_meta['train']['documents']:,} documents, "
          f"{split_meta['train']['tokens']:,} tokens; val {split_meta['val']['tokens']:,} tokens")
    print(f"wrote {out_dir} in {time.time() - started:.1f} s")


# ---------------------------------------------------------------------------------------- tokenizers

@dataclass
class TokenizerSpec:
    backend: object            # tokenizers.Tokenizer, in the model's id space
    type: str                  # "xlm-roberta" | "bpe" | "gpt2"
    name_or_path: str
    special_ids: dict          # {"en", "fr", "eos"} -> id
    eos_token: str
    vocab_size: int            # every id the model can see: the backend's ids plus tags outside it
    original_vocab_size: int   # vocab_size before compaction
    tokenizer_json: dict = None  # XLM-R only: the JSON the backend was built from (compaction edits it)
    reserved_ids: list = None    # XLM-R only: its own special pieces (<s> <pad> </s> <unk> <mask>), kept by compaction


def load_pretrained(args):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    if args.tokenizer == "gpt2":
        directory = Path(args.tokenizer_path) if args.tokenizer_path else GPT2_DIR
        vocab, merges = require_file(directory / "vocab.json"), require_file(directory / "merges.txt")
        # Same as GPT-2's own tokenizer: byte-level BPE, no prefix space, so decoding is lossless.
        backend = Tokenizer(models.BPE.from_file(str(vocab), str(merges)))
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        eos = backend.token_to_id("<|endoftext|>")
        if eos is None or backend.get_vocab_size() != eos + 1:
            raise PrepareError(f"{vocab}: expected GPT-2's vocabulary ending with <|endoftext|>")
        # <en>, <fr> take the next ids (50257, 50258), inside backpack-gpt2's padded vocabulary of 50264.
        return TokenizerSpec(backend, "gpt2", str(directory), {"en": eos + 1, "fr": eos + 2, "eos": eos},
                             "<|endoftext|>", eos + 3, eos + 3)

    path = xlmr_tokenizer_file(args.tokenizer_path)
    try:
        tokenizer_json = json.loads(path.read_text(encoding="utf-8"))
        reserved = {token["content"]: token["id"] for token in tokenizer_json["added_tokens"]}
        is_xlmr = tokenizer_json["model"]["type"] == "Unigram" and "</s>" in reserved
    except (ValueError, KeyError, TypeError) as error:
        raise PrepareError(f"{path}: not a tokenizer.json ({one_line(error)})")
    if not is_xlmr:
        raise PrepareError(f"{path}: not XLM-R's tokenizer (expected a Unigram model with a </s> token)")
    xlmr_plain_text_only(tokenizer_json)
    n = len(tokenizer_json["model"]["vocab"])
    # <en>, <fr> get new ids after the last piece (250002, 250003 for xlm-roberta-base).
    return TokenizerSpec(Tokenizer.from_str(json.dumps(tokenizer_json)), "xlm-roberta",
                         args.tokenizer_path or XLMR_HUB_NAME, {"en": n, "fr": n + 1, "eos": reserved["</s>"]},
                         "</s>", n + 2, n + 2, tokenizer_json, list(reserved.values()))


def require_file(path):
    if not path.is_file():
        raise PrepareError(f"missing file {path}")
    return path


def xlmr_tokenizer_file(tokenizer_path):
    """tokenizer.json from --tokenizer_path, else from the HF cache, else downloaded from the hub."""
    if tokenizer_path:
        path = Path(tokenizer_path)
        return require_file(path / "tokenizer.json" if path.is_dir() else path)
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError
    try:
        return Path(hf_hub_download(XLMR_HUB_NAME, "tokenizer.json", local_files_only=True))
    except LocalEntryNotFoundError:
        pass  # not in the cache: download it below
    hint = f"pass --tokenizer_path DIR holding its tokenizer.json (e.g. {SHARED_XLMR_HINT})"
    require_hub(f"the {XLMR_HUB_NAME} tokenizer", hint)
    try:
        return Path(hf_hub_download(XLMR_HUB_NAME, "tokenizer.json"))
    except Exception as error:  # any hub failure ends the run with the hint
        raise PrepareError(f"could not download {XLMR_HUB_NAME}/tokenizer.json ({one_line(error)}); {hint}")


def require_hub(what, hint):
    """Fail fast, in one line, when the hub cannot be reached: the HF clients would otherwise retry
    for half a minute and print a stack of warnings. With HF_HUB_OFFLINE=1 only the cache is used."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session
    if constants.HF_HUB_OFFLINE:
        return
    try:
        get_session().head(constants.ENDPOINT, timeout=10)
    except Exception as error:  # DNS, refused connection, proxy, timeout: all mean "unreachable"
        raise PrepareError(f"cannot reach the Hugging Face hub at {constants.ENDPOINT} for {what} "
                           f"({one_line(error)}); {hint}")


def one_line(error):
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def xlmr_plain_text_only(tokenizer_json):
    """XLM-R's tokenizer.json lists <s>, <pad>, </s>, <mask> both as added tokens and as Unigram pieces
    with the best possible score, so the text "</s>" would come out as the EOS id. Drop the added tokens
    and the post-processor (we add tags ourselves) and rename those pieces with a trailing '▁': the
    Metaspace pre-tokenizer only lets '▁' through at the start of a word, so no text can match them.
    <unk> keeps its name: literal "<unk>" text encodes to it and decodes back to "<unk>"."""
    model = tokenizer_json["model"]
    for token in tokenizer_json["added_tokens"]:
        if token["id"] != model["unk_id"]:
            model["vocab"][token["id"]][0] = token["content"] + "\u2581"
    return plain_text_only(tokenizer_json)


def plain_text_only(tokenizer_json):
    tokenizer_json["added_tokens"] = []
    tokenizer_json["post_processor"] = None
    return tokenizer_json


def train_bpe(train_pairs, vocab_size):
    """Byte-level BPE trained on both languages of the train split only (valid/test never seen)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    specials = ["</s>", "<en>", "<fr>"]  # ids 0, 1, 2
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=True,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    texts = train_pairs.en + train_pairs.fr
    print(f"training byte-level BPE (vocab {vocab_size:,}) on {len(texts):,} train sentences")
    backend.train_from_iterator(texts, trainer, length=len(texts))
    backend = Tokenizer.from_str(json.dumps(plain_text_only(json.loads(backend.to_str()))))
    size = backend.get_vocab_size()
    return TokenizerSpec(backend, "bpe", f"trained: byte-level BPE, vocab_size {vocab_size}",
                         {"en": 1, "fr": 2, "eos": 0}, "</s>", size, size)


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


def check_round_trip(spec, pairs, ragged):
    """The saved tokenizer must reproduce the ids written to disk (guards compaction and the
    special-piece renaming); checked on the valid split, which is small."""
    texts = pairs.en + pairs.fr
    again = encode_texts(spec.backend, texts)
    for i, ids in enumerate(again):
        if ids != ragged.sentence(i).tolist():
            raise AssertionError(f"tokenizer does not reproduce the ids of valid sentence {texts[i]!r}")


def choose_dtype(vocab_size):
    """uint16 holds ids up to 65,535; a larger vocabulary (e.g. uncompacted XLM-R) needs uint32."""
    return np.uint16 if vocab_size <= 65_535 else np.uint32


# ---------------------------------------------------------------------------------------- corpus

@dataclass
class Pairs:
    en: list
    fr: list

    def __len__(self):
        return len(self.en)

    def select(self, index):
        return Pairs([self.en[i] for i in index], [self.fr[i] for i in index])


def load_splits(source, src_dir, dataset, max_pairs, seed, heldout_pairs):
    """{'train', 'valid', 'test'} -> Pairs, plus a description for meta.json. Deterministic given the
    arguments, so segregate_languages.py can rebuild exactly the same pairs."""
    if source == "hf":
        raw, files = read_hf(dataset)
        location = HF_DATASETS[dataset][0]
    else:
        src_dir = SAMPLE_DIR if source == "sample" else Path(src_dir).resolve()
        raw, files = read_local(src_dir)
        location = str(src_dir)
    read_counts = {name: len(pairs) for name, pairs in raw.items()}
    dropped_empty = 0
    for name in raw:
        raw[name], dropped = drop_empty(raw[name])
        dropped_empty += dropped
    for name, pairs in raw.items():
        if not pairs:
            raise PrepareError(f"corpus empty after filtering: no {name} pair with both sides non-empty "
                               f"in {', '.join(files[name])} ({location})")
    if "train" not in raw:
        raise PrepareError(f"no training pairs in {location}: only {', '.join(sorted(raw))}")

    rng = np.random.default_rng([seed, 0])
    heldout_from = "files"
    missing = [name for name in ("valid", "test") if name not in raw]
    if missing:
        heldout_from = f"{', '.join(missing)} split off the train pairs by seed"
        raw.update(split_off(raw["train"], missing, heldout_pairs, rng))

    train, dropped_overlap = drop_heldout_overlap(raw["train"], [raw["valid"], raw["test"]])
    if not len(train):
        raise PrepareError("corpus empty after filtering: every train pair repeats a valid/test sentence")
    if max_pairs and len(train) > max_pairs:
        train = train.select(np.sort(rng.permutation(len(train))[:max_pairs]))

    splits = {"train": train, "valid": raw["valid"], "test": raw["test"]}
    source_meta = {"kind": source, "dataset": HF_DATASETS[dataset][0] if source == "hf" else None,
                   "src_dir": None if source == "hf" else str(src_dir), "files": files,
                   "max_pairs": max_pairs, "seed": seed, "heldout_pairs": heldout_pairs,
                   "heldout_from": heldout_from, "pairs_read": read_counts, "dropped_empty": dropped_empty,
                   "dropped_overlap": dropped_overlap, "pairs": {k: len(v) for k, v in splits.items()}}
    print(f"pairs: train {len(train):,} (dropped {dropped_overlap:,} repeating a valid/test sentence, "
          f"{dropped_empty:,} with an empty side), valid {len(raw['valid']):,}, test {len(raw['test']):,}")
    return splits, source_meta


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


def drop_empty(pairs):
    """Strip surrounding whitespace (XLM-R would not give it back) and drop pairs with an empty side."""
    en = [text.strip() for text in pairs.en]
    fr = [text.strip() for text in pairs.fr]
    keep = [i for i in range(len(en)) if en[i] and fr[i]]
    return Pairs(en, fr).select(keep), len(en) - len(keep)


def split_off(pool, names, heldout_pairs, rng):
    """Held-out splits for a source that has none: random pairs, by seed, kept in corpus order. Returns
    them and the remaining pairs as "train" (duplicates of a held-out pair are dropped from it later)."""
    n = min(heldout_pairs, len(pool) // 10)
    if n == 0:
        raise PrepareError(f"only {len(pool)} pairs: too few to split off {' and '.join(names)}; "
                           "provide valid/test files or more pairs")
    order = rng.permutation(len(pool))
    out = {name: pool.select(np.sort(order[k * n:(k + 1) * n])) for k, name in enumerate(names)}
    out["train"] = pool.select(np.sort(order[len(names) * n:]))
    return out


def drop_heldout_overlap(train, heldout):
    """Drop every train pair whose English or French side equals a valid/test side (boilerplate such as
    'The debate is closed.' would otherwise be seen in training and then scored as held-out)."""
    en = {text for pairs in heldout for text in pairs.en}
    fr = {text for pairs in heldout for text in pairs.fr}
    keep = [i for i in range(len(train)) if train.en[i] not in en and train.fr[i] not in fr]
    return train.select(keep), len(train) - len(keep)


# ---------------------------------------------------------------------------------------- token ids

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


def encode_split(backend, pairs, name):
    texts = pairs.en + pairs.fr
    flats, lens = [], []
    # disable=None: a bar on a terminal only; in a log file its carriage returns make one endless line
    with tqdm(total=len(texts), desc=f"tokenize {name}", unit=" sentences", mininterval=1.0, disable=None) as bar:
        for begin in range(0, len(texts), ENCODE_CHUNK):
            ids = encode_texts(backend, texts[begin:begin + ENCODE_CHUNK])
            chunk_lens = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
            flats.append(np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32,
                                     count=int(chunk_lens.sum())))
            lens.append(chunk_lens)
            bar.update(len(ids))
    return Ragged(np.concatenate(flats), np.concatenate(lens))


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


def word_counts(texts):
    """[[word, count], ...] most frequent first, for words seen at least MIN_WORD_COUNT times.

    A word is a lower-cased run of letters, possibly joined by hyphens or apostrophes
    ("aujourd'hui", "vice-président"); a French elided article or pronoun is split off its host
    ("l'homme" -> "homme"), as dictionary entries such as MUSE's are written."""
    counts = Counter()
    for start in range(0, len(texts), ENCODE_CHUNK):  # one regex pass per chunk of sentences
        counts.update(WORD.findall("\n".join(texts[start:start + ENCODE_CHUNK]).lower()))
    return [[w, c] for w, c in counts.most_common() if c >= MIN_WORD_COUNT]


def utf8_bytes(texts):
    return sum(len(text.encode("utf-8")) for text in texts)


# ---------------------------------------------------------------------------------------- output

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


if __name__ == "__main__":
    main()
