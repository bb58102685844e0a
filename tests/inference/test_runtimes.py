"""Every runtime and precision an export ships: a sentence's vector does not depend on the batch
it is encoded in (alone, or among other sentences of other lengths: cosine >= 0.9999), the
exact paths equal the PyTorch model (<= 1e-5), bf16 stays within cosine 0.9999 of fp32, the
OpenVINO export loads without torch, and the runners size their threads to the CPUs the
process may use. Speed is measured by bench/encode.py, never asserted here.

The exports run once per module, on all-MiniLM-L6-v2: ONNX with --quantize int8, and OpenVINO
with --quantize int8 calibrated on 64 STS-B train sentences (the default 300 calibrate the
same way, only slower).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
pytest.importorskip("onnxscript")

from sbert import SbertError, SentenceBert, cli  # noqa: E402
from sbert.hardware import cpu_has_native_bf16, usable_cpus  # noqa: E402
from sbert.inference.export import GRAPH, GRAPH_INT8, GRAPH_OV_INT8, export  # noqa: E402
from sbert.inference.load import load  # noqa: E402
from sbert.inference.onnx_runner import OnnxEncoder, spinning  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
STS_DEV = ROOT / "data" / "stsbenchmark" / "sts-dev.csv"
STS_TRAIN = ROOT / "data" / "stsbenchmark" / "sts-train.csv"


def sts_sentences(path: Path, n: int) -> list[str]:
    from sbert.data.readers import read_pairs

    sentences = dict.fromkeys(s for p in read_pairs(path).pairs for s in (p.a, p.b))
    return list(sentences)[:n]


# Short and long sentences mixed: inside a batch most are padded, alone none is.
SENTENCES = sts_sentences(STS_DEV, 48) + ["Hi.", " ".join(sts_sentences(STS_DEV, 40))]

pytestmark = pytest.mark.usefixtures("one_thread")


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def batch_independence(encoder) -> float:
    """Min cosine of each sentence's vector alone against the same sentence inside mixed
    batches: the list in order at batch 32, and shuffled at batch 7."""
    alone = np.stack([encoder.encode([s], batch_size=1)[0] for s in SENTENCES])
    together = encoder.encode(SENTENCES, batch_size=32)
    order = np.random.default_rng(0).permutation(len(SENTENCES))
    shuffled = np.empty_like(together)
    shuffled[order] = encoder.encode([SENTENCES[i] for i in order], batch_size=7)
    return float(min(cosines(alone, together).min(), cosines(alone, shuffled).min()))


@pytest.fixture(scope="module")
def minilm() -> SentenceBert:
    return SentenceBert.from_pretrained("all-MiniLM-L6-v2").eval()


@pytest.fixture(scope="module")
def onnx_export(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "export"
    export("all-MiniLM-L6-v2", out, quantize="int8")
    return out


@pytest.fixture(scope="module")
def openvino_export(tmp_path_factory) -> Path:
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    root = tmp_path_factory.mktemp("openvino")
    calibration = root / "calibration.txt"
    calibration.write_text("\n".join(sts_sentences(STS_TRAIN, 64)) + "\n")
    export("all-MiniLM-L6-v2", root / "export", "int8", "openvino", calibration)
    return root / "export"


def runners(onnx_export: Path, openvino_export: Path | None) -> dict:
    out = {
        "onnxruntime fp32": OnnxEncoder.load(onnx_export, graph=GRAPH),
        "onnxruntime int8": OnnxEncoder.load(onnx_export, graph=GRAPH_INT8),
    }
    if openvino_export is not None:
        from sbert.inference.openvino_runner import OpenVinoEncoder

        out["openvino fp32"] = OpenVinoEncoder.load(openvino_export, precision="fp32")
        out["openvino int8"] = OpenVinoEncoder.load(openvino_export, precision="int8")
        if cpu_has_native_bf16():
            out["openvino bf16"] = OpenVinoEncoder.load(openvino_export, precision="bf16")
    return out


@pytest.mark.parametrize(
    "name",
    ["onnxruntime fp32", "onnxruntime int8", "openvino fp32", "openvino bf16", "openvino int8"],
)
def test_a_vector_does_not_depend_on_its_batch(name, onnx_export, request):
    openvino = None
    if name.startswith("openvino"):
        openvino = request.getfixturevalue("openvino_export")
    encoders = runners(onnx_export, openvino)
    if name not in encoders:
        pytest.skip(f"{name}: this CPU has no native bf16")
    assert batch_independence(encoders[name]) >= 0.9999


def test_openvino_runs_batches_side_by_side_each_vector_in_its_row(openvino_export):
    from sbert.inference.openvino_runner import OpenVinoEncoder

    assert OpenVinoEncoder.load(openvino_export, threads=1).streams is None  # one CPU: no sides
    encoder = OpenVinoEncoder.load(openvino_export, threads=2)
    alone = np.stack([encoder.encode(s) for s in SENTENCES])  # the latency request
    assert "streams" not in vars(encoder)  # compiled at the first call with several batches
    side_by_side = encoder.encode(SENTENCES, batch_size=4)  # 13 batches on 2 streams
    assert vars(encoder)["streams"] is not None  # compiled by that call: it ran on the streams
    assert cosines(alone, side_by_side).min() >= 0.9999


def test_openvino_progress_counts_batches_whose_vectors_are_in(openvino_export):
    """The progress bar's update comes from OpenVINO's callback, once a batch's rows are
    written: not as batches are handed to the streams, up to 4 ahead of the work."""
    from sbert.inference.openvino_runner import OpenVinoEncoder
    from sbert.tokenizer import length_batches

    encoder = OpenVinoEncoder.load(openvino_export, threads=2)
    ids = encoder.tokenize(SENTENCES)
    batches = length_batches(ids, 4)
    out = np.full((len(ids), encoder.dim), np.nan, np.float32)
    rows_in = []  # rows written when each update came
    encoder._run_batches(ids, batches, out, lambda n: rows_in.append(np.isfinite(out[:, 0]).sum()))
    assert vars(encoder)["streams"] is not None  # the side-by-side path
    smallest = min(map(len, batches))
    assert len(rows_in) == len(batches)
    assert all(rows >= (k + 1) * smallest for k, rows in enumerate(sorted(rows_in)))


def test_openvino_side_by_side_failure_is_an_error_not_a_crash(openvino_export, monkeypatch):
    """A failure inside OpenVINO's callback thread would abort the process, and leave rows of
    uninitialised memory: it is an SbertError naming the folder instead."""
    from sbert.inference import openvino_runner

    encoder = openvino_runner.OpenVinoEncoder.load(openvino_export, threads=2)
    monkeypatch.setattr(openvino_runner, "SENTENCE_OUTPUT", "no such output")
    with pytest.raises(SbertError, match=r"returned 0 of 50 vectors: .*no such output"):
        encoder.encode(SENTENCES, batch_size=4)


def test_openvino_exact_and_bf16_paths(openvino_export, minilm):
    from sbert.inference.openvino_runner import OpenVinoEncoder

    reference = minilm.encode(SENTENCES, batch_size=32)
    fp32 = OpenVinoEncoder.load(openvino_export, precision="fp32")
    assert np.abs(fp32.encode(SENTENCES) - reference).max() <= 1e-5
    # A sentence alone runs padded to a multiple of 8 tokens (fewer shapes): same vector.
    assert fp32._pad([[101, 7592, 102]])["attention_mask"].tolist() == [[1, 1, 1] + [0] * 5]
    alone = np.stack([fp32.encode(s) for s in SENTENCES])
    assert np.abs(alone - reference).max() <= 1e-5
    assert fp32.exact and fp32.fingerprint() == minilm.fingerprint()
    int8 = load(openvino_export)  # the record's graph: int8
    assert int8.graph == GRAPH_OV_INT8 and int8.precision == "int8"
    assert int8.fingerprint() != minilm.fingerprint()
    assert cosines(int8.encode(SENTENCES), reference).mean() >= 0.98
    if not cpu_has_native_bf16():
        pytest.skip("this CPU has no native bf16")
    bf16 = OpenVinoEncoder.load(openvino_export, precision="bf16")
    assert bf16.precision == "bf16" and not bf16.exact
    assert cosines(bf16.encode(SENTENCES), reference).min() >= 0.9999
    assert OpenVinoEncoder.load(openvino_export, precision="auto", graph="openvino/model.xml")


NO_TORCH = """
import json, sys

