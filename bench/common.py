"""What the benchmarks share: the data they time on, the machine line, device sync."""

from __future__ import annotations

import contextlib
import os
import platform
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `sbert` from this checkout, installed or not

SICK = ROOT / "data" / "sick" / "SICK_train_trial.txt"
STSB_TRAIN = ROOT / "data" / "stsbenchmark" / "sts-train.csv"
STSB_DEV = ROOT / "data" / "stsbenchmark" / "sts-dev.csv"


def sts_sentences(limit: int | None = None) -> list[str]:
    """The STS-B dev sentences (3,000: both sides of its 1,500 pairs), in file order."""
    from sbert.data.readers import read_pairs

    pairs = read_pairs(STSB_DEV).pairs
    sentences = [s for p in pairs for s in (p.a, p.b)]
    return sentences[:limit] if limit else sentences


def sync(device) -> None:
    """Wait for the device, so that a timer measures the work, not its launch."""
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device, n: int = 4096, repeats: int = 3) -> float:
    """Best fp32 GFLOP/s of an n x n @ n x n torch.matmul, after one warm-up product: the
    peak that achieved GFLOP/s are set against."""
    import time

    import torch

    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    torch.matmul(a, b)
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def cpu_name() -> str:
    """The CPU's model name with its family and model numbers: a VM's "AMD EPYC" names no
    generation, and a VM can move to another host between runs; "?" where unknown."""
    fields = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name", platform.processor() or "?")
    if "cpu family" in fields:
        name += f" (family {fields['cpu family']}, model {fields.get('model', '?')})"
    return name


def machine() -> str:
    """One line: CPU, threads, versions and load, to print above every table."""
    import torch

    versions = [f"python {platform.python_version()}", f"torch {torch.__version__}"]
    for name in ("sentence_transformers", "transformers", "onnxruntime"):
        with contextlib.suppress(ImportError):
            versions.append(f"{name} {__import__(name).__version__}")
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{cpu_name()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads; "
        f"{', '.join(versions)}; load average {load}"
    )
