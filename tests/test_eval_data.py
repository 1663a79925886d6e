"""Evaluation-data readers: the bundled files parse with their known counts, bad files fail loudly."""
import hashlib
import re

import pytest

from experiments import eval_data as D


def test_bundled_files_match_provenance_md5():
    eval_dir = D.REPO_ROOT / "data" / "eval"
    for name, rel in D.DEFAULT_PATHS.items():
        path = D.default_path(name)
        provenance = (path.parent / "PROVENANCE.md").read_text(encoding="utf-8")
        md5 = re.search(rf"^\| {re.escape(path.name)} \|.*\| ([0-9a-f]{{32}}) \|$", provenance, re.M)
        assert md5, f"{path.name} not listed in {path.parent}/PROVENANCE.md"
        assert hashlib.md5(path.read_bytes()).hexdigest() == md5.group(1), rel
    total = sum(p.stat().st_size for p in eval_dir.rglob("*") if p.is_file())
    assert total < 2_000_000


def test_multisimlex_and_simlex_counts():
    en = D.read_word_pairs(D.default_path("multisimlex_en"))
    fr = D.read_word_pairs(D.default_path("multisimlex_fr"))
    assert len(en) == 1888 and len(fr) == 1888
    assert en[0] == ("arm", "muscle", pytest.approx(0.692308))
    assert fr[1] == ("démocratie", "monarchie", pytest.approx(2.7))
    assert ("dîner", "petit déjeuner", pytest.approx(3.4)) in fr  # multi-word entries kept whole
    simlex = D.read_word_pairs(D.default_path("simlex999"))
    assert len(simlex) == 999 and simlex[0] == ("old", "new", pytest.approx(1.58))


def test_muse_and_tatoeba_counts():
    en_fr = D.read_dictionary(D.default_path("muse_en_fr"))
    assert len(en_fr) == 1500 and sum(map(len, en_fr.values())) == 2943
    assert {"torpille", "torpilles"} <= en_fr["torpedo"]
    assert len(D.read_dictionary(D.default_path("muse_fr_en"))) == 1500
    en, fr = D.read_parallel(D.default_path("tatoeba_en"), D.default_path("tatoeba_fr"))
    assert len(en) == len(fr) == 1000 and en[1] == "We agree with you."
    en10, fr10 = D.read_parallel(D.default_path("tatoeba_en"), D.default_path("tatoeba_fr"), limit=10)
    assert en10 == en[:10] and fr10 == fr[:10]


def test_cross_lingual_rule_on_bundled_file():
    path = D.default_path("xling_en_fr")
    rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()[1:]]
    for threshold in (0.0, 0.5, 1.0, 2.0, 6.0):
        expected = [(r[3], r[4], float(r[7])) for r in rows if abs(float(r[5]) - float(r[6])) <= threshold + 1e-9]
        assert D.cross_lingual_pairs(path, threshold) == expected
    assert len(D.cross_lingual_pairs(path)) == 1516  # 758 concept pairs x 2 directions
    assert len(D.cross_lingual_pairs(path, 6.0)) == 3776


def test_cross_lingual_rule_hand_made(tmp_path):
    header = "id\tpos\tdirection\teng_word\tfra_word\teng_score\tfra_score\tmean_score\tabs_diff\n"
    rows = ["1\tN\teng1-fra2\tcat\tchien\t1.0\t2.0\t1.5\t1.0\n",   # |diff| = 1.0 -> kept at 1.0
            "1\tN\tfra1-eng2\tdog\tchat\t1.0\t2.0\t1.5\t1.0\n",
            "2\tV\teng1-fra2\trun\tmarcher\t4.0\t2.5\t3.25\t1.5\n",  # 1.5 -> dropped at 1.0
            "3\tA\teng1-fra2\tbig\tgrand\t5.0\t5.5\t5.25\t0.5\n"]   # 0.5 -> kept
    path = tmp_path / "x.tsv"
    path.write_text(header + "".join(rows), encoding="utf-8")
    assert D.cross_lingual_pairs(path, 1.0) == [("cat", "chien", 1.5), ("dog", "chat", 1.5), ("big", "grand", 5.25)]
    assert D.cross_lingual_pairs(path, 0.5) == [("big", "grand", 5.25)]
    path.write_text(header + rows[0].replace("\t1.5\t", "\t1.7\t"), encoding="utf-8")
    with pytest.raises(ValueError, match="disagree"):
        D.cross_lingual_pairs(path)
    path.write_text("word1\tword2\tscore\n", encoding="utf-8")
    with pytest.raises(ValueError, match="expected the header"):
        D.cross_lingual_pairs(path)


