"""The loss functions of the objectives (sbert/models/objectives.py): pure functions of sentence
embeddings, logits and targets.

- `classification_loss`: cross-entropy of the classifier over [u; v; |u - v|] (SBERT eq. 1);
- `regression_loss`: MSE of cos(u, v) against the gold score rescaled to [0, 1] (SBERT §3,
  "Regression Objective Function");
- `cosent_loss`: CoSENT (Su 2022; Huang et al. 2024), a ranking loss over the batch's pairs of
  pairs, so gold scores need no rescaling onto [0, 1];
- `angle_loss`: AnglE (Li & Li 2023), the same ranking loss on an angle-difference similarity;
- `multiple_negatives_ranking_loss`: in-batch contrastive loss for NLI data (Henderson et al.
  2017; van den Oord et al. 2018 "InfoNCE"), entailment pairs as positives.

Each takes u, v of shape (B, H) (the B first and B second sentences of a batch, as
`MultiTaskModel.forward` computes them) and returns a scalar. A pair without the target (label
`IGNORE_LABEL`, score NaN) takes no part, not even through a non-finite vector; a batch in which
no pair has the target is not for these functions (the means, classification and cosine-MSE,
are NaN, the ranking and contrastive losses 0): `sbert.data.batching.collate` leaves out a target
no pair of the batch has, and the objective table then computes no loss. No function reads a
value back to the host (no `.any()` in a condition, no boolean indexing, no `torch.unique`):
pairs outside a loss are masked, not selected, since on a GPU a read would make the training
step wait for the device.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from sbert.data.batching import IGNORE_LABEL


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the pairs that have a label (IGNORE_LABEL = none)."""
    return F.cross_entropy(logits, labels, ignore_index=IGNORE_LABEL)


