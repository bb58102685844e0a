"""Readers for sentence-pair files -> validated `Pair`s.

Six formats, told apart by content (`detect_format`), each read into one `PairSet`:

- ``sts``:  STS Benchmark, tab-separated, no header, no quoting; 7 or 9 fields
  ``genre, file, year, id, score, sentence1, sentence2[, src1, src2]``; score in [0, 5].
- ``sick``: SICK (Marelli et al., 2014), tab-separated with a header; entailment label and
  relatedness score in [1, 5]; optional ``SemEval_set`` column (TRAIN / TRIAL / TEST).
- ``nli``:  SNLI / MultiNLI JSON lines with ``sentence1, sentence2, gold_label``; rows whose
  gold label is ``-`` (no annotator majority) are skipped, counted and said on stderr.
- ``csv``, ``jsonl``, ``parquet``: a table, CSV or TSV with a header, JSON lines of objects,
  or Parquet (with pyarrow installed), whose columns are named as sentence-transformers and
  the Hugging Face datasets name them (`LAYOUTS`), or as a column mapping says
  (``a=question,b=answer,score=sim``).

Rules shared by every format. Files are UTF-8 (a leading BOM is dropped) with ``\\n`` or
``\\r\\n`` line endings. Entirely empty lines are skipped wherever they are; a line holding
only spaces is a malformed row. The first bad row raises ``DataError(path, line, problem)``:
nothing is dropped silently (a Parquet file's "line" is its 1-based row). A NUL or a carriage
return inside a line is rejected (a binary file, or old Mac line endings that would make our
line numbers wrong). Other control characters inside a sentence are replaced by a space and
the row is counted in ``PairSet.repaired`` and said on stderr: STS-B train line 2919 has U+0012
where an apostrophe belongs, and rejecting a whole benchmark for it would help nobody.
Sentences are otherwise kept exactly as published (some have leading or trailing spaces; the
tokenizer handles those).
"""

from __future__ import annotations

import csv
import functools
import json
import math
import os
import re
import sys
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain, islice
from pathlib import Path

from sbert.errors import ConfigError, DataError

FORMATS = ("sts", "sick", "nli", "csv", "jsonl", "parquet")
TABLES = ("csv", "jsonl", "parquet")  # formats whose columns are found by name
NLI_LABELS = ("entailment", "neutral", "contradiction")
SICK_SPLITS = ("TRAIN", "TRIAL", "TEST")
SICK_COLUMNS = ("pair_id", "sentence_a", "sentence_b", "entailment_label", "relatedness_score")
# SemEval-2014 Task 1's release of SICK (SICK_train.txt, SICK_trial.txt, SICK_test_annotated.txt)
# names the label column entailment_judgment.
SICK_ALIASES = {"entailment_judgment": "entailment_label"}
# The column names of a table, matched case-insensitively, first wins: the two sentences
# (sentence-transformers' and the Hugging Face datasets' conventions), then the targets.
CSV_SENTENCE_COLUMNS = (
    ("sentence1", "sentence2"),  # STS-B, SNLI/MultiNLI, GLUE on the Hugging Face hub
    ("sentence_a", "sentence_b"),  # SICK
    ("premise", "hypothesis"),  # snli, multi_nli, anli on the Hugging Face hub
    ("anchor", "positive"),  # sentence-transformers' (anchor, positive[, negative]) data sets
    ("text_a", "text_b"),
    ("text1", "text2"),
)
LABEL_COLUMNS = ("label", "gold_label")
SCORE_COLUMNS = ("score", "similarity", "similarity_score", "relatedness_score")
NEGATIVE_COLUMN = "negative"  # with anchor, positive: a hard negative
# What a column mapping may name: the two sentences, a hard negative, the targets.
MAPPING_KEYS = ("a", "b", "negative", "label", "score")
# The Hugging Face NLI data sets store labels as numbers: 0, 1, 2, and -1 where the
# annotators did not agree (dropped, as SNLI's gold_label "-" is).
HF_NLI_LABELS = {"0": "entailment", "1": "neutral", "2": "contradiction"}
_WHOLE_NUMBER = re.compile(r"-?\d+(\.0*)?")
# The accepted table layouts, as error messages and docs/training.md state them.
LAYOUTS = (
    "columns sentence1,sentence2 | sentence_a,sentence_b | premise,hypothesis | text_a,text_b "
    "| text1,text2 with label and/or score (or similarity); or anchor,positive[,negative] "
    "alone; other names: a column mapping a=COL,b=COL,label=COL,score=COL (--columns, or "
    "PATH:a=COL,... in a data spec)"
)

_Lines = Iterator[tuple[int, str]]  # (1-based line number, text without line ending)
_BOM = b"\xef\xbb\xbf"
# C0 controls, DEL and C1 controls (Unicode category Cc) -> space; NUL is rejected before.
_CONTROLS = {c: " " for c in chain(range(0x20), range(0x7F, 0xA0))}


@dataclass(frozen=True, slots=True)
class Pair:
    """One sentence pair with its gold label and/or score and its 1-based source line."""

    a: str
    b: str
    label: str | None = None  # NLI labels are lower-case: entailment / neutral / contradiction
    score: float | None = None  # raw gold score as in the file
    line: int = 0


