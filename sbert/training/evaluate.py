"""Dev-set metrics: Spearman and Pearson x 100 of cosine against gold, accuracy x 100.

Evaluators return a flat dict of named metrics and do nothing else; the trainer decides what
to log and what to keep.
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from sbert.data.batching import IGNORE_LABEL, TokenizedPairs
from sbert.errors import TrainingError
from sbert.models.multitask import MultiTaskModel, pair_features
from sbert.models.sentence import SentenceBert


def embed_pairs(
    encoder: SentenceBert,
    a: Sequence[Sequence[int]],
    b: Sequence[Sequence[int]],
    batch_size: int = 128,
    device=None,
    show_progress_bar: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """u (N, H) and v (N, H) of tokenized pairs.

    Each distinct sentence is encoded once (SICK repeats its sentences across pairs), both sides
    in one length-sorted pass so that similar lengths share batches.
    """
    unique: dict[tuple[int, ...], int] = {}
    rows = [unique.setdefault(tuple(ids), len(unique)) for ids in [*a, *b]]
    embeddings = encoder.encode_ids(
        [list(ids) for ids in unique], batch_size, device, show_progress_bar
    )
    embeddings = embeddings[torch.tensor(rows, device=embeddings.device)]
    return embeddings[: len(a)], embeddings[len(a) :]


@torch.inference_mode()
def evaluate(
    model: MultiTaskModel,
    data: TokenizedPairs,
    batch_size: int = 128,
    device=None,
    show_progress_bar: bool | None = None,
) -> dict[str, float]:
    """Metrics of `model` on `data`: spearman and pearson where the pairs have scores,
    accuracy where they have labels and the model has a classifier, and the pair count. A
    metric that is undefined (one scored pair, or every cosine or every gold score the same)
    is NaN.

    A progress bar shows on a terminal (`show_progress_bar=None`: when stderr is one), never in
    a log or a pipe. Non-finite sentence vectors (weights of NaN) are a TrainingError, not NaN
    metrics.
    """
    from scipy.stats import pearsonr, spearmanr

    if show_progress_bar is None:
        show_progress_bar = sys.stderr.isatty()
    n = len(data)
    u, v = embed_pairs(model.encoder, data.a, data.b, batch_size, device, show_progress_bar)
    if not (torch.isfinite(u).all() and torch.isfinite(v).all()):
        raise TrainingError(
            f"{data.name}: the model gives non-finite sentence vectors (its weights hold NaN or "
            f"Inf): no metric can be computed"
        )
    metrics: dict[str, float] = {"pairs": n}
    has_score = ~np.isnan(data.scores)
    if has_score.sum() == 1:  # one point has no correlation (scipy raises)
        metrics["spearman"] = metrics["pearson"] = math.nan
    elif has_score.any():
        cosine = F.cosine_similarity(u, v, dim=-1).cpu().numpy()[has_score]
        gold = data.scores[has_score]
        with warnings.catch_warnings():  # constant input: NaN, which callers say in a line
            warnings.simplefilter("ignore")
            metrics["spearman"] = 100 * float(spearmanr(cosine, gold).statistic)
            metrics["pearson"] = 100 * float(pearsonr(cosine, gold).statistic)
    has_label = data.labels != IGNORE_LABEL
    if model.classifier is not None and has_label.any():
        was_training = model.training
        model.eval()
        logits = model.classifier(pair_features(u, v))
        model.train(was_training)
        predicted = logits.argmax(-1).cpu().numpy()
        metrics["accuracy"] = 100 * float((predicted[has_label] == data.labels[has_label]).mean())
    return metrics
