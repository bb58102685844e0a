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
    from sbert.data import read_pairs

    pairs = read_pairs(STSB_DEV).pairs
    sentences = [s for p in pairs for s in (p.a, p.b)]
    return sentences[:limit] if limit else sentences


def sync(device) -> None:
    """Wait for the device, so that a timer measures the work, not its launch."""
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def machine() -> str:
    """One line: CPU, threads, versions and load, to print above every table."""
    import torch

    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = [f"python {platform.python_version()}", f"torch {torch.__version__}"]
    for name in ("sentence_transformers", "transformers", "onnxruntime"):
        with contextlib.suppress(ImportError):
            versions.append(f"{name} {__import__(name).__version__}")
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{cpu}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads; "
        f"{', '.join(versions)}; load average {load}"
    )
