"""From validated pairs to padded tensors: tokenize once, batch by length, pad to the longest.

The sampler is deterministic given (seed, epoch), so a resumed run replays the same batches,
and it shards each global batch across processes so that all take the same number of steps.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from sbert.data.readers import PairSet
from sbert.errors import DataError
from sbert.tokenizer import WordPiece, pad_ids

IGNORE_LABEL = -100  # a pair without a label (cross_entropy's ignore_index)
Objective = Literal["classification", "regression", "both"]
MixMode = Literal["round-robin", "proportional"]


@dataclass
class TokenizedPairs:
    """A data set tokenized once, up front: token ids of both sides and the targets."""

    name: str
    a: list[list[int]]
    b: list[list[int]]
    labels: np.ndarray  # (N,) int64, IGNORE_LABEL where the pair trains no classifier
    scores: np.ndarray  # (N,) float32 in [0, 1], NaN where the pair trains no regression

    def __len__(self) -> int:
        return len(self.a)

    @property
    def lengths(self) -> list[int]:
        """A pair's cost: its longer side sets the padded length of its batch."""
        return [max(len(x), len(y)) for x, y in zip(self.a, self.b, strict=True)]


def tokenize_pairs(
    data: PairSet,
    tokenizer: WordPiece,
    label_index: dict[str, int] | None = None,
    objective: Objective = "both",
) -> TokenizedPairs:
    """Tokenize every pair once; keep the targets that `objective` trains.

    Args:
        label_index: label name -> classifier output; a label outside it is a DataError.
    """
    want_labels = objective in ("classification", "both") and data.has_labels
    want_scores = objective in ("regression", "both") and data.has_scores
    if objective == "classification" and not data.has_labels:
        raise DataError(data.path, None, "classification needs labels; this file has none")
    if objective == "regression" and not data.has_scores:
        raise DataError(data.path, None, "regression needs scores; this file has none")
    labels = np.full(len(data.pairs), IGNORE_LABEL, dtype=np.int64)
    if want_labels and label_index is not None:
        for i, pair in enumerate(data.pairs):
            if pair.label not in label_index:
                known = ", ".join(label_index)
                raise DataError(data.path, pair.line, f"unknown label {pair.label!r} ({known})")
            labels[i] = label_index[pair.label]
    scores = np.full(len(data.pairs), np.nan, dtype=np.float32)
    if want_scores:
        scores[:] = [data.normalized_score(p) for p in data.pairs]
    return TokenizedPairs(
        name=data.path,
        a=tokenizer.ids([p.a for p in data.pairs]),
        b=tokenizer.ids([p.b for p in data.pairs]),
        labels=labels,
        scores=scores,
    )


def bucketed_batches(
    lengths: Sequence[int],
    batch_size: int,
    seed: int,
    bucket_batches: int = 16,
    min_batch: int = 1,
) -> list[list[int]]:
    """Global batches of pairs of similar length, in random order; the same for the same seed.

    The pairs are shuffled, cut into buckets of `bucket_batches` batches, each bucket is
    sorted by length and cut into batches, and the batch order is shuffled: every batch pads
    to little more than its own longest pair, yet the data order stays random. A bucket's last
    batch smaller than `min_batch` (under DDP: one pair per process and micro-batch) joins the
    batch before it, so that no pair is lost and every process gets a share.
    """
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    bucket = batch_size * bucket_batches
    batches = []
    for start in range(0, len(order), bucket):
        chunk = sorted(order[start : start + bucket], key=lambda i: lengths[i])
        cut = [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
        if len(cut[-1]) < min_batch and (len(cut) > 1 or batches):
            short = cut.pop()  # the last bucket may hold only this batch: then the one before
            (cut[-1] if cut else batches[-1]).extend(short)
        batches += cut
    rng.shuffle(batches)
    return batches


def shard(batch: list[int], rank: int, world: int) -> list[int]:
    """This process's share of a global batch (world processes, near-equal shares)."""
    return batch[rank::world]


def mix(
    batches_per_set: Sequence[list[list[int]]], mode: MixMode, seed: int
) -> list[tuple[int, list[int]]]:
    """Interleave the batches of several data sets: (data set index, batch) in training order.

    round-robin: one batch of each set in turn; a set that runs out drops out of the turn, so
    no batch is lost. proportional: all batches in random order, so each set is drawn in
    proportion to its size.
    """
    tagged = [[(d, b) for b in batches] for d, batches in enumerate(batches_per_set)]
    if mode == "proportional":
        flat = [x for t in tagged for x in t]
        random.Random(seed).shuffle(flat)
        return flat
    longest = max(map(len, tagged), default=0)
    return [t[i] for i in range(longest) for t in tagged if i < len(t)]


def collate(data: TokenizedPairs, index: Sequence[int], pad_id: int) -> dict[str, torch.Tensor]:
    """Tensors for one batch: the B first sentences then the B second sentences, padded to the
    longest of all 2B (one encoder call), their `sentence_ids`, `token_index` where there is
    padding (the flat positions of the real tokens: the encoder spends no FLOP of its layers on
    padding), and the targets:
    labels (B,) only if a pair of the batch has a label, scores (B,) only if one has a score.

    What depends on the data's values is decided here, on the host, where the batch is made:
    a training step on a GPU then never waits for the device to find out which objectives its
    batch feeds (`MultiTaskModel.forward` reads a missing key as "no such target").
    """
    ids = [data.a[i] for i in index] + [data.b[i] for i in index]
    index = np.asarray(index)
    batch = pad_ids(ids, pad_id)
    batch["sentence_ids"] = sentence_ids(batch["input_ids"], batch["attention_mask"])
    real = np.flatnonzero(batch["attention_mask"].numpy())
    if len(real) < batch["attention_mask"].numel():  # without padding the index only costs
        batch["token_index"] = torch.from_numpy(real)
    labels, scores = data.labels[index], data.scores[index]
    if any_label(labels):
        batch["labels"] = torch.from_numpy(labels)
    if any_score(scores):
        batch["scores"] = torch.from_numpy(scores)
    return batch


def any_label(labels: np.ndarray) -> bool:
    return bool((labels != IGNORE_LABEL).any())


def any_score(scores: np.ndarray) -> bool:
    return not np.isnan(scores).all()


def sentence_ids(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(N,) long: equal ids for identical token sequences in a batch, (N, T) -> (N,).

    How the contrastive objective recognises duplicates (sbert/models/losses.py): two sentences
    are the same if their token ids are (after the same tokenizer, identical text up to what
    the tokenizer normalises away, e.g. case for an uncased vocabulary). Padding is zeroed, so
    the same sentence padded to different lengths within the batch still matches. (Its output
    size depends on the values: on a GPU, `torch.unique` waits for the device; `collate` calls
    it on the host.)
    """
    return torch.unique(input_ids * attention_mask, dim=0, return_inverse=True)[1]
