"""Readers on the real STS-B and SICK files, and on small files that break each rule."""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from sbert.data.readers import (
    FORMATS,
    Pair,
    PairSet,
    detect_format,
    read_pairs,
    read_sentences,
    read_tsv_pairs,
)
from sbert.data.specs import read_spec
from sbert.errors import ConfigError, DataError

DATA = Path(__file__).resolve().parents[2] / "data"
STS_DEV = DATA / "stsbenchmark" / "sts-dev.csv"
STS_TRAIN = DATA / "stsbenchmark" / "sts-train.csv"
SICK = DATA / "sick" / "SICK_train_trial.txt"
NLI = ("entailment", "neutral", "contradiction")
SICK_HEADER = (
    "pair_ID\tsentence_A\tsentence_B\tentailment_label\trelatedness_score\tentailment_AB\t"
    "entailment_BA\tsentence_A_original\tsentence_B_original\tsentence_A_dataset\t"
    "sentence_B_dataset\tSemEval_set"
)


def sick_row(pid: int, a: str, b: str, label: str, score: str, part: str = "TRAIN") -> str:
    return "\t".join(
        [str(pid), a, b, label, score, "A_neutral_B", "B_neutral_A", a, b, "F", "F", part]
    )


def nli_row(a: str, b: str, label: str) -> str:
    return json.dumps({"sentence1": a, "sentence2": b, "gold_label": label, "pairID": "x"})


def write(tmp_path: Path, content: str | bytes, name: str = "f.txt") -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def data_error(path: Path, **kw) -> DataError:
    with pytest.raises(DataError) as info:
        read_pairs(path, **kw)
    assert info.value.path == str(path)
    return info.value


# --- the real files ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def sts_dev() -> PairSet:
    return read_pairs(STS_DEV)


@pytest.fixture(scope="module")
def sick() -> PairSet:
    return read_pairs(SICK)


def test_sts_dev_counts_and_rows(sts_dev):
    assert (sts_dev.format, len(sts_dev.pairs), sts_dev.score_range) == ("sts", 1500, (0, 5))
    assert sts_dev.pairs[0] == Pair(
        "A man with a hard hat is dancing.", "A man wearing a hard hat is dancing.", None, 5.0, 1
    )
    # A sentence with `"` characters: csv-style quoting would have mangled it.
    row = sts_dev.pairs[267]
    assert row.line == 268 and row.score == 4.2
    assert row.a == "A woman posing by a pillar with a U2 sign."
    assert row.b == 'a woman is standing by a pillar where "u2" is written.'
    # 9-field lines (two source columns) keep the sentences, not the sources.
    assert sts_dev.pairs[1478].line == 1479
    assert "Europe Media Monitor" not in sts_dev.pairs[1478].b
    assert [p.line for p in sts_dev.pairs] == list(range(1, 1501))
    assert sts_dev.has_scores and not sts_dev.has_labels and sts_dev.label_names == ()
    assert min(p.score for p in sts_dev.pairs) == 0.0 and max(p.score for p in sts_dev.pairs) == 5.0
    assert sts_dev.skipped == 0 and sts_dev.repaired == 0
    assert sts_dev.normalized_score(sts_dev.pairs[267]) == pytest.approx(4.2 / 5)


def test_sts_train_counts_and_the_control_character_row():
    train = read_pairs(STS_TRAIN)
    assert (len(train.pairs), train.score_range) == (5749, (0, 5))
    quoted = train.pairs[1523]
    assert quoted.line == 1524 and quoted.a == 'A dog in a "superman" shirt sleeps on a blanket.'
    # Line 2919 has U+0012 for an apostrophe: replaced by a space and counted, not rejected.
    assert train.repaired == 1
    assert train.pairs[2918].line == 2919
    assert train.pairs[2918].a.startswith("Treasury s long-range plan")
    assert all(not any(ord(c) < 32 for c in p.a + p.b) for p in train.pairs)


