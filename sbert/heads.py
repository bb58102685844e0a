"""The heads a model folder keeps beside its encoder, read as numpy arrays: the classifier of
SBERT eq. 1 and the gold score scale of the regression objective.

No torch anywhere in this module: `sbert export` copies these files into the ONNX folder, and a
deployment that runs the graph on ONNX Runtime applies the classifier in numpy
(sbert/inference/predict.py). Both the PyTorch model and the ONNX runner read and write them here.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sbert.errors import CheckpointError
from sbert.fileio import read_json, regular_file, write_error

# The classification head of a multi-task model lives beside the encoder in the same folder.
# sentence-transformers ignores files that modules.json does not name, so it still loads it.
CLASSIFIER_WEIGHTS, CLASSIFIER_CONFIG = "classifier.safetensors", "classifier.json"
# The gold score scale (lo, hi) of the regression data a model was trained on: regression fits
# cos(u, v) to (score - lo) / (hi - lo), so lo + cos * (hi - lo) answers on the data's own scale.
SCORE_SCALE = "score_scale.json"
HEAD_FILES = (CLASSIFIER_WEIGHTS, CLASSIFIER_CONFIG, SCORE_SCALE)


def _read_classifier(folder: Path) -> tuple[list[str], dict[str, np.ndarray]] | None:
    """The classifier's labels and arrays in `folder`, or None when it has no classifier."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    folder = Path(folder)
    if not os.path.lexists(folder / CLASSIFIER_CONFIG):
        return None
    labels = read_json(folder / CLASSIFIER_CONFIG).get("labels")
    if not (isinstance(labels, list) and labels and all(isinstance(x, str) for x in labels)):
        raise CheckpointError(folder / CLASSIFIER_CONFIG, "'labels' must be a list of strings")
    if len(set(labels)) < len(labels):  # two classes of one name: predictions could not tell
        twice = sorted({x for x in labels if labels.count(x) > 1})
        raise CheckpointError(folder / CLASSIFIER_CONFIG, f"label(s) named twice: {twice}"[:200])
    path = folder / CLASSIFIER_WEIGHTS
    regular_file(path)  # not a FIFO, not a link to /dev/zero
    try:
        state = load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(path, f"unreadable classifier ({e})") from None
    for name, array in state.items():  # an integer or NaN head would answer nonsense
        if array.dtype.kind != "f":
            raise CheckpointError(path, f"{name} has dtype {array.dtype}: not floating point")
        if not np.isfinite(array).all():
            raise CheckpointError(path, f"{name} holds NaN or infinite values")
    return labels, state


def read_score_scale(folder: Path) -> tuple[float, float] | None:
    """The (lo, hi) `folder` records, or None when it records none (an older save)."""
    path = Path(folder) / SCORE_SCALE
    if not os.path.lexists(path):
        return None
    scale = read_json(path)
    lo, hi = scale.get("lo"), scale.get("hi")
    numbers = all(type(x) in (int, float) and math.isfinite(x) for x in (lo, hi))
    if not (numbers and lo < hi):
        raise CheckpointError(path, "expected finite numbers 'lo' < 'hi'")
    return float(lo), float(hi)


@dataclass(frozen=True)
class Classifier:
    """The trained classification head as arrays: softmax(W [u; v; |u - v|] + b), SBERT eq. 1.

    Shapes: weight (k, 3H), bias (k,), k = len(labels).
    """

    labels: list[str]
    weight: np.ndarray
    bias: np.ndarray

    @classmethod
    def load(cls, folder: Path, dim: int) -> Classifier | None:
        """The classifier in `folder` for `dim`-dimensional sentence vectors, or None."""
        head = _read_classifier(folder)
        if head is None:
            return None
        labels, state = head
        want = {"weight": (len(labels), 3 * dim), "bias": (len(labels),)}
        got = {k: tuple(v.shape) for k, v in state.items()}
        if got != want:
            message = f"classifier does not fit: {got}, expected {want}"
            raise CheckpointError(Path(folder) / CLASSIFIER_WEIGHTS, message)
        return cls(labels, state["weight"].astype(np.float32), state["bias"].astype(np.float32))

    def probabilities(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """(N, k) label probabilities of the pairs (u, v), each (N, H)."""
        logits = np.concatenate([u, v, np.abs(u - v)], axis=1) @ self.weight.T + self.bias
        e = np.exp(logits - logits.max(axis=1, keepdims=True))  # shifted: exp cannot overflow
        return e / e.sum(axis=1, keepdims=True)

    def write(self, folder: Path) -> None:
        """Write classifier.safetensors and classifier.json into `folder`."""
        from safetensors import SafetensorError
        from safetensors.numpy import save_file

        tensors = {"weight": self.weight, "bias": self.bias}
        path = Path(folder) / CLASSIFIER_WEIGHTS
        try:
            save_file(tensors, str(path), metadata={"format": "pt"})
        except SafetensorError as e:  # a full disk: an OSError naming the file
            raise write_error(e, path) from None
        config = {"labels": self.labels, "features": "[u; v; |u - v|]  (SBERT eq. 1)"}
        (Path(folder) / CLASSIFIER_CONFIG).write_text(json.dumps(config, indent=2))


@dataclass(frozen=True)
class Heads:
    """What a model folder keeps beside its encoder: the classifier (None without one) and the
    gold score scale of its regression data (None when unknown)."""

    classifier: Classifier | None = None
    score_scale: tuple[float, float] | None = None

    @classmethod
    def read(cls, folder: Path, dim: int) -> Heads:
        """The heads in `folder` for `dim`-dimensional sentence vectors, checked."""
        return cls(Classifier.load(folder, dim), read_score_scale(folder))

    def write(self, folder: Path) -> None:
        if self.classifier is not None:
            self.classifier.write(folder)
        if self.score_scale is not None:
            lo, hi = self.score_scale
            (Path(folder) / SCORE_SCALE).write_text(json.dumps({"lo": lo, "hi": hi}, indent=2))
