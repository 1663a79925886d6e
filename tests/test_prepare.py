"""data/europarl/prepare.py and segregate_languages.py: outputs, leakage, dtypes, compaction, bad input."""
import gzip
import hashlib
import json
import shutil
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pytest

from conftest import REPO, XLMR_DIR, run_prepare
from tokenizer import load_tokenizer

sys.path.insert(0, str(REPO / "data" / "europarl"))
from documents import choose_dtype  # noqa: E402
from split import load_splits  # noqa: E402

BINS = ["train.bin", "val.bin", "val_en.bin", "val_fr.bin", "test_en.bin", "test_fr.bin"]


def documents(data_dir, name, tok):
    """The documents of a .bin file as tuples of ids (each ends with EOS)."""
    ids = np.fromfile(data_dir / name, dtype=tok.meta["dtype"])
    ends = np.flatnonzero(ids == tok.eos_id) + 1
    assert ends[-1] == len(ids), f"{name} does not end with EOS"
    return [tuple(doc.tolist()) for doc in np.split(ids, ends[:-1])]


def splits_of(data_dir):
    """The sentence pairs a data dir was made from, rebuilt from its meta.json."""
    source = json.loads((data_dir / "meta.json").read_text())["source"]
    splits, _ = load_splits(source["kind"], source["src_dir"], None, source["max_pairs"], source["seed"],
                            source["heldout_pairs"])
    return splits


def write_pairs(directory, name, en, fr):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.en").write_text("".join(line + "\n" for line in en), encoding="utf-8")
    (directory / f"{name}.fr").write_text("".join(line + "\n" for line in fr), encoding="utf-8")


def numbered_pairs(n, start=0):
    return ([f"English sentence number {i}." for i in range(start, start + n)],
            [f"Phrase française numéro {i}." for i in range(start, start + n)])


def test_bpe_sample_outputs(sample_data_dir):
    meta = json.loads((sample_data_dir / "meta.json").read_text())
    tok = load_tokenizer(sample_data_dir)
    assert meta["tokenizer"]["type"] == "bpe" and meta["vocab_size"] == 4096 and meta["dtype"] == "uint16"
    assert meta["special_ids"] == {"eos": 0, "en": 1, "fr": 2}
    assert meta["splits"]["train"]["pairs"] == 4000 and meta["splits"]["train"]["documents"] == 8000
    for name in BINS:
        ids = np.fromfile(sample_data_dir / name, dtype=np.uint16)
        assert len(ids) == meta["splits"][name[:-4]]["tokens"]
        assert ids.max() < meta["vocab_size"]
    for lang in ("en", "fr"):
        assert meta["splits"][f"val_{lang}"]["sentences"] == 1000
        text = (REPO / "data" / "europarl" / "sample" / f"test.{lang}").read_text(encoding="utf-8")
        assert (sample_data_dir / f"test.{lang}").read_text(encoding="utf-8") == text
        assert meta["splits"][f"test_{lang}"]["bytes"] == len(text.encode("utf-8")) - text.count("\n")
    counts = tok.token_lang_counts
    train_ids = np.fromfile(sample_data_dir / "train.bin", dtype=np.uint16)
    # Each pair appears in two documents (both directions); the counts see each pair once.
    assert 2 * counts.sum() == len(train_ids) - 3 * meta["splits"]["train"]["documents"]
    assert counts[tok.encode_word("the")[0], 0] > 100 * counts[tok.encode_word("the")[0], 1]


def test_bins_decode_back_to_the_source_documents(sample_data_dir):
    tok = load_tokenizer(sample_data_dir)
    splits = splits_of(sample_data_dir)
    for split, name in (("train", "train.bin"), ("valid", "val.bin")):
        pairs = splits[split]
        expected = Counter(tuple(tok.encode_document(en, fr)) for en, fr in zip(pairs.en, pairs.fr))
        expected.update(tuple(tok.encode_document(fr, en, "fr", "en")) for en, fr in zip(pairs.en, pairs.fr))
        assert Counter(documents(sample_data_dir, name, tok)) == expected
    for split, prefix in (("valid", "val"), ("test", "test")):
        for lang in ("en", "fr"):
            texts = getattr(splits[split], lang)
            docs = documents(sample_data_dir, f"{prefix}_{lang}.bin", tok)
            assert docs == [tuple(tok.encode_monolingual(text, lang)) for text in texts]
            assert [tok.decode(doc) for doc in docs] == texts


