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
    onnx/model_qint8.onnx    with --quantize int8: static int8 MatMuls (QDQ), calibrated on
                             real sentences (--calibration)
    openvino/model.xml, .bin with --format openvino: the fp32 graph in OpenVINO's IR, run in
                             bf16 where the CPU has native bf16 (openvino_runner.py)
    openvino/model_int8.xml, .bin   with --format openvino --quantize int8: static int8 (NNCF),
                             calibrated on real sentences (--calibration)
    config.json, tokenizer files, modules.json, ...   as `SentenceBert.save` writes them
    classifier.safetensors, classifier.json, score_scale.json   the source's heads, if it has
                             them (heads.py): `sbert predict` on the export applies them in numpy
    onnx_export.json         how it was made, and which graph the runner uses
    manifest.json            size and sha256 of every file (fileio.atomic_dir)

int8 is static quantisation in both formats: weights int8 per output channel, activation ranges
fixed by calibration on a few hundred real sentences, so that a sentence's vector never depends
on the other sentences of its batch (dynamic quantisation's per-batch scales did: cosine down to
0.965), and no range is computed at run time. On CPUs with AVX-512 VNNI the int8 products run in
one instruction.
"""

from __future__ import annotations

import contextlib
import json
import logging
import platform
import shutil
import signal
import sys
import threading
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
from sbert.inference.onnx_rewrites import simplify_attention
from sbert.inference.onnx_runner import INPUTS, SENTENCE_OUTPUT, TOKEN_OUTPUT
from sbert.models.folder import read_model
from sbert.models.sentence import SentenceBert

QUANTIZE_MODES: tuple[str, ...] = ("int8",)
FORMATS: tuple[str, ...] = ("onnx", "openvino")
GRAPH, GRAPH_INT8 = "onnx/model.onnx", "onnx/model_qint8.onnx"
GRAPH_OV, GRAPH_OV_INT8 = "openvino/model.xml", "openvino/model_int8.xml"
# Sentences that calibrate static int8's activation ranges: a few hundred real ones suffice
# (NNCF's default subset is 300); without --calibration, the first of STS-B train's.
CALIBRATION_SIZE = 300
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


def export(
    model: str | Path,
    out: str | Path,
    quantize: str | None = None,
    format: str = "onnx",
    calibration: str | Path | None = None,
) -> dict:
    """Export the model folder (or packaged name) `model` to the folder `out`, atomically.

    Args:
        quantize: "int8": also an int8 graph, the one the folder runs by default.
        format: "onnx" (ONNX Runtime) or "openvino" (OpenVINO's IR beside the ONNX graph).
        calibration: a text file of sentences, one a line, whose first CALIBRATION_SIZE
            calibrate static int8 (default: STS-B train's, from the repository).
    Returns the export record (also written to `out/onnx_export.json`).
    """
    if quantize is not None and quantize not in QUANTIZE_MODES:
        raise ConfigError(f"unknown --quantize {quantize!r}; choose {', '.join(QUANTIZE_MODES)}")
    if format not in FORMATS:
        raise ConfigError(f"unknown --format {format!r}; choose {', '.join(FORMATS)}")
    if calibration is not None and not quantize:
        raise ConfigError("--calibration calibrates --quantize int8 only")
    out, openvino = Path(out), format == "openvino"
    check_output_dir(out, is_exported, "an ONNX export")
    needs = ["onnx", "onnxscript"] + (["onnxruntime"] if quantize and not openvino else [])
    if openvino:
        needs += ["openvino"] + (["nncf"] if quantize else [])
    versions = _versions(
        needs, f"sbert export --format {format}" + (" --quantize int8" if quantize else "")
    )
    sentences = calibration_sentences(calibration) if quantize else []
    files = read_model(model)  # the heads too, checked before they are copied
    sb = SentenceBert.from_files(files).eval()
    source = files.layout.transformer
    heads = [name for name in HEAD_FILES if (source / name).is_file()]
    record = export_record(sb, str(model), graph_files(openvino, quantize), heads, versions)
    record["quantize"] = quantize
    with atomic_dir(out) as tmp:
        sb.write(tmp, weights=False)
        (tmp / "onnx").mkdir()
        with naming(tmp / GRAPH):  # a full disk: the exporters' OSError names no file
            export_graph(sb, tmp / GRAPH)
        if openvino:
            (tmp / "openvino").mkdir()
            with naming(tmp / GRAPH_OV):
                convert_openvino(tmp / GRAPH, tmp / GRAPH_OV)
            if quantize:
                with naming(tmp / GRAPH_OV_INT8):
                    quantize_openvino(tmp / GRAPH_OV, tmp / GRAPH_OV_INT8, sb, sentences)
        elif quantize:
            with naming(tmp / GRAPH_INT8):
                quantize_int8(tmp / GRAPH, tmp / GRAPH_INT8, sb, sentences)
        for name in heads:
            shutil.copyfile(source / name, tmp / name)
        (tmp / EXPORT_RECORD).write_text(json.dumps(record, indent=2))
    return record


def graph_files(openvino: bool, quantize: str | None) -> dict[str, str]:
    """The export's graphs by name; the last one is the one it runs by default."""
    graphs = {"fp32": GRAPH}
    if openvino:
        graphs["openvino"] = GRAPH_OV
        if quantize:
            graphs["openvino_int8"] = GRAPH_OV_INT8
    elif quantize:
        graphs["int8"] = GRAPH_INT8
    return graphs


def export_record(
    sb: SentenceBert, source: str, graphs: dict[str, str], heads: list[str], versions: dict
) -> dict:
    """How the export folder is made: what `onnx_export.json` records (see the module)."""
    return {
        "graph": list(graphs.values())[-1],
        "runtime": "openvino" if "openvino" in graphs else "onnxruntime",
        "graphs": graphs,
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
        "source": source,
        # The source model's fingerprint names the fp32 graph's vectors too (equal to <= 1e-5):
        # an index built with either takes queries from the other (fingerprint.py).
        "fingerprint": sb.fingerprint(),
        "heads": heads,
        "exporter": "torch.onnx.export(dynamo=True)",
        "opset": OPSET,
        "versions": {"python": platform.python_version(), "torch": torch.__version__, **versions},
    }


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
    with _exporter_call():
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
    simplify_attention(path)


def quantize_int8(source: Path, target: Path, model: SentenceBert, sentences: list[str]) -> None:
    """Static int8 of the ONNX graph's MatMuls (ONNX Runtime's QDQ format): weights int8 per
    output channel, activations uint8 with ranges fixed from `sentences` (min/max), the attention
    products included. Fixed scales make a sentence's vector independent of its batch, which
    dynamic quantisation (a scale per batch: a vector alone and inside a batch of 32 differed
    down to cosine 0.965) does not; and no scale is computed at run time.

    The feed-forward down projections stay fp32: their inputs carry the few huge activations
    that one fixed int8 range per tensor cannot hold without crushing the rest (Bondarenko et
    al. 2021, "Understanding and Overcoming the Challenges of Efficient Transformer
    Quantization", §3). On all-MiniLM-L6-v2 and the 3,000 STS-B dev sentences, keeping those 6
    MatMuls in fp32 took the mean cosine to fp32 from 0.942 to 0.991 (worst 0.875 to 0.973) and
    STS-B Spearman from 86.44 to 86.59 (fp32 86.72), at no loss of speed (2026-12-02, with q,
    k, v still one MatMul; docs/performance.md)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    tokenizer = model.tokenizer
    inputs = [tokenizer.pad_arrays([ids]) for ids in tokenizer.ids(sentences)]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(inputs)

        def get_next(self):
            return next(self.batches, None)

    with _exporter_call():  # it logs advice to pre-process, meant for CNNs
        quantize_static(
            source,
            target,
            Reader(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["MatMul"],
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=down_projections(source, model),
            extra_options={"MatMulConstBOnly": False},  # the attention products too
        )


def down_projections(graph: Path, model: SentenceBert) -> list[str]:
    """The names of the graph's MatMuls whose weight is a feed-forward down projection
    (intermediate size x hidden size): one a layer."""
    import onnx

    proto = onnx.load(str(graph))
    config = model.bert.config
    down = (config.intermediate_size, config.hidden_size)
    shapes = {i.name: tuple(i.dims) for i in proto.graph.initializer}
    names = [n.name for n in proto.graph.node if n.op_type == "MatMul"
             and shapes.get(n.input[1]) == down]  # fmt: skip
    assert len(names) == config.num_layers, names  # the graph is ours: one a layer
    return names


def convert_openvino(source: Path, target: Path) -> None:
    """The ONNX graph in OpenVINO's IR (target .xml and its .bin), weights kept in fp32."""
    import openvino

    with _exporter_call():
        model = openvino.convert_model(str(source))
        openvino.save_model(model, str(target), compress_to_fp16=False)


def quantize_openvino(
    source: Path, target: Path, model: SentenceBert, sentences: list[str]
) -> None:
    """Static int8 of OpenVINO's IR with NNCF: int8 weights (per output channel) and int8
    activations whose ranges are fixed from `sentences`, so that no scale depends on the batch
    (a vector equals itself alone and in any batch, unlike dynamic quantisation's per-batch
    scales). NNCF's transformer recipe (the attention products too, bias correction) without
    SmoothQuant: on all-MiniLM-L6-v2 SmoothQuant kept STS-B (87.0) but moved single vectors far
    (cosine to fp32 min 0.69, 1st percentile 0.87, on the 3,000 STS-B dev sentences); without
    it min 0.974, 1st percentile 0.985, STS-B 86.4 (fp32 86.7). Each sentence calibrates alone
    (its own length, no padding)."""
    import nncf
    import openvino
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        AdvancedSmoothQuantParameters,
    )

    tokenizer = model.tokenizer
    inputs = [tokenizer.pad_arrays([ids]) for ids in tokenizer.ids(sentences)]
    with _exporter_call():
        quantized = nncf.quantize(
            openvino.Core().read_model(str(source)),
            nncf.Dataset(inputs),
            model_type=nncf.ModelType.TRANSFORMER,
            preset=nncf.QuantizationPreset.MIXED,
            subset_size=len(inputs),
            advanced_parameters=AdvancedQuantizationParameters(
                smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=-1)  # -1: off
            ),
        )
        openvino.save_model(quantized, str(target), compress_to_fp16=False)


