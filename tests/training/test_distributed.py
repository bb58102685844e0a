"""torchrun with 2 CPU processes (gloo) trains to the same parameters, and logs the same losses,
as 1 process with the same global batch and seed (learned balancing weights included); with
gradient synchronisation switched off it does not."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sbert import SentenceBert
from sbert.models.multitask import MultiTaskModel
from sbert.models.objectives import OBJECTIVES

ROOT = Path(__file__).resolve().parents[2]
SICK = ROOT / "data" / "sick" / "SICK_train_trial.txt"
STS_TRAIN = ROOT / "data" / "stsbenchmark" / "sts-train.csv"
# Two files, one objective each, in turn: a step feeds one objective, and the other's learned
# weight must not move (as in one process, where it has no gradient).
BALANCED = ["--train", f"{STS_TRAIN}[0:32]:regression", "--balance", "uncertainty"]
# Run as a torchrun script: DistributedDataParallel replaced by the bare module, so that
# every process steps on its own shard's gradients alone.
NO_SYNC = """
import sys, runpy, torch
torch.nn.parallel.DistributedDataParallel = lambda module, **kw: module
sys.argv = ["train.py", *sys.argv[1:]]
runpy.run_path("train.py", run_name="__main__")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(out: Path, processes: int, *extra: str, script: str = "train.py") -> Path:
    # 51 pairs: 6 batches of 8 and one of 3, which 2 processes share unevenly (2 and 1)
    flags = "--model tiny --limit 51 --batch-size 8 --epochs 2 --lr 1e-3 --head-lr 1e-2 "
    # fp32: the runs compared differ only in summation order, not in bf16 rounding of shards
    flags += "--dropout 0 --seed 5 --device cpu --no-eval --precision fp32"
    args = ["--train", f"{SICK}@TRAIN", *flags.split(), "--out", str(out), "--log-every", "1"]
    args += extra
    launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}"]
    launcher += [f"--master_port={free_port()}", script]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(launcher + args, cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return out / "final"


def params(folder: Path) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in MultiTaskModel.from_pretrained(folder).state_dict().items()}


def max_gap(a: dict, b: dict) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, dict[str, torch.Tensor]]:
    tmp = tmp_path_factory.mktemp("ddp")
    script = tmp / "no_sync.py"
    script.write_text(NO_SYNC)
    return {
        "one": params(train(tmp / "one", 1)),
        "two": params(train(tmp / "two", 2)),
        "accumulated": params(train(tmp / "acc", 1, "--grad-accum", "2")),
        "unsynced": params(train(tmp / "unsynced", 2, script=str(script))),
        "balanced-one": params(train(tmp / "b-one", 1, *BALANCED)),
        "balanced-two": params(train(tmp / "b-two", 2, *BALANCED)),
        "start": initial_params(seed=5),
        "logs": {n: logged(tmp / n / "metrics.jsonl") for n in ("one", "two", "b-one", "b-two")},
    }


def logged(log: Path) -> list[dict[str, float]]:
    """Each step's logged losses and learned weights."""
    steps = [json.loads(line) for line in log.read_text().splitlines()]
    keep = lambda k: "loss" in k or k in OBJECTIVES or k.startswith("weight/")  # noqa: E731
    return [{k: v for k, v in s.items() if keep(k)} for s in steps]


def initial_params(seed: int) -> dict[str, torch.Tensor]:
    """The weights every run starts from: the trainer seeds, then builds encoder and head."""
    torch.manual_seed(seed)
    model = MultiTaskModel(
        SentenceBert.from_config("tiny"), ["contradiction", "entailment", "neutral"]
    )
    return model.state_dict()


def test_two_processes_equal_one_with_the_same_global_batch(runs):
    one, two, start = runs["one"], runs["two"], runs["start"]
    # The tolerance is relative to how far training moved the parameters: the runs differ
    # only in float summation order (gradients averaged over 2 shards of 4 pairs instead of
    # one batch of 8), which Adam turns into update differences far below the updates.
    moved = max_gap(one, start)
    assert moved > 0.01
    assert max_gap(one, two) < 1e-3 * moved


def test_gradient_accumulation_equals_the_full_batch(runs):
    assert max_gap(runs["one"], runs["accumulated"]) < 1e-3 * max_gap(runs["one"], runs["start"])


def test_two_processes_log_the_losses_and_weights_one_logs(runs):
    for one, two in (("one", "two"), ("b-one", "b-two")):
        one, two = runs["logs"][one], runs["logs"][two]
        assert len(one) == len(two) > 0
        for a, b in zip(one, two, strict=True):
            assert a.keys() == b.keys()
            assert [b[k] for k in a] == pytest.approx([a[k] for k in a], rel=1e-3)


def test_learned_balancing_weights_under_two_processes_equal_one(runs):
    one, two = runs["balanced-one"], runs["balanced-two"]
    assert max_gap(one, two) < 1e-3 * max_gap(one, runs["start"])


def test_the_comparison_fails_without_gradient_synchronisation(runs):
    assert max_gap(runs["one"], runs["unsynced"]) > 100 * max_gap(runs["one"], runs["two"])
