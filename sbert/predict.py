"""Use both heads of a trained multi-task model on new pairs: the classifier's label and the
probability of every label (softmax of W [u; v; |u - v|], SBERT eq. 1), and the cosine
similarity, also mapped back onto the gold scale the regression was trained on.

The regression objective (SBERT §3) fits cos(u, v) to (score - lo) / (hi - lo), so a model that
records its training scale answers lo + cos * (hi - lo): 1-5 for SICK, 0-5 for STS-B.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .data import Pair, read_pairs, read_tsv_pairs
from .errors import ConfigError, DataError, SbertError
from .evaluate import embed_pairs
from .fileio import atomic_write_bytes
from .multitask import MultiTaskModel, pair_features


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


@torch.inference_mode()
def predict(
    model: MultiTaskModel,
    pairs: Sequence[Pair | tuple[str, str]],
    batch_size: int = 32,
    device=None,
    show_progress_bar: bool = False,
) -> list[Prediction]:
    """Label, label probabilities and similarity of each pair, in input order.

    Args:
        pairs: `Pair`s (their targets are ignored) or (first, second) string tuples.
    """
    texts = [(p.a, p.b) if isinstance(p, Pair) else tuple(p) for p in pairs]
    for i, t in enumerate(texts):
        if len(t) != 2 or not all(isinstance(s, str) for s in t):
            raise ConfigError(f"pair {i}: expected two strings, got {t!r}"[:200])
    tokenize = model.encoder.tokenize
    u, v = embed_pairs(
        model.encoder,
        tokenize([a for a, _ in texts]),
        tokenize([b for _, b in texts]),
        batch_size,
        device,
        show_progress_bar,
    )
    similarity = F.cosine_similarity(u, v, dim=-1).tolist()
    if model.classifier is None:
        probs = [None] * len(texts)
    else:
        model.classifier.to(u.device)
        probs = F.softmax(model.classifier(pair_features(u, v)).float(), dim=-1).tolist()
    out = []
    for sim, p in zip(similarity, probs, strict=True):
        score = to_score(sim, model.score_scale) if model.score_scale else None
        if p is None:
            out.append(Prediction(None, None, sim, score))
        else:
            label = model.labels[max(range(len(p)), key=p.__getitem__)]
            out.append(Prediction(label, dict(zip(model.labels, p, strict=True)), sim, score))
    return out


def read_input(path: str | Path) -> list[Pair]:
    """Pairs from any file `read_pairs` knows, or else from a plain two-column TSV."""
    try:
        return read_pairs(path).pairs
    except DataError as e:
        if not e.problem.startswith("unknown format"):
            raise
    return read_tsv_pairs(path)


# ---------------------------------------------------------------------------------------------
# sbert predict


def add_predict_parser(sub) -> None:
    p = sub.add_parser(
        "predict",
        help="label and score sentence pairs with a trained model (both heads)",
        description="Two sentences: a short answer. --input FILE --output FILE.jsonl: one JSON "
        'object per pair, in input order: {"label", "probabilities", "similarity", "score"}.',
    )
    p.add_argument("--model", required=True, help="model folder (with its classifier, if any)")
    p.add_argument("first", nargs="?", help="first sentence")
    p.add_argument("second", nargs="?", help="second sentence")
    p.add_argument("--input", help="pairs: a two-column TSV, or any format `sbert train` reads")
    p.add_argument("--output", help="where to write the predictions (JSON lines)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default=None, help="cpu, cuda ... (default: cuda when available)")
    p.set_defaults(run=cmd_predict)


def cmd_predict(args: argparse.Namespace) -> None:
    from .train import pick_device

    one = args.first is not None or args.second is not None
    if one == (args.input is not None) or (one and None in (args.first, args.second)):
        raise ConfigError("give two sentences, or --input FILE with --output FILE")
    if (args.input is None) != (args.output is None):
        raise ConfigError("--input and --output go together")
    pairs = [(args.first, args.second)] if one else read_input(args.input)
    if args.output is not None and not Path(args.output).parent.is_dir():
        raise SbertError(f"{args.output}: output folder {Path(args.output).parent} not found")
    model = MultiTaskModel.from_pretrained(args.model)
    if model.classifier is None:
        print(f"note: {args.model} has no classifier: similarity only", file=sys.stderr)
    device = pick_device(args.device)
    predictions = predict(model, pairs, args.batch_size, device, show_progress_bar=not one)
    if one:
        print(describe(predictions[0], model.score_scale))
        return
    lines = [json.dumps(p.to_json(), ensure_ascii=False) + "\n" for p in predictions]
    atomic_write_bytes(Path(args.output), "".join(lines).encode("utf-8"))
    print(f"wrote {len(lines)} predictions to {args.output}", file=sys.stderr)


def describe(p: Prediction, scale: tuple[float, float] | None) -> str:
    """A few human-readable lines about one prediction."""
    lines = []
    if p.label is not None:
        ranked = sorted(p.probabilities.items(), key=lambda kv: -kv[1])
        lines.append(f"label:       {p.label} ({p.probabilities[p.label]:.1%})")
        lines.append("             " + ", ".join(f"{k} {v:.1%}" for k, v in ranked))
    lines.append(f"similarity:  {p.similarity:.4f} (cosine)")
    if p.score is not None:
        lines.append(
            f"score:       {p.score:.2f} on the training scale [{scale[0]:g}, {scale[1]:g}]"
        )
    return "\n".join(lines)
