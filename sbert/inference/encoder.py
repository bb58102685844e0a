"""The `Encoder` protocol: what predict, search, retrieval evaluation (and a server) need of a
model, satisfied alike by the PyTorch models (`SentenceBert`, `MultiTaskModel`) and by an ONNX
export running on ONNX Runtime (`OnnxEncoder`). `sbert.load` returns one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from sbert.errors import SbertError
from sbert.heads import Heads
from sbert.tokenizer import WordPiece


class Encoder(Protocol):
    """Sentences in, float32 vectors out, in input order."""

    @property
    def dim(self) -> int:
        """The sentence vectors' size H."""

    @property
    def max_seq_length(self) -> int:
        """Tokens per sentence, special tokens included; longer sentences are truncated."""

    @property
    def tokenizer(self) -> WordPiece:
        """How the model reads text: `lengths` counts a sentence's tokens as the model sees it."""

    @property
    def heads(self) -> Heads:
        """The classifier and gold score scale the model was trained with (each may be None)."""

    def fingerprint(self) -> str:
        """16 hex digits naming the vectors this model gives (sbert/fingerprint.py)."""

    def encode(
        self,
        sentences: str | Sequence[str],
        batch_size: int = 32,
        normalize: bool = False,
        device: object = None,
        show_progress_bar: bool = False,
    ) -> np.ndarray:
        """(N, H) float32, or (H,) for a single string. `device` is where a PyTorch model runs;
        an ONNX export's session decides for itself."""


def check_finite(vectors: np.ndarray, model: object, what: str = "sentence") -> np.ndarray:
    """`vectors` (N, H), refused with an SbertError naming the model and the first bad row
    unless every value is finite: weights of NaN (an ONNX graph's are not scanned at load)
    would otherwise become NaN vectors, "nan%" labels and JSON that is not JSON."""
    if len(vectors) == 0:  # nothing to check (and no row length to reshape by)
        return vectors
    rows = np.asarray(vectors).reshape(len(vectors), -1)
    bad = np.flatnonzero(~np.isfinite(rows).all(axis=1))
    if bad.size:
        source = getattr(model, "source", None) or "the model"
        raise SbertError(
            f"{source}: gave a vector of NaN or Inf for {what} {int(bad[0]) + 1} ({bad.size} in "
            f"all): its weights are damaged; nothing written"
        )
    return vectors
