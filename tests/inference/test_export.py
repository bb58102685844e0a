"""`sbert export` and the torch-free ONNX runner: fp32 parity with our PyTorch encoder (tiny
random model and the real all-MiniLM-L6-v2), int8 closeness, loading without torch, bad input.

Each export runs once per module (the dynamo exporter takes several seconds even for the tiny
model): one tiny model with max pooling and normalisation, and the packaged checkpoint (mean
pooling, normalised) with --quantize int8, which writes both the fp32 and the int8 graph.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
pytest.importorskip("onnxscript")

import torch  # noqa: E402

from sbert import CheckpointError, SentenceBert, cli  # noqa: E402
from sbert.folders import EXPORT_RECORD  # noqa: E402
from sbert.inference.export import GRAPH, GRAPH_INT8, export  # noqa: E402
from sbert.inference.load import load  # noqa: E402
from sbert.inference.onnx_runner import OnnxEncoder  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
STS_DEV = ROOT / "data" / "stsbenchmark" / "sts-dev.csv"


def sts_dev_sentences(n: int) -> list[str]:
    from sbert.data.readers import read_pairs

    sentences = dict.fromkeys(s for p in read_pairs(STS_DEV).pairs for s in (p.a, p.b))
    return list(sentences)[:n]


REAL = sts_dev_sentences(100)
HOSTILE = [
    "",
    " ",
    "\x00\x07\x1b[31m\x7f",  # control characters
    "\ud800 lone surrogate",
    "Ünïcödé café — naïve 日本語のテキスト, Ελληνικά, emoji 🙂",
    "\u200b\u202e\ufeff",
    " ".join(REAL[:60]),  # far past 256 tokens: truncated
    "x" * 100_000,
]
SENTENCES = REAL + HOSTILE

# torch with one thread: many small forward passes at batch 1 run far faster on a shared 2-core
# machine (conftest.py); ONNX Runtime keeps its own threads.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[SentenceBert, Path]:
    root = tmp_path_factory.mktemp("tiny")
    model = SentenceBert.from_config("tiny", pooling="max", normalize=True)
    model.save(root / "model")
    export(root / "model", root / "onnx")
    return model.eval(), root / "onnx"


@pytest.fixture(scope="module")
def minilm() -> SentenceBert:
    return SentenceBert.from_pretrained("all-MiniLM-L6-v2").eval()


@pytest.fixture(scope="module")
def reference(minilm) -> dict[int, np.ndarray]:
    return {bs: minilm.encode(SENTENCES, batch_size=bs) for bs in (1, 32)}


@pytest.fixture(scope="module")
def fp32(minilm_export) -> OnnxEncoder:
    return OnnxEncoder.load(minilm_export, graph=GRAPH)


# --- parity --------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 5])
def test_tiny_fp32_matches_pytorch(tiny, batch_size):
    model, folder = tiny
    runner = load(folder)
    assert isinstance(runner, OnnxEncoder) and runner.dim == model.dim
    expected = model.encode(SENTENCES, batch_size=batch_size)
    got = runner.encode(SENTENCES, batch_size=batch_size)
    assert got.shape == expected.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # normalised inside


@pytest.mark.parametrize("batch_size", [1, 32])
def test_minilm_fp32_matches_pytorch(fp32, reference, batch_size):
    got = fp32.encode(SENTENCES, batch_size=batch_size)
    np.testing.assert_allclose(got, reference[batch_size], atol=1e-5, rtol=0)


def test_token_vectors_are_the_encoders(fp32, minilm):
    """The graph's last_hidden_state (what sentence-transformers' ONNX backend pools) is our
    encoder's output, which test_pretrained checks against transformers' BertModel."""
    batch = minilm.tokenizer.pad_arrays(minilm.tokenize(REAL[:4] + ["a"]))
    hidden, pooled = fp32.session.run(None, batch)
    with torch.inference_mode():
        tensors = {k: torch.from_numpy(v) for k, v in batch.items()}
        expected = minilm.bert(**tensors).numpy()
        expected_pooled = minilm(**tensors).numpy()
    real = batch["attention_mask"].astype(bool)  # padding positions are not defined outputs
    np.testing.assert_allclose(hidden[real], expected[real], atol=1e-5, rtol=0)
    np.testing.assert_allclose(pooled, expected_pooled, atol=1e-5, rtol=0)


def test_the_attention_softmax_has_no_nan_guard(minilm_export):
    """torch.onnx follows each attention softmax with Where(IsNaN(p), 0, p); the export drops
    it (no query row is ever all masked: every sentence has [CLS] and [SEP]), at parity (the
    tests above run the padded batches through the same graph)."""
    import onnx

    ops = [node.op_type for node in onnx.load(str(minilm_export / GRAPH)).graph.node]
    assert ops.count("Softmax") == 6 and "IsNaN" not in ops


def test_each_attention_transposes_its_heads_in_single_4d_steps(minilm_export):
    """Per layer: queries, keys and values each one 4-D Transpose to heads from their own
    Reshape, the keys one more straight to (B, A, d, T) (not torch.onnx's Reshape, Transpose,
    Reshape), and the output one back: the form OpenVINO folds into its attention kernel.
    Values: the parity tests above."""
    import onnx

    graph = onnx.load(str(minilm_export / GRAPH)).graph
    perms = [tuple(n.attribute[0].ints) for n in graph.node if n.op_type == "Transpose"]
    assert sorted(perms) == sorted([(0, 2, 1, 3)] * 4 * 6 + [(0, 1, 3, 2)] * 6)


def test_queries_keys_and_values_are_projected_separately(minilm_export):
    """No Split after a fused q, k, v projection: per layer six MatMuls by weights (q, k, v,
    output, up, down) and the two of attention."""
    import onnx

    graph = onnx.load(str(minilm_export / GRAPH)).graph
    weights = {t.name for t in graph.initializer}
    by_weight = [n.input[1] in weights for n in graph.node if n.op_type == "MatMul"]
    assert "Split" not in {n.op_type for n in graph.node}
    assert sorted(by_weight) == [False] * 2 * 6 + [True] * 6 * 6


def test_encode_contract(fp32, reference):
    single = fp32.encode(REAL[3])
    np.testing.assert_allclose(single, reference[1][3], atol=1e-5, rtol=0)
    assert fp32.encode([]).shape == (0, fp32.dim)
    raw = fp32.encode(REAL[:3], normalize=True, show_progress_bar=True)
    np.testing.assert_allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-6)


# --- int8 ----------------------------------------------------------------------------------


def test_int8_is_the_default_and_stays_close(minilm_export, reference):
    record = json.loads((minilm_export / EXPORT_RECORD).read_text())
    assert record["graph"] == GRAPH_INT8 and record["quantize"] == "int8"
    assert {"torch", "onnx", "onnxruntime", "sbert"} <= record["versions"].keys()
    assert record["opset"] and record["source"] == "all-MiniLM-L6-v2"
    int8 = load(minilm_export)
    got = int8.encode(SENTENCES, batch_size=32)
    fp32 = reference[32]
    cosine = (got * fp32).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(fp32, axis=1)
    # Static int8 (fixed activation ranges: batch independent, tests/inference/test_runtimes.py)
    # with the feed-forward down projections in fp32 (export.quantize_int8).
    assert cosine.min() >= 0.94 and cosine.mean() >= 0.98, (cosine.min(), cosine.mean())
    assert np.abs(got - fp32).max() > 1e-4  # it is really the int8 graph that ran
    sizes = {g: (minilm_export / g).stat().st_size for g in (GRAPH, GRAPH_INT8)}
    # int8 weights but for the word embeddings and the fp32 down projections: 69.6 of 90.7 MB
    assert sizes[GRAPH_INT8] < 0.8 * sizes[GRAPH]


# --- deployment: no torch --------------------------------------------------------------------

NO_TORCH = """
import json, sys

