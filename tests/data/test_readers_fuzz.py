"""Property tests: every reader either loads clean pairs or raises DataError / ConfigError.

Two kinds of test. The "oracle" tests build valid files row by row, then plant up to two
faults of known kind in different rows, so they can say exactly which pairs must load or
which line must fail and why. The "anything goes" tests throw random bytes and mangled real
lines at the readers and check only the invariants: a typed error, or pairs with visible
sentences and finite in-range scores.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import unicodedata
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sbert.data.readers import FORMATS, PairSet, read_pairs
from sbert.errors import ConfigError, DataError

DATA = Path(__file__).resolve().parents[2] / "data"
NLI = ("entailment", "neutral", "contradiction")
COUNTER = itertools.count()
FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def target(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def load(folder: Path, content: bytes, **kw) -> PairSet | DataError | ConfigError:
    """Read `content` as a file; return the PairSet or the typed error (others propagate).

    Each example gets a new file, removed after: rewriting one file that was just read costs
    ~3 ms on some file systems, and these tests write thousands.
    """
    path = folder / f"input-{next(COUNTER)}.txt"
    path.write_bytes(content)
    try:
        ps = read_pairs(path, **kw)
    except (DataError, ConfigError) as e:
        if isinstance(e, DataError):
            assert e.path == str(path) and e.problem
            assert e.line is None or 1 <= e.line <= content.count(b"\n") + 1
        return e
    finally:
        path.unlink()
    check_invariants(ps, content)
    return ps


def check_invariants(ps: PairSet, content: bytes) -> None:
    assert ps.format in FORMATS and ps.pairs and ps.skipped >= 0
    lines = [p.line for p in ps.pairs]
    assert lines == sorted(set(lines)) and lines[0] >= 1
    assert lines[-1] <= content.count(b"\n") + 1
    for p in ps.pairs:
        for s in (p.a, p.b):
            assert isinstance(s, str) and s.strip()
            assert not any(unicodedata.category(c) == "Cc" for c in s)
            s.encode("utf-8")  # no lone surrogates
        if ps.score_range is not None:
            lo, hi = ps.score_range
            assert isinstance(p.score, float) and math.isfinite(p.score) and lo <= p.score <= hi
            assert 0.0 <= ps.normalized_score(p) <= 1.0
        else:
            assert p.score is None
        if ps.format in ("sick", "nli"):
            assert p.label in NLI
        if p.label is not None:
            assert p.label == p.label.strip() and p.label


# --- pieces: good ones, and bad ones paired with the problem they must cause ---------------

WORDS = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABC XYZ0123456789.,'\"-éß", min_size=1, max_size=20
).filter(lambda s: s.strip() != "")

# Raw sentence bytes for the tab-separated formats (STS-B, SICK).
SENTENCE = WORDS.map(str.encode) | st.sampled_from(
    [
        b"A man is playing.",
        b'He said "hi',  # an unbalanced quote, as in STS-B
        b"caf\xc3\xa9 \xe2\x80\x9cok\xe2\x80\x9d",
        b"Treasury\x12s plan",  # a control character: repaired to a space
        b"\x7fx",
        b"  padded  ",
        b"\xef\xbb\xbfx",  # a BOM inside a line is just U+FEFF followed by text
    ]
)
BAD_SENTENCE = st.sampled_from(
    [
        (b"", "is empty"),
        (b"   ", "is empty"),
        (b"\xe2\x80\x8b", "is empty"),  # only a zero-width space
        (b"\x07", "is empty"),  # only a control character
        (b"a\x00b", "NUL character"),
        (b"a\rb", "carriage return inside a line"),
        (b"caf\xe9", "not UTF-8"),  # Latin-1
        (b"\xc3", "not UTF-8"),  # a truncated UTF-8 sequence
    ]
)
# Sentences for JSON, which escapes everything: a carriage return or a tab is fine there.
JSON_SENTENCE = WORDS | st.sampled_from(["caf\u00e9", "a\rb", "tab\there", "\x12x", "\ufeffx"])
BAD_JSON_SENTENCE = st.sampled_from(
    [("", "is empty"), (" \t", "is empty"), ("\u200b", "is empty"), ("a\x00b", "NUL character")]
    + [("\ud800x", "unpaired surrogate")]
)


def scores(lo: float, hi: float):
    good = st.floats(lo, hi).map(repr) | st.sampled_from([f"{hi:.3f}", f" {lo} "])
    bad = [(x, "not a finite number") for x in ("nan", "NaN", "inf", "-Infinity", "1e309")]
    bad += [(x, "not a number") for x in ("", "three", "1,5", "0x1")]
    bad += [(f"{hi + 0.001}", "outside"), (f"{lo - 0.5}", "outside")]
    return good.map(str.encode), st.sampled_from([(x.encode(), p) for x, p in bad])


def any_case(word: str):
    return st.lists(st.booleans(), min_size=len(word), max_size=len(word)).map(
        lambda up: "".join(c.upper() if u else c for c, u in zip(word, up, strict=True))
    )


LABEL = st.sampled_from(NLI).flatmap(any_case)
BAD_LABELS = ["", "neutral ", "unknown", "NEUTRA", " -"]
EOL = st.sampled_from([b"\n", b"\r\n"])


@st.composite
def faults(draw, rows: int, slots: list[str]) -> dict[int, str]:
    """Up to two faults, {row: slot}, in different rows."""
    if rows == 0 or draw(st.booleans()):
        return {}
    chosen = draw(st.lists(st.integers(0, rows - 1), min_size=1, max_size=2, unique=True))
    return {i: draw(st.sampled_from(slots)) for i in chosen}


def assemble(draw, lines: list[bytes]) -> tuple[bytes, list[int]]:
    """Join lines with random endings, blank lines and a BOM; return the physical line numbers."""
    out, numbers, n = b"\xef\xbb\xbf" if draw(st.booleans()) else b"", [], 0
    for i, line in enumerate(lines):
        for _ in range(draw(st.integers(0, 2)) if draw(st.integers(0, 4)) == 0 else 0):
            out += draw(EOL)
            n += 1
        out += line
        n += 1
        numbers.append(n)
        if i < len(lines) - 1 or draw(st.booleans()):
            out += draw(EOL)
    if draw(st.booleans()):
        out += b"\n\n"
    return out, numbers


def text(b: bytes | str) -> str:
    """The reader's view of a valid sentence: control characters become spaces."""
    s = b.decode() if isinstance(b, bytes) else b
    return "".join(" " if unicodedata.category(c) == "Cc" else c for c in s)