def test_no_valid_or_test_sentence_in_train(sample_data_dir, tmp_path):
    splits = splits_of(sample_data_dir)
    heldout = set(splits["valid"].en + splits["valid"].fr + splits["test"].en + splits["test"].fr)
    assert not heldout & set(splits["train"].en + splits["train"].fr)

    # A source whose train repeats held-out sentences on either side: those pairs are dropped.
    en, fr = numbered_pairs(40)
    write_pairs(tmp_path / "src", "valid", en[:5], fr[:5])
    write_pairs(tmp_path / "src", "test", en[5:10], fr[5:10])
    train_en, train_fr = numbered_pairs(30, start=100)
    train_en[:3] = en[:3]          # English side equals a valid sentence
    train_fr[3:6] = fr[6:9]        # French side equals a test sentence
    write_pairs(tmp_path / "src", "train", train_en, train_fr)
    out = tmp_path / "out"
    result = run_prepare("--source", "local", "--src_dir", tmp_path / "src", "--tokenizer", "gpt2", "--out_dir", out)
    assert result.returncode == 0, result.stderr
    meta = json.loads((out / "meta.json").read_text())
    assert meta["source"]["dropped_overlap"] == 6 and meta["splits"]["train"]["pairs"] == 24
    tok = load_tokenizer(out)
    train_text = {tok.decode(doc) for doc in documents(out, "train.bin", tok)}
    assert not any(sentence in text for text in train_text for sentence in en[:10] + fr[:10])


def test_heldout_split_by_seed_when_source_has_none(tmp_path):
    write_pairs(tmp_path / "src", "europarl-v7.fr-en", *numbered_pairs(300))

    def prepare(seed, out):
        result = run_prepare("--source", "local", "--src_dir", tmp_path / "src", "--tokenizer", "gpt2",
                             "--heldout_pairs", "20", "--seed", seed, "--out_dir", out)
        assert result.returncode == 0, result.stderr
        return json.loads((out / "meta.json").read_text()), (out / "test.en").read_text()

    meta, test_a = prepare(1, tmp_path / "a")
    assert meta["source"]["pairs"] == {"train": 260, "valid": 20, "test": 20}
    assert meta["source"]["heldout_from"].startswith("valid, test split off")
    assert prepare(1, tmp_path / "b")[1] == test_a
    assert prepare(2, tmp_path / "c")[1] != test_a


def test_directions_en_fr_only(gpt2_data_dir, tmp_path):
    out = tmp_path / "out"
    result = run_prepare("--source", "sample", "--tokenizer", "gpt2", "--max_pairs", "50", "--directions", "en-fr",
                         "--out_dir", out)
    assert result.returncode == 0, result.stderr
    tok = load_tokenizer(out)
    docs = documents(out, "train.bin", tok)
    assert len(docs) == 50 and all(doc[0] == tok.lang_id("en") for doc in docs)


def test_dtype_follows_vocab_size():
    assert choose_dtype(65_535) is np.uint16
    assert choose_dtype(65_536) is np.uint32


def test_xlmr_compaction_round_trips(xlmr_data_dir):
    import tokenizers
    tok = load_tokenizer(xlmr_data_dir)
    meta = tok.meta
    original = tokenizers.Tokenizer.from_file(str(XLMR_DIR / "tokenizer.json"))
    kept = tok.vocab_map
    assert meta["tokenizer"]["compact"] and meta["tokenizer"]["original_vocab_size"] == 250_004
    assert len(kept) == tok.vocab_size < 30_000 and meta["dtype"] == "uint16"
    assert np.all(np.diff(kept) > 0)
    assert kept[[tok.lang_id("en"), tok.lang_id("fr"), tok.eos_id]].tolist() == [250_002, 250_003, 2]
    splits = splits_of(xlmr_data_dir)
    texts = splits["valid"].en + splits["valid"].fr + splits["train"].en[:300] + splits["train"].fr[:300]
    for text, ids in zip(texts, tok.encode_batch(texts)):
        original_ids = original.encode(text, add_special_tokens=False).ids
        assert kept[ids].tolist() == original_ids
        assert tok.decode(ids) == original.decode(original_ids)
    docs = documents(xlmr_data_dir, "val_fr.bin", tok)
    assert [tok.decode(doc) for doc in docs] == [original.decode(original.encode(t).ids, skip_special_tokens=True)
                                                 for t in splits["valid"].fr]


