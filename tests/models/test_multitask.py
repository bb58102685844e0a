"""The two objectives against hand-computed values, and the classifier's life in the model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sbert import SentenceBert
from sbert.data.batching import (
    IGNORE_LABEL,
    bucketed_batches,
    collate,
    mix,
    shard,
    tokenize_pairs,
)
from sbert.data.readers import Pair, PairSet
from sbert.models.losses import classification_loss, regression_loss
from sbert.models.multitask import MultiTaskModel, pair_features
from sbert.training.balance import FixedWeights


@pytest.fixture(scope="module")
def tiny() -> SentenceBert:
    torch.manual_seed(0)
    return SentenceBert.from_config("tiny")


def test_pair_features_are_u_v_and_absolute_difference():
    u, v = torch.tensor([[1.0, -2.0]]), torch.tensor([[3.0, 1.0]])
    assert pair_features(u, v).tolist() == [[1.0, -2.0, 3.0, 1.0, 2.0, 3.0]]


def test_classification_loss_is_cross_entropy_over_labelled_pairs_only():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [5.0, 5.0, 5.0]])
    labels = torch.tensor([0, 1, IGNORE_LABEL])
    # -log softmax by hand for the two labelled rows.
    row0 = -(2 - math.log(math.exp(2) + 2))
    row1 = -(1 - math.log(math.exp(1) + 2))
    assert classification_loss(logits, labels).item() == pytest.approx((row0 + row1) / 2)
    # No labelled pair: a mean over none (collate leaves such labels out of the batch).
    assert classification_loss(logits, torch.full((3,), IGNORE_LABEL)).isnan()


def test_regression_loss_is_mse_of_cosine_over_scored_pairs_only():
    u = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    v = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    scores = torch.tensor([0.5, 0.25, float("nan")])
    # cosines 0 and 1 against 0.5 and 0.25: ((0-0.5)^2 + (1-0.25)^2) / 2
    assert regression_loss(u, v, scores).item() == pytest.approx((0.25 + 0.5625) / 2)
    assert regression_loss(u, v, torch.full((3,), float("nan"))).isnan()  # a mean over none


def _pairs() -> PairSet:
    rows = [
        Pair("A man is playing a guitar.", "A man plays guitar.", "entailment", 4.8, 2),
        Pair("A dog runs.", "Nobody is running.", "contradiction", 1.5, 3),
        Pair("A woman cooks.", "A person is in a kitchen.", "neutral", 3.0, 4),
        Pair("Kids play in a yard.", "Children are outside.", "entailment", 4.0, 5),
    ]
    return PairSet("pairs.tsv", "sick", rows, (1.0, 5.0))


def test_one_forward_pass_gives_both_losses_weighted(tiny):
    data = _pairs()
    model = MultiTaskModel(tiny, list(data.label_names)).eval()
    index = {name: i for i, name in enumerate(model.labels)}
    tokenized = tokenize_pairs(data, tiny.tokenizer, index)
    batch = collate(tokenized, [0, 1, 2, 3], tiny.tokenizer.pad_id)
    calls = []
    handle = tiny.bert.register_forward_hook(lambda *a: calls.append(1))
    out = model(**batch)
    handle.remove()
    assert len(calls) == 1  # ONE encoder call over the 2B sentences
    u = tiny.encode([p.a for p in data.pairs], convert_to_tensor=True)
    v = tiny.encode([p.b for p in data.pairs], convert_to_tensor=True)
    torch.testing.assert_close(out.u, u, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.v, v, atol=1e-5, rtol=1e-5)
    logits = model.classifier(pair_features(u, v))
    labels = torch.tensor([index[p.label] for p in data.pairs])
    scores = torch.tensor([(p.score - 1) / 4 for p in data.pairs])  # SICK's 1..5 -> 0..1
    expected_cls = F.cross_entropy(logits, labels)
    expected_reg = F.mse_loss(F.cosine_similarity(u, v), scores)
    assert out.losses["classification"].item() == pytest.approx(expected_cls.item(), abs=1e-5)
    assert out.losses["regression"].item() == pytest.approx(expected_reg.item(), abs=1e-5)
    expected = 0.3 * expected_cls + 2.0 * expected_reg
    # the trainer weights the named losses (--balance fixed, --loss-weights 0.3 2)
    loss = FixedWeights({"classification": 0.3, "regression": 2.0}).total(out.losses)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-5)


def test_objective_choice_drops_the_other_target(tiny):
    data = _pairs()
    index = {name: i for i, name in enumerate(data.label_names)}
    only_cls = tokenize_pairs(data, tiny.tokenizer, index, "classification")
    only_reg = tokenize_pairs(data, tiny.tokenizer, index, "regression")
    assert np.isnan(only_cls.scores).all() and (only_cls.labels >= 0).all()
    assert (only_reg.labels == IGNORE_LABEL).all() and not np.isnan(only_reg.scores).any()
    # A batch carries only the targets it has: decided on the host, where it is made.
    assert set(collate(only_cls, [0, 1], tiny.tokenizer.pad_id)) == {
        "input_ids",
        "attention_mask",
        "sentence_ids",
        "token_index",
        "labels",
    }
    assert "labels" not in collate(only_reg, [0, 1], tiny.tokenizer.pad_id)
    both = collate(tokenize_pairs(data, tiny.tokenizer, index), [2, 0], tiny.tokenizer.pad_id)
    real = both["attention_mask"].reshape(-1).nonzero()[:, 0]
    assert both["token_index"].tolist() == real.tolist() and len(real) < both["input_ids"].numel()
    same_length = [1]  # a pair whose two sentences tokenize to equal lengths: no padding
    assert len(only_cls.a[1]) == len(only_cls.b[1])
    assert "token_index" not in collate(only_cls, same_length, tiny.tokenizer.pad_id)
    assert both["labels"].tolist() == [index["neutral"], index["entailment"]]
    assert both["scores"].tolist() == pytest.approx([0.5, 0.95])


def test_classifier_is_saved_in_the_model_folder_and_sentence_transformers_loads_it(tiny, tmp_path):
    from sentence_transformers import SentenceTransformer

    model = MultiTaskModel(tiny, ["contradiction", "entailment", "neutral"])
    model.save(tmp_path / "m")
    loaded = MultiTaskModel.from_pretrained(tmp_path / "m")
    assert loaded.labels == model.labels
    torch.testing.assert_close(loaded.classifier.weight, model.classifier.weight)
    sentences = ["A man is playing a guitar.", "Nobody is running."]
    reference = SentenceTransformer(str(tmp_path / "m"), device="cpu").encode(sentences)
    np.testing.assert_allclose(reference, tiny.encode(sentences), atol=1e-5)


def test_bucketed_batches_are_deterministic_cover_everything_and_cut_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 60, size=1000).tolist()
    a = bucketed_batches(lengths, 16, seed=7)
    assert a == bucketed_batches(lengths, 16, seed=7)
    assert a != bucketed_batches(lengths, 16, seed=8)
    assert sorted(i for b in a for i in b) == list(range(1000))
    padded = sum(len(b) * max(lengths[i] for i in b) for b in a)
    random_order = [list(range(i, min(i + 16, 1000))) for i in range(0, 1000, 16)]
    padded_random = sum(len(b) * max(lengths[i] for i in b) for b in random_order)
    assert padded < 0.7 * padded_random


@pytest.mark.parametrize("pairs", [129, 130, 135, 260])
def test_no_batch_is_smaller_than_one_pair_per_process_and_micro_batch(pairs):
    # 129 = 8 x 16 + 1: the last bucket is one pair, which joins the bucket before it.
    batches = bucketed_batches([5] * pairs, 8, seed=1, min_batch=4)
    assert min(map(len, batches)) >= 4
    assert sorted(i for b in batches for i in b) == list(range(pairs))


def test_shards_split_a_global_batch_without_overlap():
    batch = list(range(10))
    shards = [shard(batch, r, 2) for r in range(2)]
    assert sorted(shards[0] + shards[1]) == batch and len(shards[0]) == len(shards[1])


def test_mix_round_robin_keeps_every_batch_and_proportional_shuffles():
    sets = [[[0], [1], [2]], [[10]]]
    assert mix(sets, "round-robin", 0) == [(0, [0]), (1, [10]), (0, [1]), (0, [2])]
    proportional = mix(sets, "proportional", 0)
    assert sorted(proportional) == sorted(mix(sets, "round-robin", 0))
    many = [[[i] for i in range(20)], [[100 + i] for i in range(20)]]
    first, other = mix(many, "proportional", 0), mix(many, "proportional", 1)
    assert first == mix(many, "proportional", 0) != other  # seeded, and by the seed
    assert first != [(d, b) for d, batches in enumerate(many) for b in batches]  # shuffled