def expect(result, case: dict, detected: bool, **attrs) -> None:
    """`result` holds exactly the expected pairs, or the expected error, as `case` says.

    case: "pairs" [(a, b, label, score, line)], "error" (line, problem fragment) or None.
    `detected`: the format was detected, so a fault in the first row may instead make the
    file's format unrecognisable, or make it a table without a target column (JSON lines whose
    first row lacks gold_label): an error on the same line either way.
    """
    error = case["error"]
    event("error" if error else "loaded" if case["pairs"] else "no pairs")
    if error is not None:
        assert isinstance(result, DataError), (result, error)
        assert result.line == error[0], (result, error)
        unrecognised = ("unknown format", "header needs a 'label' or a 'score' column")
        assert error[1] in result.problem or (
            detected and result.problem.startswith(unrecognised)
        ), (result, error)
    elif not case["pairs"]:
        assert isinstance(result, DataError) and result.line is None, result
        assert result.problem.startswith("no sentence pairs")
    else:
        assert isinstance(result, PairSet), result
        assert [(p.a, p.b, p.label, p.score, p.line) for p in result.pairs] == case["pairs"]
        for key, value in attrs.items():
            assert getattr(result, key) == value, (key, getattr(result, key), value)


def first_error(errors: list[tuple[int, str]]) -> tuple[int, str] | None:
    return min(errors, default=None)


# --- oracle tests, one per format ------------------------------------------------------------


@st.composite
def sts_files(draw):
    n_rows = draw(st.integers(0, 6))
    planted = draw(faults(n_rows, ["score", "a", "b", "fields"]))
    rows, pairs, errors = [], [], []
    for i in range(n_rows):
        score, a, b = draw(scores(0, 5)[0]), draw(SENTENCE), draw(SENTENCE)
        n = draw(st.sampled_from([7, 9]))
        problem = None
        if planted.get(i) == "score":
            score, problem = draw(scores(0, 5)[1])
        elif planted.get(i) in ("a", "b"):
            bad, problem = draw(BAD_SENTENCE)
            a, b = (bad, b) if planted[i] == "a" else (a, bad)
        elif planted.get(i) == "fields":
            n, problem = draw(st.sampled_from([1, 6, 8, 10])), "tab-separated fields"
        fields = [b"main-captions", b"MSRvid", b"2012test", b"0001", score, a, b, b"s1", b"s2"]
        rows.append(b"\t".join(fields[:n] + [b"extra"] * (n - 9)))
        pairs.append((text(a), text(b), None, float(score)) if problem is None else problem)
    content, lines = assemble(draw, rows)
    errors = [(n, p) for n, p in zip(lines, pairs, strict=True) if isinstance(p, str)]
    return content, {
        "pairs": [(*p, n) for n, p in zip(lines, pairs, strict=True) if not isinstance(p, str)],
        "error": first_error(errors),
    }


