"""An ONNX export used as the PyTorch folder is: `sbert predict` (the classifier travels with the
export and runs in numpy, without torch) and `sbert index` / `sbert search` (an fp32 export has
its source model's fingerprint, an int8 one its own) give the same answers, to 1e-5.

One tiny multi-task model (seeded random classifier, score scale) is saved and exported twice
per module: fp32, and with --quantize int8.
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
from sbert.data.readers import read_pairs  # noqa: E402
from sbert.folders import EXPORT_RECORD  # noqa: E402
from sbert.heads import HEAD_FILES  # noqa: E402
from sbert.inference.export import GRAPH, export  # noqa: E402
from sbert.inference.index import Index, model_identity  # noqa: E402
from sbert.inference.load import load  # noqa: E402
from sbert.inference.onnx_runner import OnnxEncoder  # noqa: E402
from sbert.inference.predict import predict  # noqa: E402
from sbert.models.multitask import MultiTaskModel  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SICK = ROOT / "data" / "sick" / "SICK_train_trial.txt"
LABELS = ["contradiction", "entailment", "neutral"]
TOPICS = ["cats", "dogs", "cars", "food", "music", "rain", "chess"]
TEXTS = [f"a sentence numbered {i} about {TOPICS[i % 7]}" for i in range(120)]
QUERIES = ["music and rain", "a sentence about chess", "numbered 17", "dogs chasing cars"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """The PyTorch folder, its fp32 export and its int8 export."""
    root = tmp_path_factory.mktemp("use")
    torch.manual_seed(0)
    model = MultiTaskModel(SentenceBert.from_config("tiny"), LABELS, score_scale=(1.0, 5.0))
    torch.nn.init.normal_(model.classifier.weight, std=0.5)  # decisive: not all one label
    model.save(root / "model")
    export(root / "model", root / "fp32")
    export(root / "model", root / "int8", quantize="int8")
    return {name: root / name for name in ("model", "fp32", "int8")}


@pytest.fixture(scope="module")
def pairs():
    return read_pairs(SICK, split="TRIAL", limit=60).pairs


def assert_same_predictions(got, want):
    assert [p.label for p in got] == [p.label for p in want]
    for g, w in zip(got, want, strict=True):
        assert g.probabilities.keys() == w.probabilities.keys() == set(LABELS)
        np.testing.assert_allclose(list(g.probabilities.values()),
                                   list(w.probabilities.values()), atol=1e-5, rtol=0)  # fmt: skip
        assert g.similarity == pytest.approx(w.similarity, abs=1e-5)
        assert g.score == pytest.approx(w.score, abs=4e-5)  # 1 + 4 * similarity


# --- predict -------------------------------------------------------------------------------


def test_the_export_carries_the_heads_and_the_fingerprint(folders):
    record = json.loads((folders["fp32"] / EXPORT_RECORD).read_text())
    assert record["heads"] == list(HEAD_FILES)
    manifest = (folders["fp32"] / "manifest.json").read_text()
    for name in HEAD_FILES:  # byte for byte, and covered by the manifest
        assert (folders["fp32"] / name).read_bytes() == (folders["model"] / name).read_bytes()
        assert name in manifest
    source = model_identity(SentenceBert.from_pretrained(folders["model"]))["fingerprint"]
    assert record["fingerprint"] == source
    assert model_identity(OnnxEncoder.load(folders["fp32"]))["fingerprint"] == source
    assert model_identity(OnnxEncoder.load(folders["int8"]))["fingerprint"] != source
    fp32_of_int8 = OnnxEncoder.load(folders["int8"], graph=GRAPH)  # the folder has both
    assert model_identity(fp32_of_int8)["fingerprint"] == source


def test_predict_on_the_export_equals_pytorch(folders, pairs):
    want = predict(MultiTaskModel.from_pretrained(folders["model"]), pairs, batch_size=16)
    assert len({p.label for p in want}) > 1  # a classifier that says one thing tests little
    exported = load(folders["fp32"])
    assert isinstance(exported, OnnxEncoder) and exported.heads.score_scale == (1.0, 5.0)
    assert_same_predictions(predict(exported, pairs, batch_size=16), want)


def test_predict_command_line_on_the_export(folders, pairs, tmp_path, capsys):
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("".join(f"{p.a}\t{p.b}\n" for p in pairs), encoding="utf-8")
    rows = {}
    for name in ("model", "fp32"):
        out = tmp_path / f"{name}.jsonl"
        args = ["--model", str(folders[name]), "--input", str(tsv), "--output", str(out)]
        assert cli.main(["predict", *args]) == 0
        rows[name] = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows["fp32"]) == len(pairs)
    for got, want in zip(rows["fp32"], rows["model"], strict=True):
        assert got.keys() == want.keys() == {"line", "label", "probabilities", "similarity",
                                             "score"}  # fmt: skip
        assert got["label"] == want["label"]
        assert got["similarity"] == pytest.approx(want["similarity"], abs=1e-5)
        for label in LABELS:
            assert got["probabilities"][label] == pytest.approx(
                want["probabilities"][label], abs=1e-5
            )
    capsys.readouterr()
    assert cli.main(["predict", "--model", str(folders["fp32"]), pairs[0].a, pairs[0].b]) == 0
    assert f"label:       {rows['model'][0]['label']}" in capsys.readouterr().out


# A serving machine: any import outside requirements-serve.txt (and what its packages require;
# torch is not among them) fails (tests/serving_only.py).
SERVING_ONLY = ROOT / "tests" / "serving_only.py"
SERVING = ROOT / "requirements-serve.txt"

NO_TORCH = """
import json, sys
from sbert.inference.load import load
from sbert.inference.predict import predict

