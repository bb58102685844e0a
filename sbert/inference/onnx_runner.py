"""Sentence vectors from an exported ONNX graph on ONNX Runtime: no torch needed.

`sbert export` (sbert/inference/export.py) writes a folder whose graph holds the whole sentence
encoder: token ids and mask in, the pooled (and, if the model normalises, L2-normalised) vector
out, so that a deployment cannot pool wrongly. This module runs it with `tokenizers`, `numpy`
and `onnxruntime`: nothing in its import chain imports torch (a serving machine:
requirements-serve.txt). `OpenVinoEncoder` (openvino_runner.py) runs the same folder's OpenVINO
graphs with this class's tokenising, batching and heads.

Set for the machine: intra-op threads = the CPUs this process may use (sbert/hardware.py:
affinity and cgroup quota, not the host's core count), one session reused for every call,
length-sorted batches (little padding), and the padded inputs written into buffers allocated
once (one per calling thread: ONNX Runtime's session may be run from several threads at once)
and grown only when a longer batch comes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

import numpy as np

from sbert.errors import CheckpointError, ConfigError
from sbert.fileio import inside, json_field, read_json, verify_manifest
from sbert.fingerprint import digest
from sbert.folders import EXPORT_RECORD
from sbert.hardware import usable_cpus
from sbert.heads import Heads
from sbert.tokenizer import WordPiece, length_batches, max_seq_length

INPUTS = ("input_ids", "attention_mask")
# The transformer's token vectors, named as transformers' BertModel names them, so that
# sentence-transformers' ONNX backend and Hugging Face tools read the same graph.
TOKEN_OUTPUT = "last_hidden_state"
SENTENCE_OUTPUT = "sentence_embedding"


class OnnxEncoder:
    """An exported sentence encoder on an ONNX Runtime session: an `Encoder`
    (sbert/inference/encoder.py), `encode` as `SentenceBert`'s.

    Args:
        session: an `onnxruntime.InferenceSession` of the exported graph.
        tokenizer: the model's WordPiece tokenizer (same truncation as the PyTorch model).
        record: the export record (see export.py); `dim` is read from it.
        folder, graph: the export folder, and the graph file the session runs, relative to it
            (what the model's fingerprint names, sbert/fingerprint.py).
        heads: the classifier and score scale the export carries (applied in numpy).
    """

    def __init__(
        self,
        session,
        tokenizer: WordPiece,
        record: dict,
        folder: Path,
        graph: str,
        heads: Heads | None = None,
    ):
        self.session, self.tokenizer, self.record = session, tokenizer, record
        self.folder, self.graph, self.heads = Path(folder), graph, heads or Heads()
        self._buffers = threading.local()  # each thread's input_ids and mask, reused (_pad)

    @property
    def dim(self) -> int:
        return int(self.record["dim"])

    @property
    def max_seq_length(self) -> int:
        return self.tokenizer.max_length

    @property
    def exact(self) -> bool:
        """Whether this runs the fp32 graph in fp32: vectors equal to the source model's."""
        return self.graph == self.record.get("graphs", {}).get("fp32")

    def fingerprint(self) -> str:
        """The source model's for the fp32 graph run in fp32 (equal vectors); else the graph's
        own, and its precision's (sbert/fingerprint.py)."""
        record, tok = self.record, self.tokenizer
        if self.exact and record.get("fingerprint"):
            return str(record["fingerprint"])
        settings = [record.get("pooling"), record.get("normalize")]
        settings += [tok.max_length, tok.lowercase, tok.tokenizer.to_str()]
        settings += self._precision_settings()
        with open(self.folder / self.graph, "rb") as f:
            return digest(settings, iter(lambda: f.read(1 << 20), b""))

    def _precision_settings(self) -> list:
        return []  # ONNX Runtime runs each graph in the precision it was written in

    @classmethod
    def load(
        cls,
        folder: str | Path,
        graph: str | None = None,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        threads: int | None = None,
    ) -> OnnxEncoder:
        """Load an export folder, checked against its manifest.

        Args:
            graph: the graph file to run, relative to `folder` (default: the record's, the int8
                one in a folder exported with `--quantize int8`).
            providers: ONNX Runtime execution providers, in order of preference.
            threads: intra-op threads (default: the CPUs this process may use,
                `sbert.hardware.usable_cpus`); a server with one worker per core wants 1.
        """
        try:
            import onnxruntime
        except ImportError:
            raise ConfigError(
                "running an exported ONNX model needs onnxruntime: pip install onnxruntime"
            ) from None
        folder, tokenizer, record, heads = read_export(folder)
        if graph is None and record.get("runtime") == "openvino":  # its graph is an IR
            onnx = record.get("graphs", {}).get("fp32")
            raise ConfigError(
                f"{folder}: an OpenVINO export: load it with sbert.load (or "
                f"OpenVinoEncoder.load), or run its ONNX graph: graph={onnx!r}"
            )
        graph = graph or str(record["graph"])
        path = inside(folder, graph, folder / EXPORT_RECORD)  # never a graph outside the export
        if not path.is_file():
            raise CheckpointError(path, "ONNX graph not found")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or usable_cpus()
        options.inter_op_num_threads = 1  # one graph, run op after op: threads inside the ops
        for key, value in spinning(onnxruntime.__version__).items():
            options.add_session_config_entry(key, value)
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        try:
            session = onnxruntime.InferenceSession(str(path), options, providers=list(providers))
        except Exception as e:  # onnxruntime raises its own untyped errors for bad graphs
            raise CheckpointError(path, f"ONNX Runtime cannot load the graph ({e})") from None
        return cls(session, tokenizer, record, folder, graph, heads)

    def tokenize(self, sentences: Sequence[str]) -> list[list[int]]:
        return self.tokenizer.ids(sentences)

    def encode(
        self,
        sentences: str | Sequence[str],
        batch_size: int = 32,
        normalize: bool = False,
        device: object = None,
        show_progress_bar: bool = False,
    ) -> np.ndarray:
        """Embed sentences, in input order: float32 (N, H); a single string gives (H,).

        `device` is accepted so that callers of `SentenceBert.encode` work unchanged; where the
        graph runs is the session's choice (the `providers` given to `load`).
        """
        single = isinstance(sentences, str)
        ids = self.tokenize([sentences] if single else sentences)  # checked: text_list
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        batches = length_batches(ids, batch_size)
        if show_progress_bar:  # counts batches as their vectors come back
            from tqdm.auto import tqdm

            with tqdm(total=len(batches), desc="encode", unit="batch") as bar:
                self._run_batches(ids, batches, out, bar.update)
        else:
            self._run_batches(ids, batches, out)
        if normalize:
            # As torch.nn.functional.normalize: eps keeps a zero vector finite.
            out /= np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)
        return out[0] if single else out

    def _run_batches(
        self,
        ids: list[list[int]],
        batches: Collection[list[int]],
        out: np.ndarray,
        finished: Callable[[int], object] = lambda count: None,
    ) -> None:
        """Write each batch's vectors (`batches`: lists of indices into `ids`) into `out`,
        calling `finished(1)` as each batch's vectors are in (a progress bar's update)."""
        for index in batches:
            out[index] = self._run(self._pad([ids[i] for i in index]))
            finished(1)

    def _pad(self, ids: list[list[int]], length: int | None = None) -> dict[str, np.ndarray]:
        """input_ids and attention_mask (B, T) int64, padded to the batch's longest (or to
        `length`), written into the calling thread's buffer, kept between its calls (contiguous
        views: no copy on the runtime's side; a buffer shared by threads would mix up their
        sentences)."""
        batch, length = len(ids), length or max(map(len, ids))
        size = batch * length
        inputs = getattr(self._buffers, "inputs", None)
        if inputs is None or inputs.size < 2 * size:
            inputs = self._buffers.inputs = np.empty(2 * size, dtype=np.int64)
        input_ids = inputs[:size].reshape(batch, length)
        mask = inputs[size : 2 * size].reshape(batch, length)
        input_ids.fill(self.tokenizer.pad_id)
        mask.fill(0)
        for row, x in enumerate(ids):
            input_ids[row, : len(x)] = x
            mask[row, : len(x)] = 1
        return {"input_ids": input_ids, "attention_mask": mask}

    def _run(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """The sentence vectors (B, H) of one padded batch."""
        return self.session.run([SENTENCE_OUTPUT], batch)[0]


def spinning(version: str) -> dict[str, str]:
    """How idle intra-op threads wait for work. Spinning for ONNX Runtime's default time burns
    the cores a server's event loop and other processes need: on the 2-core development machine
    (2026-12-02, other jobs running) it took the int8 export from 454-492 to 298-312 sentences/s
    at batch 32 and doubled the server's CPU a request (docs/performance.md). Never spinning
    costs a thread wake-up at every op instead: one sentence took 3.2-4.1 ms where spinning for
    at most 50 us (ONNX Runtime 1.26 and later) took 2.4-3.3 ms, for the same CPU time a call
    and the same speed at batch 32 (quiet machine, int8 export; docs/performance.md)."""
    major, minor = (int(part) for part in version.split(".")[:2])
    if (major, minor) < (1, 26):  # no bound on the spin: do not spin
        return {"session.intra_op.allow_spinning": "0"}
    return {"session.intra_op.allow_spinning": "1", "session.intra_op.spin_duration_us": "50"}


def read_export(folder: str | Path) -> tuple[Path, WordPiece, dict, Heads]:
    """An export folder, checked against its manifest: its tokenizer, record and heads."""
    folder = Path(folder)
    verify_manifest(folder)
    record_path, config_path = folder / EXPORT_RECORD, folder / "config.json"
    record, config = read_json(record_path), read_json(config_path)
    missing = {"graph", "dim", "max_seq_length", "lowercase"} - record.keys()
    if missing:
        raise CheckpointError(record_path, f"missing fields {sorted(missing)}")
    # The graph's shapes come from config.json (export.py): a record that disagrees would
    # fail inside ONNX Runtime at the first long sentence, or at the first batch.
    dim = json_field(record_path, record, "dim", int, 1)
    hidden = json_field(config_path, config, "hidden_size", int, 1)
    if dim != hidden:
        raise CheckpointError(record_path, f"dim {dim}, but {config_path} has hidden_size {hidden}")
    positions = json_field(config_path, config, "max_position_embeddings", int, 1)
    length = max_seq_length(record_path, record, "max_seq_length", positions, config_path)
    lowercase = json_field(record_path, record, "lowercase", bool)
    json_field(record_path, record, "graph", str)
    tokenizer = WordPiece.from_folder(folder, length, lowercase)
    tokenizer.check_fits(json_field(config_path, config, "vocab_size", int, 1), config_path)
    heads = Heads.read(folder, dim)  # the source model's, copied by `sbert export`
    return folder, tokenizer, record, heads
