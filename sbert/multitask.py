"""A multi-task model: one shared encoder, several objectives from ONE forward pass.

- classification (SBERT §3, eq. 1): o = softmax(W [u; v; |u - v|]), W of shape (3H, k),
  cross-entropy against the label;
- regression (SBERT §3, "Regression Objective Function"): cos(u, v) against the gold score
  rescaled to [0, 1] ((score - lo) / (hi - lo) of the data set's scale), mean-squared error;
  or CoSENT / AnglE, ranking losses on the same scores (losses.py);
- contrastive (optional): multiple negatives ranking over the batch's entailment pairs, with
  contradictions as hard negatives (losses.py).

A batch may carry labels, scores or both; each loss is computed over the pairs that have its
target and returned by name. How the losses are weighted is a training choice, made per stage
by the trainer (sbert/train.py), not a property of the model. This module knows nothing of
files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import model_folder
from .choices import RegressionLoss
from .errors import ConfigError
from .fileio import atomic_dir
from .losses import angle_loss, cosent_loss, multiple_negatives_ranking_loss, sentence_ids
from .model import SentenceBert

IGNORE_LABEL = -100  # a pair without a label (cross_entropy's ignore_index)


def pair_features(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """[u; v; |u - v|], (B, 3H): the classifier's input (SBERT eq. 1, best in its Table 6)."""
    return torch.cat([u, v, (u - v).abs()], dim=-1)


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | None:
    """Mean cross-entropy over the pairs that have a label; None if none has."""
    if not (labels != IGNORE_LABEL).any():
        return None
    return F.cross_entropy(logits, labels, ignore_index=IGNORE_LABEL)


def regression_loss(u: torch.Tensor, v: torch.Tensor, scores: torch.Tensor) -> torch.Tensor | None:
    """Mean squared error of cos(u, v) against scores in [0, 1] (NaN = no score); None if none."""
    has = ~scores.isnan()
    if not has.any():
        return None
    return F.mse_loss(F.cosine_similarity(u[has], v[has], dim=-1), scores[has])


REGRESSION = {"cosine-mse": regression_loss, "cosent": cosent_loss, "angle": angle_loss}


@dataclass
class Output:
    losses: dict[str, torch.Tensor]  # each objective's loss whose target the batch has
    u: torch.Tensor  # (B, H)
    v: torch.Tensor  # (B, H)
    logits: torch.Tensor | None  # (B, k); None without a classifier or a labelled pair


class MultiTaskModel(nn.Module):
    """A SentenceBert encoder shared by a classification head and a cosine regression.

    Args:
        encoder: the sentence encoder (its weights are shared by both objectives).
        labels: the classifier's label names, in output order; empty for no classifier.
        score_scale: (lo, hi) of the regression data's gold scale, saved with the model so
            that a prediction can answer on it; None when unknown.
    Shapes:
        forward: input_ids, attention_mask (2B, T) holding the B first sentences then the B
        second sentences; labels (B,) long (IGNORE_LABEL = none); scores (B,) float (NaN = none).
    """

    def __init__(
        self,
        encoder: SentenceBert,
        labels: list[str] | tuple[str, ...] = (),
        score_scale: tuple[float, float] | None = None,
    ):
        super().__init__()
        self.encoder = encoder
        self.labels = list(labels)
        self.score_scale = score_scale
        self.classifier = nn.Linear(3 * encoder.dim, len(labels)) if labels else None

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor | None = None,
        scores: torch.Tensor | None = None,
        regression: RegressionLoss = "cosine-mse",
        contrastive: bool = False,
    ) -> Output:
        # One encoder call over all 2B sentences: every objective shares this forward pass.
        u, v = self.encoder(input_ids, attention_mask).chunk(2)
        # A training batch without labels leaves the classifier out of the graph altogether:
        # under DDP an output that takes no part in the loss would stall the gradient sync.
        unlabelled = labels is not None and not (labels != IGNORE_LABEL).any()
        logits = None
        if self.classifier is not None and not unlabelled:
            logits = self.classifier(pair_features(u, v))
        losses = {}
        if labels is not None and logits is not None:
            losses["classification"] = classification_loss(logits, labels)
        if scores is not None:
            loss = REGRESSION[regression](u, v, scores)
            if loss is not None:
                losses["regression"] = loss
        if contrastive and labels is not None:
            positive, negative = self.nli_labels()
            ids = sentence_ids(input_ids, attention_mask)  # duplicates are no negatives
            loss = multiple_negatives_ranking_loss(u, v, labels, positive, negative, ids)
            if loss is not None:
                losses["contrastive"] = loss
        return Output(losses, u, v, logits)

    def nli_labels(self) -> tuple[int, int | None]:
        """The classifier's indices of entailment and contradiction (any case): the contrastive
        objective's positives and hard negatives."""
        lower = [name.lower() for name in self.labels]
        if "entailment" not in lower:
            raise ConfigError(
                f"the contrastive objective needs an entailment label, and the "
                f"classifier's labels are {self.labels}"
            )
        negative = lower.index("contradiction") if "contradiction" in lower else None
        return lower.index("entailment"), negative

    def save(self, path: str | Path) -> None:
        """A SentenceBert folder (loadable by sentence-transformers) plus the classifier."""
        with atomic_dir(Path(path)) as tmp:
            self.encoder.write(tmp)
            if self.classifier is not None:
                model_folder.write_classifier(tmp, self.classifier.state_dict(), self.labels)
            if self.score_scale is not None:
                model_folder.write_score_scale(tmp, self.score_scale)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path) -> MultiTaskModel:
        """Load an encoder folder, with its classifier when the folder has one."""
        encoder = SentenceBert.from_pretrained(name_or_path)
        if not isinstance(encoder, SentenceBert):  # an ONNX export: weights only in the graph
            raise ConfigError(
                f"{name_or_path}: an ONNX export has no PyTorch weights to train or evaluate; "
                f"use the model folder it was exported from (predict, search and "
                f"evaluate-retrieval take the export)"
            )
        head = model_folder.read_classifier(name_or_path)
        scale = model_folder.read_score_scale(name_or_path)
        if head is None:
            return cls(encoder, score_scale=scale)
        labels, state = head
        model = cls(encoder, labels, scale)
        try:
            model.classifier.load_state_dict(state)
        except RuntimeError as e:
            raise model_folder.CheckpointError(
                name_or_path, f"classifier does not fit: {e}"
            ) from None
        return model

    def predict(self, pairs, batch_size: int = 32, device=None, show_progress_bar: bool = False):
        """Both heads on new pairs: label, probabilities, cosine similarity (see `predict`)."""
        from .predict import predict

        return predict(self, pairs, batch_size, device, show_progress_bar)