def calibration_sentences(path: str | Path | None) -> list[str]:
    """The first CALIBRATION_SIZE sentences of `path` (one a line, checked as `sbert encode`
    checks its input), or of the repository's STS-B train set."""
    if path is None:
        from sbert.data.readers import read_pairs
        from sbert.folders import REPO_DATA

        default = REPO_DATA / "stsbenchmark" / "sts-train.csv"
        if not default.is_file():
            raise ConfigError(
                "static int8 needs calibration sentences: --calibration FILE (one a line)"
            )
        pairs = read_pairs(default, limit=CALIBRATION_SIZE // 2).pairs
        return [s for p in pairs for s in (p.a, p.b)][:CALIBRATION_SIZE]
    from sbert.data.readers import read_sentences  # the one reader of sentence files

    sentences = read_sentences(path)[:CALIBRATION_SIZE]
    if len(sentences) < CALIBRATION_SIZE:  # fewer ranges seen: vectors further from fp32's
        print(f"note: {path}: calibrating on {len(sentences)} sentences ({CALIBRATION_SIZE} "
              f"are used when the file has them)", file=sys.stderr)  # fmt: skip
    return sentences


@contextlib.contextmanager
def _exporter_call() -> Iterator[None]:
    """Around a call into an exporter (torch.onnx, ONNX Runtime's quantiser, OpenVINO, NNCF):
    silence the warnings and log lines they print about their own internals (pytree API, axis
    renaming, torchvision ops not installed), none about our graph; and keep Ctrl-C an
    interrupt. Landing inside an import of theirs, it came out as their own error (torch.onnx's
    TorchExportError after `module 'torch._dynamo' has no attribute 'exc'`), a traceback
    instead of "interrupted" and exit code 130."""
    interrupted = False

    def interrupt(signum, frame):
        nonlocal interrupted
        interrupted = True
        raise KeyboardInterrupt

    # Only in the main thread (where Python runs signal handlers), over Python's own handler.
    ours = (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler)  # fmt: skip
    if ours:
        signal.signal(signal.SIGINT, interrupt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            yield
        except Exception:
            if interrupted:
                raise KeyboardInterrupt from None
            raise
        finally:
            logging.disable(logging.NOTSET)
            if ours:
                signal.signal(signal.SIGINT, signal.default_int_handler)


def _versions(names: list[str], command: str) -> dict[str, str]:
    """The versions of sbert and the export's libraries (recorded in the export); a missing
    library is a one-line ConfigError naming all that `command` needs."""
    versions = {}
    for name in names:
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            raise ConfigError(
                f"{command} needs {' and '.join(names)}: pip install {' '.join(names)}"
            ) from None
    try:
        versions["sbert"] = version("sbert")
    except PackageNotFoundError:  # run from a source tree that was never installed
        versions["sbert"] = "unknown"
    return versions
