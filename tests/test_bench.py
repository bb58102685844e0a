"""The one prepared GPU script runs end to end: a lent GPU comes for 15 minutes at most, too few
to find `bench/gpu.sh` broken there. With --smoke it runs every section on the CPU, tiny."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_script_runs_end_to_end_on_the_cpu_with_smoke():
    env = {**os.environ, "PYTHON": sys.executable, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        ["bash", "bench/gpu.sh", "--smoke"], capture_output=True, text=True, cwd=ROOT, env=env
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    out = result.stdout
    for section in ("## 1. all-MiniLM-L6-v2 parity", "## 2. encoding", "## 3. training step"):
        assert section in out, out[-2000:]
    assert out.rstrip().endswith("done"), out[-2000:]
