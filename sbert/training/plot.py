"""Training curves: the total loss, each objective's (the objective table's names) and the dev
metrics, from <out>/metrics.jsonl."""

from __future__ import annotations

import io
import json
from pathlib import Path

from sbert.fileio import atomic_write_bytes
from sbert.models.objectives import OBJECTIVES


def plot_curves(log: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    losses = [r for r in records if "loss" in r]
    evals = [r for r in records if "loss" not in r and any("/" in k for k in r)]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name in ("loss", *OBJECTIVES):
        points = [(r["step"], r[name]) for r in losses if name in r]
        if points:
            left.plot(*zip(*points, strict=True), label=name, linewidth=1)
    left.set(xlabel="step", ylabel="training loss", title="losses")
    left.legend()
    metric_names = sorted({k for r in evals for k in r if "/" in k})
    for name in metric_names:
        points = [(r["step"], r[name]) for r in evals if name in r]
        right.plot(*zip(*points, strict=True), marker="o", label=name)
    right.set(xlabel="step", ylabel="x 100", title="dev metrics")
    if metric_names:
        right.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(png, buffer.getvalue())
