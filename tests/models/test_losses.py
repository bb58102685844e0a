"""The objectives in sbert/losses.py against sentence-transformers' losses on the same embeddings,
and against hand computations where they go beyond it (NaN scores, duplicate masking)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sbert.data.batching import IGNORE_LABEL, sentence_ids
from sbert.models.losses import (
    angle_loss,
    cosent_loss,
    multiple_negatives_ranking_loss,
    regression_loss,
)

st_losses = pytest.importorskip("sentence_transformers.sentence_transformer.losses")

ENT, NEU, CON = 0, 1, 2


def close(a: torch.Tensor, b: torch.Tensor | float) -> None:
    torch.testing.assert_close(a, torch.as_tensor(b, dtype=a.dtype), atol=1e-6, rtol=1e-6)


def embeddings(n: int, dim: int = 16, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, dim, generator=g, dtype=torch.float64) for _ in range(3)]


@pytest.mark.parametrize(
    ("ours", "theirs"), [(cosent_loss, st_losses.CoSENTLoss), (angle_loss, st_losses.AnglELoss)]
)
@pytest.mark.parametrize("dim", [16, 15])  # AnglE pads an odd dimension
def test_ranking_losses_equal_sentence_transformers(ours, theirs, dim):
    u, v, _ = embeddings(12, dim)
    # SICK-like gold scores with ties, on their own scale (no rescaling), two pairs without one.
    scores = torch.tensor([1.0, 4.5, 3.2, 4.5, 2.0, 5.0, 1.0, 3.2, 2.6, 4.0, 3.9, 1.5])
    scores[[3, 8]] = math.nan
    has = ~scores.isnan()
    for scale in (20.0, 7.0):
        expected = theirs(None, scale=scale).compute_loss_from_embeddings(
            [u[has], v[has]], scores[has].double()
        )
        close(ours(u, v, scores.double(), scale=scale), expected)
    # The pairs without a score stay in the tensors: no gradient reaches them, and none is NaN.
    u.requires_grad_(True)
    ours(u, v, scores.double()).backward()
    assert u.grad[~has].eq(0).all() and u.grad[has].ne(0).all() and u.grad.isfinite().all()


def test_cosent_is_the_pairwise_formula():
    """Su (2022): log(1 + sum_{s_i > s_j} exp(20 (cos_j - cos_i))), written out."""
    u, v, _ = embeddings(6)
    scores = torch.tensor([0.0, 3.0, 1.0, 3.0, 5.0, 2.5], dtype=torch.float64)
    cos = F.cosine_similarity(u, v).tolist()
    terms = [
        math.exp(20 * (cos[j] - cos[i]))
        for i in range(6)
        for j in range(6)
        if scores[i] > scores[j]
    ]
    close(cosent_loss(u, v, scores), math.log1p(sum(terms)))
    # Only the order counts: any increasing map of the scores gives the same loss.
    close(cosent_loss(u, v, scores / 5), cosent_loss(u, v, scores))


def test_mnrl_pairs_equals_sentence_transformers():
    """Entailment pairs only: (anchor, positive) input; neutral and unlabelled pairs ignored."""
    a, p, q = embeddings(6)
    u = torch.cat([a, q[:2], q[2:4]])
    v = torch.cat([p, a[:2], q[:2]])
    labels = torch.tensor([ENT] * 6 + [NEU] * 2 + [IGNORE_LABEL] * 2)
    st = st_losses.MultipleNegativesRankingLoss(None)
    expected = st.compute_loss_from_embeddings([a, p], None)
    close(multiple_negatives_ranking_loss(u, v, labels, ENT, CON), expected)
    st7 = st_losses.MultipleNegativesRankingLoss(None, scale=7.0)
    close(
        multiple_negatives_ranking_loss(u, v, labels, ENT, CON, scale=7.0),
        st7.compute_loss_from_embeddings([a, p], None),
    )


def test_mnrl_hard_negatives_equals_sentence_transformers():
    """SNLI-style: each premise with an entailed and a contradicting hypothesis, shuffled in the
    batch, is ST's (anchor, positive, negative) triplet input; with ids the masking is a no-op."""
    a, p, q = embeddings(5)
    neutral = torch.randn(1, 16, dtype=torch.float64)
    u = torch.cat([a, a, a[:1]])
    v = torch.cat([p, q, neutral])
    labels = torch.tensor([ENT] * 5 + [CON] * 5 + [NEU])
    perm = torch.randperm(11, generator=torch.Generator().manual_seed(1))
    u, v, labels = u[perm], v[perm], labels[perm]
    # Distinct sentences: premises 0-4 (repeated per pair), hypotheses 10-20.
    premise = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0])[perm]
    ids = torch.cat([premise, torch.arange(10, 21)[perm]])
    expected = st_losses.MultipleNegativesRankingLoss(None).compute_loss_from_embeddings(
        [a, p, q], None
    )
    close(multiple_negatives_ranking_loss(u, v, labels, ENT, CON), expected)
    close(multiple_negatives_ranking_loss(u, v, labels, ENT, CON, ids=ids), expected)
    none = multiple_negatives_ranking_loss(u, v, torch.full((11,), CON), ENT, CON)
    assert none.item() == 0  # no anchor: nothing to learn from this batch