def test_sick_counts_labels_scores(sick):
    assert (sick.format, len(sick.pairs), sick.score_range) == ("sick", 4934, (1, 5))
    assert sick.label_names == ("contradiction", "entailment", "neutral")
    assert Counter(p.label for p in sick.pairs) == {
        "neutral": 2805,
        "entailment": 1417,
        "contradiction": 712,
    }
    assert sick.pairs[0] == Pair(
        "A group of kids is playing in a yard and an old man is standing in the background",
        "A group of boys in a yard is playing and a man is standing in the background",
        "neutral",
        4.5,
        2,
    )
    assert sick.has_scores and sick.has_labels
    assert min(p.score for p in sick.pairs) == 1.0 and max(p.score for p in sick.pairs) == 5.0
    assert sick.normalized_score(sick.pairs[0]) == pytest.approx(3.5 / 4)


def test_sick_split_filter_and_limit():
    train = read_pairs(SICK, split="TRAIN")
    trial = read_pairs(SICK, split="trial")  # any case
    assert (len(train.pairs), len(trial.pairs)) == (4439, 495)
    assert trial.pairs[0].line == 5  # TRIAL rows are interleaved with TRAIN rows
    assert trial.pairs[0].label == "contradiction" and trial.pairs[0].score == 3.6
    assert not {p.line for p in train.pairs} & {p.line for p in trial.pairs}
    assert [p.line for p in read_pairs(SICK, split="Trial", limit=3).pairs] == [5, 11, 49]
    assert (
        data_error(SICK, split="test").problem == "no sentence pairs: no row has SemEval_set TEST"
    )


@pytest.mark.parametrize("path,fmt", [(STS_DEV, "sts"), (STS_TRAIN, "sts"), (SICK, "sick")])
def test_detect_real_files(path, fmt):
    assert detect_format(path) == fmt


def test_limit(sts_dev):
    assert read_pairs(STS_DEV, limit=7).pairs == sts_dev.pairs[:7]
    assert len(read_pairs(STS_DEV, limit=10**6).pairs) == 1500
    for bad in (0, -1, 1.5, True, "3"):
        with pytest.raises(ConfigError, match="limit"):
            read_pairs(STS_DEV, limit=bad)


def test_bad_arguments(tmp_path):
    with pytest.raises(ConfigError, match="sts, sick, nli, csv"):
        read_pairs(STS_DEV, format="tsv")
    with pytest.raises(ConfigError, match="unknown split 'dev'"):
        read_pairs(SICK, split="dev")
    with pytest.raises(ConfigError, match="SICK files only"):
        read_pairs(STS_DEV, split="train")
    assert FORMATS == ("sts", "sick", "nli", "csv", "jsonl", "parquet")


def test_forced_wrong_format_is_a_data_error():
    assert data_error(SICK, format="sts").line == 1
    assert data_error(STS_DEV, format="sick").problem.startswith("SICK header lacks column(s)")
    assert data_error(STS_DEV, format="nli").problem.startswith("invalid JSON")


# --- NLI jsonl --------------------------------------------------------------------------


def test_nli_jsonl_skips_and_counts_dash(tmp_path):
    rows = [
        nli_row("A man sleeps.", "A man is awake.", "contradiction"),
        nli_row("A dog runs.", "An animal moves.", "-"),
        nli_row("Kids play.", "Children play outside.", "NEUTRAL"),
        nli_row("x", "y", "-"),
        nli_row("A cat sits.", "A cat is sitting.", "Entailment"),
    ]
    path = write(tmp_path, "\n".join(rows) + "\n\n", "snli.jsonl")
    ps = read_pairs(path)
    assert (ps.format, ps.skipped, ps.score_range, ps.has_scores) == ("nli", 2, None, False)
    assert [(p.label, p.line) for p in ps.pairs] == [
        ("contradiction", 1),
        ("neutral", 3),
        ("entailment", 5),
    ]
    assert ps.label_names == ("contradiction", "entailment", "neutral")
    assert ps.pairs[1].a == "Kids play."
    with pytest.raises(DataError, match="no gold score"):
        ps.normalized_score(ps.pairs[0])
    # limit stops before the second "-" row is reached
    assert read_pairs(path, limit=2).skipped == 1