out = predict(load(sys.argv[1]), [tuple(p) for p in json.loads(sys.argv[2])])
print(json.dumps([p.to_json() for p in out]))
"""


def test_predict_on_the_export_needs_no_torch(folders, pairs):
    some = pairs[:8]
    result = subprocess.run(
        [
            sys.executable,
            str(SERVING_ONLY),
            "-c",
            NO_TORCH,
            str(folders["fp32"]),
            json.dumps([(p.a, p.b) for p in some]),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT), "SERVING": str(SERVING)},
    )
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    want = predict(MultiTaskModel.from_pretrained(folders["model"]), some)
    assert [g["label"] for g in got] == [w.label for w in want]
    for g, w in zip(got, want, strict=True):
        assert g["similarity"] == pytest.approx(w.similarity, abs=1e-5)
        for label in LABELS:
            assert g["probabilities"][label] == pytest.approx(w.probabilities[label], abs=1e-5)


def sbert_without_torch(*args: str, serving: Path = SERVING) -> subprocess.CompletedProcess:
    """`sbert ARGS` where only `serving`'s packages (and what they require) can be imported."""
    command = [sys.executable, str(SERVING_ONLY), *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SERVING": str(serving)}
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)


def test_encode_similarity_and_predict_commands_on_the_export_need_no_torch(
    folders, pairs, tmp_path
):
    model = MultiTaskModel.from_pretrained(folders["model"])
    sentences = [p.a for p in pairs[:10]]
    (tmp_path / "in.txt").write_text("\n".join(sentences) + "\n", encoding="utf-8")
    export = str(folders["fp32"])
    args = ["--model", export, "--input", str(tmp_path / "in.txt")]
    result = sbert_without_torch("encode", *args, "--output", str(tmp_path / "v.npy"))
    assert result.returncode == 0, result.stderr
    want = model.encoder.encode(sentences)
    np.testing.assert_allclose(np.load(tmp_path / "v.npy"), want, atol=1e-5, rtol=0)

    a, b = pairs[0].a, pairs[0].b
    result = sbert_without_torch("similarity", "--model", export, a, b)
    assert result.returncode == 0, result.stderr
    (expected,) = predict(model, [(a, b)])
    assert float(result.stdout) == pytest.approx(expected.similarity, abs=1e-4)

    result = sbert_without_torch("predict", "--model", export, a, b)
    assert result.returncode == 0, result.stderr
    assert f"label:       {expected.label}" in result.stdout

    result = sbert_without_torch("similarity", "--model", export, a, b, "--device", "cuda")
    assert result.returncode == 2 and "--device cuda does not apply" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_missing_package_is_one_line_naming_it(folders, tmp_path):
    serving = tmp_path / "requirements.txt"  # the serving install without safetensors
    lines = SERVING.read_text().splitlines()
    serving.write_text("\n".join(x for x in lines if not x.startswith("safetensors")))
    result = sbert_without_torch("predict", "--model", str(folders["fp32"]), "a", "b",
                                 serving=serving)  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "needs the Python package 'safetensors'" in result.stderr, result.stderr


