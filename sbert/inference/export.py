"""`sbert export`: a model folder -> an ONNX folder that ONNX Runtime runs without torch.

One graph holds the whole sentence encoder: input_ids and attention_mask (B, T) in, with dynamic
batch and sequence axes; out come the token vectors `last_hidden_state` (B, T, H), the output
sentence-transformers' ONNX backend and the Hugging Face tools read, and `sentence_embedding`
(B, H), pooled (and L2-normalised, if the model normalises) by the model's own code. Pooling
inside the graph is the point: sentence-transformers' export leaves it out, and a deployment that
pools by hand differently (CLS instead of mean, padding counted in the mean) loses retrieval
quality without any error. No token_type_ids input: single sentences are all segment A.

The folder (sentence-transformers' layout, without model.safetensors):
    onnx/model.onnx          the fp32 graph
    onnx/model_qint8.onnx    with --quantize int8: the linear layers' MatMuls in int8
    config.json, tokenizer files, modules.json, ...   as `SentenceBert.save` writes them
    classifier.safetensors, classifier.json, score_scale.json   the source's heads, if it has
                             them (heads.py): `sbert predict` on the export applies them in numpy
    onnx_export.json         how it was made, and which graph the runner uses
    manifest.json            size and sha256 of every file (fileio.atomic_dir)

int8 is ONNX Runtime's dynamic quantisation (weights int8 ahead of time, per output channel;
activations per batch; on CPUs with AVX-512 VNNI the int8 products run in one instruction).
Only MatMuls with a constant weight are quantised, i.e. the linear layers: attention's two
activation products stay fp32 (ONNX Runtime's MatMulConstBOnly, on by default when dynamic).
"""

from __future__ import annotations

import contextlib
import json
import logging
import platform
import shutil
import warnings
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
from torch import nn

from sbert.errors import ConfigError
from sbert.fileio import atomic_dir, check_output_dir, naming
from sbert.folders import EXPORT_RECORD, is_exported
from sbert.heads import HEAD_FILES
from sbert.inference.onnx_runner import INPUTS, SENTENCE_OUTPUT, TOKEN_OUTPUT
from sbert.models.folder import read_model
from sbert.models.sentence import SentenceBert

QUANTIZE_MODES: tuple[str, ...] = ("int8",)
GRAPH, GRAPH_INT8 = "onnx/model.onnx", "onnx/model_qint8.onnx"
# Opset 18: what torch.onnx's dynamo exporter emits natively (torch 2.11 and 2.13 alike).
OPSET = 18


class _Graph(nn.Module):
    """What the graph computes: the token vectors and the model's own sentence vectors."""

    def __init__(self, model: SentenceBert):
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.model.bert(input_ids, attention_mask)  # (B, T, H)
        return hidden, self.model.sentence_vectors(hidden, attention_mask)  # (B, H)


