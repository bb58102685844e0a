"""Sentence-BERT from scratch in PyTorch: a multi-task sentence encoder."""

from .bert import PRESETS, Bert, BertConfig, preset
from .errors import CheckpointError, ConfigError, DataError, SbertError
from .model import SentenceBert

__all__ = [
    "PRESETS",
    "Bert",
    "BertConfig",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "SbertError",
    "SentenceBert",
    "preset",
]