@pytest.mark.parametrize("text, expected", [
    ("cat  dog 7.5\n\nsun moon 3\n", [("cat", "dog", 7.5), ("sun", "moon", 3.0)]),  # whitespace, blank line
    ("w1\tw2\tsim\ncat\tdog\t1\n", [("cat", "dog", 1.0)]),                          # unnamed header skipped
    ("score\tword2\tword1\n2.5\tb\ta\n", [("a", "b", 2.5)]),                         # named columns
])
def test_read_word_pairs_formats(tmp_path, text, expected):
    path = tmp_path / "pairs.txt"
    path.write_text(text, encoding="utf-8")
    assert D.read_word_pairs(path) == expected


@pytest.mark.parametrize("text, message", [
    ("cat dog 1\nsun moon high\n", r"pairs\.txt:2: score 'high'"),
    ("cat dog 1\nsun\n", r"pairs\.txt:2: expected `word1 word2 score`"),
    ("cat dog nan\n", r"pairs\.txt:1: score 'nan'"),
    ("\n", "empty"),
])
def test_read_word_pairs_bad_files(tmp_path, text, message):
    path = tmp_path / "pairs.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        D.read_word_pairs(path)


def test_missing_files_name_the_path(tmp_path, monkeypatch):
    missing = tmp_path / "nope" / "MSL_XXX.tsv"
    for reader in (D.read_word_pairs, D.cross_lingual_pairs, D.read_dictionary):
        with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
            reader(missing)
    # a file that is not one of the bundled copies gets no hint to restore data/eval (newstest2014 is not there)
    with pytest.raises(FileNotFoundError) as other:
        D.read_parallel(missing, D.default_path("tatoeba_fr"))
    assert "data/eval" not in str(other.value)
    # a bundled copy that went missing says how to get it back (a repository root without its data/eval here)
    monkeypatch.setattr(D, "REPO_ROOT", tmp_path)
    with pytest.raises(FileNotFoundError, match="git checkout data/eval"):
        D.read_word_pairs(D.default_path("simlex999"))
    with pytest.raises(KeyError):
        D.default_path("wordsim353")


def test_bad_dictionary_and_parallel_files(tmp_path):
    bad_dict = tmp_path / "d.txt"
    bad_dict.write_text("chat cat\nchien\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"d\.txt:2"):
        D.read_dictionary(bad_dict)
    src, tgt = tmp_path / "a.en", tmp_path / "a.fr"
    src.write_text("one\ntwo\nthree\n", encoding="utf-8")
    tgt.write_text("un\ndeux\n", encoding="utf-8")
    with pytest.raises(ValueError, match="3 lines.*has 2"):
        D.read_parallel(src, tgt)
    tgt.write_text("un\n \ntrois\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"a\.fr:2: empty line"):
        D.read_parallel(src, tgt)
    tgt.write_bytes(b"un\ndeux\ntr\xffis\n")
    with pytest.raises(ValueError, match="not valid UTF-8"):
        D.read_parallel(src, tgt)


# Real files exported from spreadsheets are messier than the bundled ones: doubled tabs (empty
# columns) between fields. A run of tabs is one separator; multi-word entries stay whole.
@pytest.mark.parametrize("text, expected", [
    ("old\t\tnew\t\t1.58\n", [("old", "new", 1.58)]),                                    # SimLex-999 layout
    ("word1\tword2\tPOS\tSimLex999\nold\t\tnew\tA\t\t1.58\n", [("old", "new", 1.58)]),   # its full header
    ("id\tword1\tword2\tpos\tscore\n1\tarm\t\tmuscle\tN\t0.692308\n",                    # Multi-SimLex layout
     [("arm", "muscle", 0.692308)]),
    ("dîner\t\tpetit déjeuner\t\t3.4\n", [("dîner", "petit déjeuner", 3.4)]),           # multi-word entry kept
    ("cat\t \tdog\t1\n", [("cat", "dog", 1.0)]),                                         # a blank column too
])
def test_read_word_pairs_doubled_tabs(tmp_path, text, expected):
    path = tmp_path / "pairs.tsv"
    path.write_text(text, encoding="utf-8")
    assert D.read_word_pairs(path) == [(w1, w2, pytest.approx(s)) for w1, w2, s in expected]


@pytest.mark.parametrize("text, message", [
    ("old\t\t\t1.58\n", r"pairs\.tsv:1: expected `word1 word2 score`, got 2"),            # a word really missing
    # word1 missing: without the header's column count, 'muscle' would be read as word1 and '0.69' as word2
    ("word1\tword2\tscore\tid\tpos\n\tmuscle\t0.69\t1\tN\n", r"pairs\.tsv:2: 4 fields, the header has 5"),
    ("old\t\tnew\t\t1.58\nsmart\t\tintelligent\t\tvery\n", r"pairs\.tsv:2: score 'very'"),
])
def test_read_word_pairs_still_refuses_malformed_tab_lines(tmp_path, text, message):
    path = tmp_path / "pairs.tsv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(D.DataError, match=message):
        D.read_word_pairs(path)