def test_xlmr_without_compaction_needs_uint32_and_replaces_old_outputs(xlmr_data_dir, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(xlmr_data_dir, out)  # an earlier, compacted run with a vocab_map.npy
    result = run_prepare("--source", "sample", "--tokenizer", "xlm-roberta-base", "--tokenizer_path", XLMR_DIR,
                         "--max_pairs", "200", "--no_compact_vocab", "--out_dir", out)
    assert result.returncode == 0, result.stderr
    tok = load_tokenizer(out)
    assert (tok.vocab_size, tok.meta["dtype"], tok.vocab_map) == (250_004, "uint32", None)
    assert not (out / "vocab_map.npy").exists()
    assert (tok.lang_id("en"), tok.lang_id("fr"), tok.eos_id) == (250_002, 250_003, 2)
    val = np.fromfile(out / "val.bin", dtype=np.uint32)
    assert val.max() == 250_003 and len(val) == tok.meta["splits"]["val"]["tokens"]
    assert documents(out, "val_en.bin", tok)[0] == tuple(tok.encode_monolingual(splits_of(out)["valid"].en[0], "en"))


def test_segregate_languages(sample_data_dir, tmp_path):
    data_dir = tmp_path / "data"
    shutil.copytree(sample_data_dir, data_dir)
    script = REPO / "data" / "europarl" / "segregate_languages.py"
    result = subprocess.run([sys.executable, str(script), "--language_pair", "en-fr", "--data_dir", str(data_dir),
                             "--create_alignment"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    splits = splits_of(sample_data_dir)
    en = (data_dir / "en.txt").read_text(encoding="utf-8").splitlines()
    fr = (data_dir / "fr.txt").read_text(encoding="utf-8").splitlines()
    rows = [line.split("\t") for line in (data_dir / "alignment.tsv").read_text(encoding="utf-8").split("\n")[:-1]]
    assert rows[0] == ["pair_id", "en", "fr", "split"] and len(rows) - 1 == len(en) == len(fr) == 6000
    assert en[0] == "<en> " + splits["train"].en[0] and fr[-1] == "<fr> " + splits["test"].fr[-1]
    assert rows[4001] == ["4000", splits["valid"].en[0], splits["valid"].fr[0], "valid"]
    assert Counter(row[3] for row in rows[1:]) == {"train": 4000, "valid": 1000, "test": 1000}


# ------------------------------------------------------------------------------------------ bad input

def bad_line_counts(src):
    write_pairs(src, "train", ["one", "two", "three"], ["un", "deux"])


def missing_french(src):
    write_pairs(src, "train", ["one"], ["un"])
    (src / "train.fr").unlink()


def only_blank_lines(src):
    write_pairs(src, "train", ["", "  "], ["", "x"])


def undecodable(src):
    write_pairs(src, "train", ["one", "two", "three"], ["un", "deux", "trois"])
    (src / "train.fr").write_bytes(b"un\ndeux \xff\xfe\ntrois\n")


def broken_gzip(src):
    write_pairs(src, "train", ["one"], ["un"])
    (src / "train.en").unlink()
    (src / "train.en.gz").write_bytes(gzip.compress(b"one\n")[:-12])


LOCAL = ["--source", "local", "--src_dir", "{tmp}/src", "--tokenizer", "gpt2"]
UNREACHABLE_HUB = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "0"}  # port 9: connection refused
BAD_INPUTS = {
    # case: (make the source dir, arguments, environment, expected words in the one-line error)
    "missing dir": (None, LOCAL, {}, "missing directory"),
    "missing file": (missing_french, LOCAL, {}, "missing file"),
    "line counts differ": (bad_line_counts, LOCAL, {}, "has 3 lines but"),
    "empty after filtering": (only_blank_lines, LOCAL, {}, "corpus empty after filtering"),
    "undecodable bytes": (undecodable, LOCAL, {}, "train.fr: line 2: undecodable bytes"),
    "broken gzip": (broken_gzip, LOCAL, {}, "train.en.gz: cannot read"),
    "unknown tokenizer": (bad_line_counts, LOCAL + ["--tokenizer", "sentencepiece"], {},
                          "invalid choice: 'sentencepiece'"),
    "missing tokenizer file": (bad_line_counts, LOCAL + ["--tokenizer", "xlm-roberta-base",
                                                         "--tokenizer_path", "{tmp}"], {}, "missing file"),
    "hub unreachable (dataset)": (None, ["--source", "hf", "--tokenizer", "gpt2"], UNREACHABLE_HUB,
                                  "use --source local"),
    "hub unreachable (tokenizer)": (None, ["--source", "sample", "--tokenizer", "xlm-roberta-base"],
                                    {**UNREACHABLE_HUB, "HF_HOME": "{tmp}/hf"}, "pass --tokenizer_path"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_fails_in_one_line_and_writes_nothing(case, tmp_path):
    make_source, args, env, expected = BAD_INPUTS[case]
    if make_source:
        make_source(tmp_path / "src")
    out = tmp_path / "out"
    result = run_prepare(*[a.format(tmp=tmp_path) for a in args], "--out_dir", out,
                         env={k: v.format(tmp=tmp_path) for k, v in env.items()})
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert not out.exists()
    assert not list(tmp_path.glob(".out.tmp-*"))


def test_out_dir_that_is_a_file_fails_before_any_work(tmp_path):
    out = tmp_path / "out"
    out.write_text("my notes")
    started = time.time()
    result = run_prepare("--source", "sample", "--tokenizer", "bpe", "--vocab_size", "4096", "--out_dir", out)
    assert result.returncode == 1 and out.read_text() == "my notes"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "is an existing file" in lines[0], result.stderr
    assert "tokenize" not in result.stderr and time.time() - started < 20  # no BPE training, no encoding
    assert not list(tmp_path.glob(".out.tmp-*"))


def test_no_progress_bar_when_the_output_is_not_a_terminal(tmp_path):
    """Redirected to a file (as quickstart.sh users and nohup runs do), tqdm's carriage-return
    updates would pile up into one endless line: every line printed must be a short, whole line."""
    result = run_prepare("--source", "sample", "--tokenizer", "gpt2", "--max_pairs", "300", "--out_dir", tmp_path / "o")
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "\r" not in output and "tokenize" not in output
    assert all(len(line) < 300 for line in output.splitlines()) and "wrote" in result.stdout


def test_failed_run_leaves_earlier_outputs_untouched(sample_data_dir, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(sample_data_dir, out)

    def digest():
        return {p.relative_to(out): hashlib.md5(p.read_bytes()).hexdigest() for p in out.rglob("*") if p.is_file()}

    before = digest()
    undecodable(tmp_path / "src")
    result = run_prepare("--source", "local", "--src_dir", tmp_path / "src", "--tokenizer", "gpt2", "--out_dir", out)
    assert result.returncode == 1 and "undecodable" in result.stderr
    assert digest() == before
    assert not list(tmp_path.glob(".out.tmp-*"))


def test_hf_source_reads_translation_rows(monkeypatch):
    """--source hf offline: datasets.load_dataset replaced by an in-memory DatasetDict of the hub's
    shape ({"translation": {"en", "fr"}} rows; opus-100 has train/validation/test splits)."""
    import datasets
    import fetch
    en, fr = numbered_pairs(40)
    rows = [{"translation": {"en": e, "fr": f}} for e, f in zip(en, fr)]
    fake = datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:30]),
                                 "validation": datasets.Dataset.from_list(rows[30:35]),
                                 "test": datasets.Dataset.from_list(rows[35:])})
    calls = []
    monkeypatch.setattr(fetch, "require_hub", lambda what, hint: None)
    monkeypatch.setattr(datasets, "load_dataset", lambda name, config: calls.append((name, config)) or fake)
    splits, source = load_splits("hf", None, "opus100", None, 0, 3000)
    assert calls == [("Helsinki-NLP/opus-100", "en-fr")] and source["dataset"] == "Helsinki-NLP/opus-100"
    assert (splits["train"].en, splits["valid"].fr, splits["test"].en) == (en[:30], fr[30:35], en[35:])
