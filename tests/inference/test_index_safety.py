"""An index and its build trust nothing they did not write:

- the resumable work folder `.NAME.partial` is refused when it is a symlink, another user's, or
  holds files no build writes; its chunks are reused only when they are the ones it recorded
  (sha256), float32 of the chunk's shape, finite and unit length;
- two builds of one index cannot run at once: the second is one line naming the first;
- an index without a manifest is still checked: a row that is not unit length is refused, in
  vectors.npy or in the HNSW graph's copy;
- `--approximate` without FAISS is refused before anything is embedded;
- index.json keeps no absolute path of the machine that built it, and follows its recorded
  model only inside the folder that holds the index;
- a write that fails names its file.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import sbert
from sbert import SentenceBert, cli
from sbert.fileio import MANIFEST
from sbert.inference.index import Index, _work_key, model_identity, work_folder

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
TEXTS = [f"a sentence numbered {i} about {t}" for i, t in enumerate(["cats", "dogs", "rain"] * 40)]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model_dir(tiny) -> Path:
    """The session's tiny model folder (conftest), read only."""
    return tiny


@pytest.fixture
def corpus(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(TEXTS) + "\n")
    return path


def index_args(model_dir: Path, corpus: Path, out: Path, *extra) -> list[str]:
    return ["index", "--model", str(model_dir), "--corpus", str(corpus), "--out", str(out),
            "--chunk-size", "50", *map(str, extra)]  # fmt: skip


