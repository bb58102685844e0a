"""torchrun with 2 CPU processes (gloo) trains to the same parameters as 1 process with the same
global batch and seed; with gradient synchronisation switched off it does not."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sbert import SentenceBert
from sbert.models.multitask import MultiTaskModel

ROOT = Path(__file__).resolve().parents[2]
SICK = ROOT / "data" / "sick" / "SICK_train_trial.txt"
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
    flags = "--model tiny --limit 48 --batch-size 8 --epochs 2 --lr 1e-3 --head-lr 1e-2 "
    # fp32: the runs compared differ only in summation order, not in bf16 rounding of shards
    flags += "--dropout 0 --seed 5 --device cpu --no-eval --precision fp32"
    args = ["--train", f"{SICK}@TRAIN", *flags.split(), "--out", str(out), *extra]
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
        "start": initial_params(seed=5),
    }


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


def test_the_comparison_fails_without_gradient_synchronisation(runs):
    assert max_gap(runs["one"], runs["unsynced"]) > 100 * max_gap(runs["one"], runs["two"])
