"""Each transfer-learning strategy trains what it says, at the rate it says: which parameters
train (requires_grad, and an optimizer group), each one's learning rate, and weight decay on
matrices only."""

from __future__ import annotations

import pytest
import torch

from sbert import SentenceBert
from sbert.models.multitask import MultiTaskModel
from sbert.training.strategies import param_groups, trainable


@pytest.mark.parametrize(
    "strategy, knobs, rate",  # rate(depth, layers): embeddings are depth 0, layer l is l + 1
    [
        ("full", {}, lambda depth, layers: 1.0),
        ("frozen", {}, lambda depth, layers: None),
        ("partial", {}, lambda depth, layers: None if depth == 0 else 1.0),
        ("partial", {"freeze_layers": 1}, lambda depth, layers: None if depth <= 1 else 1.0),
        ("layer-decay", {"layer_decay": 0.5}, lambda depth, layers: 0.5 ** (layers - depth)),
        (
            "full",
            {"freeze_layers": 1, "layer_decay": 0.5},
            lambda depth, layers: None if 0 < depth <= 1 else 0.5 ** (layers - depth),
        ),
    ],
)
def test_a_strategy_trains_each_part_at_its_rate(strategy, knobs, rate):
    torch.manual_seed(0)
    model = MultiTaskModel(SentenceBert.from_config("tiny"), ["a", "b"])
    groups = param_groups(model, trainable(strategy, **knobs), 1.0, 10.0, 0.01)
    lr = {id(p): g["lr"] for g in groups for p in g["params"]}
    decay = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    bert = model.encoder.bert
    parts = [(bert.embeddings, 0), *((layer, i + 1) for i, layer in enumerate(bert.layers))]
    for module, depth in parts:
        want = rate(depth, len(bert.layers))
        for name, p in module.named_parameters():
            assert (lr.get(id(p)), p.requires_grad) == (want, want is not None), (depth, name)
    assert all(lr[id(p)] == 10.0 for p in model.classifier.parameters())  # its own head_lr
    assert all(decay[i] == (0.01 if p.dim() >= 2 else 0.0) for p in model.parameters()
               if (i := id(p)) in decay)  # fmt: skip
    everything = [p for module, _ in parts for p in module.parameters()]
    assert len(everything) + 2 == len(list(model.parameters()))  # nothing else to train