@pytest.mark.parametrize(
    "line,problem",
    [
        (
            "{not json",
            "invalid JSON: Expecting property name enclosed in double quotes at column 2",
        ),
        ('["a", "b", "neutral"]', "expected a JSON object"),
        ('{"sentence1": "a", "gold_label": "neutral"}', "missing key 'sentence2'"),
        (
            '{"sentence1": "a", "sentence2": 3, "gold_label": "neutral"}',
            "sentence2 is not a string",
        ),
        (
            '{"sentence1": "a", "sentence2": "b", "gold_label": "maybe"}',
            "unknown gold_label 'maybe'",
        ),
        ('{"sentence1": " ", "sentence2": "b", "gold_label": "neutral"}', "sentence1 is empty"),
        ('{"sentence1": "a\\u0000", "sentence2": "b", "gold_label": "neutral"}', "NUL"),
        ('{"sentence1": "a", "sentence2": "\\ud800", "gold_label": "neutral"}', "surrogate"),
        ("[" * 100_000, "invalid JSON: nested too deeply or a number too long"),
    ],
)
def test_nli_bad_rows(tmp_path, line, problem):
    good = nli_row("a", "b", "neutral")
    err = data_error(write(tmp_path, f"{good}\n{good}\n{line}\n{good}\n"), format="nli")
    assert err.line == 3 and problem in err.problem


def test_nli_all_dash(tmp_path):
    path = write(tmp_path, nli_row("a", "b", "-") + "\n" + nli_row("c", "d", "-"))
    assert data_error(path).problem == "no sentence pairs: all 2 rows have gold_label '-'"


# --- CSV / TSV --------------------------------------------------------------------------


def test_csv_quoted_fields(tmp_path):
    text = (
        "id,Sentence1,sentence2,label,score\n"
        '1,"Hello, world","He said ""hi""",Paraphrase ,0.8\n'
        "\n"
        '2,"two\nlines",b,CONTRADICTION,0\n'
        "3,c,d,not_paraphrase,1\n"
    )
    ps = read_pairs(write(tmp_path, text, "pairs.csv"))
    assert (ps.format, ps.score_range, ps.has_labels, ps.has_scores) == ("csv", (0, 1), True, True)
    assert ps.pairs[0] == Pair("Hello, world", 'He said "hi"', "Paraphrase", 0.8, 2)
    # A quoted newline becomes a space (a control character); the next row keeps its line.
    assert ps.pairs[1] == Pair("two lines", "b", "contradiction", 0.0, 4)
    assert ps.repaired == 1 and ps.pairs[2].line == 6
    assert ps.label_names == ("Paraphrase", "contradiction", "not_paraphrase")


def test_tsv_and_other_column_names(tmp_path):
    text = 'text_a\ttext_b\tscore\n"quoted\ttab"\tb\t4.5\nplain "quote\tc\t0\n'
    path = write(tmp_path, text, "pairs.tsv")
    assert detect_format(path) == "csv"
    ps = read_pairs(path)
    assert ps.score_range == (0, 5) and not ps.has_labels and ps.label_names == ()
    assert [p.a for p in ps.pairs] == ["quoted tab", 'plain "quote']
    assert ps.normalized_score(ps.pairs[0]) == pytest.approx(0.9)
    path = write(tmp_path, "sentence_A,SENTENCE_B,label\nx,y,neutral\n")
    assert read_pairs(path).pairs == [Pair("x", "y", "neutral", None, 2)]