@dataclass(frozen=True)
class PairSet:
    """The validated pairs of one file, with the gold score scale they were read on."""

    path: str
    format: str  # one of FORMATS
    pairs: list[Pair]
    score_range: tuple[float, float] | None  # (lo, hi) of the gold scale; None without scores
    skipped: int = 0  # rows skipped on purpose (NLI gold_label "-")
    repaired: int = 0  # rows whose sentences had control characters replaced by spaces

    @property
    def has_scores(self) -> bool:
        return bool(self.pairs) and all(p.score is not None for p in self.pairs)

    @property
    def has_labels(self) -> bool:
        return bool(self.pairs) and all(p.label is not None for p in self.pairs)

    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(sorted({p.label for p in self.pairs if p.label is not None}))

    def normalized_score(self, pair: Pair) -> float:
        """The pair's gold score mapped linearly from `score_range` onto [0, 1]."""
        if pair.score is None or self.score_range is None:
            raise DataError(self.path, pair.line, "pair has no gold score")
        lo, hi = self.score_range
        return (pair.score - lo) / (hi - lo)


@dataclass
class _Ctx:
    """What a reader tells `read_pairs` besides its pairs."""

    path: str
    rows: int = 0  # data rows seen (not header, not blank)
    header: bool = False
    skipped: int = 0
    targets: bool = True  # a table's header must name a label or a score column

    def error(self, line: int | None, problem: str) -> DataError:
        return DataError(self.path, line, problem)


def _check_path(path: str | os.PathLike[str]) -> None:
    if not os.fspath(path):  # Path("") is the current folder
        raise ConfigError("a data file path is empty")
    try:
        p = Path(path)
        is_dir, exists = p.is_dir(), p.exists()
    except (OSError, TypeError, ValueError):  # e.g. a NUL inside the path string
        raise DataError(str(path), None, "not a valid file path") from None
    if is_dir:
        raise DataError(path, None, "is a directory")
    if not exists:
        raise DataError(path, None, "file not found")
    if not p.is_file():  # a FIFO or /dev/zero would never end
        raise DataError(path, None, "not a regular file")


def _lines(path: str | os.PathLike[str]) -> _Lines:
    """Yield (line number, text without line ending) for every physical line, blank ones too.

    Lines are decoded one at a time so that a bad byte is reported on its own line.
    """
    try:
        f = open(path, "rb")  # noqa: SIM115 (closed by the with below; open errors caught here)
    except OSError as e:
        raise DataError(path, None, f"cannot read: {e.strerror or e}") from None
    with f:
        for n, raw in enumerate(f, 1):
            raw = raw.removesuffix(b"\n").removesuffix(b"\r")
            if n == 1:
                raw = raw.removeprefix(_BOM)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                byte = raw[e.start]
                problem = f"not UTF-8 (byte 0x{byte:02x} at column {e.start + 1})"
                raise DataError(path, n, problem) from None
            if "\x00" in text:
                raise DataError(path, n, "NUL character in line (binary file?)")
            if "\r" in text:
                raise DataError(path, n, "carriage return inside a line")
            yield n, text


def _nonblank(lines: _Lines) -> _Lines:
    return ((n, t) for n, t in lines if t)


def _first(lines: _Lines) -> tuple[int, str] | None:
    """Consume `lines` up to and including the first non-blank one, and return it."""
    return next(_nonblank(lines), None)


def _short(text: str, width: int = 30) -> str:
    """repr() of a field for an error message, cut so a 1 MB field cannot flood it."""
    return repr(text if len(text) <= width else text[:width] + "...")


def _number(text: str) -> float | None:
    """`text` as a number, or None: what float() reads, but for its digit separators ("0_5"
    is no score of 0.5 or 5)."""
    try:
        return None if "_" in text else float(text)
    except ValueError:
        return None


def _score(ctx: _Ctx, n: int, text: str, name: str, lo: float, hi: float) -> float:
    x = _number(text)
    if x is None:
        raise ctx.error(n, f"{name} {_short(text)} is not a number")
    if not math.isfinite(x):  # float() accepts "nan", "inf" and overflows "1e309" to inf
        raise ctx.error(n, f"{name} {_short(text)} is not a finite number")
    if not lo <= x <= hi:
        raise ctx.error(n, f"{name} {_short(text.strip())} is outside [{lo:g}, {hi:g}]")
    return x


