"""Dev scores of each training choice, over seeds: the tables behind the defaults
(docs/experiments.md).

Two protocols (the held-out test sets are never used):

- `demo`: the demo's 1,000 SICK TRAIN pairs; scored on the OTHER 3,439 SICK TRAIN pairs
  (`@TRAIN[1000:]`, a dev set 7x SICK TRIAL's size) and STS-B dev;
- `full`: SICK TRAIN (4,439) and/or STS-B train (5,749); scored on SICK TRIAL and STS-B dev.

Each run is `python train.py` in a fresh process (`--jobs N` runs N at a time, one CPU thread
each: on a GPU machine); the table gives the mean over seeds and the spread, and the training
process's wall time.

    python bench/quality.py demo --seeds 1 2 3
    python bench/quality.py full --seeds 42 --runs sick-regression sick-stsb
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from common import ROOT, SICK, STSB_DEV, STSB_TRAIN, machine


def plus(base: list[str], extra: str) -> list[str]:
    """A run's flags: `base` and the space-separated `extra`."""
    return [*base, *extra.split()]


SICK_ALL, STS_ALL = f"{SICK}@TRAIN", str(STSB_TRAIN)
DEMO = ["--train", SICK_ALL]  # the demo protocol adds --limit 1000
BOTH = ["--train", SICK_ALL, "--train", STS_ALL]
EQUAL = "--loss-weights classification=1,regression=1"  # 1:1
EQUAL3 = EQUAL + ",contrastive=1"  # 1:1:1
ONE_TO_ONE = f"--epochs 2 {EQUAL} --strategy full"
FIXED = plus(BOTH, ONE_TO_ONE)
LP_FT = ["--config", str(ROOT / "bench" / "lp-ft.toml")]  # its stages name their own data
RECIPE = ["--config", str(ROOT / "configs" / "sick-stsb.toml")]  # FIXED, balance uncertainty
PROTOCOLS = {
    "demo": {
        "dev": [f"{SICK}@TRAIN[1000:]", str(STSB_DEV)],
        "common": ["--limit", "1000"],
        "runs": {
            "defaults (cosine-MSE, fixed 0.1:1)": DEMO,
            "cosent": plus(DEMO, "--regression-loss cosent"),
            "angle": plus(DEMO, "--regression-loss angle"),
            "uncertainty": plus(DEMO, "--balance uncertainty"),
            "pcgrad": plus(DEMO, "--balance pcgrad"),
            "gradnorm": plus(DEMO, "--balance gradnorm"),
            "contrastive": [*DEMO, "--contrastive"],
            "2 epochs": plus(DEMO, "--epochs 2"),
            "3 epochs": plus(DEMO, "--epochs 3"),
            "cosent, 2 epochs": plus(DEMO, "--regression-loss cosent --epochs 2"),
            "cosent, lr 1e-5": plus(DEMO, "--regression-loss cosent --lr 1e-5"),
            "lr 4e-5": plus(DEMO, "--lr 4e-5"),
            "lr 4e-5, 2 epochs": plus(DEMO, "--lr 4e-5 --epochs 2"),
            "lr 8e-5": plus(DEMO, "--lr 8e-5"),
            "lr 1e-4": plus(DEMO, "--lr 1e-4"),
            "strategy full": plus(DEMO, "--strategy full"),
            "layer-decay, lr 8e-5": plus(DEMO, "--strategy layer-decay --lr 8e-5"),
            "batch 8": plus(DEMO, "--batch-size 8"),
            "batch 8, 2 epochs": plus(DEMO, "--batch-size 8 --epochs 2"),
            "weights 1:1": plus(DEMO, EQUAL),
            "dropout 0": plus(DEMO, "--dropout 0"),
            "LP-FT: 1 epoch of the classifier alone first": LP_FT,
            "weights 0.03:1": plus(DEMO, "--loss-weights classification=0.03,regression=1"),
            "contrastive, 2 epochs": plus(DEMO, "--contrastive --epochs 2"),
            "regression only": ["--train", f"{SICK_ALL}:regression"],
            "uncertainty, 1:1, full": plus(
                DEMO,
                f"--balance uncertainty {EQUAL} --strategy full",
            ),
        },
    },
    "full": {
        "dev": [f"{SICK}@TRIAL", str(STSB_DEV)],
        "common": [],
        "runs": {
            "sick-regression": ["--train", f"{SICK_ALL}:regression", "--strategy", "full"],
            "sick-classification": ["--train", f"{SICK_ALL}:classification"],
            "stsb-4-epochs": plus(
                ["--train", f"{STS_ALL}:regression"], "--epochs 4 --strategy full"
            ),
            "sick-stsb (defaults)": BOTH,
            "sick-stsb, 2 epochs": plus(BOTH, "--epochs 2"),
            "sick-stsb, 2 epochs, weights 1:1": plus(BOTH, f"--epochs 2 {EQUAL}"),
            "sick-stsb, 2 epochs, gradnorm": plus(BOTH, "--epochs 2 --balance gradnorm"),
            "sick-stsb, 2 epochs, 1:1, full": FIXED,
            "sick-stsb, 2 epochs, 1:1, contrastive": plus(
                BOTH,
                f"--epochs 2 {EQUAL3} --contrastive",
            ),
            "1:1 full, STS-B cosent": plus(
                ["--train", SICK_ALL, "--train", f"{STS_ALL}:cosent"], ONE_TO_ONE
            ),
            "1:1 full, STS-B angle": plus(
                ["--train", SICK_ALL, "--train", f"{STS_ALL}:angle"], ONE_TO_ONE
            ),
            "1:1 full, lr 3e-5": plus(FIXED, "--lr 3e-5"),
            "1:1 full, proportional": plus(FIXED, "--mix proportional"),
            "1:1 full, contrastive": plus(FIXED, f"--contrastive {EQUAL3}"),
            "sick-stsb (recipe: 1:1 full, uncertainty)": RECIPE,
            "recipe, contrastive": plus(RECIPE, f"--contrastive {EQUAL3}"),
        },
    },
}