@pytest.mark.parametrize(
    "text,line,problem",
    [
        ("sentence1,sentence2,score\na,b,1\nc,d,7\n", 3, "score 7.0 is outside [0, 1] and [0, 5]"),
        ("sentence1,sentence2,score\na,b,1\nc,d,-0.5\n", 3, "outside"),
        ("sentence1,sentence2,score\na,b,1.5\nc,d,5.01\n", 3, "score 5.01 is outside"),
        ("sentence1,sentence2,score\na,b,1\nc,d,high\n", 3, "score 'high' is not a number"),
        ("sentence1,sentence2,score\na,b,1\nc,d,inf\n", 3, "score 'inf' is not a finite number"),
        (
            "sentence1,sentence2,label\na,b,x\nc,d\n",
            3,
            "expected 3 fields as in the header, found 2",
        ),
        ("sentence1,sentence2,label\na,b,x\nc,d, \n", 3, "label is empty"),
        ("sentence1,sentence2,label\na,b,x\n,d,y\n", 3, "sentence1 is empty"),
        ('sentence1,sentence2,label\na,b,x\nc,"d"e,y\n', 3, "malformed CSV"),
        ('sentence1,sentence2,label\na,b,x\nc,"d\n', 3, "malformed CSV: unexpected end of data"),
        ("sentence1,sentence2\na,b\n", 1, "header needs a 'label' or a 'score' column"),
        # A TSV text opening a quote it does not close on its line would merge the next rows.
        (
            'sentence1\tsentence2\tscore\n"Quote\tb\t1\nsecond a"\tc\t2\nd\te\t3\n',
            2,
            "closes on line 3",
        ),  # fmt: skip
        ('sentence1\tsentence2\tscore\n"I know," he said.\tb\t1\n', 2, "malformed TSV"),
        ("sentence1,text_b,label\na,b,x\n", 1, "unknown format"),
    ],
)
def test_csv_bad_rows(tmp_path, text, line, problem):
    err = data_error(write(tmp_path, text))
    assert err.line == line and problem in err.problem


def test_a_header_without_targets_reads_where_none_are_needed(tmp_path):
    """Pairs to predict on: a known header without a label or score column."""
    path = write(tmp_path, "sentence1\tsentence2\na cat\ta dog\n", "pairs.tsv")
    assert read_pairs(path, targets=False).pairs == [Pair("a cat", "a dog", None, None, 2)]
    assert "header needs a 'label'" in data_error(path).problem  # training needs them


def test_a_tsv_whose_first_text_starts_with_a_brace_is_no_json(tmp_path):
    path = write(tmp_path, "{curly} braces\tsomething else\nplain\tpair\n", "pairs.tsv")
    assert "unknown format" in data_error(path).problem  # not "invalid JSON": predict reads it
    assert detect_format(write(tmp_path, '{"sentence1": "a b"\n', "x.jsonl")) == "nli"  # broken


def test_csv_score_scale_is_inferred(tmp_path):
    def scale(*scores: str) -> tuple[float, float] | None:
        rows = "".join(f"a,b,{s}\n" for s in scores)
        return read_pairs(write(tmp_path, "sentence1,sentence2,score\n" + rows)).score_range

    assert scale("0", "0.5", "1") == (0, 1)
    assert scale("0", "1.5") == (0, 5)
    assert scale("5", "4") == (0, 5)


def test_a_csvs_score_scale_is_the_whole_files_whatever_part_is_read(tmp_path):
    # Its first scores lie in [0, 1], a later one shows the file is on STS's [0, 5]: a pair
    # scored 1 of 5 must not become a target cosine of 1 because a limit stopped reading.
    path = write(tmp_path, "sentence1,sentence2,score\na,b,1\nc,d,0.4\ne,f,4.5\ng,h,2\n")
    for data in (read_pairs(path, limit=2), read_spec(f"{path}[0:2]"), read_spec(f"{path}[1:2]")):
        assert data.score_range == (0, 5)
    assert read_pairs(path, limit=2).normalized_score(read_pairs(path).pairs[0]) == 0.2
    under_one = write(tmp_path, "sentence1,sentence2,score\na,b,0.2\nc,d,1\ne,f,0.5\n", "u.csv")
    assert read_pairs(under_one, limit=1).score_range == (0, 1)  # a later 1 is no sign of 0-5
    # Rows past the limit were not asked for: their faults are not errors of this read.
    for rest in ("g,h,abc\ni,j,3\n", "one field\n", "g,h,7\n"):
        path = write(tmp_path, "sentence1,sentence2,score\na,b,0.5\nc,d,0.2\n" + rest, "r.csv")
        assert len(read_pairs(path, limit=2).pairs) == 2
        assert read_spec(f"{path}[0:2]").score_range == (0, 1)


