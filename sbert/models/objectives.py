"""The objective table: every training objective of the multi-task model, one entry each.

An objective turns one forward pass (`Pass`: the vectors u, v of a batch's pairs, the
classifier's logits, the targets) into a scalar loss, or None when the batch lacks its target
(the Pass has no labels, or no scores). Whether a batch feeds an objective at all is decided
before, on the host, from the batch's labels and scores (`fed`, `objectives_fed`): the trainer
asks only for those. Everything else reads this table: the model computes the losses of the
objectives a stage asks for, the trainer weights them by name (`--loss-weights
classification=0.1,regression=1`), the balancers learn or project per name, metrics.jsonl logs
each by name and the plot draws each. Adding an objective is one entry here, its loss function
in losses.py, and a test.

The regression objective's loss is chosen per data file among `REGRESSION_LOSSES` (cosine-MSE,
SBERT's; CoSENT; AnglE): one objective, one target, one weight, three ways to fit it.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from sbert.data.batching import any_label, any_score, sentence_ids
from sbert.errors import ConfigError
from sbert.models.losses import (
    angle_loss,
    classification_loss,
    cosent_loss,
    multiple_negatives_ranking_loss,
    regression_loss,
)

# What a pair must carry for an objective to use it: a label (NLI) or a similarity score.
Target = Literal["label", "score"]
TARGETS: tuple[str, ...] = typing.get_args(Target)

# The regression objective's loss functions, by the name `--regression-loss` and PATH:NAME use.
REGRESSION_LOSSES: dict[str, Callable] = {
    "cosine-mse": regression_loss,
    "cosent": cosent_loss,
    "angle": angle_loss,
}


@dataclass(frozen=True)
class Pass:
    """What one forward pass over B pairs gives the objectives.

    Shapes: u, v (B, H); logits (B, k) or None (no classifier, or no labelled pair); labels (B,)
    long, IGNORE_LABEL = none, or None when no pair has one; scores (B,) float in [0, 1], NaN =
    none, or None when no pair has one; input_ids and attention_mask (2B, T), the B first
    sentences then the B second ones; sentence_ids (2B,) their identities
    (`sbert.data.batching.sentence_ids`), or None to compute them here.
    """

    u: torch.Tensor
    v: torch.Tensor
    logits: torch.Tensor | None
    labels: torch.Tensor | None
    scores: torch.Tensor | None
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    label_names: Sequence[str] = ()  # the classifier's labels, in output order
    regression: str = "cosine-mse"  # this batch's regression loss (REGRESSION_LOSSES)
    sentence_ids: torch.Tensor | None = None


@dataclass(frozen=True)
class Objective:
    """One entry of the table."""

    name: str  # how weights, logs, balancers and plots name it
    target: Target  # what a pair needs for this objective to use it
    loss: Callable[[Pass], torch.Tensor | None]
    # Whether a batch feeds it, from its labels and scores on the host (and the label names).
    fed: Callable[[np.ndarray, np.ndarray, Sequence[str]], bool]
    metrics: tuple[str, ...]  # the dev metrics that judge it (sbert/training/evaluate.py)
    default: bool  # trained whenever the data has its target; else only when asked for
    weight: float  # its loss weight unless --loss-weights names it
    summary: str  # one line for --help and the docs


def _classification(p: Pass) -> torch.Tensor | None:
    if p.labels is None or p.logits is None:
        return None
    return classification_loss(p.logits, p.labels)


def _regression(p: Pass) -> torch.Tensor | None:
    if p.scores is None:
        return None
    return REGRESSION_LOSSES[p.regression](p.u, p.v, p.scores)


def nli_labels(label_names: Sequence[str]) -> tuple[int, int | None]:
    """The indices of entailment and contradiction (any case) among a classifier's labels: the
    contrastive objective's positives and hard negatives."""
    lower = [name.lower() for name in label_names]
    if "entailment" not in lower:
        raise ConfigError(
            f"the contrastive objective needs an entailment label, and the "
            f"classifier's labels are {list(label_names)}"
        )
    negative = lower.index("contradiction") if "contradiction" in lower else None
    return lower.index("entailment"), negative


def _has_label(labels: np.ndarray, scores: np.ndarray, names: Sequence[str]) -> bool:
    return any_label(labels)


def _has_score(labels: np.ndarray, scores: np.ndarray, names: Sequence[str]) -> bool:
    return any_score(scores)


def _has_entailment(labels: np.ndarray, scores: np.ndarray, names: Sequence[str]) -> bool:
    return bool((labels == nli_labels(names)[0]).any())


def objectives_fed(
    asked: Sequence[str], labels: np.ndarray, scores: np.ndarray, label_names: Sequence[str]
) -> tuple[str, ...]:
    """The objectives among `asked` that a batch feeds, decided on the host from its labels and
    scores (numpy, before they go to the device), so that a GPU step never reads the device to
    find out; e.g. the contrastive objective only when the batch has an entailment pair."""
    return tuple(n for n in asked if OBJECTIVES[n].fed(labels, scores, label_names))


def _contrastive(p: Pass) -> torch.Tensor | None:
    if p.labels is None:
        return None
    positive, negative = nli_labels(p.label_names)
    ids = p.sentence_ids  # duplicates are no negatives; collate computes them on the host
    if ids is None:
        ids = sentence_ids(p.input_ids, p.attention_mask)
    return multiple_negatives_ranking_loss(p.u, p.v, p.labels, positive, negative, ids)


OBJECTIVES: dict[str, Objective] = {
    o.name: o
    for o in (
        Objective(
            "classification",
            "label",
            _classification,
            _has_label,
            ("accuracy",),
            True,
            # 0.1 against regression's 1: chosen on the demo's dev scores (docs/training.md).
            0.1,
            "softmax(W [u; v; |u - v|]) against the label, cross-entropy (SBERT eq. 1)",
        ),
        Objective(
            "regression",
            "score",
            _regression,
            _has_score,
            ("spearman", "pearson"),
            True,
            1.0,
            "cos(u, v) against the gold score: cosine-mse (SBERT), cosent or angle",
        ),
        Objective(
            "contrastive",
            "label",
            _contrastive,
            _has_entailment,
            (),
            False,
            1.0,
            "multiple negatives ranking: entailment pairs as positives, the batch's other "
            "hypotheses and its contradictions as negatives",
        ),
    )
}
DEFAULT_OBJECTIVES: tuple[str, ...] = tuple(n for n, o in OBJECTIVES.items() if o.default)
DEV_METRICS: tuple[str, ...] = tuple(m for o in OBJECTIVES.values() for m in o.metrics)
