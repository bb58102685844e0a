"""`sbert embed`: Parquet shards of the model's vectors with a manifest, resumable after a real
SIGKILL without losing or repeating a row; `sbert index --vectors` builds the same index as
from the texts; bad input is one line, exit 2, nothing written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sbert import SentenceBert, cli
from sbert.inference.index import Index

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
TEXTS = [f"a sentence numbered {i} about {t}" for i, t in enumerate(["cats", "dogs", "rain"] * 40)]

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(seed: int) -> SentenceBert:
    torch.manual_seed(seed)
    return SentenceBert.from_config("tiny").eval()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("models") / "tiny"
    tiny(0).save(path)
    return path


@pytest.fixture
def corpus(tmp_path) -> Path:
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"n": i, "body": t}) + "\n" for i, t in enumerate(TEXTS)))
    return path


def sbert(*args, trap: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    command = (
        [sys.executable, str(ROOT / "tests" / "crash_at.py"), *trap, "--"]
        if trap
        else [sys.executable, "-m", "sbert"]
    )
    return subprocess.run(
        [*command, *map(str, args)], capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=300
    )


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def embed_args(model_dir: Path, corpus: Path, out: Path, *extra) -> list[str]:
    return ["embed", "--model", str(model_dir), "--corpus", str(corpus), "--column", "body",
            "--out", str(out), "--shard-size", "50", *map(str, extra)]  # fmt: skip


def rows(folder: Path) -> pa.Table:
    return pa.concat_tables(pq.read_table(p) for p in sorted(folder.glob("shard-*.parquet")))


def test_an_embedding_folder_holds_the_models_vectors(model_dir, corpus, tmp_path):
    out = tmp_path / "emb"
    assert cli.main(embed_args(model_dir, corpus, out)) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "embedding.json", "manifest.json",
        "shard-000000.parquet", "shard-000001.parquet", "shard-000002.parquet",
    ]  # fmt: skip
    table = rows(out)
    assert table.schema.field("id").type == pa.int64()
    assert table.schema.field("text").type == pa.string()
    assert table.schema.field("vector").type == pa.list_(pa.float32(), 32)
    assert table.column("id").to_pylist() == list(range(len(TEXTS)))
    assert table.column("text").to_pylist() == TEXTS
    vectors = np.stack(table.column("vector").to_numpy(zero_copy_only=False))
    expected = SentenceBert.from_pretrained(model_dir).encode(TEXTS, normalize=True)
    np.testing.assert_allclose(vectors, expected, atol=1e-6, rtol=0)
    info = json.loads((out / "embedding.json").read_text())
    assert info["model"]["fingerprint"] == SentenceBert.from_pretrained(model_dir).fingerprint()
    assert (info["dim"], info["normalized"], info["count"]) == (32, True, len(TEXTS))
    assert info["corpus"]["column"] == "body" and info["corpus"]["path"] == "../corpus.jsonl"
    assert [s["rows"] for s in info["shards"]] == [50, 50, 20]
    assert str(tmp_path) not in (out / "embedding.json").read_text()  # no absolute path

    bare = tmp_path / "bare"
    assert cli.main(embed_args(model_dir, corpus, bare, "--no-text")) == 0
    assert rows(bare).schema.names == ["id", "vector"]
    assert rows(bare).column("vector").equals(table.column("vector"))


def test_a_killed_embed_redoes_only_its_unfinished_shards(model_dir, corpus, tmp_path):
    out, work = tmp_path / "emb", tmp_path / ".emb.partial"
    args = embed_args(model_dir, corpus, out)
    # SIGKILL just before the third shard is written: two are finished and recorded.
    killed = sbert(*args, trap=("sbert.inference.embed:atomic_write_bytes", "1", "kill",
                                "shard-000002"))  # fmt: skip
    assert killed.returncode == -9
    assert not out.exists()
    assert sorted(p.name for p in work.glob("shard-*")) == ["shard-000000.parquet",
                                                           "shard-000001.parquet"]  # fmt: skip
    kept = {p.name: os.stat(p).st_ino for p in work.glob("shard-*")}
    resumed = sbert(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming: 100 of 120 texts" in resumed.stderr
    assert not work.exists()
    for name, inode in kept.items():  # the finished shards were kept, not embedded again
        assert os.stat(out / name).st_ino == inode
    table = rows(out)
    assert table.column("id").to_pylist() == list(range(len(TEXTS)))  # none lost, none twice
    fresh = tmp_path / "fresh"
    assert cli.main(embed_args(model_dir, corpus, fresh)) == 0
    assert table.equals(rows(fresh))


def test_a_work_folder_of_other_texts_or_with_a_swapped_shard_is_not_reused(
    model_dir, corpus, tmp_path
):
    """What a killed run left is reused only for the same corpus, model and shard size, and
    only shards whose sha256 it recorded: another corpus's work, or a shard swapped for
    another (valid, but not the one recorded), is refused, not mixed into the output."""
    out, work = tmp_path / "emb", tmp_path / ".emb.partial"
    args = embed_args(model_dir, corpus, out)
    killed = sbert(*args, trap=("sbert.inference.embed:atomic_write_bytes", "1", "kill",
                                "shard-000002"))  # fmt: skip
    assert killed.returncode == -9
    first, second = work / "shard-000000.parquet", work / "shard-000001.parquet"
    original = first.read_bytes()
    first.write_bytes(second.read_bytes())
    line = one_line_error(sbert(*args))
    assert "shard-000000.parquet: is not the shard this work folder recorded" in line, line
    first.write_bytes(original)
    corpus.write_text(corpus.read_text().replace("cats", "lions"))
    line = one_line_error(sbert(*args))
    assert "holds a partial embedding of another corpus, model or shard size" in line, line
    assert not out.exists()


def test_an_index_from_vectors_equals_the_index_from_texts(model_dir, corpus, tmp_path):
    emb = tmp_path / "emb"
    assert cli.main(embed_args(model_dir, corpus, emb)) == 0
    from_texts, from_vectors = tmp_path / "a", tmp_path / "b"
    assert cli.main(["index", "--model", str(model_dir), "--corpus", str(corpus), "--column",
                     "body", "--out", str(from_texts)]) == 0  # fmt: skip
    found = sbert("index", "--model", model_dir, "--vectors", emb, "--out", from_vectors,
                  "--precision", "int8")  # fmt: skip
    assert found.returncode == 0, found.stderr
    a = Index.load(from_texts, SentenceBert.from_pretrained(model_dir))
    b = Index.load(from_vectors, SentenceBert.from_pretrained(model_dir))
    assert b.texts == a.texts == TEXTS
    np.testing.assert_allclose(b.vectors, a.vectors, atol=1e-6, rtol=0)
    assert b.precision == "int8" and b.codes.shape == (len(TEXTS), 32)
    queries = b.model.encode(["cats", "rain and dogs"], normalize=True)
    assert np.array_equal(b.search_vectors(queries, 5)[1], a.search_vectors(queries, 5)[1])
    assert str(tmp_path) not in (from_vectors / "index.json").read_text()


def test_bad_input_is_one_line_exit_2_and_nothing_written(model_dir, corpus, tmp_path):
    emb = tmp_path / "emb"
    assert cli.main(embed_args(model_dir, corpus, emb)) == 0
    # a missing column
    line = one_line_error(sbert(*embed_args(model_dir, corpus, tmp_path / "x")[:-2], "--column",
                                "nope"))  # fmt: skip
    assert "nope" in line
    # an empty corpus
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    line = one_line_error(sbert("embed", "--model", model_dir, "--corpus", empty, "--out",
                                tmp_path / "x"))  # fmt: skip
    assert "empty" in line or "no texts" in line
    empty.unlink()
    # a foreign fingerprint
    other = tmp_path / "other"
    tiny(1).save(other)
    line = one_line_error(sbert("index", "--model", other, "--vectors", emb, "--out",
                                tmp_path / "x"))  # fmt: skip
    assert "fingerprint" in line and "another model" in line
    # a shard whose vectors are another width (its manifest gone: edited on purpose)
    shard = pq.read_table(emb / "shard-000001.parquet")
    narrow = np.stack(shard.column("vector").to_numpy(zero_copy_only=False))[:, :16]
    narrow /= np.linalg.norm(narrow, axis=1, keepdims=True)
    shard = shard.set_column(2, "vector", pa.FixedSizeListArray.from_arrays(
        pa.array(narrow.reshape(-1)), 16))  # fmt: skip
    pq.write_table(shard, emb / "shard-000001.parquet")
    (emb / "manifest.json").unlink()
    line = one_line_error(sbert("index", "--model", model_dir, "--vectors", emb, "--out",
                                tmp_path / "x"))  # fmt: skip
    assert "shard-000001.parquet" in line and "vector width 16" in line and "dim 32" in line
    # an embedding without texts cannot make an index
    bare = tmp_path / "bare"
    assert cli.main(embed_args(model_dir, corpus, bare, "--no-text")) == 0
    line = one_line_error(sbert("index", "--model", model_dir, "--vectors", bare, "--out",
                                tmp_path / "x"))  # fmt: skip
    assert "--no-text" in line
    # --vectors is not an embedding folder; --corpus and --vectors together
    line = one_line_error(sbert("index", "--model", model_dir, "--vectors", model_dir, "--out",
                                tmp_path / "x"))  # fmt: skip
    assert "not an embedding folder" in line
    line = one_line_error(sbert("index", "--model", model_dir, "--vectors", bare, "--corpus",
                                corpus, "--out", tmp_path / "x"))  # fmt: skip
    assert "--vectors" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bare", "corpus.jsonl", "emb", "other"]


def test_without_pyarrow_embed_names_the_install(model_dir, corpus, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now fails
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    assert cli.main(embed_args(model_dir, corpus, tmp_path / "emb")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install pyarrow" in err, err
    assert not (tmp_path / "emb").exists() and not (tmp_path / ".emb.partial").exists()


def test_without_ray_nothing_imports_it(model_dir, corpus, tmp_path):
    code = (
        "import sys; from sbert import cli; "
        f"assert cli.main({embed_args(model_dir, corpus, tmp_path / 'emb')!r}) == 0; "
        "assert 'ray' not in sys.modules, 'ray imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV,
                          cwd=ROOT, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_an_onnx_export_embeds_the_same_vectors_and_indexes_them(model_dir, corpus, tmp_path):
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    from sbert.inference.export import export

    export(model_dir, tmp_path / "onnx")
    torch_out, onnx_out = tmp_path / "a", tmp_path / "b"
    assert cli.main(embed_args(model_dir, corpus, torch_out)) == 0
    done = sbert(*embed_args(tmp_path / "onnx", corpus, onnx_out))
    assert done.returncode == 0, done.stderr
    a, b = (np.stack(rows(f).column("vector").to_numpy(zero_copy_only=False))
            for f in (torch_out, onnx_out))  # fmt: skip
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    # the export has the model's fingerprint: its vectors index with the PyTorch folder
    index = sbert("index", "--model", model_dir, "--vectors", onnx_out, "--out", tmp_path / "ix")
    assert index.returncode == 0, index.stderr
