"""A plan per stage: loss weights by name (the table's defaults for the rest), every stage's
data read and checked before any trains, and "nothing to train" refused in one place."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sbert.data.readers import read_pairs
from sbert.errors import ConfigError, DataError
from sbert.models.objectives import OBJECTIVES
from sbert.training.config import make_config
from sbert.training.plan import check_trainable, plan_stage, plan_stages, stage_model

ROOT = Path(__file__).resolve().parents[2]
SICK = ROOT / "data" / "sick" / "SICK_train_trial.txt"
STS_DEV = ROOT / "data" / "stsbenchmark" / "sts-dev.csv"


def config(**values):
    base = {"train": [f"{SICK}@TRAIN"], "model": "tiny", "limit": 16, "batch_size": 8}
    return make_config({**base, **values})


def test_weights_by_name_keep_the_tables_defaults_for_the_rest():
    default = plan_stage(0, config(), 1)
    assert default.objectives == ("classification", "regression")
    assert default.weights == {n: OBJECTIVES[n].weight for n in default.objectives}
    assert default.weights == {"classification": 0.1, "regression": 1.0}
    plan = plan_stage(0, config(loss_weights={"regression": 2.0}, contrastive=True), 1)
    assert plan.weights == {"classification": 0.1, "regression": 2.0, "contrastive": 1.0}


@pytest.mark.parametrize(
    "values, error",
    [
        ({"loss_weights": {"regresion": 1.0}}, "unknown objective(s) regresion; the objectives"),
        ({"loss_weights": {"contrastive": 1.0}}, "add --contrastive, or leave its weight out"),
        ({"balance": "gradnorm", "loss_weights": {"regression": 0.0}}, "must be above 0"),
        ({"batch_size": 6, "grad_accum": 4}, "does not divide into 1 processes x 4"),
    ],
)
def test_weights_and_batches_that_cannot_work(values, error):
    with pytest.raises(ConfigError, match=error.replace("(", r"\(").replace(")", r"\)")):
        plan_stage(0, config(**values), 1)


def test_every_stages_data_is_read_before_any_stage_trains(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("sentence1,sentence2,score\na,b,7x\n", encoding="utf-8")
    for later in ({"train": [str(bad)]}, {"train": [f"{SICK}@TRAIN"], "dev": [str(bad)]}):
        stages = [{"train": [f"{SICK}@TRAIN"]}, later]
        with pytest.raises(DataError, match="bad.csv:2"):
            plan_stages(config(stages=stages), 1)


@pytest.mark.parametrize(
    "values",
    [
        {"strategy": "frozen", "train": [f"{STS_DEV}"]},  # no labels for the only head
        {"strategy": "partial", "freeze_layers": 2, "train": [f"{STS_DEV}"]},  # tiny: 2 layers
    ],
)
def test_a_frozen_encoder_with_nothing_for_the_classifier_is_refused(values):
    plan = plan_stage(0, config(**values), 1)
    with pytest.raises(ConfigError, match="trains only the classifier"):
        check_trainable(plan, stage_model(plan, None))


def test_a_resumed_stage_builds_the_same_model_from_the_plans():
    stages = [
        {"train": [f"{SICK}@TRAIN:classification"], "dropout": 0.0, "max_seq_length": 16},
        {"train": [f"{STS_DEV}:regression"]},
    ]
    plans = plan_stages(config(stages=stages), 1)
    fresh = stage_model(plans[1], stage_model(plans[0], None))
    assert fresh.labels == ["contradiction", "entailment", "neutral"]
    assert fresh.encoder.tokenizer.max_length == 16 and fresh.score_scale == (0.0, 5.0)
    assert fresh.encoder.bert.config.dropout == 0.0
    torch.manual_seed(123)  # a replay must not depend on the RNG state it finds
    replayed = stage_model(plans[1], stage_model(plans[0], None))
    assert replayed.state_dict().keys() == fresh.state_dict().keys()
    for key, tensor in fresh.state_dict().items():
        assert torch.equal(tensor, replayed.state_dict()[key]), key


def test_a_dev_sets_objective_keeps_only_its_targets():
    dev = [f"{SICK}@TRIAL[:40]", f"{SICK}@TRIAL[40:80]:regression",
           f"{SICK}@TRIAL[80:120]:classification", f"{SICK}@TRIAL[120:160]:angle"]  # fmt: skip
    sets = list(plan_stage(0, config(dev=dev), 1).dev.values())
    assert [(s.has_labels, s.has_scores) for s in sets] == [
        (True, True), (False, True), (True, False), (False, True)
    ]  # fmt: skip
    whole = read_pairs(SICK, split="TRIAL", limit=160).pairs
    assert [(p.a, p.score) for p in sets[1].pairs] == [(p.a, p.score) for p in whole[40:80]]
    assert [(p.a, p.label) for p in sets[2].pairs] == [(p.a, p.label) for p in whole[80:120]]
    assert sets[1].score_range == sets[3].score_range == (1.0, 5.0)
    assert sets[2].score_range is None
    with pytest.raises(DataError, match="asks for classification: its pairs have no labels"):
        plan_stage(0, config(dev=[f"{STS_DEV}:classification"]), 1)
