"""Use both heads of a trained multi-task model on new pairs: the classifier's label and the
probability of every label (softmax of W [u; v; |u - v|], SBERT eq. 1), and the cosine
similarity, also mapped back onto the gold scale the regression was trained on.

The regression objective (SBERT §3) fits cos(u, v) to (score - lo) / (hi - lo), so a model that
records its training scale answers lo + cos * (hi - lo): 1-5 for SICK, 0-5 for STS-B.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from sbert.data.readers import Pair, read_tsv_pairs
from sbert.data.specs import parse_spec, read_spec, spec_rows
from sbert.errors import ConfigError, DataError
from sbert.heads import Heads
from sbert.inference.encoder import Encoder, check_finite


@dataclass(frozen=True)
class Prediction:
    """What a model says about one pair; the classifier's fields are None without one."""

    label: str | None  # the most probable label
    probabilities: dict[str, float] | None  # every label -> its probability
    similarity: float  # cos(u, v)
    score: float | None  # the similarity on the training data's gold scale, when recorded

    def to_json(self) -> dict:
        """The non-empty fields, for one line of JSON."""
        return {k: v for k, v in asdict(self).items() if v is not None}


def to_score(similarity: float, scale: tuple[float, float]) -> float:
    """lo + cos * (hi - lo), clipped to [lo, hi]: the inverse of the regression's rescaling."""
    lo, hi = scale
    return min(hi, max(lo, lo + similarity * (hi - lo)))


def predict(
    model: Encoder,
    pairs: Sequence[Pair | tuple[str, str]],
    batch_size: int = 32,
    device=None,
    show_progress_bar: bool = False,
) -> list[Prediction]:
    """Label, label probabilities and similarity of each pair, in input order.

    Args:
        model: any `Encoder`: `sbert.load(folder)` (a PyTorch model or an ONNX export) or a
            `MultiTaskModel` being trained; its `heads` give the label and the score.
        pairs: `Pair`s (their targets are ignored) or (first, second) string tuples.
        device: where a PyTorch encoder runs; an ONNX export's session decides for itself.
    """
    if isinstance(pairs, (str, bytes)):
        raise ConfigError(f"pairs: expected a list of pairs, not one {type(pairs).__name__}")
    texts = [_two_strings(i, p) for i, p in enumerate(pairs)]
    # Each distinct sentence is encoded once (SICK repeats its sentences across pairs), both
    # sides in one length-sorted pass so that similar lengths share batches.
    unique: dict[str, int] = {}
    rows = [
        unique.setdefault(s, len(unique)) for s in [*(a for a, _ in texts), *(b for _, b in texts)]
    ]
    vectors = model.encode(
        list(unique), batch_size=batch_size, device=device, show_progress_bar=show_progress_bar
    )
    vectors = check_finite(np.asarray(vectors, dtype=np.float32), model)[rows]
    return predictions(vectors[: len(texts)], vectors[len(texts) :], model.heads)


def _two_strings(i: int, pair) -> tuple[str, str]:
    """Pair i as (first, second): a `Pair`, or a tuple or list of two strings (a string of two
    letters is no pair of sentences); anything else is a ConfigError naming it."""
    if isinstance(pair, Pair):
        return pair.a, pair.b
    if isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(s, str) for s in pair):
        return pair[0], pair[1]
    raise ConfigError(f"pair {i}: expected two strings, got {pair!r}"[:200])


def predictions(u: np.ndarray, v: np.ndarray, heads: Heads) -> list[Prediction]:
    """What the heads say of pairs whose sentence vectors are u and v, (N, H) each."""
    # cos(u, v) as torch's cosine_similarity: the product of the norms clamped at 1e-8.
    norms = np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1)
    similarity = ((u * v).sum(axis=1) / np.maximum(norms, 1e-8)).tolist()
    head, scale = heads.classifier, heads.score_scale
    probs = [None] * len(u) if head is None else head.probabilities(u, v).tolist()
    out = []
    for sim, p in zip(similarity, probs, strict=True):
        score = to_score(sim, scale) if scale else None
        if p is None:
            out.append(Prediction(None, None, sim, score))
        else:
            label = head.labels[max(range(len(p)), key=p.__getitem__)]
            out.append(Prediction(label, dict(zip(head.labels, p, strict=True)), sim, score))
    return out


def read_input(path: str | Path, columns: dict[str, str] | None = None) -> list[Pair]:
    """Pairs from any data spec `sbert train` reads (`PATH[@SPLIT][[FROM:TO]][:COLUMNS]`; a
    table's columns as `columns` names them, its label and score columns not needed), or else
    from a plain two-column TSV (`PATH[[FROM:TO]]`)."""
    spec = parse_spec(str(path))
    if spec.objective != "both":
        raise ConfigError(f"{path}: :{spec.objective} names a training objective; predicting "
                          f"takes none")  # fmt: skip
    try:
        return read_spec(spec, columns=columns, targets=False).pairs
    except DataError as e:
        if columns or spec.split or spec.columns or not e.problem.startswith("unknown format"):
            raise
    return spec_rows(spec, read_tsv_pairs(spec.path))
