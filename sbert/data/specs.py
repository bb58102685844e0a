"""Data specs: `PATH[@SPLIT][[FROM:TO]][:COLUMNS][:OBJECTIVE]`, which pairs of which file train
(or are evaluated) how, e.g. `data/sick/SICK_train_trial.txt@TRAIN[1000:]:regression`.

SPLIT picks a SICK split, [FROM:TO] a Python-style range of its pairs, COLUMNS a table's
columns by role (`qa.csv:a=question,b=answer,score=sim`: names the readers do not know),
OBJECTIVE what the file trains: classification, regression, both (default: every target the
file has), or the name of a regression loss (cosent, angle) to fit the file's scores with it.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from sbert.choices import REGRESSION_LOSSES
from sbert.data.readers import PairSet, read_pairs
from sbert.errors import ConfigError, DataError

T = TypeVar("T")

SPEC_OBJECTIVES = ("classification", "regression", "both", *REGRESSION_LOSSES)


@dataclass(frozen=True)
class DataSpec:
    """`PATH[@SPLIT][[FROM:TO]][:COLUMNS][:OBJECTIVE]` taken apart, e.g.
    `data/sick/SICK_train_trial.txt@TRAIN[1000:]:regression`."""

    path: str
    split: str | None = None
    rows: slice | None = None  # pairs FROM:TO of the file (after the split), Python-style
    objective: str = "both"  # classification, regression, both, or a regression loss's name
    columns: dict[str, str] | None = None  # a table's columns by role: {"a": "question", ...}

    @property
    def name(self) -> str:
        """How logs and metrics name this data: file stem, split and rows."""
        rows = ""
        if self.rows is not None:  # [0:N] is named [:N], as before; [:0] stays [:0]
            stop = "" if self.rows.stop is None else self.rows.stop
            rows = f"[{self.rows.start or ''}:{stop}]"
        return Path(self.path).stem + (f"-{self.split}" if self.split else "") + rows


_ROWS = re.compile(r"^(.*)\[(\d*):(\d*)\]$")


_COLUMNS = re.compile(r"^(.*):((?:\w+=[^,=:]+,)*\w+=[^,=:]+)$")


def parse_columns(text: str) -> dict[str, str]:
    """`a=question,b=answer,score=sim` -> {"a": "question", "b": "answer", "score": "sim"}."""
    mapping = {}
    for item in text.split(","):
        key, sep, column = item.partition("=")
        if not (sep and key.strip() and column.strip()) or key.strip() in mapping:
            raise ConfigError(f"columns: expected ROLE=COLUMN[,ROLE=COLUMN...], not {text!r}")
        mapping[key.strip()] = column.strip()
    return mapping


def parse_spec(spec: str) -> DataSpec:
    """`PATH[@SPLIT][[FROM:TO]][:COLUMNS][:OBJECTIVE]` -> DataSpec. OBJECTIVE `cosent` or
    `angle` trains the file's scores with that regression loss instead of the stage's."""
    path, objective = spec, "both"
    head, sep_objective, tail = spec.rpartition(":")
    if sep_objective and tail in SPEC_OBJECTIVES:
        path, objective = head, tail
    columns = None
    match = _COLUMNS.match(path)
    if match and not Path(path).exists():
        path, columns = match[1], parse_columns(match[2])
    rows = None
    match = _ROWS.match(path)
    if match:
        path = match[1]
        rows = slice(int(match[2]) if match[2] else None, int(match[3]) if match[3] else None)
    at = "@" in Path(path).name and not Path(path).exists()  # "run@2024.csv" is a file's name
    path, sep, split = path.rpartition("@") if at else (path, "", "")
    # "data.csv:foo" (or "data.csv@TRAIN:foo") is no file; if "data.csv" is one, the user
    # meant an objective.
    if (
        sep_objective
        and tail not in SPEC_OBJECTIVES
        and columns is None
        and not tail.endswith("]")  # the colon of [FROM:TO]
        and not Path(spec).exists()
        and Path(parse_spec(head).path).is_file()
    ):
        raise ConfigError(
            f"{spec}: unknown objective {tail!r}; choose one of {', '.join(SPEC_OBJECTIVES)}"
        )
    return DataSpec(path, split or None, rows, objective, columns)


def read_spec(
    spec: str | DataSpec,
    limit: int | None = None,
    format: str | None = None,
    columns: dict[str, str] | None = None,
    targets: bool = True,
) -> PairSet:
    """The validated pairs a spec names: its split, then its rows, then the first `limit`.
    `columns` (a command's --columns) applies where the spec names none; `targets` as
    `read_pairs` takes it."""
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    if spec.columns and columns:
        raise ConfigError(f"{spec.path}: its columns are named twice, in the data spec and by "
                          f"--columns: name them once")  # fmt: skip
    read = functools.partial(read_pairs, spec.path, format=format, split=spec.split,
                             columns=spec.columns or columns, targets=targets)  # fmt: skip
    if spec.rows is None:
        return read(limit=limit)
    if spec.rows.stop == 0:
        raise DataError(spec.path, None, f"no pairs in {spec.name}")
    data = read(limit=spec.rows.stop)
    return dataclasses.replace(data, pairs=spec_rows(spec, data.pairs)[:limit])


def read_scored_spec(
    spec: str, format: str | None = None, columns: dict[str, str] | None = None
) -> PairSet:
    """The pairs of a dev or evaluation spec with the targets its OBJECTIVE scores: `:regression`
    (or a regression loss's name) keeps the scores alone, `:classification` the labels alone."""
    parsed = parse_spec(spec)
    data = read_spec(parsed, format=format, columns=columns)
    if parsed.objective == "both":
        return data
    keep, drop = ("label", "score") if parsed.objective == "classification" else ("score", "label")
    if not (data.has_labels if keep == "label" else data.has_scores):
        raise DataError(
            data.path, None, f"{spec} asks for {parsed.objective}: its pairs have no {keep}s"
        )
    pairs = [dataclasses.replace(p, **{drop: None}) for p in data.pairs]
    return dataclasses.replace(
        data, pairs=pairs, score_range=data.score_range if keep == "score" else None
    )


def spec_rows(spec: DataSpec, pairs: list[T]) -> list[T]:
    """The pairs FROM:TO of `pairs` (all where the spec names no range), refused where the
    range reaches past them or holds none."""
    if spec.rows is None:
        return pairs
    if spec.rows.stop is not None and len(pairs) < spec.rows.stop:
        have = f"{len(pairs)}" + (f" in split {spec.split}" if spec.split else "")
        raise DataError(
            spec.path, None, f"{spec.name} asks for pairs up to {spec.rows.stop}; there are {have}"
        )
    if not pairs[spec.rows]:
        raise DataError(spec.path, None, f"no pairs in {spec.name}")
    return pairs[spec.rows]
