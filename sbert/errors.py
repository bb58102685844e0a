"""Typed errors raised by library code; only `cli.py` turns them into exit codes."""

from __future__ import annotations

import operator
from pathlib import Path


class SbertError(Exception):
    """Base class: an error with a message a user can act on, shown as one line by the CLI."""


class DataError(SbertError):
    """A problem in an input data file, located by file and (1-based) line number."""

    def __init__(self, path: str | Path, line: int | None, problem: str):
        self.path, self.line, self.problem = str(path), line, problem
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {problem}")


class CheckpointError(SbertError):
    """A model folder or training checkpoint that is missing, damaged or does not fit."""

    def __init__(self, path: str | Path, problem: str):
        self.path, self.problem = str(path), problem
        super().__init__(f"{self.path}: {problem}")


class ConfigError(SbertError):
    """Bad settings: an unknown preset, strategy or flag combination."""


class TrainingError(SbertError):
    """Training cannot go on (a non-finite loss, out of memory, a locked output folder)."""


def whole_number(value, name: str, least: int = 1) -> int:
    """`value` as an int of at least `least`; anything else (a float, None, a bool, less) is a
    ConfigError naming `name`: a batch size of -5 must not quietly make no batches."""
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be a whole number, not {value!r}")
    try:
        number = operator.index(value)  # an int or a numpy integer
    except TypeError:
        raise ConfigError(f"{name} must be a whole number, not {value!r}") from None
    if number < least:
        raise ConfigError(f"{name} must be at least {least}, not {number}")
    return number
