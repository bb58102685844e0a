"""A multi-task model: one shared encoder, several objectives from ONE forward pass.

The objectives (sbert/models/objectives.py, one table) are classification over
[u; v; |u - v|] (SBERT §3, eq. 1), regression of cos(u, v) against the gold score (SBERT §3,
MSE; or CoSENT / AnglE) and, when asked for, a contrastive objective on NLI pairs. A batch may
carry labels, scores or both; each objective's loss is computed over the pairs that have its
target and returned by name. How the losses are weighted is a training choice, made per stage
by the trainer (sbert/training/), not a property of the model. This module knows nothing of
files beyond saving and loading through the folder module.

A MultiTaskModel is also an `Encoder` (sbert/inference/encoder.py): `encode` embeds with its
encoder, and `heads` hands its classifier to `sbert.predict` as arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sbert.errors import CheckpointError
from sbert.fileio import atomic_dir
from sbert.folders import is_model_folder
from sbert.heads import Classifier, Heads
from sbert.models.folder import read_model
from sbert.models.objectives import DEFAULT_OBJECTIVES, OBJECTIVES, Pass
from sbert.models.sentence import SentenceBert
from sbert.tokenizer import WordPiece


def pair_features(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """[u; v; |u - v|], (B, 3H): the classifier's input (SBERT eq. 1, best in its Table 6)."""
    return torch.cat([u, v, (u - v).abs()], dim=-1)


@dataclass
class Output:
    losses: dict[str, torch.Tensor]  # each asked-for objective's loss whose target the batch has
    u: torch.Tensor  # (B, H)
    v: torch.Tensor  # (B, H)
    logits: torch.Tensor | None  # (B, k); None without a classifier or a labelled pair


class MultiTaskModel(nn.Module):
    """A SentenceBert encoder shared by a classification head and the other objectives.

    Args:
        encoder: the sentence encoder (its weights are shared by every objective).
        labels: the classifier's label names, in output order; empty for no classifier.
        score_scale: (lo, hi) of the regression data's gold scale, saved with the model so
            that a prediction can answer on it; None when unknown.
    Shapes:
        forward: input_ids, attention_mask (2B, T) holding the B first sentences then the B
        second sentences; labels (B,) long (IGNORE_LABEL = none), None when no pair has one;
        scores (B,) float (NaN = none), None when no pair has one; sentence_ids (2B,) and
        token_index (N,) as `sbert.data.batching.collate` gives them (the contrastive
        objective's duplicates; the real tokens, `sbert.models.bert.RealTokens`).
    """

    def __init__(
        self,
        encoder: SentenceBert,
        labels: Sequence[str] = (),
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
        sentence_ids: torch.Tensor | None = None,
        *,
        token_index: torch.Tensor | None = None,
        regression: str = "cosine-mse",
        objectives: Sequence[str] = DEFAULT_OBJECTIVES,
    ) -> Output:
        # One encoder call over all 2B sentences: every objective shares this forward pass.
        u, v = self.encoder(input_ids, attention_mask, token_index=token_index).chunk(2)
        # A training batch without labels leaves the classifier out of the graph altogether:
        # under DDP an output that takes no part in the loss would stall the gradient sync.
        # (Whether it has any is the caller's to say, labels=None, decided where the batch is
        # made: reading it here would make a GPU step wait for the device.)
        logits = None
        if self.classifier is not None and labels is not None:
            logits = self.classifier(pair_features(u, v))
        batch = Pass(
            u,
            v,
            logits,
            labels,
            scores,
            input_ids,
            attention_mask,
            self.labels,
            regression,
            sentence_ids,
        )
        losses = {}
        for name in objectives:
            loss = OBJECTIVES[name].loss(batch)
            if loss is not None:
                losses[name] = loss
        return Output(losses, u, v, logits)

    # -- the Encoder protocol (sbert/inference/encoder.py) -----------------------------------

    @property
    def dim(self) -> int:
        return self.encoder.dim

    @property
    def max_seq_length(self) -> int:
        return self.encoder.max_seq_length

    @property
    def tokenizer(self) -> WordPiece:
        return self.encoder.tokenizer

    def fingerprint(self) -> str:
        """The encoder's: the heads do not change a vector."""
        return self.encoder.fingerprint()

    def encode(
        self,
        sentences: str | Sequence[str],
        batch_size: int = 32,
        normalize: bool = False,
        device: str | torch.device | None = None,
        show_progress_bar: bool = False,
    ) -> np.ndarray:
        """`SentenceBert.encode` of the shared encoder: (N, H) float32, (H,) for one string."""
        return self.encoder.encode(
            sentences, batch_size, normalize, device=device, show_progress_bar=show_progress_bar
        )

    @property
    def heads(self) -> Heads:
        """The classifier (copied out as arrays) and the score scale."""
        classifier = None
        if self.classifier is not None:
            weight, bias = (t.detach().float().cpu().numpy() for t in self.classifier.parameters())
            classifier = Classifier(list(self.labels), weight, bias)
        return Heads(classifier, self.score_scale)

    # -- folders ------------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """A SentenceBert folder (loadable by sentence-transformers) plus the heads."""
        with atomic_dir(Path(path), is_model_folder, "a model folder") as tmp:
            self.encoder.write(tmp)
            self.heads.write(tmp)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path) -> MultiTaskModel:
        """Load a model folder (or packaged name) once: the encoder, and the classifier and
        score scale when the folder has them."""
        files = read_model(name_or_path)
        head = files.heads.classifier
        labels = head.labels if head is not None else ()
        model = cls(SentenceBert.from_files(files), labels, files.heads.score_scale)
        if head is not None:
            state = {"weight": torch.from_numpy(head.weight), "bias": torch.from_numpy(head.bias)}
            try:
                model.classifier.load_state_dict(state)
            except RuntimeError as e:
                raise CheckpointError(name_or_path, f"classifier does not fit: {e}") from None
        return model