def test_csv_header_without_sentence_columns_when_forced(tmp_path):
    err = data_error(write(tmp_path, "a,b,label\nx,y,z\n"), format="csv")
    assert err.line == 1 and err.problem.startswith("header names no sentence columns: expected")
    assert "sentence1,sentence2" in err.problem and "premise,hypothesis" in err.problem
    assert "a=COL,b=COL" in err.problem and "(the header: 'a', 'b', 'label')" in err.problem


# --- STS-B and SICK rows that break a rule -----------------------------------------------

STS_OK = "main-captions\tMSRvid\t2012test\t0001\t{score}\tA man plays.\tA man is playing."


@pytest.mark.parametrize(
    "row,problem",
    [
        ("g\tf\t2012\t1\t3.0\tonly six fields", "expected 7 or 9 tab-separated fields, found 6"),
        ("g\tf\t2012\t1\t3.0\ta\tb\tsrc", "expected 7 or 9 tab-separated fields, found 8"),
        ("  ", "expected 7 or 9 tab-separated fields, found 1"),
        (STS_OK.format(score="three"), "score 'three' is not a number"),
        (STS_OK.format(score="nan"), "score 'nan' is not a finite number"),
        (STS_OK.format(score="-inf"), "score '-inf' is not a finite number"),
        (STS_OK.format(score="1e309"), "score '1e309' is not a finite number"),
        (STS_OK.format(score="5.5"), "score '5.5' is outside [0, 5]"),
        (STS_OK.format(score="-0.1"), "score '-0.1' is outside [0, 5]"),
        (STS_OK.format(score=""), "score '' is not a number"),
        ("g\tf\t2012\t1\t3.0\t \tb", "sentence1 is empty"),
        ("g\tf\t2012\t1\t3.0\ta\t\u200b\x07", "sentence2 is empty"),
        ("g\tf\t2012\t1\t3.0\ta\tb\x00", "NUL character in line (binary file?)"),
        ("g\tf\t2012\t1\t3.0\ta\tb\rc", "carriage return inside a line"),
    ],
)
def test_sts_bad_rows(tmp_path, row, problem):
    ok = STS_OK.format(score="2.5")
    err = data_error(write(tmp_path, f"{ok}\n\n{ok}\n{row}\n{ok}\n"), format="sts")
    assert (err.line, err.problem) == (4, problem)


@pytest.mark.parametrize(
    "row,problem",
    [
        (sick_row(3, "a", "b", "UNKNOWN", "3"), "unknown entailment_label 'UNKNOWN'"),
        (sick_row(3, "a", "b", "NEUTRAL ", "3"), "unknown entailment_label 'NEUTRAL '"),
        (sick_row(3, "a", "b", "NEUTRAL", "0.5"), "relatedness_score '0.5' is outside [1, 5]"),
        (sick_row(3, "a", "b", "NEUTRAL", "NaN"), "relatedness_score 'NaN' is not a finite number"),
        (sick_row(3, "a", "", "NEUTRAL", "2"), "sentence_B is empty"),
        (sick_row(3, "a", "b", "NEUTRAL", "2", "DEV"), "SemEval_set 'DEV' is not one of"),
        ("3\ta\tb\tNEUTRAL\t2", "expected 12 tab-separated fields, found 5"),
    ],
)
def test_sick_bad_rows(tmp_path, row, problem):
    ok = sick_row(1, "A dog runs", "A dog is running", "ENTAILMENT", "4.8")
    # a bad row is an error even when the split asked for would leave it out
    for split in (None, "TRIAL"):
        err = data_error(write(tmp_path, f"{SICK_HEADER}\n{ok}\n{row}\n"), split=split)
        assert err.line == 3 and problem in err.problem


