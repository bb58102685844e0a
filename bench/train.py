"""Training speed as a user sees it: whole processes, ours against sentence-transformers.

The work is the demo's: the first 1,000 SICK TRAIN pairs, both objectives, batch 16, one epoch,
from all-MiniLM-L6-v2. Each row is a fresh process, timed from launch to exit (imports, model
load, tokenising, training, saving), rounds alternating the order:

- ours, `python train.py --no-eval` with the demo's defaults (and variants below);
- sentence-transformers, `python bench/st_train.py`: `SentenceTransformerTrainer` with
  `SoftmaxLoss` + `CosineSimilarityLoss`, round-robin, at SBERT's settings.

Afterwards (not timed) every saved model is scored by the same code, `sbert.training.evaluate`,
on SICK TRIAL (relatedness Spearman, entailment accuracy) and STS-B dev (Spearman).

    python bench/train.py [--rounds 3] [--only ours]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, SICK, STSB_DEV, machine

OURS = [sys.executable, str(ROOT / "train.py"), "--no-eval", "--device", "cpu"]
RUNS = {
    "ours, demo defaults": OURS,
    "ours, demo, fp32": [*OURS, "--precision", "fp32"],
    "ours, SBERT settings": [
        *OURS,
        "--strategy",
        "full",
        "--head-lr",
        "2e-5",
        "--loss-weights",
        "classification=1,regression=1",
        "--precision",
        "fp32",
    ],
    "sentence-transformers": [sys.executable, str(ROOT / "bench" / "st_train.py")],
}
METRICS = {
    "SICK_train_trial-TRIAL/spearman": "SICK-R",
    "SICK_train_trial-TRIAL/accuracy": "SICK-E",
    "sts-dev/spearman": "STS-B",
}


def timed(command: list[str], out: Path) -> float:
    start = time.perf_counter()
    result = subprocess.run([*command, "--out", str(out)], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    return seconds


def scores(folder: Path) -> dict[str, float]:
    from sbert.data import batching
    from sbert.data.readers import read_pairs
    from sbert.models.multitask import MultiTaskModel
    from sbert.training.evaluate import evaluate

    model = MultiTaskModel.from_pretrained(folder)
    index = {name: i for i, name in enumerate(model.labels)} or None
    metrics = {}
    for name, data in {
        "SICK_train_trial-TRIAL": read_pairs(SICK, split="TRIAL"),
        "sts-dev": read_pairs(STSB_DEV),
    }.items():
        pairs = batching.tokenize_pairs(data, model.encoder.tokenizer, index)
        metrics.update({f"{name}/{k}": v for k, v in evaluate(model, pairs).items()})
    return metrics


def startup() -> str:
    """What every run pays before its first step: the import, and loading the checkpoint."""
    code = (
        "import time; t = time.perf_counter(); import sbert.training.plan; "
        "i = time.perf_counter(); "
        "sbert.training.plan.starting_model('all-MiniLM-L6-v2'); l = time.perf_counter(); "
        "print(f'{i - t:.2f} {l - i:.2f}')"
    )
    imported, loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT
    ).stdout.split()
    return f"start-up: import sbert.training.plan {imported} s, load all-MiniLM-L6-v2 {loaded} s"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3, help="runs of each (median)")
    p.add_argument("--only", choices=("ours", "theirs"), help="run one side only")
    args = p.parse_args()
    runs = {
        k: v
        for k, v in RUNS.items()
        if args.only is None or (args.only == "ours") == k.startswith("ours")
    }
    print(f"# bench/train.py: whole processes, median of {args.rounds} rounds\n{machine()}")
    print(startup())
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name in list(runs) if r % 2 == 0 else list(reversed(runs)):
                seconds[name].append(timed(runs[name], Path(tmp) / name.replace(" ", "_")))
                print(f"round {r + 1}: {name} {seconds[name][-1]:.1f} s", flush=True)
        results = {name: scores(Path(tmp) / name.replace(" ", "_") / "final") for name in runs}
    theirs = statistics.median(seconds.get("sentence-transformers", [float("nan")]))
    print(f"\n| run | seconds | vs sentence-transformers | {' | '.join(METRICS.values())} |")
    print("|---|---|---|" + "---|" * len(METRICS))
    for name in runs:
        median = statistics.median(seconds[name])
        cells = " | ".join(f"{results[name].get(k, float('nan')):.2f}" for k in METRICS)
        print(f"| {name} | {median:.1f} | {theirs / median:.2f}x | {cells} |")


if __name__ == "__main__":
    main()
