"""The tokenizer, in the model's id space, with the ids of the <en>/<fr> tags and EOS: GPT-2's bundled
byte-level BPE, XLM-R's tokenizer.json (from --tokenizer_path, the HF cache or the hub), or a
byte-level BPE trained here on the train split. compact_vocab.py may shrink XLM-R's afterwards."""
import json
from dataclasses import dataclass
from pathlib import Path

from common import REPO, PrepareError, one_line, require_file, require_hub

GPT2_DIR = REPO / "data" / "tokenizers" / "gpt2"
SHARED_XLMR_HINT = "../shared/data/tokenizers/xlm-roberta"
XLMR_HUB_NAME = "xlm-roberta-base"
TOKENIZERS = ["bpe", "gpt2", "xlm-roberta-base"]


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
    """--tokenizer gpt2 or xlm-roberta-base, from --tokenizer_path or its default place."""
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