class NoTorch:  # any import of torch fails: the runner must not need it
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")

sys.meta_path.insert(0, NoTorch())
import sbert

vectors = sbert.load(sys.argv[1]).encode(json.loads(sys.argv[2]), batch_size=4)
assert "torch" not in sys.modules, "torch was imported"
print(json.dumps(vectors.tolist()))
"""


def test_the_openvino_export_runs_without_torch(openvino_export):
    result = subprocess.run(
        [sys.executable, "-c", NO_TORCH, str(openvino_export), json.dumps(SENTENCES[:6])],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr
    got = np.array(json.loads(result.stdout), dtype=np.float32)
    np.testing.assert_allclose(got, load(openvino_export).encode(SENTENCES[:6]), atol=1e-6)


def test_threads_follow_the_cpus_this_process_may_use(onnx_export):
    encoder = OnnxEncoder.load(onnx_export)
    assert encoder.session.get_session_options().intra_op_num_threads == usable_cpus()
    assert (
        OnnxEncoder.load(onnx_export, threads=1).session.get_session_options().intra_op_num_threads
        == 1
    )


@pytest.mark.parametrize(
    "args, error",
    [
        (["--calibration", "x.txt"], "--calibration calibrates --quantize int8 only"),
        (
            ["--format", "openvino", "--quantize", "int8", "--calibration", "missing.txt"],
            "missing.txt: file not found",
        ),
    ],
)
def test_cli_export_format_bad_input(args, error, tmp_path, capsys):
    out = tmp_path / "out"
    code = cli.main(["export", "--out", str(out), *args])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and error in err[0], err
    assert not out.exists()


def test_intra_op_threads_spin_briefly_only_where_onnx_runtime_bounds_the_spin(onnx_export):
    assert spinning("1.23.2") == {"session.intra_op.allow_spinning": "0"}  # Python 3.10's newest
    bounded = {"session.intra_op.allow_spinning": "1", "session.intra_op.spin_duration_us": "50"}
    assert spinning("1.26.0") == spinning("1.32.0.dev20261101") == bounded
    import onnxruntime

    options = OnnxEncoder.load(onnx_export).session.get_session_options()
    for key, value in spinning(onnxruntime.__version__).items():
        assert options.get_session_config_entry(key) == value


def test_a_short_calibration_file_is_said(tmp_path, capsys):
    """One sentence calibrated an int8 export without a word (vectors measured further from
    fp32's: min cosine 0.960 against 0.985 with 300 sentences)."""
    from sbert.inference.export import CALIBRATION_SIZE, calibration_sentences

    path = tmp_path / "one.txt"
    path.write_text("a man is eating\n")
    assert calibration_sentences(path) == ["a man is eating"]
    note = f"calibrating on 1 sentences ({CALIBRATION_SIZE} are used when the file has them)"
    assert note in capsys.readouterr().err
    path.write_text("a man is eating\n" * CALIBRATION_SIZE)
    assert len(calibration_sentences(path)) == CALIBRATION_SIZE
    assert capsys.readouterr().err == ""


def encoded_from_threads(encoder, threads: int = 4, calls: int = 25) -> float:
    """Threads encoding at once on one encoder, each a sentence beside a longer one (batches
    of 2, so that every call pads): the min cosine of each answer to the sentence alone."""
    alone = {s: encoder.encode(s) for s in SENTENCES[:threads]}
    answers: list[tuple[str, np.ndarray]] = []

    def work(sentence: str) -> None:
        for _ in range(calls):
            vectors = encoder.encode([sentence, sentence + " and then some more words"], 2)
            answers.append((sentence, vectors[0]))

    pool = [threading.Thread(target=work, args=(s,)) for s in SENTENCES[:threads]]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    assert len(answers) == threads * calls  # no thread died of an error
    return float(min(cosines(alone[s][None], v[None])[0] for s, v in answers))


@pytest.mark.parametrize("name", ["onnxruntime fp32", "openvino int8", "pytorch"])
def test_threads_encoding_at_once_each_get_their_own_vectors(name, onnx_export, request):
    """ONNX Runtime's session may be run from several threads: each pads into its own buffer
    (one shared buffer gave threads each other's sentences); an OpenVINO request runs one batch
    at a time, so calls take turns (OpenVINO refused with "Infer Request is busy"); a PyTorch
    model from `sbert.load` is in eval mode (encode switched a training-mode model to eval and
    back, and another thread's forward pass ran with dropout)."""
    if name == "pytorch":
        encoder = load("all-MiniLM-L6-v2")
        assert not encoder.training
    elif name.startswith("openvino"):
        encoder = runners(onnx_export, request.getfixturevalue("openvino_export"))[name]
    else:
        encoder = runners(onnx_export, None)[name]
    assert encoded_from_threads(encoder) >= 0.9999


def test_an_openvino_export_on_the_wrong_runner_or_device_says_so(openvino_export, capsys):
    with pytest.raises(SbertError, match="an OpenVINO export: load it with sbert.load"):
        OnnxEncoder.load(openvino_export)
    assert OnnxEncoder.load(openvino_export, graph=GRAPH).encode("a cat").shape == (384,)
    args = ["similarity", "--model", str(openvino_export), "a", "b", "--device", "cuda"]
    assert cli.main(args) == 2
    assert "an export runs on OpenVINO's CPU plugin; --device cuda" in capsys.readouterr().err