@FUZZ
@given(sts_files(), st.sampled_from([None, "sts"]))
def test_sts_oracle(target, case, fmt):
    content, expected = case
    result = load(target, content, format=fmt)
    expect(result, expected, fmt is None, format="sts", score_range=(0, 5))


SICK_COLUMNS = ["pair_ID", "sentence_A", "sentence_B", "entailment_label", "relatedness_score"]


@st.composite
def sick_files(draw):
    with_set = draw(st.booleans())
    header = SICK_COLUMNS + ["entailment_AB"] + (["SemEval_set"] if with_set else [])
    header = [h.upper() if draw(st.integers(0, 5)) == 0 else h for h in header]
    split = draw(st.sampled_from([None, "TRAIN", "trial"])) if with_set else None
    n_rows = draw(st.integers(0, 6))
    slots = ["a", "b", "label", "score", "fields"] + ["set"] * with_set
    planted = draw(faults(n_rows, slots))
    rows, pairs = [], []
    for i in range(n_rows):
        a, b, label = draw(SENTENCE), draw(SENTENCE), draw(LABEL).encode()
        score, part = draw(scores(1, 5)[0]), draw(st.sampled_from([b"TRAIN", b"Trial"]))
        cut, problem = 0, None
        if planted.get(i) in ("a", "b"):
            bad, problem = draw(BAD_SENTENCE)
            a, b = (bad, b) if planted[i] == "a" else (a, bad)
        elif planted.get(i) == "label":
            label, problem = draw(st.sampled_from(BAD_LABELS)).encode(), "unknown entailment_label"
        elif planted.get(i) == "score":
            score, problem = draw(scores(1, 5)[1])
        elif planted.get(i) == "set":
            part, problem = b"DEV", "SemEval_set 'DEV'"
        elif planted.get(i) == "fields":
            cut, problem = draw(st.sampled_from([-1, 1])), "tab-separated fields"
        fields = [str(i).encode(), a, b, label, score, b"A_neutral_B"] + [part] * with_set
        rows.append(b"\t".join(fields[: len(fields) + cut] + [b"x"] * cut))
        if problem is not None:
            pairs.append(problem)  # an error even in a row the split leaves out
        elif split is None or part.upper() == split.upper().encode():
            pairs.append((text(a), text(b), label.decode().lower(), float(score)))
        else:
            pairs.append(None)
    content, lines = assemble(draw, ["\t".join(header).encode(), *rows])
    lines = lines[1:]
    errors = [(n, p) for n, p in zip(lines, pairs, strict=True) if isinstance(p, str)]
    return (
        content,
        split,
        {
            "pairs": [(*p, n) for n, p in zip(lines, pairs, strict=True) if isinstance(p, tuple)],
            "error": first_error(errors),
        },
    )


@FUZZ
@given(sick_files(), st.sampled_from([None, "sick"]))
def test_sick_oracle(target, case, fmt):
    content, split, expected = case
    result = load(target, content, format=fmt, split=split)
    expect(result, expected, False, format="sick", score_range=(1, 5))


NLI_STRUCTURE = {
    "missing": "missing key",
    "number": "is not a string",
    "list": "expected a JSON object",
    "cut": "invalid JSON",
    "bytes": "not UTF-8",
}


@st.composite
def nli_files(draw):
    n_rows = draw(st.integers(0, 6))
    planted = draw(faults(n_rows, ["a", "b", "label", *NLI_STRUCTURE]))
    rows, pairs, skipped = [], [], 0
    for i in range(n_rows):
        a, b = draw(JSON_SENTENCE), draw(JSON_SENTENCE)
        label = "-" if draw(st.integers(0, 3)) == 0 else draw(LABEL)
        fault, problem = planted.get(i), None
        if fault in ("a", "b"):
            bad, problem = draw(BAD_JSON_SENTENCE)
            a, b = (bad, b) if fault == "a" else (a, bad)
            if label == "-":
                problem = None  # a skipped row's sentences are not looked at
        elif fault == "label":
            label, problem = draw(st.sampled_from(BAD_LABELS)), "unknown gold_label"
        elif fault in NLI_STRUCTURE:
            problem = NLI_STRUCTURE[fault]
        obj = {"annotator_labels": ["neutral"], "sentence1": a, "sentence2": b, "gold_label": label}
        if fault == "missing":
            del obj[draw(st.sampled_from(["sentence1", "sentence2", "gold_label"]))]
        elif fault == "number":
            obj["sentence2"] = 3
        line = json.dumps(list(obj.values()) if fault == "list" else obj).encode()
        if fault == "cut":
            line = line[: draw(st.integers(1, len(line) - 1))]
        elif fault == "bytes":
            line = line.replace(b'"sentence1": "', b'"sentence1": "\xe9', 1)
        rows.append(line)
        if problem is None and label == "-":
            skipped += 1
            pairs.append(None)
        else:
            pairs.append(problem or (text(a), text(b), label.lower(), None))
    content, lines = assemble(draw, rows)
    errors = [(n, p) for n, p in zip(lines, pairs, strict=True) if isinstance(p, str)]
    return (
        content,
        skipped,
        {
            "pairs": [(*p, n) for n, p in zip(lines, pairs, strict=True) if isinstance(p, tuple)],
            "error": first_error(errors),
        },
    )


