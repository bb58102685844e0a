"""The objectives and balancers as the trainer runs them: each reaches the loss it names, the
learned weights and gradient shares are logged, and resumed runs restore the balancer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sbert import cli
from sbert.errors import ConfigError
from sbert.training.distributed import Processes
from sbert.training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[2]
SICK = ROOT / "data" / "sick" / "SICK_train_trial.txt"
STS_DEV = ROOT / "data" / "stsbenchmark" / "sts-dev.csv"
FLAGS = [
    "--model",
    "tiny",
    "--limit",
    "32",
    "--batch-size",
    "8",
    "--device",
    "cpu",
    "--no-eval",
    "--seed",
    "3",
]


def train(out: Path, *args: str) -> list[dict]:
    assert cli.main(["train", *FLAGS, "--out", str(out), *args]) == 0
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def steps(log: list[dict]) -> list[dict]:
    return [r for r in log if "loss" in r]


def test_contrastive_is_a_third_loss_from_the_same_pass(tmp_path, one_thread):
    log = train(
        tmp_path,
        "--train",
        f"{SICK}@TRAIN",
        "--contrastive",
        "--loss-weights",
        "classification=0.5,regression=1,contrastive=2",
    )
    for r in steps(log):
        assert {"classification", "regression", "contrastive"} <= set(r)
        expected = 0.5 * r["classification"] + r["regression"] + 2 * r["contrastive"]
        assert r["loss"] == pytest.approx(expected, rel=1e-5)


def test_a_files_regression_loss_is_its_own(tmp_path, one_thread):
    mse = steps(train(tmp_path / "mse", "--train", f"{STS_DEV}"))
    cosent = steps(train(tmp_path / "cosent", "--train", f"{STS_DEV}:cosent"))
    # The first step sees the same batch and the same weights: CoSENT's log-sum-exp over a
    # batch's ordered pairs is far larger than a mean squared error of cosines in [0, 1].
    assert mse[0]["regression"] < 1 < cosent[0]["regression"]


@pytest.mark.parametrize("balance", ["uncertainty", "gradnorm"])
def test_learned_weights_move_and_are_logged(tmp_path, balance, one_thread):
    log = steps(train(tmp_path, "--train", f"{SICK}@TRAIN", "--balance", balance))
    first, last = log[0], log[-1]
    assert "weight/classification" in first and "weight/regression" in last
    assert first["weight/regression"] != last["weight/regression"]


def test_gradient_shares_are_logged_every_n_steps(tmp_path, one_thread):
    log = steps(train(tmp_path, "--train", f"{SICK}@TRAIN", "--grad-share-every", "2"))
    shared = [r["step"] for r in log if "grad_share/regression" in r]
    assert shared == [2, 4]  # 32 pairs, batch 8: 4 steps
    for r in log:
        if r["step"] in shared:
            assert r["grad_share/classification"] + r["grad_share/regression"] == pytest.approx(1)


def test_pcgrad_trains_and_a_checkpoint_holds_the_balancer_state(tmp_path, one_thread):
    log = steps(train(tmp_path / "p", "--train", f"{SICK}@TRAIN", "--balance", "pcgrad"))
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in log)
    config_args = ["--train", f"{SICK}@TRAIN", "--balance", "uncertainty", "--save-every", "2"]
    train(tmp_path / "u", *config_args)
    state = torch.load(tmp_path / "u" / "checkpoints" / "stage0-step000004" / "state.pt")
    assert set(state["balancer"]) == {"log_vars.classification", "log_vars.regression"}


def test_gradient_methods_are_refused_under_ddp(tmp_path):
    from sbert.training.config import make_config

    config = make_config(
        {
            "train": [f"{SICK}@TRAIN"],
            "model": "tiny",
            "limit": 8,
            "batch_size": 8,
            "balance": "pcgrad",
            "out": str(tmp_path),
        }
    )
    with pytest.raises(ConfigError, match="run it in one process"):
        Trainer.from_config(config, tmp_path, torch.device("cpu"), Processes(rank=0, world=2))
