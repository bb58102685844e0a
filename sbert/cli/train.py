"""train a multi-task sentence encoder

Train a sentence encoder on classification and regression objectives at once (Sentence-BERT,
Reimers & Gurevych 2019). Without --train: the demo. --config FILE.toml sets any of these
options by name, and sequential [[stages]] tables.
"""

from __future__ import annotations

import argparse

from sbert.options import given
from sbert.training.config import TrainConfig as Options
from sbert.training.config import config_from_args, read_config_file


def parse(args: argparse.Namespace) -> Options:
    """Defaults, then the config file (and its stages), then the flags given."""
    from pathlib import Path

    values = read_config_file(Path(args.config)) if args.config else {}
    return config_from_args(values, given(args, Options))


def run(config: Options) -> None:
    from sbert.training.run import run as train

    train(config)