@FUZZ
@given(nli_files(), st.sampled_from([None, "nli"]))
def test_nli_oracle(target, case, fmt):
    content, skipped, expected = case
    result = load(target, content, format=fmt)
    expect(result, expected, fmt is None, format="nli", score_range=None, skipped=skipped)


CSV_SENTENCE = WORDS | st.sampled_from(
    [
        "a, with comma",
        'with "quotes"',
        "two\nlines",  # a quoted newline: one CSV record on two physical lines (a TSV's: refused)
        "tab\there",  # a tab inside a sentence is a control character: a space
    ]
)


@st.composite
def csv_files(draw):
    delimiter = draw(st.sampled_from([",", "\t"]))
    names = draw(st.sampled_from([("sentence1", "sentence2"), ("Sentence_A", "sentence_b")]))
    with_label, with_score = draw(st.sampled_from([(True, False), (False, True), (True, True)]))
    header = ["id", *names] + ["label"] * with_label + ["Score"] * with_score
    buf = io.StringIO()
    quoting = draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]))
    out = csv.writer(buf, delimiter=delimiter, quoting=quoting, lineterminator="\n")
    out.writerow(header)
    n_rows = draw(st.integers(0, 6))
    slots = ["a", "b", "fields"] + ["label"] * with_label + ["score", "range"] * with_score
    planted = draw(faults(n_rows, slots))
    # Scores on the [0, 1] scale, or some on the [0, 5] one: the scale is inferred.
    scale = draw(st.sampled_from([["0", "0.25", "1"], ["0", "1", "1.5", "2"], ["0.5", "4.5", "5"]]))
    pairs, errors, out_of_range = [], [], []
    for i in range(n_rows):
        line = buf.getvalue().count("\n") + 1  # the line this record starts on
        a, b, score = draw(CSV_SENTENCE), draw(CSV_SENTENCE), draw(st.sampled_from(scale))
        label = draw(st.sampled_from(["Paraphrase", " NEUTRAL ", "contradiction", "x y"]))
        row = [str(i), a, b] + [label] * with_label + [score] * with_score
        fault = planted.get(i)
        if fault in ("a", "b"):
            row[1 if fault == "a" else 2] = draw(st.sampled_from(["", "  ", "\u200b"]))
            errors.append((line, "is empty"))
        elif fault == "label":
            row[3] = draw(st.sampled_from(["", " "]))
            errors.append((line, "label is empty"))
        elif fault == "score":
            row[-1], problem = draw(
                st.sampled_from([("nan", "finite"), ("1e309", "finite"), ("x", "not a number")])
            )
            errors.append((line, problem))
        elif fault == "range":
            row[-1] = draw(st.sampled_from(["7", "-1", "5.5"]))  # numbers, but on no scale
            out_of_range.append(line)
        elif fault == "fields":
            row = row[:-1] if draw(st.booleans()) else [*row, "x"]
            errors.append((line, "fields as in the header"))
        out.writerow(row)
        if delimiter == "\t" and any("\n" in field for field in row):
            # In a TSV a record is one line: a quoted newline is refused before the row's fields
            # are read (whatever fault was planted in them).
            errors[:] = [e for e in errors if e[0] != line]
            out_of_range[:] = [n for n in out_of_range if n != line]
            errors.append((line, "in a TSV a quoted text must close on its own line"))
            continue
        if fault in (None, "range"):
            gold = label.strip().lower() if label.strip().lower() in NLI else label.strip()
            gold = gold if with_label else None
            pairs.append((text(a), text(b), gold, float(row[-1]) if with_score else None, line))
    # A range error shows only once every row has been read without a harder error.
    error = first_error(errors) or (
        (out_of_range[0], "outside [0, 1] and [0, 5]") if out_of_range else None
    )
    score_range = None
    if with_score and pairs:
        score_range = (0, 1) if all(p[3] <= 1 for p in pairs) else (0, 5)
    content = buf.getvalue().encode()
    if draw(st.booleans()):
        content = content.replace(b"\n", b"\r\n")
    return content, score_range, {"pairs": pairs, "error": error}