def train(args: list[str], out: Path, threads: int | None) -> tuple[dict, dict, float]:
    """(untrained metrics, final metrics, seconds) of one `python train.py` run."""
    started = time.perf_counter()
    command = [sys.executable, str(ROOT / "train.py"), *args, "--out", str(out)]
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env)
    seconds = time.perf_counter() - started
    if result.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "loss" not in r and any("/" in k for k in r)]
    return evals[0], evals[-1], seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("protocol", choices=PROTOCOLS)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--runs", nargs="+", help="only these runs (default: all)")
    p.add_argument("--model", help="train from this model folder (default: the runs' own)")
    p.add_argument(
        "--jobs", type=int, default=1, help="runs at a time (each then gets one CPU thread)"
    )
    args = p.parse_args()
    protocol = PROTOCOLS[args.protocol]
    runs = {k: v for k, v in protocol["runs"].items() if not args.runs or k in args.runs}
    print(f"# bench/quality.py {args.protocol}, seeds {args.seeds}\n{machine()}", flush=True)
    dev = [x for spec in protocol["dev"] for x in ("--dev", spec)]
    model = ["--model", args.model] if args.model else []
    threads = 1 if args.jobs > 1 else None
    results: dict[str, list[dict]] = {name: [] for name in runs}
    untrained, seconds = {}, {name: [] for name in runs}
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(args.jobs) as pool:
        jobs = {}
        for name, extra in runs.items():
            for seed in args.seeds:
                out = Path(tmp) / f"{len(jobs)}-{seed}"
                command = [*extra, *protocol["common"], *dev, *model, "--seed", str(seed)]
                jobs[pool.submit(train, command, out, threads)] = name, seed
        for job in as_completed(jobs):
            (name, seed), error = jobs[job], job.exception()
            if error:  # one failed run is reported, and the others go on
                print(f"{name}, seed {seed}: {error}", flush=True)
                continue
            before, after, took = job.result()
            untrained = untrained or before
            results[name].append(after)
            seconds[name].append(took)
            print(
                f"{name}, seed {seed}: {took:.0f} s "
                + json.dumps({k: round(v, 2) for k, v in after.items() if "/" in k}),
                flush=True,
            )
    metrics = [k for k in untrained if k.endswith(("spearman", "accuracy"))]
    print("\n| run | " + " | ".join(metrics) + " | seconds |")
    print("|---|" + "---|" * (len(metrics) + 1))
    print(
        "| untrained checkpoint | "
        + " | ".join("—" if k.endswith("accuracy") else f"{untrained[k]:.2f}" for k in metrics)
        + " | |"
    )
    for name, rows in results.items():
        cells = []
        for k in metrics:
            values = [r[k] for r in rows if k in r]
            spread = f" ± {(max(values) - min(values)) / 2:.2f}" if len(values) > 1 else ""
            cells.append(f"{statistics.mean(values):.2f}{spread}" if values else "—")
        took = f"{statistics.mean(seconds[name]):.0f}" if seconds[name] else "—"
        print(f"| {name} | " + " | ".join(cells) + f" | {took} |")
    print("(mean over seeds ± half the range)")


if __name__ == "__main__":
    main()