def error_of(capsys, *args) -> str:
    capsys.readouterr()
    assert cli.main([str(a) for a in args]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def listing(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


# --- the work folder ---------------------------------------------------------------------


def test_a_planted_symlink_work_folder_is_refused(model_dir, corpus, tmp_path, capsys):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("mine")
    (tmp_path / ".ix.partial").symlink_to(elsewhere)
    line = error_of(capsys, *index_args(model_dir, corpus, tmp_path / "ix"))
    assert str(tmp_path / ".ix.partial") in line and "is a symlink" in line, line
    assert listing(elsewhere) == ["keep.txt"] and not (tmp_path / "ix").exists()


def test_a_work_folder_with_strangers_or_another_owner_is_refused(
    model_dir, corpus, tmp_path, capsys
):
    work = tmp_path / ".ix.partial"
    work.mkdir()
    (work / "notes.txt").write_text("not a chunk")
    line = error_of(capsys, *index_args(model_dir, corpus, tmp_path / "ix"))
    assert str(work) in line and "notes.txt" in line, line
    (work / "notes.txt").unlink()
    if os.geteuid() == 0:  # only root can give a folder away
        os.chown(work, 12345, 12345)
        line = error_of(capsys, *index_args(model_dir, corpus, tmp_path / "ix"))
        assert str(work) in line and "another user" in line, line
    assert not (tmp_path / "ix").exists()


def plant(work: Path, model_dir: Path, chunks: dict[str, np.ndarray], record: bool) -> None:
    """A work folder as a killed build of TEXTS leaves it, with these chunks; `record`: their
    sha256 in progress.json, as the build writes them (else a forged record is left out)."""
    work.mkdir()
    key = _work_key(TEXTS, model_identity(SentenceBert.from_pretrained(model_dir)), 50)
    for name, vectors in chunks.items():
        buffer = io.BytesIO()
        np.save(buffer, vectors)
        (work / name).write_bytes(buffer.getvalue())
        if record:
            import hashlib

            key["chunks"][name] = hashlib.sha256(buffer.getvalue()).hexdigest()
    (work / "progress.json").write_text(json.dumps(key))


def unit(rows: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((rows, 32)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_planted_chunks_are_never_stitched_into_the_index(model_dir, corpus, tmp_path, capsys):
    """Chunks the folder's record does not name are embedded again; one whose bytes differ
    from the record is refused; recorded but of the wrong shape, NaN or not unit length
    (a forged record) is refused too: one line each, never a traceback, no index."""
    work, out = tmp_path / ".ix.partial", tmp_path / "ix"
    plant(work, model_dir, {"chunk-000000.npy": unit(50, 1)}, record=False)
    assert cli.main(index_args(model_dir, corpus, out)) == 0
    fresh = Index.build(SentenceBert.from_pretrained(model_dir), TEXTS)
    np.testing.assert_allclose(np.load(out / "vectors.npy"), fresh.vectors, atol=1e-6)
    shutil.rmtree(out)
    wrong = {
        "wrong-shape": unit(49, 2),
        "nan": np.where(np.arange(32) == 3, np.nan, unit(50, 3)).astype(np.float32),
        "not-unit": unit(50, 4) * 3,
        "float64": unit(50, 5).astype(np.float64),
    }
    for case, vectors in wrong.items():
        plant(work, model_dir, {"chunk-000000.npy": vectors}, record=True)
        line = error_of(capsys, *index_args(model_dir, corpus, out))
        assert str(work / "chunk-000000.npy") in line, (case, line)
        assert not out.exists()
        shutil.rmtree(work)
    plant(work, model_dir, {"chunk-000000.npy": unit(50, 6)}, record=True)
    (work / "chunk-000000.npy").write_bytes(
        (work / "chunk-000000.npy").read_bytes()[:-4] + b"\0" * 4
    )
    line = error_of(capsys, *index_args(model_dir, corpus, out))
    assert "is not the chunk this work folder recorded" in line, line


# Runs `sbert index`, holding its build until the test says "go" on stdin, so that a second run
# arrives while it works however slowly the machine starts processes.
SLOW_FIRST_RUN = r"""
import sys
from sbert import cli
from sbert.inference import index
build = index.Index.build.__func__
def slow(cls, *args, **kwargs):
    print("building", flush=True)
    sys.stdin.readline()
    return build(cls, *args, **kwargs)
index.Index.build = classmethod(slow)
sys.exit(cli.main(sys.argv[1:]))
"""


def test_two_runs_on_one_index_the_second_refuses(model_dir, corpus, tmp_path):
    other = tmp_path / "other.txt"
    other.write_text("\n".join(TEXTS[:7]) + "\n")
    out = tmp_path / "ix"
    first = subprocess.Popen(
        [sys.executable, "-c", SLOW_FIRST_RUN, *index_args(model_dir, corpus, out)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=ENV, cwd=ROOT,
    )  # fmt: skip
    assert first.stdout.readline().strip() == "building"  # it holds the lock now
    second = subprocess.run(
        [sys.executable, "-m", "sbert", *index_args(model_dir, other, out)],
        capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=300,
    )  # fmt: skip
    first.stdin.write("go\n")
    first.stdin.close()
    assert first.wait(300) == 0, first.stderr.read()
    assert second.returncode == 2 and "Traceback" not in second.stderr, second.stderr
    assert f"another sbert index (process {first.pid}) is writing this output" in second.stderr
    assert len((out / "texts.jsonl").read_text().splitlines()) == len(TEXTS)  # the first's
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt", "ix", "other.txt"]


def test_a_held_work_folder_refuses_a_second_build_in_process(model_dir, corpus, tmp_path, capsys):
    with work_folder(tmp_path / "ix"):
        line = error_of(capsys, *index_args(model_dir, corpus, tmp_path / "ix"))
    assert f"another sbert index (process {os.getpid()})" in line
    assert not (tmp_path / ".ix.partial").exists()  # removed when the holder was done


# --- a loaded index ------------------------------------------------------------------------


def flip_four_bytes(path: Path, row: int) -> None:
    """Four bytes of one float32 set to the pattern of a huge number (an exponent bit flip)."""
    array = np.load(path)
    offset = path.stat().st_size - array.nbytes + (row * array.shape[1] + 5) * 4
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(np.float32(8.6e21).tobytes())


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_a_row_that_is_not_unit_length_is_refused(model_dir, corpus, tmp_path, capsys, precision):
    out = tmp_path / "ix"
    assert cli.main(index_args(model_dir, corpus, out, "--precision", precision)) == 0
    (out / MANIFEST).unlink()  # nothing to check the bytes against
    flip_four_bytes(out / "vectors.npy", 17)
    line = error_of(capsys, "search", "--index", out, "--model", model_dir, TEXTS[17])
    assert str(out / "vectors.npy") in line and "row 17 has norm" in line, line


def test_a_damaged_vector_in_the_hnsw_graph_is_refused(model_dir, corpus, tmp_path, capsys):
    """The graph keeps its own copy of the vectors, not scanned at load: one float of row 17
    made huge (with the sign that makes it top its own text's query) is one line naming the
    graph, not a hit scoring 1e21."""
    pytest.importorskip("faiss")
    out = tmp_path / "ix"
    assert cli.main(index_args(model_dir, corpus, out, "--approximate")) == 0
    (out / MANIFEST).unlink()  # nothing to check the bytes against
    row = np.load(out / "vectors.npy")[17]
    graph = (out / "hnsw.faiss").read_bytes()
    at = graph.find(row.tobytes())
    assert at >= 0 and graph.count(row.tobytes()) == 1  # the graph's copy of row 17
    huge = np.float32(np.sign(row[5]) * 8.6e21).tobytes()
    (out / "hnsw.faiss").write_bytes(graph[: at + 20] + huge + graph[at + 24 :])
    line = error_of(capsys, "search", "--index", out, "--model", model_dir, TEXTS[17])
    assert str(out / "hnsw.faiss") in line and "cosines beyond [-1, 1]" in line, line


def test_approximate_without_faiss_is_refused_before_embedding(
    model_dir, corpus, tmp_path, capsys, monkeypatch
):
    """Without FAISS, `sbert index --approximate` and `Index.build(approximate=True)` stop
    before the model encodes a text: no hour of encoding thrown away, no work folder left."""
    encoded = []
    encode = SentenceBert.encode

    def counted(self, *args, **kwargs):
        encoded.append(1)
        return encode(self, *args, **kwargs)

    monkeypatch.setattr(SentenceBert, "encode", counted)
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss now raises ImportError
    line = error_of(capsys, *index_args(model_dir, corpus, tmp_path / "ix", "--approximate"))
    assert "pip install faiss-cpu" in line, line
    assert not encoded and listing(tmp_path) == ["corpus.txt"]
    # From `sbert embed` vectors too: said before the (here missing) folder is read.
    line = error_of(capsys, "index", "--model", model_dir, "--vectors", tmp_path / "emb",
                    "--out", tmp_path / "ix", "--approximate")  # fmt: skip
    assert "pip install faiss-cpu" in line, line
    with pytest.raises(sbert.ConfigError, match="pip install faiss-cpu"):
        Index.build(SentenceBert.from_pretrained(model_dir), TEXTS, approximate=True)
    assert not encoded


def test_index_json_keeps_no_absolute_path_and_follows_its_model_only_nearby(
    model_dir, corpus, tmp_path, capsys
):
    project = tmp_path / "project"
    model = shutil.copytree(model_dir, project / "runs" / "model")
    out = project / "ix"
    assert cli.main(index_args(model, corpus, out)) == 0
    record = (out / "index.json").read_text()
    assert str(tmp_path) not in record
    settings = json.loads(record)
    assert settings["model"]["name"] == "../runs/model"
    assert settings["corpus"]["path"] == "../../corpus.txt"
    capsys.readouterr()
    assert cli.main(["search", "--index", str(out), TEXTS[3]]) == 0  # found beside it
    assert capsys.readouterr().out.splitlines()[0].endswith("[id 3]")
    moved = shutil.copytree(project, tmp_path / "moved")  # the two moved together still work
    assert Index.load(moved / "ix").model.source == str(moved / "runs" / "model")
    (out / MANIFEST).unlink()  # index.json is edited below, as a hostile index would be
    for name in (str(model_dir), "../../../../../../etc", "../../" + model_dir.parent.name):
        settings["model"]["name"] = name
        (out / "index.json").write_text(json.dumps(settings))
        line = error_of(capsys, "search", "--index", out, TEXTS[3])
        assert str(out / "index.json") in line and "pass the model with --model" in line, line
    assert cli.main(["search", "--index", str(out), "--model", str(model), TEXTS[3]]) == 0


def test_an_index_built_without_name_from_a_loaded_model_loads_again(model_dir, tmp_path):
    model = sbert.load(shutil.copytree(model_dir, tmp_path / "model"))
    sbert.Index.build(model, TEXTS[:20]).save(tmp_path / "ix")  # no name=
    assert sbert.Index.load(tmp_path / "ix").search(TEXTS[4], k=1)[0].id == 4


# Runs `sbert index` with writes past 96 KB failing (EFBIG, as a full disk fails them with
# ENOSPC): the 120 x 32 float32 vectors.npy is 15 KB, so the limit is set in the test.
LIMITED_WRITES = r"""
import resource, sys
from sbert import cli
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
sys.exit(cli.main(sys.argv[2:]))
"""


def test_a_failed_write_names_the_file(model_dir, corpus, tmp_path):
    out = tmp_path / "ix"
    # Chunks of 50 x 32 float32 fit under 8 KB; the index's 120-row vectors.npy does not.
    result = subprocess.run(
        [sys.executable, "-c", LIMITED_WRITES, str(8 << 10), *index_args(model_dir, corpus, out)],
        capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(out / "vectors.npy") in lines[0], result.stderr
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    shutil.rmtree(tmp_path / ".ix.partial")  # its chunks would be reused: start over
    result = subprocess.run(  # a chunk that does not fit: named too
        [sys.executable, "-c", LIMITED_WRITES, str(4 << 10), *index_args(model_dir, corpus, out)],
        capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "chunk-000000.npy" in result.stderr, result.stderr