def regression_loss(u: torch.Tensor, v: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Mean squared error of cos(u, v) against scores in [0, 1], over the pairs with a score
    (NaN = none)."""
    has = ~scores.isnan()
    u, v = _only(has, u), _only(has, v)
    error = (F.cosine_similarity(u, v, dim=-1) - scores.nan_to_num()).square()
    return torch.where(has, error, 0.0).sum() / has.sum()


def _only(rows: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """x with the rows outside `rows` (B,) bool zeroed: they get an exact zero gradient, even
    where x is not finite (a selection's behaviour, without the selection's host read)."""
    return torch.where(rows[:, None], x, 0.0)


def cosent_loss(
    u: torch.Tensor, v: torch.Tensor, scores: torch.Tensor, scale: float = 20.0
) -> torch.Tensor:
    """CoSENT: log(1 + sum over score(i) > score(j) of exp(scale * (cos_j - cos_i))).

    Su (2022), "CoSENT: a more efficient sentence vector scheme than Sentence-BERT", the
    equation log(1 + sum_{sim(i) > sim(j)} exp(lambda (cos(u_j, v_j) - cos(u_i, v_i)))) with
    lambda = 20; the same loss in Huang et al. (2024, IEEE/ACM TASLP). Only the ORDER of the
    gold scores matters, so any scale works (SICK 1-5, STS-B 0-5) without rescaling. Equals
    sentence-transformers' `CoSENTLoss` (same log-cumsum-exp evaluation: O(B log B), not the
    B x B matrix).

    Args:
        u, v: (B, H) embeddings of the pairs' first and second sentences.
        scores: (B,) gold similarity; NaN = no score (the pair is left out).
        scale: lambda, the inverse temperature.
    """
    has = ~scores.isnan()
    return _ranking_loss(F.cosine_similarity(_only(has, u), _only(has, v), dim=-1), scores, scale)


def angle_similarity(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """|Re + Im| of the normalised complex quotient u / v, (B,): AnglE's similarity.

    Li & Li (2023, ACL 2024 "AoE"): split each vector into real (first half) and imaginary
    (second half) parts; for unit vectors the quotient's real part is cos(u, v) and its
    imaginary part is sum(u_im * v_re - u_re * v_im). An odd dimension is padded with a zero,
    as in sentence-transformers' `pairwise_angle_sim` (which follows the authors' code, whose
    subtraction order differs from the paper's eq. 3).
    """
    if u.shape[-1] % 2:
        u, v = F.pad(u, (0, 1)), F.pad(v, (0, 1))
    u, v = F.normalize(u, dim=-1), F.normalize(v, dim=-1)
    (u_re, u_im), (v_re, v_im) = u.chunk(2, dim=-1), v.chunk(2, dim=-1)
    return ((u * v).sum(-1) + (u_im * v_re - u_re * v_im).sum(-1)).abs()


def angle_loss(
    u: torch.Tensor, v: torch.Tensor, scores: torch.Tensor, scale: float = 20.0
) -> torch.Tensor:
    """AnglE's angle objective: CoSENT's ranking loss on `angle_similarity` instead of cosine.

    Li & Li (2023), "AnglE-optimized Text Embeddings", eq. 3 (L_angle), motivated by cosine's
    vanishing gradient near +-1. Equals sentence-transformers' `AnglELoss` on pairs.
    Arguments as `cosent_loss` (NaN score = no score).
    """
    has = ~scores.isnan()
    return _ranking_loss(angle_similarity(_only(has, u), _only(has, v)), scores, scale)


def _ranking_loss(sims: torch.Tensor, gold: torch.Tensor, scale: float) -> torch.Tensor:
    """log(1 + sum_{gold_i > gold_j} exp(scale (sims_j - sims_i))), without the B x B matrix.

    Sort by gold score; for each pair j, every pair i ranked strictly higher contributes
    exp(scale sims_j) * exp(-scale sims_i), and the sum over i is a suffix log-sum-exp.

    A pair without a gold score (NaN) takes no part, without leaving the tensor: it sorts below
    every scored pair (gold -inf), so it is never the higher of two; and as the lower one its
    terms are exp(-1e4 + ...) = 0 (a finite stand-in: -inf would reach logcumsumexp's backward).
    """
    # bf16 similarities under autocast would blur the ranking; fp64 inputs stay fp64.
    sims = sims.to(torch.promote_types(sims.dtype, torch.float32)) * scale
    unscored = gold.isnan()
    gold, sims = gold.masked_fill(unscored, -torch.inf), sims.masked_fill(unscored, -1e4)
    gold, order = gold.sort()
    sims = sims[order]
    higher = torch.searchsorted(gold, gold, right=True)  # first index with a strictly higher gold
    suffix = torch.logcumsumexp(-sims.flip(0), dim=0).flip(0)  # suffix[k] = lse(-sims[k:])
    suffix = torch.cat([suffix, sims.new_full((1,), -torch.inf)])  # no higher pair: exp(-inf)
    return torch.logsumexp(torch.cat([sims.new_zeros(1), sims + suffix[higher]]), dim=0)


def multiple_negatives_ranking_loss(
    u: torch.Tensor,
    v: torch.Tensor,
    labels: torch.Tensor,
    positive_label: int,
    negative_label: int | None = None,
    ids: torch.Tensor | None = None,
    scale: float = 20.0,
) -> torch.Tensor:
    """In-batch contrastive loss for NLI pairs, with contradictions as hard negatives.

    Henderson et al. (2017), "Efficient Natural Language Response Suggestion for Smart Reply",
    the "multiple negatives" loss: for each anchor a_i with positive p_i and candidates c_1..c_M,
    L = -1/N sum_i [scale cos(a_i, p_i) - log sum_m exp(scale cos(a_i, c_m))]
    (InfoNCE, van den Oord et al. 2018, eq. 4; temperature 1/scale = 0.05 as in
    sentence-transformers and SimCSE, Gao et al. 2021, whose §4 uses NLI this way).

    - Anchors: the first sentences (premises) of the pairs labelled `positive_label`
      (entailment); their second sentences are their positives.
    - Candidates: every anchor's positive, and the second sentence (hypothesis) of every pair
      labelled `negative_label` (contradiction), as sentence-transformers' triplet input does:
      a contradiction of the same premise is a hard negative, one of another premise an
      ordinary in-batch negative. Neutral and unlabelled pairs take no part.
    - Duplicates are masked (left out of anchor i's softmax) when `ids` is given: a candidate
      identical to anchor i itself, or to the positive of any anchor with anchor i's premise
      (its own positive again, or another hypothesis the batch says it entails). Left in,
      such false negatives would push apart sentences the data says agree. Identity is by
      `ids`, one per sentence, (2B,) for the B first then the B second sentences, as
      `sbert.data.batching.sentence_ids` computes from the batch's token ids.

    With no duplicates this equals sentence-transformers' `MultipleNegativesRankingLoss`
    (defaults: cosine, scale 20, query_to_doc, joint) on (anchor, positive[, negative]) input.

    Args:
        u, v: (B, H) embeddings of the pairs' first and second sentences.
        labels: (B,) long label index per pair (`IGNORE_LABEL` = none).
        positive_label: the label index of entailment; negative_label: of contradiction.
        ids: (2B,) long sentence identities, or None for no duplicate masking.
        scale: inverse temperature of the softmax over cosine similarities.
    Returns:
        the mean over anchors; 0 (and no gradient) if the batch has no entailment pair.

    All B pairs stay in the (B, B) matrix, the ones outside the loss masked out: selecting
    the anchors instead (a boolean index) would make a GPU step wait for the device.
    """
    anchor = labels == positive_label  # (B,) the rows that count
    candidate = anchor | (labels == negative_label) if negative_label is not None else anchor
    left_out = ~candidate[None, :]  # (B, B): row i, column c (the B second sentences)
    if ids is not None:
        left_out = left_out | _duplicates(ids, anchor)
    # The diagonal stays: an anchor's own positive, and for any other row a finite logsumexp.
    diagonal = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    cos = _cos_matrix(_only(anchor, u), _only(candidate, v))
    logits = (scale * cos).masked_fill(left_out & ~diagonal, -torch.inf)
    per_row = torch.logsumexp(logits, dim=1) - logits.diagonal()  # (B,)
    return torch.where(anchor, per_row, 0.0).sum() / anchor.sum().clamp(min=1)


def _duplicates(ids: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
    """(B, B) bool: column c is a false negative for row i, the same sentence as premise i or
    as the positive of any anchor k with premise i's (diagonal included: the caller keeps it)."""
    first, second = ids.chunk(2)  # (B,) ids of the premises and of the hypotheses
    same_premise = ((first[:, None] == first[None, :]) & anchor[None, :]).float()  # (i, k)
    same_hypothesis = (second[:, None] == second[None, :]).float()  # (k, c)
    entailed = same_premise @ same_hypothesis > 0
    return entailed | (second[None, :] == first[:, None])


def _cos_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, M) cosine similarities of (N, H) and (M, H), in at least fp32, autocast or not (bf16
    would blur a softmax at scale 20)."""
    dtype, device = torch.promote_types(a.dtype, torch.float32), a.device.type
    exact = contextlib.nullcontext()
    if torch.amp.is_autocast_available(device):  # (not the meta device's)
        exact = torch.autocast(device, enabled=False)
    with exact:
        return F.normalize(a.to(dtype), dim=-1) @ F.normalize(b.to(dtype), dim=-1).T