def test_mnrl_masks_duplicates():
    """Hand computation. Pairs: (a0, h0) (a1, h1) (a0, h2) (a3, h0') entailment, where h0' is
    the same sentence as h0, and (a1, c) contradiction, where c is the same sentence as a3.
    Premise a0 entails h0 = h0' and h2, so anchors 0 and 2 keep none of them but their own
    positive; anchor 3 must not see h0, nor c, which is itself; anchor 1 sees everything,
    including its hard negative c."""
    a, h, _ = embeddings(5)
    u = torch.stack([a[0], a[1], a[0], a[3], a[1]])
    v = torch.stack([h[0], h[1], h[2], h[0] + 0.1, h[4]])  # h0' embeds differently (dropout)
    labels = torch.tensor([ENT, ENT, ENT, ENT, CON])
    ids = torch.tensor([0, 1, 0, 3, 1, 10, 11, 12, 10, 3])
    s = [[20 * F.cosine_similarity(u[i], v[j], dim=0).item() for j in range(5)] for i in range(5)]

    def term(i, columns):  # -log softmax of anchor i's own positive over the columns it keeps
        return math.log(sum(math.exp(s[i][j]) for j in columns)) - s[i][i]

    expected = (
        term(0, [0, 1, 4]) + term(1, [0, 1, 2, 3, 4]) + term(2, [1, 2, 4]) + term(3, [1, 2, 3])
    ) / 4
    close(multiple_negatives_ranking_loss(u, v, labels, ENT, CON, ids=ids), expected)
    unmasked = sum(term(i, range(5)) for i in range(4)) / 4
    close(multiple_negatives_ranking_loss(u, v, labels, ENT, CON), unmasked)
    assert expected < unmasked  # masking false negatives can only lower the loss


def test_sentence_ids_from_token_ids():
    """Identical sentences get one id even when padded to different lengths; others differ."""
    input_ids = torch.tensor([[101, 7, 8, 102, 0], [101, 7, 8, 102, 5], [101, 7, 9, 102, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 0]])
    ids = sentence_ids(input_ids, mask)
    assert ids[0] == ids[1] != ids[2]


@pytest.mark.parametrize("loss", [regression_loss, cosent_loss, angle_loss])
def test_a_pair_without_a_score_takes_no_part_even_with_a_nan_vector(loss):
    """Masking instead of selecting must not let a left-out pair's NaN (say, one sentence's
    overflow) into the gradient: the step would be skipped for a pair that is not in it."""
    u, v, _ = embeddings(6)
    scores = torch.tensor([0.1, 0.9, math.nan, 0.4, 0.7, math.nan], dtype=torch.float64)
    clean = loss(u, v, scores)
    scored = ~scores.isnan()
    close(clean, loss(u[scored], v[scored], scores[scored]))  # the scored pairs' loss alone
    u = u.clone().requires_grad_(True)
    with torch.no_grad():
        u[2] = math.nan
    value = loss(u, v, scores)
    value.backward()
    close(value.detach(), clean)
    assert u.grad.isfinite().all() and u.grad[[2, 5]].eq(0).all()


def test_mnrl_rows_outside_the_loss_take_no_part_even_with_a_nan_vector():
    a, p, _ = embeddings(5)
    u, v = a.clone(), p.clone()
    labels = torch.tensor([ENT, ENT, NEU, ENT, IGNORE_LABEL])
    clean = multiple_negatives_ranking_loss(u, v, labels, ENT, CON)
    u[2], v[4] = math.nan, math.nan
    u.requires_grad_(True), v.requires_grad_(True)
    value = multiple_negatives_ranking_loss(u, v, labels, ENT, CON)
    value.backward()
    close(value.detach(), clean)
    assert u.grad.isfinite().all() and v.grad.isfinite().all()
    assert u.grad[[2, 4]].eq(0).all() and v.grad[[2, 4]].eq(0).all()


def test_mnrl_similarities_stay_fp32_under_bf16_autocast():
    a, p, _ = embeddings(8)
    u, v = a.float(), p.float()
    labels = torch.full((8,), ENT)
    exact = multiple_negatives_ranking_loss(u, v, labels, ENT, CON)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = multiple_negatives_ranking_loss(u, v, labels, ENT, CON)
    assert under.dtype == torch.float32
    torch.testing.assert_close(under, exact, atol=1e-6, rtol=1e-6)  # bf16: ~1e-2 off