@FUZZ
@given(csv_files(), st.sampled_from([None, "csv"]))
def test_csv_oracle(target, case, fmt):
    content, score_range, expected = case
    result = load(target, content, format=fmt)
    expect(result, expected, False, format="csv", score_range=score_range)


# --- anything goes: only the invariants -------------------------------------------------------


def real_lines() -> list[bytes]:
    sts = (DATA / "stsbenchmark" / "sts-dev.csv").read_bytes().split(b"\n")
    sick = (DATA / "sick" / "SICK_train_trial.txt").read_bytes().split(b"\n")
    train = (DATA / "stsbenchmark" / "sts-train.csv").read_bytes().split(b"\n")
    nli = [
        b'{"gold_label": "neutral", "sentence1": "A man.", "sentence2": "A person.", "x": [1]}',
        b'{"gold_label": "-", "sentence1": "A man.", "sentence2": "A person."}',
    ]
    csv_lines = [b"sentence1,sentence2,label,score", b'"a, b","c ""d""",neutral,0.5']
    return sts[:8] + sts[266:268] + sts[1478:1480] + train[2918:2919] + sick[:6] + nli + csv_lines


REAL = real_lines()


@st.composite
def mangled(draw):
    lines = draw(st.lists(st.sampled_from(REAL), min_size=1, max_size=6))
    if draw(st.booleans()):  # all lines of one file usually share a format
        lines = [lines[0]] * len(lines)
    out = []
    for line in lines:
        op = draw(st.sampled_from(["keep", "keep", "cut", "insert", "drop", "dup", "swap"]))
        fields = line.split(b"\t")
        if op == "cut":
            line = line[: draw(st.integers(0, len(line)))]
        elif op == "insert":
            at = draw(st.integers(0, len(line)))
            junk = draw(
                st.one_of(
                    st.binary(min_size=1, max_size=4),
                    st.sampled_from(
                        [b"\t", b"\x00", b"\r", b'"', b"\xef\xbb\xbf", b"\xe9", b"nan"]
                    ),
                )
            )
            line = line[:at] + junk + line[at:]
        elif op == "drop" and len(fields) > 1:
            del fields[draw(st.integers(0, len(fields) - 1))]
            line = b"\t".join(fields)
        elif op == "dup":
            line = b"\t".join(fields + fields[-1:])
        elif op == "swap" and len(fields) > 4:
            fields[4] = draw(st.sampled_from([b"nan", b"inf", b"-inf", b"1e309", b"", b"5.5"]))
            line = b"\t".join(fields)
        out.append(line)
    eol = draw(EOL)
    return (b"\xef\xbb\xbf" if draw(st.booleans()) else b"") + eol.join(out) + eol


@FUZZ
@given(mangled(), st.sampled_from([None, *FORMATS]), st.sampled_from([None, None, "train"]))
def test_mangled_real_lines(target, content, fmt, split):
    load(target, content, format=fmt, split=split)


@FUZZ
@given(st.binary(max_size=400), st.sampled_from([None, *FORMATS]))
def test_random_bytes(target, content, fmt):
    load(target, content, format=fmt)


@FUZZ
@given(
    st.text(max_size=200).map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.sampled_from([None, *FORMATS]),
    st.sampled_from(
        [b"", b"sentence1\tsentence2\tscore\n", "\t".join(SICK_COLUMNS).encode() + b"\n"]
    ),
)
def test_random_text_after_a_header(target, body, fmt, header):
    load(target, header + body, format=fmt)


@FUZZ
@given(st.text(max_size=80), st.text(max_size=80), st.text(max_size=20), st.text(max_size=20))
def test_random_fields(target, a, b, label, score):
    """Arbitrary strings in every field of every format (JSON escapes all of them)."""
    for content, fmt in [
        (f"g\tf\t2012\t1\t{score}\t{a}\t{b}\n", "sts"),
        ("\t".join(SICK_COLUMNS) + f"\n1\t{a}\t{b}\t{label}\t{score}\n", "sick"),
        (json.dumps({"sentence1": a, "sentence2": b, "gold_label": label}) + "\n", "nli"),
        (f'sentence1,sentence2,label,score\n"{a}",{b},{label},{score}\n', "csv"),
    ]:
        load(target, content.encode("utf-8", "surrogatepass"), format=fmt)
