"""`sbert.load`: the one place that decides whether a folder is an ONNX export or a PyTorch
model, and loads either as an `Encoder` (sbert/inference/encoder.py).

An export loads on ONNX Runtime without importing torch (a serving machine may not have it:
requirements-serve.txt); a PyTorch folder loads as a `MultiTaskModel`, its folder read once
(encoder, classifier and score scale).
"""

from __future__ import annotations

from pathlib import Path

from sbert.errors import CheckpointError
from sbert.fileio import read_json
from sbert.folders import DEFAULT_MODEL, EXPORT_RECORD, is_exported, is_index, resolve
from sbert.inference.encoder import Encoder
from sbert.inference.onnx_runner import OnnxEncoder


def load(name_or_path: str | Path = DEFAULT_MODEL) -> Encoder:
    """The model a folder (or packaged name) holds, ready to encode, predict and search.

    Returns an `OnnxEncoder` for a folder written by `sbert export` (an `OpenVinoEncoder` for
    `--format openvino`), else a `MultiTaskModel` (with its classifier when the folder has one);
    each with `source`, the name or path it was loaded from.
    """
    folder = resolve(name_or_path)
    if is_exported(folder):
        if runtime(folder) == "openvino":
            from sbert.inference.openvino_runner import OpenVinoEncoder

            encoder = OpenVinoEncoder.load(folder)
        else:
            encoder = OnnxEncoder.load(folder)
    else:
        if is_index(folder):  # not "config.json: file not found"
            raise CheckpointError(folder, "an index, not a model: open it with sbert.Index.load")
        from sbert.models.multitask import MultiTaskModel  # torch: only for a PyTorch model

        # In eval mode: a forward pass of its own (model.encoder(...)) has no dropout, and
        # encode need not switch modes, which threads encoding at once would race on.
        encoder = MultiTaskModel.from_pretrained(name_or_path).eval()
    # Where it came from: what an index built with it records (Index.build's name=).
    encoder.source = str(name_or_path)
    return encoder


def runtime(folder: Path) -> str:
    """Which runtime an export folder is for: "onnxruntime" or "openvino"."""
    return str(read_json(folder / EXPORT_RECORD).get("runtime", "onnxruntime"))
