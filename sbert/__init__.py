"""Sentence-BERT from scratch in PyTorch: a multi-task sentence encoder."""

from __future__ import annotations

import importlib

from .errors import CheckpointError, ConfigError, DataError, SbertError

# The torch-using parts load on first use (PEP 562), so that `import sbert.onnx_runner` works
# where torch is not installed: a deployment runs exported ONNX graphs with onnxruntime alone.
_LAZY = {
    "PRESETS": ".bert",
    "Bert": ".bert",
    "BertConfig": ".bert",
    "preset": ".bert",
    "SentenceBert": ".model",
}

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


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