def _sentence(ctx: _Ctx, n: int, text: str, name: str) -> str:
    """Check one sentence and return it with control characters turned into spaces."""
    if "\x00" in text:  # JSON can spell it as \u0000
        raise ctx.error(n, f"{name} contains a NUL character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a JSON \ud800 escape
        raise ctx.error(n, f"{name} contains an unpaired surrogate") from None
    clean = text.translate(_CONTROLS)
    if blank(clean):
        raise ctx.error(n, f"{name} is empty")
    return clean


def blank(text: str) -> bool:
    """Whether `text` holds nothing a tokenizer would keep: only whitespace, control and
    format characters (zero-width spaces, direction marks). Its vector would be that of no
    words at all."""
    return not any(not c.isspace() and unicodedata.category(c)[0] != "C" for c in text)


def _pair(
    ctx: _Ctx,
    n: int,
    a: str,
    b: str,
    names: tuple[str, str],
    label: str | None = None,
    score: float | None = None,
) -> tuple[Pair, bool]:
    """A checked Pair, and whether control characters in it were replaced by spaces."""
    clean = _sentence(ctx, n, a, names[0]), _sentence(ctx, n, b, names[1])
    return Pair(*clean, label, score, n), clean != (a, b)


def _nli_label(ctx: _Ctx, n: int, text: str, name: str) -> str:
    label = text.lower()
    if label not in NLI_LABELS:
        raise ctx.error(
            n, f"unknown {name} {_short(text)}; expected one of {', '.join(NLI_LABELS)}"
        )
    return label


def _read_sts(ctx: _Ctx, lines: _Lines, split: str | None) -> Iterator[tuple[Pair, bool]]:
    for n, text in _nonblank(lines):
        ctx.rows += 1
        # Plain split, never csv: STS-B sentences contain unbalanced `"` characters.
        f = text.split("\t")
        if len(f) not in (7, 9):
            raise ctx.error(n, f"expected 7 or 9 tab-separated fields, found {len(f)}")
        score = _score(ctx, n, f[4], "score", 0.0, 5.0)
        yield _pair(ctx, n, f[5], f[6], ("sentence1", "sentence2"), score=score)


def _read_sick(ctx: _Ctx, lines: _Lines, split: str | None) -> Iterator[tuple[Pair, bool]]:
    lines = _nonblank(lines)
    if (first := _first(lines)) is None:
        return
    hn, header = first
    ctx.header = True
    names = _sick_names(header.split("\t"))
    missing = [c for c in SICK_COLUMNS if c not in names]
    if missing:
        raise ctx.error(hn, f"SICK header lacks column(s): {', '.join(missing)}")
    ia, ib, il, isc = (names.index(c) for c in SICK_COLUMNS[1:])
    iset = names.index("semeval_set") if "semeval_set" in names else None
    if split is not None and iset is None:
        raise ctx.error(hn, f"split {split} asked for, but the header has no SemEval_set column")
    for n, text in lines:
        ctx.rows += 1
        f = text.split("\t")
        if len(f) != len(names):
            raise ctx.error(n, f"expected {len(names)} tab-separated fields, found {len(f)}")
        label = _nli_label(ctx, n, f[il], "entailment_label")
        score = _score(ctx, n, f[isc], "relatedness_score", 1.0, 5.0)
        pair = _pair(ctx, n, f[ia], f[ib], ("sentence_A", "sentence_B"), label, score)
        if iset is not None:
            part = f[iset].upper()
            if part not in SICK_SPLITS:
                expected = ", ".join(SICK_SPLITS)
                raise ctx.error(n, f"SemEval_set {_short(f[iset])} is not one of {expected}")
            if split is not None and part != split:
                continue  # validated all the same: a broken row is an error in any split
        yield pair


def _sick_names(fields: Iterable[str]) -> list[str]:
    """A SICK header's column names, lower case, SemEval's spelling of a column as SICK's."""
    return [SICK_ALIASES.get(name, name) for name in (f.strip().lower() for f in fields)]


def _read_nli(ctx: _Ctx, lines: _Lines, split: str | None) -> Iterator[tuple[Pair, bool]]:
    for n, text in _nonblank(lines):
        ctx.rows += 1
        row = _json_object(ctx, n, text)
        for key in ("sentence1", "sentence2", "gold_label"):
            if key not in row:
                raise ctx.error(n, f"missing key {key!r}")
            if not isinstance(row[key], str):
                raise ctx.error(n, f"{key} is not a string")
        if row["gold_label"] == "-":  # annotators did not agree: by convention not used
            ctx.skipped += 1
            continue
        label = _nli_label(ctx, n, row["gold_label"], "gold_label")
        names = ("sentence1", "sentence2")
        yield _pair(ctx, n, row["sentence1"], row["sentence2"], names, label)


@dataclass(frozen=True)
class _Columns:
    """Which columns of a table hold what (names as the header spells them)."""

    a: str
    b: str
    negative: str | None
    label: str | None
    score: str | None
    hf_nli: bool  # premise, hypothesis: labels 0, 1, 2 are entailment, neutral, contradiction
    implied: bool  # anchor, positive[, negative] alone: entailment (and contradiction) pairs


def _columns(
    ctx: _Ctx, line: int | None, names: Sequence[str], mapping: dict[str, str] | None
) -> _Columns:
    """The columns of a table with header `names`: as `mapping` names them, else by the
    common names (CSV_SENTENCE_COLUMNS, LABEL_COLUMNS, SCORE_COLUMNS)."""
    lower: dict[str, str] = {}
    for name in names:
        lower.setdefault(name.strip().lower(), name)
    found = ", ".join(_short(n, 20) for n in names[:12])
    if mapping:
        unknown = sorted(set(mapping) - set(MAPPING_KEYS))
        if unknown:
            raise ConfigError(
                f"column mapping: unknown key(s) {', '.join(unknown)}; the keys are "
                f"{', '.join(MAPPING_KEYS)} (a=COL,b=COL,label=COL,score=COL)"
            )
        for key, column in mapping.items():
            if column.strip().lower() not in lower:
                problem = f"no column {_short(column)} for {key}= (the header: {found})"
                raise ctx.error(line, problem)
    chosen = {k: lower[v.strip().lower()] for k, v in (mapping or {}).items()}
    pair = next(((x, y) for x, y in CSV_SENTENCE_COLUMNS if x in lower and y in lower), None)
    if "a" not in chosen and "b" not in chosen and pair is not None:
        chosen["a"], chosen["b"] = lower[pair[0]], lower[pair[1]]
    if "a" not in chosen or "b" not in chosen:
        raise ctx.error(
            line, f"header names no sentence columns: expected {LAYOUTS} (the header: {found})"
        )
    if not mapping:
        for key, options in (("label", LABEL_COLUMNS), ("score", SCORE_COLUMNS)):
            chosen.setdefault(key, next((lower[c] for c in options if c in lower), None))
        if pair == ("anchor", "positive") and NEGATIVE_COLUMN in lower:
            chosen["negative"] = lower[NEGATIVE_COLUMN]
    label, score = chosen.get("label"), chosen.get("score")
    if "negative" in chosen and (label or score):
        raise ctx.error(line, f"a hard negative column ({chosen['negative']}) is read with "
                              f"anchor, positive alone, not beside a label or a score: map the "
                              f"columns to read (PATH:a=COL,b=COL,label=COL)")  # fmt: skip
    triplet = (pair == ("anchor", "positive") and not mapping) or "negative" in chosen
    if label is None and score is None and not triplet and not mapping and ctx.targets:
        raise ctx.error(
            line, f"header needs a 'label' or a 'score' column: expected {LAYOUTS} (the header: "
                  f"{found})"
        )  # fmt: skip
    # The Hugging Face NLI layout, whether found by name or mapped to its own names.
    sentences = (chosen["a"].strip().lower(), chosen["b"].strip().lower())
    hf_nli = sentences == ("premise", "hypothesis") and (
        not mapping or (label or "").strip().lower() == "label"
    )
    # A mapping of only a= and b= reads pairs without targets (to predict on, for example), as
    # does a known header without them where the caller asks for none (`read_pairs(targets=)`).
    implied = label is None and score is None and triplet
    return _Columns(chosen["a"], chosen["b"], chosen.get("negative"), label, score, hf_nli,
                    implied)  # fmt: skip


def _table_pairs(
    ctx: _Ctx, n: int, get: Callable[[str], str | None], cols: _Columns
) -> Iterator[tuple[Pair, bool]]:
    """The pairs of one table row (`get(column)` -> its text, None when the row lacks it)."""
    label = score = None
    if cols.label is not None:
        label = get(cols.label)
        if label is None or not label.strip():
            raise ctx.error(n, f"{cols.label} is empty")
        label = label.strip()
        if any(unicodedata.category(c) == "Cc" for c in label):
            raise ctx.error(n, f"label {_short(label)} contains a control character")
        if cols.hf_nli and _WHOLE_NUMBER.fullmatch(label):  # pandas writes 0 as 0.0
            label = str(int(float(label)))
        if (cols.hf_nli and label == "-1") or (label == "-" and cols.label.lower() == "gold_label"):
            ctx.skipped += 1  # no annotator majority: by convention not used
            return
        number = _number(label)
        if cols.hf_nli and label in HF_NLI_LABELS:
            label = HF_NLI_LABELS[label]
        elif cols.hf_nli and number is not None:
            raise ctx.error(
                n, f"label {_short(label)}: premise/hypothesis files label 0 entailment, 1 "
                   f"neutral, 2 contradiction (-1: no gold label, skipped)"
            )  # fmt: skip
        elif number is not None and math.isfinite(number) and number != int(number):
            # GLUE's STS-B on the hub keeps its similarity scores in a column named label.
            raise ctx.error(
                n, f"label {_short(label)} is a fraction: a label names a class; if "
                   f"{cols.label} holds similarity scores, map it as the score "
                   f"(PATH:a={cols.a},b={cols.b},score={cols.label})"
            )  # fmt: skip
        if label.lower() in NLI_LABELS:
            label = label.lower()
    if cols.score is not None:
        # Range is checked after reading: the scale is inferred from all scores.
        score = _score(ctx, n, get(cols.score) or "", cols.score, -math.inf, math.inf)
    a, b = get(cols.a), get(cols.b)
    for column, text in ((cols.a, a), (cols.b, b)):
        if text is None:
            raise ctx.error(n, f"{column} is missing")
    names = (cols.a.strip(), cols.b.strip())
    if not cols.implied:
        yield _pair(ctx, n, a, b, names, label, score)
        return
    # (anchor, positive[, negative]): the positive entails the anchor, the negative contradicts
    # it: the contrastive objective's positives and hard negatives (--contrastive).
    yield _pair(ctx, n, a, b, names, "entailment")
    negative = get(cols.negative) if cols.negative is not None else None
    if negative is not None and negative.strip():
        yield _pair(ctx, n, a, negative, (names[0], cols.negative.strip()), "contradiction")


def _read_csv(
    ctx: _Ctx, lines: _Lines, split: str | None, mapping: dict[str, str] | None = None
) -> Iterator[tuple[Pair, bool]]:
    if (first := _first(lines)) is None:
        return
    records = _csv_records(ctx, first, lines)
    hn, names = next(records)
    ctx.header = True
    cols = _columns(ctx, hn, names, mapping)
    index = {name: i for i, name in reversed(list(enumerate(names)))}  # first of a name wins
    for n, f in records:
        if not f:
            continue
        ctx.rows += 1
        if len(f) != len(names):
            raise ctx.error(n, f"expected {len(names)} fields as in the header, found {len(f)}")
        yield from _table_pairs(ctx, n, lambda column, f=f: f[index[column]], cols)


def _csv_records(ctx: _Ctx, first: tuple[int, str], lines: _Lines) -> _Lines:
    """(line, fields) of each record of a CSV/TSV (TSV when its header has a tab) whose first
    non-blank line is `first`, the header first. csv.reader is fed every physical line (blank
    ones come back as []), so that its line_num plus the header's offset is the file's line
    number, even for quoted newlines; strictly: a stray quote is an error, not a silently
    merged field."""
    hn, header = first
    delimiter = _delimiter(header)
    kind = "TSV" if delimiter == "\t" else "CSV"
    rows = csv.reader(
        chain([header + "\n"], (t + "\n" for _, t in lines)),
        delimiter=delimiter,
        strict=True,
    )
    while True:
        n = hn + rows.line_num  # the line the next record starts on
        try:
            fields = next(rows)
        except StopIteration:
            return
        except csv.Error as e:
            raise ctx.error(n, f"malformed {kind}: {e} (a text that starts with a quote is read "
                               f"as a quoted field)") from None  # fmt: skip
        # A TSV text that opens a quote it never closes would swallow the lines after it into
        # one field, rows merged without a word: in a TSV a record is one line.
        if kind == "TSV" and hn + rows.line_num > n + 1:
            raise ctx.error(n, f"a quote opened here closes on line {hn + rows.line_num - 1}: "
                               f"in a TSV a quoted text must close on its own line")  # fmt: skip
        yield n, fields


def _read_jsonl(
    ctx: _Ctx, lines: _Lines, split: str | None, mapping: dict[str, str] | None = None
) -> Iterator[tuple[Pair, bool]]:
    """JSON lines of objects whose keys are the columns (the first object's keys): a label or
    score key that only a later object has is an error, not a column left unread."""
    cols, unread = None, set()
    for n, text in _nonblank(lines):
        ctx.rows += 1
        row = _json_object(ctx, n, text)
        if cols is None:
            ctx.header = True
            cols = _columns(ctx, n, list(row), mapping)
            if not mapping:  # the target names the reader knows, where none was found
                unread = {*(LABEL_COLUMNS if cols.label is None else ()),
                          *(SCORE_COLUMNS if cols.score is None else ())}  # fmt: skip
        late = next((k for k in row if k.strip().lower() in unread), None) if unread else None
        if late is not None:
            raise ctx.error(n, f"key {late!r} is not in the first object, whose keys are the "
                               f"columns: give every object the same keys")  # fmt: skip
        get = functools.partial(_field, ctx, n, row, cols=cols)
        yield from _table_pairs(ctx, n, get, cols)


def _field(ctx: _Ctx, n: int, row: dict, key: str, *, cols: _Columns) -> str | None:
    """A JSON or Parquet field as text: a string; a label or score may be a number, a
    sentence may not (a number where a text belongs is a mistake, not the text "3.5")."""
    value = row.get(key)
    if value is None or isinstance(value, str):
        return value
    target = key in (cols.label, cols.score)
    if target and isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(value)
    raise ctx.error(n, f"{key} is not a string" + (" or a number" if target else ""))


class _KeyTwice(ValueError):
    """A JSON object naming a key twice (json.loads would keep the last silently)."""


def _unique_keys(items: list[tuple[str, object]]) -> dict:
    row: dict = {}
    for key, value in items:
        if key in row:
            raise _KeyTwice(key)
        row[key] = value
    return row


def _json_object(ctx: _Ctx, n: int, text: str) -> dict:
    try:
        row = json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as e:
        raise ctx.error(n, f"invalid JSON: {e.msg} at column {e.colno}") from None
    except _KeyTwice as e:
        raise ctx.error(n, f"key {_short(str(e.args[0]))} given twice: which is meant?") from None
    except (ValueError, RecursionError):  # "[[[[..." nested deep, an int of 5000 digits
        raise ctx.error(n, "invalid JSON: nested too deeply or a number too long") from None
    if not isinstance(row, dict):
        raise ctx.error(n, "expected a JSON object")
    return row


def _parquet_rows(path: str | os.PathLike[str]) -> tuple[list[str], Iterator[tuple[int, dict]]]:
    """The column names of a Parquet file and its rows (1-based numbers, dicts), read a batch
    at a time. Needs pyarrow, an optional dependency."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError(
            f"{path}: a Parquet file: reading it needs pyarrow: pip install pyarrow"
        ) from None
    try:
        file = pq.ParquetFile(path)
        names = list(file.schema_arrow.names)
    except Exception as e:  # pyarrow raises ArrowInvalid, OSError...: a damaged file
        raise DataError(path, None, f"unreadable Parquet file ({str(e)[:200]})") from None

    def rows() -> Iterator[tuple[int, dict]]:
        n = 0
        try:
            for batch in file.iter_batches(batch_size=4096):
                for row in batch.to_pylist():
                    n += 1
                    yield n, row
        except Exception as e:
            raise DataError(path, None, f"unreadable Parquet file ({str(e)[:200]})") from None

    return names, rows()


def _read_parquet(
    ctx: _Ctx, path: str | os.PathLike[str], split: str | None, mapping: dict[str, str] | None
) -> Iterator[tuple[Pair, bool]]:
    names, rows = _parquet_rows(path)
    ctx.header = True
    cols = _columns(ctx, None, names, mapping)
    used = (cols.a, cols.b, cols.negative, cols.label, cols.score)
    twice = next((c for c in used if c is not None and names.count(c) > 1), None)
    if twice is not None:  # a row as a dict keeps one of them, silently
        raise ctx.error(None, f"column {_short(twice)} appears twice: which is meant?")
    for n, row in rows:
        ctx.rows += 1
        get = functools.partial(_field, ctx, n, row, cols=cols)
        yield from _table_pairs(ctx, n, get, cols)


# A reader yields each pair with a flag: were control characters replaced in it?
_Reader = Callable[[_Ctx, _Lines, str | None], Iterator[tuple[Pair, bool]]]
_READERS: dict[str, _Reader] = {
    "sts": _read_sts,
    "sick": _read_sick,
    "nli": _read_nli,
}
_TABLE_READERS = {"csv": _read_csv, "jsonl": _read_jsonl}


def _is_parquet(path: str | os.PathLike[str]) -> bool:
    """A Parquet file begins and ends with the magic bytes PAR1."""
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"PAR1":
                return False
            f.seek(-4, os.SEEK_END)
            return f.read(4) == b"PAR1"
    except OSError:
        return False


def detect_format(path: str | os.PathLike[str], columns: dict[str, str] | None = None) -> str:
    """Tell the format from the content (never from the name): Parquet's magic bytes, else the
    first non-empty line. With a column `mapping`, a text file is a table (csv or jsonl)."""
    _check_path(path)
    if _is_parquet(path):
        return "parquet"
    if (line := _first(_lines(path))) is None:
        raise DataError(path, None, "no sentence pairs: the file is empty")
    n, first = line
    if first.lstrip().startswith("{"):
        try:
            row = json.loads(first)
        except (ValueError, RecursionError):
            row = None  # the NLI reader names what is wrong with the line
        scored = isinstance(row, dict) and any(k.strip().lower() in SCORE_COLUMNS for k in row)
        if isinstance(row, dict) and (columns or scored or "gold_label" not in row):
            return "jsonl"  # a table: the NLI reader would leave a score unread
        if row is not None or "\t" not in first:  # else a TSV whose first text starts with {
            return "nli"
    if columns:
        return "csv"
    fields = first.split("\t")
    if all(c in _sick_names(fields) for c in SICK_COLUMNS):
        return "sick"
    if len(fields) in (7, 9):
        try:
            float(fields[4])
            return "sts"
        except ValueError:
            pass
    try:
        names = next(csv.reader([first], delimiter="\t" if "\t" in first else ","))
    except csv.Error:
        names = []
    lower = {h.strip().lower() for h in names}
    if any(x in lower and y in lower for x, y in CSV_SENTENCE_COLUMNS):
        return "csv"
    raise DataError(
        path, n, f"unknown format: the first line is no STS-B row, SICK header, NLI JSON line, "
                 f"or header of a CSV/TSV, JSON lines or Parquet table with {LAYOUTS}"
    )  # fmt: skip


def _score_range(
    ctx: _Ctx, fmt: str, pairs: list[Pair], unread: Iterator[Pair]
) -> tuple[float, float] | None:
    """The file's gold scale; `unread`: the rows after a limit that stopped reading."""
    if fmt == "sts":
        return (0.0, 5.0)
    if fmt == "sick":
        return (1.0, 5.0)
    if fmt == "nli" or any(p.score is None for p in pairs):
        return None
    # A table: the smallest usual scale that holds every score of the file, [0, 1] or STS's
    # [0, 5]. One scale per file, whatever part of it is read: where a limit stopped reading
    # before any score past 1, the rest is read on until one shows the file's scale is [0, 5].
    if all(0.0 <= p.score <= 1.0 for p in pairs):
        return (0.0, 5.0) if any(1.0 < s <= 5.0 for s in _scores(unread)) else (0.0, 1.0)
    bad = next((p for p in pairs if not 0.0 <= p.score <= 5.0), None)
    if bad is not None:
        raise ctx.error(bad.line, f"score {bad.score!r} is outside [0, 1] and [0, 5]")
    return (0.0, 5.0)


def _scores(unread: Iterator[Pair]) -> Iterator[float]:
    """The scores of rows past a limit, up to the first that does not read: those rows were
    not asked for, so their faults are not the caller's to fix; only the scale is looked for."""
    try:
        yield from (p.score for p in unread if p.score is not None)
    except DataError:
        return


def _check_arguments(format: str | None, split: str | None, limit: int | None) -> str | None:
    """Refuse an unknown format or split and a limit that is not a positive integer; the
    split in upper case."""
    if format is not None and format not in FORMATS:
        raise ConfigError(f"unknown data format {format!r}; expected one of {', '.join(FORMATS)}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"limit must be a positive integer, got {limit!r}")
    if split is not None:
        if not isinstance(split, str) or split.upper() not in SICK_SPLITS:
            raise ConfigError(f"unknown split {split!r}; expected one of {', '.join(SICK_SPLITS)}")
        split = split.upper()
    return split


def read_pairs(
    path: str | os.PathLike[str],
    format: str | None = None,
    split: str | None = None,
    limit: int | None = None,
    columns: dict[str, str] | None = None,
    targets: bool = True,
) -> PairSet:
    """Read and validate every row of a sentence-pair file.

    Args:
        path: the file.
        format: one of FORMATS, or None to detect it from the content.
        split: SICK only: TRAIN, TRIAL or TEST (any case) keeps that SemEval_set.
        limit: keep the first `limit` pairs and stop reading there (with targets, a table
            whose scores so far lie in [0, 1] is read on for its scale until a score past 1
            or a row that does not read).
        columns: a table's columns by role, {"a": COL, "b": COL, "label": COL, "score": COL,
            "negative": COL}, for names `LAYOUTS` does not know.
        targets: False reads a table whose header names its sentences but no label or score
            column (pairs to predict on); True refuses it (a misspelt `lable` would otherwise
            leave a training file without targets).
    Raises:
        DataError: the file is missing, unreadable, malformed or holds no pairs.
        ConfigError: an unknown format or split, a split for a non-SICK file, a bad limit, a
            column mapping for a format without columns, a Parquet file without pyarrow.
    """
    split = _check_arguments(format, split, limit)
    _check_path(path)
    fmt = format or detect_format(path, columns)
    if split is not None and fmt != "sick":
        raise ConfigError(f"split applies to SICK files only, not to the {fmt} format")
    if columns and fmt not in TABLES:
        raise ConfigError(
            f"{path}: a column mapping applies to CSV/TSV, JSON lines and Parquet tables, not "
            f"to the {fmt} format"
        )
    ctx = _Ctx(str(path), targets=targets)
    reader = _rows(ctx, path, fmt, split, columns)
    rows = list(islice(reader, limit))
    pairs = [pair for pair, _ in rows]
    unlabelled = "gold_label '-'" if fmt == "nli" else "no gold label ('-', or -1)"
    if not pairs:
        if ctx.rows == 0:
            why = "only a header" if ctx.header else "the file is empty"
        elif split is not None:
            why = f"no row has SemEval_set {split}"
        else:
            why = f"all {ctx.skipped} rows have {unlabelled}"
        raise DataError(path, None, f"no sentence pairs: {why}")
    skipped = ctx.skipped  # before the scale's reading on, which skips rows of its own
    unread = (pair for pair, _ in reader) if targets else iter(())  # to predict on: no scale
    scale = _score_range(ctx, fmt, pairs, unread)
    repaired = sum(fixed for _, fixed in rows)
    said = [f"{skipped} rows with {unlabelled} skipped"] if skipped else []
    said += [f"{repaired} rows had control characters replaced by spaces"] if repaired else []
    if said:  # counted, and said: nothing is left out or changed silently
        print(f"note: {path}: {'; '.join(said)}", file=sys.stderr)
    return PairSet(str(path), fmt, pairs, scale, skipped, repaired)


def _rows(
    ctx: _Ctx, path: str | os.PathLike[str], fmt: str, split: str | None, columns: dict | None
) -> Iterator[tuple[Pair, bool]]:
    """The (pair, repaired) rows of a file in format `fmt`, as its reader yields them."""
    if fmt == "parquet":
        return _read_parquet(ctx, path, split, columns)
    if fmt in _TABLE_READERS:
        return _TABLE_READERS[fmt](ctx, _lines(path), split, columns)
    return _READERS[fmt](ctx, _lines(path), split)


def shared_score_range(sets: Iterable[PairSet]) -> tuple[float, float] | None:
    """The gold scale that every set with scores shares: the scale a regression trained on
    them answers on. None when no set has scores, or when their scales differ (a cosine
    fitted to two scales at once maps back to neither)."""
    ranges = {s.score_range for s in sets if s.has_scores and s.score_range is not None}
    return ranges.pop() if len(ranges) == 1 else None


def read_sentences(path: str | os.PathLike[str]) -> list[str]:
    """One sentence a line (for `sbert encode`), validated like a pair's sentences: a blank
    line among them (line i is row i of the answer: none may be left out), a NUL or non-UTF-8
    bytes are a DataError naming the line; an empty file too. Blank lines at the end, after
    the last sentence, are skipped: they shift no row."""
    _check_path(path)
    ctx = _Ctx(str(path))
    lines = list(_lines(path))
    while lines and not lines[-1][1]:
        lines.pop()
    sentences = [_sentence(ctx, n, text, "sentence") for n, text in lines]
    if not sentences:
        raise DataError(path, None, "empty file: no sentences")
    return sentences


def check_sentences(texts: Sequence[str], names: Sequence[str]) -> list[str]:
    """Sentences given on the command line, validated as a file's are (an empty one, a NUL, an
    unpaired surrogate is a DataError naming it), with control characters turned into spaces."""
    ctx = _Ctx("command line")
    return [_sentence(ctx, None, text, name) for text, name in zip(texts, names, strict=True)]


def read_tsv_pairs(path: str | os.PathLike[str]) -> list[Pair]:
    """Two tab-separated sentences a line, no header and no targets (pairs to predict on),
    validated like the other readers: a bad line is a DataError naming it."""
    _check_path(path)
    ctx = _Ctx(str(path))
    pairs = []
    for n, text in _nonblank(_lines(path)):
        fields = text.split("\t")
        if len(fields) != 2:
            raise ctx.error(n, f"expected 2 tab-separated sentences, found {len(fields)} fields")
        pairs.append(_pair(ctx, n, *fields, ("first sentence", "second sentence"))[0])
    if not pairs:
        raise DataError(path, None, "no sentence pairs: the file is empty")
    return pairs


# The column a corpus's texts are in when --column does not say (first found wins).
TEXT_COLUMNS = ("text", "sentence", "passage", "document", "content", "body")
_TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet")


def read_corpus(
    path: str | os.PathLike[str], column: str | None = None
) -> tuple[list[str], str | None]:
    """The texts of a corpus to index, and the column they came from (None: one a line).

    A CSV/TSV (`.csv`, `.tsv`), JSON lines (`.jsonl`, `.json`) or Parquet file is a table: its
    texts are `column`, else its only column, else the column named as in TEXT_COLUMNS (said on
    stderr); a table with none of them is refused with the fix (--column). Any other file is one
    text a line: a header line would be indexed as a text, and CSV rows as texts, silently.
    """
    _check_path(path)
    table = Path(path).suffix.lower() in _TABLE_SUFFIXES or _is_parquet(path)
    if column is not None:
        return read_column(path, column), column
    if not table:
        return read_sentences(path), None
    names = _table_names(path)
    lower = {n.strip().lower(): n for n in reversed(names)}
    chosen = next((lower[c] for c in TEXT_COLUMNS if c in lower), None)
    if len(names) == 1:
        chosen = names[0]
    if chosen is None:
        shown = ", ".join(_short(n, 20) for n in names[:12])
        raise DataError(
            path, None, f"a table with columns {shown}: say which holds the texts, --column NAME "
                        f"(or index a plain text file, one text a line)"
        )  # fmt: skip
    if len(names) > 1:
        print(f"note: {path}: indexing its column {chosen!r} (--column picks another)",
              file=sys.stderr)  # fmt: skip
    return read_column(path, chosen), chosen


def _table_names(path: str | os.PathLike[str]) -> list[str]:
    """A table's column names: a CSV/TSV header, the first JSON object's keys, Parquet's."""
    if _is_parquet(path):
        return _parquet_rows(path)[0]
    ctx = _Ctx(str(path))
    lines = _lines(path)
    if (first := _first(lines)) is None:
        raise DataError(path, None, "empty file: no texts")
    if Path(path).suffix.lower() in (".jsonl", ".json"):
        return list(_json_object(ctx, *first))
    return [h.strip() for h in next(_csv_records(ctx, first, lines))[1]]


def _delimiter(header: str) -> str:
    return "\t" if "\t" in header else ","


def read_column(path: str | os.PathLike[str], column: str) -> list[str]:
    """The texts of one column of a CSV/TSV file with a header (TSV when the header has a tab),
    of one field of a JSON-lines file (`.jsonl`, `.json`) or of a Parquet file, in file order,
    each validated like a sentence: a missing or empty text is a DataError naming its line."""
    _check_path(path)
    ctx = _Ctx(str(path))
    texts = []
    if _is_parquet(path):
        names, rows = _parquet_rows(path)
        if column not in names:
            raise DataError(path, None, f"no column {_short(column)} ({', '.join(names[:12])})")
        for n, row in rows:
            if not isinstance(row.get(column), str):
                raise ctx.error(n, f"{column} is not a text")
            texts.append(_sentence(ctx, n, row[column], column))
    elif Path(path).suffix.lower() in (".jsonl", ".json"):
        for n, line in _nonblank(_lines(path)):
            try:
                row = json.loads(line)
            except (ValueError, RecursionError):
                raise ctx.error(n, "invalid JSON") from None
            if not isinstance(row, dict) or column not in row:
                raise ctx.error(n, f"no text field {_short(column)}")
            if not isinstance(row[column], str):
                raise ctx.error(n, f"{column} is not a text: {_short(str(row[column]))}")
            texts.append(_sentence(ctx, n, row[column], column))
    else:
        lines = _lines(path)
        if (first := _first(lines)) is None:
            raise DataError(path, None, "empty file: no texts")
        records = _csv_records(ctx, first, lines)  # a quoted text may span lines
        hn, names = next(records)
        names = [h.strip() for h in names]
        if column not in names:
            raise ctx.error(hn, f"no column {_short(column)} in the header ({', '.join(names)})")
        if names.count(column) > 1:
            raise ctx.error(hn, f"the header names {_short(column)} twice: which is the text?")
        i = names.index(column)
        for n, row in records:
            if not row:  # a blank line
                continue
            if len(row) != len(names):
                raise ctx.error(n, f"expected {len(names)} fields, found {len(row)}")
            texts.append(_sentence(ctx, n, row[i], column))
    if not texts:
        raise DataError(path, None, "no texts")
    return texts
