"""Each transfer-learning strategy on the demo's work: dev scores and wall time, one table.

Runs `sbert.training.trainer.Trainer` with the demo's settings, changing only the strategy (and the
settings named on the command line), and evaluates on SICK TRIAL and STS-B dev after training.

    python bench/strategies.py                       # every strategy, demo settings
    python bench/strategies.py --set epochs=1 --set head_lr=0.01
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from common import machine

from sbert.choices import STRATEGIES
from sbert.training.config import make_config
from sbert.training.distributed import Processes
from sbert.training.trainer import Trainer

COLUMNS = {
    "SICK_train_trial-TRIAL/spearman": "SICK-R",
    "SICK_train_trial-TRIAL/accuracy": "SICK-E acc",
    "sts-dev/spearman": "STS-B",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES))
    parser.add_argument("--set", action="append", default=[], help="FIELD=JSON_VALUE override")
    args = parser.parse_args()
    overrides = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    print(machine())
    print(f"{'strategy':<14}" + "".join(f"{c:>12}" for c in COLUMNS.values()) + f"{'seconds':>10}")
    for strategy in args.strategies:
        with tempfile.TemporaryDirectory() as out:
            config = make_config({"out": out, "device": "cpu", **overrides, "strategy": strategy})
            started = time.perf_counter()
            trainer = Trainer.from_config(config, Path(out), torch.device("cpu"), Processes())
            if strategy == args.strategies[0]:
                print_row("(untrained)", trainer.evaluate_all(), float("nan"))
                started = time.perf_counter()
            metrics = trainer.fit()
            seconds = time.perf_counter() - started
        print_row(strategy, metrics, seconds)


def print_row(name: str, metrics: dict, seconds: float) -> None:
    row = "".join(f"{metrics.get(k, float('nan')):12.2f}" for k in COLUMNS)
    print(f"{name:<14}{row}{seconds:10.1f}", flush=True)


if __name__ == "__main__":
    main()
