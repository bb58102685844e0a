"""Run several `sbert train` command lines in one process, one after another, and write what
each ended with (exit code, stderr lines) to a JSON file.

    torchrun --nproc_per_node 2 tests/workflow_runs.py RUNS.json RESULTS.json

Under torchrun the processes start the process group once and every run reuses it, so that
the 2-process cases of the workflow matrix share one launch. Only rank 0 writes RESULTS.json.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def run_all(runs: dict[str, list[str]]) -> dict[str, dict]:
    from sbert.cli import main

    results = {}
    for name, args in runs.items():
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            code = main(args)
        results[name] = {"code": code, "stderr": stderr.getvalue()}
    return results


if __name__ == "__main__":
    import torch.distributed as dist

    runs_file, results_file = sys.argv[1:3]
    if "RANK" in os.environ:
        dist.init_process_group("gloo")
    results = run_all(json.loads(Path(runs_file).read_text()))
    if os.environ.get("RANK", "0") == "0":
        Path(results_file).write_text(json.dumps(results))