def test_sick_minimal_header_and_case(tmp_path):
    text = "pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_label\n"
    text += "7\tA b\tC d\t1\tcontradiction\n8\tE f\tG h\t5\tEntailment\n"
    path = write(tmp_path, text)
    ps = read_pairs(path)
    assert [(p.label, p.score, p.line) for p in ps.pairs] == [
        ("contradiction", 1.0, 2),
        ("entailment", 5.0, 3),
    ]
    err = data_error(path, split="TRAIN")
    assert (err.line, err.problem) == (
        1,
        "split TRAIN asked for, but the header has no SemEval_set column",
    )
    err = data_error(
        write(tmp_path, "pair_ID\tsentence_A\tsentence_B\tentailment_label\n"), format="sick"
    )
    assert (err.line, err.problem) == (1, "SICK header lacks column(s): relatedness_score")


# --- rules common to every format ---------------------------------------------------------


def test_bom_and_crlf_accepted(tmp_path):
    ok = STS_OK.format(score="2.5")
    ps = read_pairs(write(tmp_path, ("\ufeff" + ok + "\r\n" + ok + "\r\n\r\n").encode()))
    assert ps.format == "sts" and [p.line for p in ps.pairs] == [1, 2]
    assert ps.pairs[1].b == "A man is playing."  # no "\r" left behind
    sick_text = "\ufeff" + SICK_HEADER + "\r\n" + sick_row(1, "a", "b", "NEUTRAL", "3") + "\r\n"
    assert read_pairs(write(tmp_path, sick_text)).pairs[0] == Pair("a", "b", "neutral", 3.0, 2)
    nli = "\ufeff" + nli_row("a", "b", "neutral") + "\r\n"
    assert read_pairs(write(tmp_path, nli)).format == "nli"
    csv = '\ufeffsentence1,sentence2,score\r\n"a\r\nb",c,1\r\n'
    assert read_pairs(write(tmp_path, csv)).pairs == [Pair("a b", "c", None, 1.0, 2)]


def test_non_utf8_bytes_name_their_line(tmp_path):
    ok = STS_OK.format(score="2.5").encode()
    path = write(tmp_path, ok + b"\n" + ok + b"\n" + ok.replace(b"man", b"m\xe9n", 1) + b"\n")
    err = data_error(path)
    assert (err.line, err.problem) == (3, "not UTF-8 (byte 0xe9 at column 43)")
    # UTF-16 (a BOM and NULs): rejected on line 1, both when detecting and when told the format
    utf16 = write(tmp_path, STS_OK.format(score="1").encode("utf-16"))
    assert data_error(utf16).line == 1
    assert data_error(utf16, format="sts").line == 1


@pytest.mark.parametrize(
    "content,problem",
    [
        (b"", "no sentence pairs: the file is empty"),
        (b"\n\r\n\n", "no sentence pairs: the file is empty"),
        (b"\xef\xbb\xbf", "no sentence pairs: the file is empty"),
        (SICK_HEADER.encode() + b"\n\n", "no sentence pairs: only a header"),
        (b"sentence1\tsentence2\tlabel\n", "no sentence pairs: only a header"),
    ],
)
def test_no_pairs(tmp_path, content, problem):
    err = data_error(write(tmp_path, content))
    assert (err.line, err.problem) == (None, problem)


def test_missing_file_and_directory(tmp_path):
    err = data_error(tmp_path / "nope.csv")
    assert (err.line, err.problem) == (None, "file not found")
    assert str(err) == f"{tmp_path / 'nope.csv'}: file not found"
    assert data_error(tmp_path).problem == "is a directory"
    with pytest.raises(DataError, match="file not found"):
        detect_format(tmp_path / "nope.csv")


