"""Sentence-BERT from scratch in PyTorch: a multi-task sentence encoder.

The public API, re-exported lazily (PEP 562): `import sbert` imports no torch, so that
`sbert.load` of an ONNX export runs where torch is not installed.
"""

from __future__ import annotations

import importlib

from sbert.errors import CheckpointError, ConfigError, DataError, SbertError, TrainingError

# Public name -> the module that defines it.
_LAZY = {
    "load": "sbert.inference.load",
    "Encoder": "sbert.inference.encoder",
    "OnnxEncoder": "sbert.inference.onnx_runner",
    "predict": "sbert.inference.predict",
    "Prediction": "sbert.inference.predict",
    "Index": "sbert.inference.index",
    "evaluate_retrieval": "sbert.inference.retrieval",
    "export": "sbert.inference.export",
    "TrainConfig": "sbert.training.config",
    "train": "sbert.training.run",
    "SentenceBert": "sbert.models.sentence",
    "MultiTaskModel": "sbert.models.multitask",
    "OBJECTIVES": "sbert.models.objectives",
    "PRESETS": "sbert.models.bert",
    "Bert": "sbert.models.bert",
    "BertConfig": "sbert.models.bert",
    "preset": "sbert.models.bert",
}
_RENAMED = {"train": "run"}  # sbert.train is training.run.run

__all__ = [
    *_LAZY,
    "CheckpointError",
    "ConfigError",
    "DataError",
    "SbertError",
    "TrainingError",
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), _RENAMED.get(name, name))
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