def export(model: str | Path, out: str | Path, quantize: str | None = None) -> dict:
    """Export the model folder (or packaged name) `model` to the folder `out`, atomically.

    Returns the export record (also written to `out/onnx_export.json`).
    """
    if quantize is not None and quantize not in QUANTIZE_MODES:
        raise ConfigError(f"unknown --quantize {quantize!r}; choose {', '.join(QUANTIZE_MODES)}")
    out = Path(out)
    check_output_dir(out, is_exported, "an ONNX export")
    versions = _onnx_versions(quantize)
    files = read_model(model)  # the heads too, checked before they are copied
    sb = SentenceBert.from_files(files).eval()
    source = files.layout.transformer
    heads = [name for name in HEAD_FILES if (source / name).is_file()]
    record = {
        "graph": GRAPH_INT8 if quantize else GRAPH,
        "quantize": quantize,
        "graphs": {"fp32": GRAPH, **({"int8": GRAPH_INT8} if quantize else {})},
        "inputs": list(INPUTS),
        "outputs": {
            TOKEN_OUTPUT: "(batch, sequence, dim) token vectors",
            SENTENCE_OUTPUT: f"(batch, dim) {sb.pooling}-pooled"
            + (", L2-normalised" if sb.normalize else ""),
        },
        "dim": sb.dim,
        "pooling": sb.pooling,
        "normalize": sb.normalize,
        "max_seq_length": sb.tokenizer.max_length,
        "lowercase": sb.tokenizer.lowercase,
        "source": str(model),
        # The source model's fingerprint names the fp32 graph's vectors too (equal to <= 1e-5):
        # an index built with either takes queries from the other (fingerprint.py).
        "fingerprint": sb.fingerprint(),
        "heads": heads,
        "exporter": "torch.onnx.export(dynamo=True)",
        "opset": OPSET,
        "versions": {"python": platform.python_version(), "torch": torch.__version__, **versions},
    }
    with atomic_dir(out) as tmp:
        sb.write(tmp, weights=False)
        (tmp / "onnx").mkdir()
        with naming(tmp / GRAPH):  # a full disk: the exporter's OSError names no file
            export_graph(sb, tmp / GRAPH)
        if quantize:
            with naming(tmp / GRAPH_INT8):
                quantize_int8(tmp / GRAPH, tmp / GRAPH_INT8)
        for name in heads:
            shutil.copyfile(source / name, tmp / name)
        (tmp / EXPORT_RECORD).write_text(json.dumps(record, indent=2))
    return record


def export_graph(model: SentenceBert, path: Path) -> None:
    """Write the fp32 graph of `model` (inputs INPUTS, outputs TOKEN_OUTPUT, SENTENCE_OUTPUT).

    The dynamo exporter (torch.export), the default since torch 2.9: the legacy TorchScript one
    also gives correct dynamic axes on torch 2.13 but is deprecated. Traced at batch 2 with
    unequal lengths, so that neither axis is specialised to 1 and padding is in the trace.
    """
    ids = model.tokenize(["an example sentence to trace", "short"])
    batch = model.tokenizer.pad(ids)
    args = (batch["input_ids"], batch["attention_mask"])
    axes = {
        0: torch.export.Dim("batch"),
        1: torch.export.Dim("sequence", max=model.bert.config.max_position_embeddings),
    }
    with _quiet():
        torch.onnx.export(
            _Graph(model),
            args,
            str(path),
            input_names=list(INPUTS),
            output_names=[TOKEN_OUTPUT, SENTENCE_OUTPUT],
            dynamic_shapes={name: axes for name in INPUTS},
            opset_version=OPSET,
            dynamo=True,
            external_data=False,  # one file: models up to 2 GB (bert-large is 1.3 GB in fp32)
            verbose=False,
        )


def quantize_int8(source: Path, target: Path) -> None:
    """Dynamic int8 quantisation of the MatMuls with constant weights (the linear layers)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet():  # it logs advice to pre-process, meant for static quantisation of CNNs
        quantize_dynamic(
            source,
            target,
            op_types_to_quantize=["MatMul"],
            weight_type=QuantType.QInt8,
            # One scale per output channel: per-tensor scales cost all-MiniLM-L6-v2 0.4 STS-B
            # Spearman points (86.7 -> 86.3, mean cosine to fp32 0.964); per channel, 0.992.
            per_channel=True,
            # 7-bit weights: u8 x s8 products cannot saturate the 16-bit sums of AVX2 CPUs
            # without VNNI (ONNX Runtime's quantisation guide); no measurable loss here.
            reduce_range=True,
        )


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the warnings and log lines the exporters print about their own internals
    (pytree API, axis renaming, torchvision ops not installed), none about our graph."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(logging.NOTSET)


def _onnx_versions(quantize: str | None) -> dict[str, str]:
    """The versions of the export's libraries; a missing one is a one-line ConfigError."""
    names = ["onnx", "onnxscript"] + (["onnxruntime"] if quantize else [])
    versions = {}
    for name in names:
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            raise ConfigError(
                f"sbert export needs {' and '.join(names)}: pip install {' '.join(names)}"
            ) from None
    try:
        versions["sbert"] = version("sbert")
    except PackageNotFoundError:  # run from a source tree that was never installed
        versions["sbert"] = "unknown"
    return versions