def test_evaluate_and_train_on_an_export_point_to_its_source(folders, tmp_path, capsys):
    for args in (["evaluate", "--data", f"{SICK}@TRIAL"], ["train", "--out", str(tmp_path / "r")]):
        capsys.readouterr()
        assert cli.main([*args, "--model", str(folders["fp32"])]) == 2
        err = capsys.readouterr().err
        assert "use the model folder it was exported from" in err and err.count("\n") == 1, err


def test_an_export_whose_classifier_does_not_fit_is_refused(folders, tmp_path, capsys):
    from safetensors.numpy import save_file

    model = shutil.copytree(folders["model"], tmp_path / "model")
    save_file({"weight": np.zeros((3, 7), np.float32), "bias": np.zeros(3, np.float32)},
              str(model / "classifier.safetensors"))  # fmt: skip
    (model / "manifest.json").unlink()  # edited by hand: no manifest to check against
    assert cli.main(["export", "--model", str(model), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "classifier does not fit" in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


# --- index and search ----------------------------------------------------------------------


def sbert(*args: str, without_torch: bool = False) -> None:
    """Run a command in this process, or with torch blocked in a subprocess."""
    if without_torch:
        result = sbert_without_torch(*args)
        assert result.returncode == 0, result.stderr
    else:
        assert cli.main(list(args)) == 0


def search_rows(
    index: Path, out: Path, queries: Path, model: Path | None = None, without_torch: bool = False
) -> list[dict]:
    extra = ["--model", str(model)] if model else []
    args = ["--index", str(index), "--queries", str(queries), "-k", "5", "--output", str(out)]
    sbert("search", *args, *extra, without_torch=without_torch)
    return [json.loads(line) for line in out.read_text().splitlines()]


def assert_same_hits(got: list[dict], want: list[dict]):
    for g, w in zip(got, want, strict=True):
        assert [h["id"] for h in g["hits"]] == [h["id"] for h in w["hits"]]
        np.testing.assert_allclose([h["score"] for h in g["hits"]],
                                   [h["score"] for h in w["hits"]], atol=1e-5, rtol=0)  # fmt: skip


def test_index_and_search_on_the_export_equal_pytorch_and_need_no_torch(folders, tmp_path):
    corpus, queries = tmp_path / "corpus.txt", tmp_path / "queries.txt"
    corpus.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    queries.write_text("\n".join(QUERIES) + "\n", encoding="utf-8")
    rows = {}
    for name in ("model", "fp32"):  # the export's index is built and searched with torch blocked
        torch_free = name == "fp32"
        out = tmp_path / f"idx-{name}"
        sbert("index", "--model", str(folders[name]), "--corpus", str(corpus), "--out", str(out),
              without_torch=torch_free)  # fmt: skip
        # --model: the index records its model, outside the folder that holds the index
        rows[name] = search_rows(
            out, tmp_path / f"{name}.jsonl", queries, folders[name], torch_free
        )
    assert_same_hits(rows["fp32"], rows["model"])
    # The fp32 export and its source are interchangeable: each queries the other's index.
    crossed = search_rows(tmp_path / "idx-model", tmp_path / "x.jsonl", queries, folders["fp32"])
    assert_same_hits(crossed, rows["model"])
    Index.load(tmp_path / "idx-fp32", SentenceBert.from_pretrained(folders["model"]))


def test_retrieval_metrics_of_the_export_equal_pytorch_and_need_no_torch(folders, capsys):
    args = ["evaluate-retrieval", "--data", f"{SICK}@TRIAL", "--min-score", "4"]
    assert cli.main([*args, "--model", str(folders["model"])]) == 0
    want = json.loads(capsys.readouterr().out)
    result = sbert_without_torch(*args, "--model", str(folders["fp32"]))
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    assert got.keys() == want.keys() and got["queries"] == want["queries"] > 50
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-4), key


def test_an_index_refuses_the_int8_export_and_another_model(folders, tmp_path, capsys):
    index = Index.build(OnnxEncoder.load(folders["fp32"]), TEXTS[:20], name=str(folders["fp32"]))
    index.save(tmp_path / "idx")
    with pytest.raises(CheckpointError, match="built with model"):
        Index.load(tmp_path / "idx", OnnxEncoder.load(folders["int8"]))
    torch.manual_seed(1)
    SentenceBert.from_config("tiny").save(tmp_path / "other")
    for other in (tmp_path / "other", folders["int8"]):
        capsys.readouterr()
        args = ["--index", str(tmp_path / "idx"), "--model", str(other), "a query"]
        assert cli.main(["search", *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("sbert search: error: ") and "built with model" in err, err
        assert err.count("\n") == 1, err