def test_detect_format_by_content_not_name(tmp_path):
    ok = STS_OK.format(score="1")
    assert detect_format(write(tmp_path, "\n\n" + ok, "x.jsonl")) == "sts"
    assert detect_format(write(tmp_path, nli_row("a", "b", "-"), "x.csv")) == "nli"
    assert detect_format(write(tmp_path, SICK_HEADER, "x.json")) == "sick"
    assert detect_format(write(tmp_path, "Sentence1,Sentence2,Label", "x.tsv")) == "csv"
    err = pytest.raises(DataError, detect_format, write(tmp_path, "\nhello world\n")).value
    assert err.line == 2 and err.problem.startswith("unknown format")


def test_huge_lines(tmp_path):
    big = "word " * 200_000  # 1 MB
    ps = read_pairs(write(tmp_path, f"g\tf\t2012\t1\t3\t{big}\tb\n"))
    assert len(ps.pairs[0].a) == len(big)
    ps = read_pairs(write(tmp_path, nli_row(big, "b", "neutral")))
    assert len(ps.pairs[0].a) == len(big)
    err = data_error(write(tmp_path, "g\tf\t2012\t1\t" + "9" * 1_000_000 + "\ta\tb\n"))
    assert err.line == 1 and err.problem.endswith("...' is not a finite number")
    assert len(err.problem) < 100
    # csv refuses fields over its limit: an error naming the line, not a crash
    err = data_error(write(tmp_path, f"sentence1,sentence2,score\na,b,1\n{big},b,1\n"))
    assert err.line == 3 and "field larger than field limit" in err.problem


def test_scores_are_finite_floats(sick):
    assert all(isinstance(p.score, float) and math.isfinite(p.score) for p in sick.pairs)
    assert all(0 <= sick.normalized_score(p) <= 1 for p in sick.pairs)


def test_a_header_naming_a_column_twice_reads_the_first(tmp_path):
    twice = write(tmp_path, "sentence1,sentence2,score,score\na,b,0.5,0.9\n", "twice.csv")
    assert [p.score for p in read_pairs(twice).pairs] == [0.5]
    cased = write(tmp_path, "Sentence1,sentence1,sentence2,score\nfirst,second,b,0.5\n", "c.csv")
    assert [p.a for p in read_pairs(cased).pairs] == ["first"]


def test_only_a_gold_label_column_skips_the_label_dash(tmp_path):
    gold = write(tmp_path, "sentence1,sentence2,gold_label\na,b,-\nc,d,x\ne,f,y\n", "gold.csv")
    assert ([p.label for p in read_pairs(gold).pairs], read_pairs(gold).skipped) == (["x", "y"], 1)
    plain = write(tmp_path, "sentence1,sentence2,label\na,b,-\nc,d,x\n", "plain.csv")
    assert [p.label for p in read_pairs(plain).pairs] == ["-", "x"]  # a label like any other


def test_a_fifo_is_no_data_file(tmp_path):
    """Reading a FIFO would wait for a writer forever (and /dev/zero never end): refused."""
    fifo = tmp_path / "pairs.csv"
    os.mkfifo(fifo)

    def writer() -> None:  # a reader that opened the FIFO gets a file, and the test fails
        for _ in range(50):
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # ENXIO: nobody reading (yet)
                time.sleep(0.1)
                continue
            os.write(fd, b"a\tb\n")
            os.close(fd)

    for read in (read_pairs, read_sentences, read_tsv_pairs):
        threading.Thread(target=writer, daemon=True).start()
        with pytest.raises(DataError, match="not a regular file"):
            read(fifo)


def test_a_pair_to_predict_is_two_sentences_exactly(tmp_path):
    three = write(tmp_path, "a\tb\nc\td\te\n", "p.tsv")
    with pytest.raises(DataError, match="expected 2 tab-separated sentences, found 3") as info:
        read_tsv_pairs(three)
    assert info.value.line == 2
