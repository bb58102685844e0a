"""The objective table: each entry computes its loss from one forward pass, by name, and returns
None for a batch without its target; the model computes exactly the objectives asked for."""

from __future__ import annotations

import typing

import numpy as np
import pytest
import torch

from sbert import SentenceBert
from sbert.choices import REGRESSION_LOSSES as REGRESSION_NAMES
from sbert.choices import RegressionLoss
from sbert.data.batching import IGNORE_LABEL
from sbert.models.losses import classification_loss, cosent_loss, regression_loss
from sbert.models.multitask import MultiTaskModel
from sbert.models.objectives import (
    DEFAULT_OBJECTIVES,
    DEV_METRICS,
    OBJECTIVES,
    REGRESSION_LOSSES,
    TARGETS,
    Pass,
    objectives_fed,
)

LABELS = ["contradiction", "entailment", "neutral"]


@pytest.fixture(scope="module")
def model() -> MultiTaskModel:
    torch.manual_seed(0)
    return MultiTaskModel(SentenceBert.from_config("tiny"), LABELS).eval()  # no dropout


def batch(model: MultiTaskModel, labels: list[int] | None, scores: list[float] | None):
    texts = ["a cat sits", "a dog runs", "it rains", "a cat sits"]
    ids = model.encoder.tokenizer.pad(model.encoder.tokenize(texts + texts[::-1]))
    return {
        **ids,
        "labels": None if labels is None else torch.tensor(labels),
        "scores": None if scores is None else torch.tensor(scores),
    }


def test_the_table_is_consistent():
    assert set(DEFAULT_OBJECTIVES) == {"classification", "regression"}
    assert tuple(REGRESSION_LOSSES) == REGRESSION_NAMES == typing.get_args(RegressionLoss)
    for name, objective in OBJECTIVES.items():
        assert objective.name == name and objective.target in TARGETS
        assert objective.weight >= 0 and objective.summary
    assert set(DEV_METRICS) == {"accuracy", "spearman", "pearson"}  # what evaluate() returns


def test_the_model_computes_the_objectives_asked_for_by_name(model):
    both = batch(model, [1, 0, 2, 1], [0.9, 0.1, 0.5, 1.0])
    out = model(**both, objectives=("classification", "regression", "contrastive"))
    assert set(out.losses) == {"classification", "regression", "contrastive"}
    assert set(model(**both).losses) == set(DEFAULT_OBJECTIVES)
    assert set(model(**both, objectives=("regression",)).losses) == {"regression"}
    # Each loss is the table's function of the same pass.
    assert out.losses["classification"] == classification_loss(out.logits, both["labels"])
    assert out.losses["regression"] == regression_loss(out.u, out.v, both["scores"])
    cosent = model(**both, regression="cosent").losses["regression"]
    torch.testing.assert_close(cosent, cosent_loss(out.u, out.v, both["scores"]))


def test_an_objective_without_its_target_is_left_out(model):
    unlabelled = batch(model, None, [0.9, 0.1, 0.5, 1.0])
    out = model(**unlabelled, objectives=tuple(OBJECTIVES))
    assert set(out.losses) == {"regression"} and out.logits is None
    unscored = batch(model, [1, 0, 2, 1], None)
    assert "regression" not in model(**unscored).losses
    no_targets = Pass(*(torch.zeros(2, 3),) * 2, None, None, None, *(torch.ones(4, 2),) * 2)
    assert all(o.loss(no_targets) is None for o in OBJECTIVES.values())


def test_which_objectives_a_batch_feeds_is_decided_from_its_host_arrays():
    everything = tuple(OBJECTIVES)
    nan, none = float("nan"), IGNORE_LABEL
    fed = lambda labels, scores: objectives_fed(  # noqa: E731
        everything, np.array(labels), np.array(scores, dtype=np.float32), LABELS
    )
    assert fed([1, 0], [0.5, nan]) == everything  # 1 = entailment in LABELS
    assert fed([0, 2], [0.5, 0.1]) == ("classification", "regression")  # no entailment pair
    assert fed([none, none], [0.5, 0.1]) == ("regression",)
    assert fed([none, 1], [nan, nan]) == ("classification", "contrastive")
    assert objectives_fed(("regression",), np.array([1]), np.array([0.5]), LABELS) == (
        "regression",
    )