class NoTorch:  # any import of torch fails: the runner must not need it
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")

sys.meta_path.insert(0, NoTorch())
from sbert.inference.onnx_runner import OnnxEncoder

vectors = OnnxEncoder.load(sys.argv[1]).encode(json.loads(sys.argv[2]), batch_size=4)
assert "torch" not in sys.modules, "torch was imported"
print(json.dumps(vectors.tolist()))
"""


def test_runs_without_torch(tiny):
    model, folder = tiny
    sentences = REAL[:6] + HOSTILE[:6]
    result = subprocess.run(
        [sys.executable, "-c", NO_TORCH, str(folder), json.dumps(sentences)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr
    got = np.array(json.loads(result.stdout), dtype=np.float32)
    np.testing.assert_allclose(got, model.encode(sentences), atol=1e-5, rtol=0)


def test_damaged_graph_is_refused(tiny, tmp_path):
    _, folder = tiny
    copy = shutil.copytree(folder, tmp_path / "copy")
    graph = copy / GRAPH
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF
    graph.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        load(copy)


# --- the CLI -------------------------------------------------------------------------------


def test_cli_encode_and_similarity_take_the_export(tiny, tmp_path, capsys):
    model, folder = tiny
    source = tmp_path / "in.txt"
    source.write_text("a man plays a guitar\nsomeone slices an onion\n", encoding="utf-8")
    out = tmp_path / "out.npy"
    assert cli.main(["encode", "--model", str(folder), "--input", str(source),
                     "--output", str(out)]) == 0  # fmt: skip
    expected = model.encode(["a man plays a guitar", "someone slices an onion"])
    np.testing.assert_allclose(np.load(out), expected, atol=1e-5, rtol=0)
    capsys.readouterr()
    assert cli.main(["similarity", "--model", str(folder), "a man", "a woman"]) == 0
    u, v = model.encode(["a man", "a woman"], normalize=True)
    assert capsys.readouterr().out.strip() == f"{float(u @ v):.4f}"


def test_cli_export_replaces_an_earlier_export(tiny, tmp_path, capsys):
    model, folder = tiny
    out = shutil.copytree(folder, tmp_path / "out")  # an earlier fp32 export
    source = folder.parent / "model"
    assert (
        cli.main(["export", "--model", str(source), "--out", str(out), "--quantize", "int8"]) == 0
    )
    assert "wrote" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary litter
    assert json.loads((out / EXPORT_RECORD).read_text())["quantize"] == "int8"
    assert not (out / "model.safetensors").exists()  # the weights live in the graphs
    assert (out / "modules.json").is_file() and (out / "tokenizer.json").is_file()


BAD_CASES = (
    "missing model",
    "unknown quantize",
    "out is a file",
    "out is another folder",
    "out is the model",
    "out parent missing",
    "model is an export",
)


def bad_cases(tmp: Path, model: Path, export_folder: Path) -> dict[str, list[str]]:
    (tmp / "a_file").write_text("keep me")
    (tmp / "a_folder").mkdir()
    (tmp / "a_folder" / "notes.txt").write_text("keep me")
    return {
        "missing model": ["--model", str(tmp / "nope"), "--out", str(tmp / "out")],
        "unknown quantize": [
            "--model",
            str(model),
            "--out",
            str(tmp / "out"),
            "--quantize",
            "int4",
        ],
        "out is a file": ["--model", str(model), "--out", str(tmp / "a_file")],
        "out is another folder": ["--model", str(model), "--out", str(tmp / "a_folder")],
        "out is the model": ["--model", str(model), "--out", str(model)],
        "out parent missing": ["--model", str(model), "--out", str(tmp / "no" / "out")],
        "model is an export": ["--model", str(export_folder), "--out", str(tmp / "out")],
    }


@pytest.mark.parametrize("case", BAD_CASES)
def test_cli_export_bad_input(case, tiny, tmp_path, capsys):
    _, folder = tiny
    model = shutil.copytree(folder.parent / "model", tmp_path / "model")
    args = bad_cases(tmp_path, model, folder)[case]
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert cli.main(["export", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sbert export: error: ") and err.count("\n") == 1, err
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before
    assert (tmp_path / "a_file").read_text() == "keep me"
    assert (tmp_path / "a_folder" / "notes.txt").read_text() == "keep me"


def test_an_interrupt_inside_an_exporter_stays_an_interrupt():
    """Ctrl-C landing inside an exporter's import came out as the exporter's own error (torch.onnx:
    "module 'torch._dynamo' has no attribute 'exc'", then TorchExportError): a traceback, where
    the command says "interrupted" and exits 130."""
    import signal
    import time

    from sbert.inference.export import _exporter_call

    def exporter_that_swallows_the_interrupt():
        try:  # as an import that fails half-way, caught inside the library
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        except KeyboardInterrupt:
            pass
        raise AttributeError("module 'torch._dynamo' has no attribute 'exc'")

    with pytest.raises(KeyboardInterrupt), _exporter_call():
        exporter_that_swallows_the_interrupt()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back
    with pytest.raises(AttributeError), _exporter_call():  # no interrupt: its own error
        raise AttributeError("a real failure")
