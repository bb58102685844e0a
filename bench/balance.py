"""How the objectives pull on the shared encoder, and what each balancer costs, on SICK TRAIN.

The demo's settings (all-MiniLM-L6-v2, `partial`, weights 0.1 : 1 : 1) plus the contrastive
objective, on the first N batches of SICK TRAIN, through `Trainer.step` itself with each
`--balance` method. Prints each objective's share of the encoder's gradient norm and the
cosine between the objectives' raw gradients (below 0: they conflict), then the seconds per
step of each method and the ratio to `fixed` (methods interleaved batch by batch, the first
one rotating, so a busy machine slows them alike).

    python bench/balance.py --batches 8
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from common import SICK, machine

from sbert.choices import BALANCE_METHODS
from sbert.training.config import make_config
from sbert.training.distributed import Processes
from sbert.training.trainer import Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=8)
    args = parser.parse_args()
    print(machine())
    trainers = {}
    for method in BALANCE_METHODS:
        out = tempfile.mkdtemp()
        config = make_config(
            {
                "train": [f"{SICK}@TRAIN"],
                "limit": 16 * args.batches,
                "contrastive": True,
                "loss_weights": {"classification": 0.1},
                "balance": method,
                "out": out,
                "no_eval": True,
                "device": "cpu",
                "grad_share_every": 1 if method == "fixed" else None,
            }
        )
        trainers[method] = Trainer.from_config(config, Path(out), torch.device("cpu"), Processes())
    seconds = {method: [] for method in trainers}
    reports = []
    for index, (set_index, batch) in enumerate(trainers["fixed"].schedule(0)):
        # Rotate who goes first: the first to see a batch's shape pays for building its
        # kernels (oneDNN caches them by shape).
        order = list(trainers)[index % len(trainers) :] + list(trainers)[: index % len(trainers)]
        for method in order:
            trainer = trainers[method]
            started = time.perf_counter()
            logs = trainer.step(set_index, batch)
            if index:  # the first batch warms up
                seconds[method].append(time.perf_counter() - started)
            if method == "fixed":
                reports.append({k: float(v) for k, v in logs.items()})  # read back here
    keys = sorted({k for r in reports for k in r if k.startswith(("grad_share", "grad_cos"))})
    for key in keys:
        values = [r[key] for r in reports if key in r]
        print(
            f"{key:<40} mean {statistics.mean(values):7.3f}  "
            f"min {min(values):7.3f}  max {max(values):7.3f}"
        )
    base = statistics.median(seconds["fixed"])
    print(f"\n{'method':<16}{'s/step':>10}{'x fixed':>10}")
    for method, values in seconds.items():
        median = statistics.median(values)
        print(f"{method:<16}{median:10.3f}{median / base:10.2f}")
    print("(fixed includes the gradient-share report: one extra backward per objective)")


if __name__ == "__main__":
    main()
