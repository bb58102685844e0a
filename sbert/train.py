"""Part 3: training (being written)."""

from __future__ import annotations


def add_train_parsers(sub) -> None:
    """Add `train` and `evaluate` to the `sbert` command line."""
