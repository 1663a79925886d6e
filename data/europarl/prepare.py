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
import sys
import time
from pathlib import Path

import numpy as np

# The steps, one module each. run() below takes them in this order (but loads a pretrained tokenizer
# first: failing there is cheap, reading is not): fetch.py reads the raw pairs and split.py makes
# train/valid/test of them (both in load_splits); build_tokenizer.py loads or trains the tokenizer;
# documents.py tokenizes every sentence (compact_vocab.py then shrinks XLM-R's ids) and assembles the
# documents; write.py writes the outputs. common.py holds what they share.
from build_tokenizer import TOKENIZERS, load_pretrained, train_bpe
from common import REPO, OneLineErrorParser, PrepareError
from compact_vocab import compact_vocabulary
from documents import check_round_trip, choose_dtype, encode_split, make_documents, text_encoder
from fetch import HF_DATASETS
from split import load_splits
from write import word_counts, write_outputs


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
    # fetch.py + split.py: the train / valid / test pairs
    splits, source_meta = load_splits(args.source, args.src_dir, args.dataset, args.max_pairs,
                                      args.seed, args.heldout_pairs)
    if spec is None:
        spec = train_bpe(splits["train"], args.vocab_size)

    # Each sentence is tokenized once; compaction (XLM-R) renumbers those ids, then they are checked
    encoder = text_encoder(spec.backend, spec.type)  # tiktoken for GPT-2
    encoded = {name: encode_split(encoder, pairs, name) for name, pairs in splits.items()}
    vocab_map = None
    if args.compact_vocab:
        vocab_map = compact_vocabulary(spec, encoded)
    check_round_trip(spec, splits["valid"], encoded["valid"])

    # The documents of the .bin files, tags and EOS inserted as ids
    dtype = choose_dtype(spec.vocab_size)
    rng = np.random.default_rng([args.seed, 1])  # document order; [seed, 0] drives load_splits
    arrays, split_meta = make_documents(splits, encoded, spec, args.directions, rng)
    for name, array in arrays.items():
        assert array.max() < spec.vocab_size, f"{name}: id {array.max()} >= vocab_size {spec.vocab_size}"
        assert array.max() <= np.iinfo(dtype).max, f"{name}: id {array.max()} does not fit {np.dtype(dtype).name}"
    # meta.json (read back by tokenizer.py), words.json and the .bin files, written all at once
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


if __name__ == "__main__":
    main()
