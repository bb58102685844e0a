"""What several commands share: help texts, where an encoder runs, and writing answers."""

from __future__ import annotations

import sys
from pathlib import Path

from sbert.errors import SbertError
from sbert.fileio import atomic_write_bytes

MODEL_HELP = "model folder, packaged name, or `sbert export` folder"
DEVICE_HELP = "cpu, cuda, cuda:1 ... (default: cuda when available)"
PAIR = ("first sentence", "second sentence")  # how errors name a pair given as two arguments


def device_for(encoder, requested: str | None):
    """Where `encoder` runs: torch's device for a PyTorch model; None for an ONNX export, whose
    session runs on the CPU (so a GPU asked for is refused rather than silently not used)."""
    from sbert.inference.onnx_runner import OnnxEncoder

    if isinstance(encoder, OnnxEncoder):
        if requested not in (None, "cpu"):
            from sbert.inference.openvino_runner import OpenVinoEncoder  # imports no OpenVINO

            openvino = isinstance(encoder, OpenVinoEncoder)
            runtime = "OpenVINO's CPU plugin" if openvino else "ONNX Runtime's CPU provider"
            raise SbertError(
                f"an export runs on {runtime}; --device {requested} does not apply (leave it "
                f"out, or use the model folder it was exported from)"
            )
        return None
    from sbert.models.device import pick_device

    return pick_device(requested)


def write_lines(path: str | Path, lines: list[str]) -> None:
    """Write text lines (each ending in a newline) atomically, as UTF-8."""
    atomic_write_bytes(Path(path), "".join(lines).encode("utf-8"))


def on_terminal() -> bool:
    """Whether progress bars are wanted: stderr is a terminal (a log file or a pipe gets none)."""
    return sys.stderr.isatty()
