"""Sentence vectors from an export's OpenVINO graphs (`sbert export --format openvino`): no torch.

The folder holds the same sentence encoder as the ONNX graph (token ids and mask in, the pooled
vector out), converted to OpenVINO's IR, and with `--quantize int8` a statically quantised copy
(NNCF, calibrated on real sentences: every activation scale is fixed, so a sentence's vector does
not depend on the batch it is encoded in). OpenVINO's CPU plugin is the faster engine on CPUs
with AVX-512 VNNI and BF16 (docs/performance.md):

    precision   graph                      runs as
    fp32        openvino/model.xml         fp32: vectors equal to the source model's (<= 1e-5)
    bf16        openvino/model.xml         bf16 matmuls (AVX-512-BF16, AMX): cos to fp32 >= 0.9999
    int8        openvino/model_int8.xml    int8 matmuls (VNNI), the rest in bf16 where native

`precision="auto"` (the default) picks bf16 for the fp32 graph where the CPU has native bf16
(sbert/hardware.py, as `sbert train --precision auto` decides), else fp32. Tokenising, batching,
the heads and the `Encoder` protocol are `OnnxEncoder`'s.

The graph is compiled for the two ways it is called. One batch (a single sentence, a server's
batch) runs on all threads at once (OpenVINO's LATENCY hint). Several batches (encoding a
corpus) run side by side, one per stream of fewer threads (its THROUGHPUT hint: on 2 CPUs, 2
streams of 1 thread): a batch of 32 short sentences is too small to keep 2 threads busy
together, and the threads no longer wait for each other at every op. At batch 32 on STS-B dev
sentences this ran the int8 graph 1.15-1.22x faster, and a sentence's vector is the same either
way (2-core AMD EPYC, 2026-12-02, docs/performance.md). The second compilation is made at the
first call with several batches: it holds its own weights and requests (132 MiB more resident
memory for the int8 graph here, on top of 151 MiB), which a server, running one batch at a
time, never needs. An infer request runs one batch at a time: calls from several threads take
turns (a lock), where two at once had OpenVINO refuse ("Infer Request is busy") or hand one
thread's vectors to the other.
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path

import numpy as np

from sbert.errors import CheckpointError, ConfigError, SbertError
from sbert.fileio import inside
from sbert.folders import EXPORT_RECORD
from sbert.hardware import cpu_has_native_bf16, usable_cpus
from sbert.inference.onnx_runner import SENTENCE_OUTPUT, OnnxEncoder, read_export

PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "int8")
# OpenVINO prepares its kernels again whenever an input's shape changes, about 1 ms here: one
# sentence at a time, each of a new length, paid it at every call. Padded up to a multiple of 8
# tokens, STS-B dev sentences take 3-4 shapes instead of 14-19, and one sentence took 1.8-2.9
# ms instead of 2.4-4.4 (int8 graph, 2-core AMD EPYC, 2026-12-02). Larger batches are left
# alone: at 8 and 32 sentences the padding cost more than the shapes it saved.
SHAPE_STEP = 8
# OpenVINO's names for the precision of the ops a graph leaves in floating point.
_HINTS = {"fp32": "f32", "bf16": "bf16"}


class OpenVinoEncoder(OnnxEncoder):
    """An export on OpenVINO's CPU plugin: an `Encoder`, `encode` as `OnnxEncoder`'s.

    Args:
        request: the latency-compiled graph's one infer request: one batch on every thread.
        compile_config: its threads and precision, for the side-by-side compilation.
        precision: what the graph runs in: fp32, bf16 or int8 (see the module docstring).
        float_precision: the precision of the ops an int8 graph leaves in floating point.
    """

    def __init__(
        self,
        request,
        compile_config,
        tokenizer,
        record,
        folder,
        graph,
        heads,
        precision,
        float_precision,
    ):
        super().__init__(None, tokenizer, record, folder, graph, heads)
        self.request, self.compile_config = request, compile_config
        self.precision, self.float_precision = precision, float_precision
        self._turn = threading.Lock()  # one call at a time on the requests (module docstring)

    @functools.cached_property
    def streams(self):
        """The graph compiled to run batches side by side: an AsyncInferQueue of two requests a
        stream (while one runs, the next batch is padded and waits its turn), or None where
        OpenVINO makes one stream (one CPU). Compiled at its first use."""
        import openvino

        core, path = openvino.Core(), self.folder / self.graph
        compiled = core.compile_model(
            str(path), "CPU", {**self.compile_config, "PERFORMANCE_HINT": "THROUGHPUT"}
        )
        count = compiled.get_property("NUM_STREAMS")
        return openvino.AsyncInferQueue(compiled, 2 * count) if count > 1 else None

    @property
    def exact(self) -> bool:
        return self.precision == "fp32" and self.graph == self.record["graphs"].get("openvino")

    def _precision_settings(self) -> list:
        return [self.precision, self.float_precision]

    @classmethod
    def load(
        cls,
        folder: str | Path,
        graph: str | None = None,
        precision: str = "auto",
        threads: int | None = None,
    ) -> OpenVinoEncoder:
        """Load an OpenVINO export, checked against its manifest.

        Args:
            graph: the IR file to run, relative to `folder` (default: the record's: the int8 one
                in a folder exported with `--quantize int8`).
            precision: auto, fp32, bf16 or int8 (int8 = the int8 graph); auto runs the record's
                graph, the fp32 one in bf16 where the CPU has native bf16.
            threads: inference threads (default: the CPUs this process may use,
                `sbert.hardware.usable_cpus`).
        """
        if precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {precision!r}; choose {', '.join(PRECISIONS)}")
        try:
            import openvino
        except ImportError:
            raise ConfigError(
                "this export runs on OpenVINO: pip install openvino (or: pip install -e "
                "'.[openvino]')"
            ) from None
        folder, tokenizer, record, heads = read_export(folder)
        graphs = record.get("graphs", {})
        if "openvino" not in graphs:
            raise CheckpointError(folder, "not an OpenVINO export (sbert export --format openvino)")
        if precision == "int8":
            if "openvino_int8" not in graphs:
                raise ConfigError(f"{folder} has no int8 graph: export it with --quantize int8")
            graph = graph or graphs["openvino_int8"]
        elif precision in ("fp32", "bf16"):
            graph = graph or graphs["openvino"]
        graph = graph or str(record["graph"])
        native = cpu_has_native_bf16()
        float_precision = (
            "bf16" if precision == "bf16" or (precision != "fp32" and native) else "fp32"
        )
        precision = "int8" if graph == graphs.get("openvino_int8") else float_precision
        path = inside(folder, graph, folder / EXPORT_RECORD)  # never a graph outside the export
        if not path.is_file():
            raise CheckpointError(path, "OpenVINO graph not found")
        config = {
            "INFERENCE_NUM_THREADS": threads or usable_cpus(),
            "INFERENCE_PRECISION_HINT": _HINTS[float_precision],
        }
        try:  # one batch at a time, every thread on it (batches side by side: `streams`)
            latency = openvino.Core().compile_model(
                str(path), "CPU", {**config, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
            )
        except Exception as e:  # OpenVINO raises its own untyped errors for bad graphs
            raise CheckpointError(path, f"OpenVINO cannot load the graph ({e})") from None
        return cls(
            latency.create_infer_request(), config, tokenizer, record, folder, graph, heads,
            precision, float_precision,
        )  # fmt: skip

    def _run_batches(self, ids, batches, out, finished=lambda count: None) -> None:
        """One batch on the latency request; more, side by side on the streams."""
        with self._turn:
            if len(batches) < 2 or self.streams is None:  # (compiled at the first call with two)
                return super()._run_batches(ids, batches, out, finished)
            self._run_side_by_side(ids, batches, out, finished)

    def _run_side_by_side(self, ids, batches, out, finished) -> None:
        """The batches on the streams, each batch's vectors written into its rows of `out`."""
        written, failed = [], []

        def done(request, index: list[int]) -> None:  # in OpenVINO's thread, on rows of its own
            try:  # an exception raised out of this callback aborts the process
                out[index] = request.get_tensor(SENTENCE_OUTPUT).data
                written.append(len(index))
                finished(1)
            except Exception as e:
                failed.append(" ".join(str(e).split()))

        self.streams.set_callback(done)
        for index in batches:  # start_async copies the padded inputs (the buffer is reused)
            self.streams.start_async(self._pad([ids[i] for i in index]), index)
        self.streams.wait_all()
        if sum(written) != len(out):  # never rows of uninitialised memory as vectors
            why = f": {failed[0]}" if failed else ""
            raise SbertError(
                f"{self.folder}: OpenVINO returned {sum(written)} of {len(out)} vectors{why}"
            )

    def _pad(self, ids: list[list[int]], length: int | None = None) -> dict[str, np.ndarray]:
        """As `OnnxEncoder._pad`, but a sentence alone is padded up to a multiple of
        SHAPE_STEP tokens (masked: its vector does not change)."""
        if len(ids) == 1 and length is None:
            length = min(-(-len(ids[0]) // SHAPE_STEP) * SHAPE_STEP, self.max_seq_length)
        return super()._pad(ids, length)

    def _run(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        result = self.request.infer(batch, share_inputs=True, share_outputs=True)
        return result[SENTENCE_OUTPUT].copy()  # the request reuses its output buffer
