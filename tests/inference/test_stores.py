"""The LanceDB store: exact mode finds the numpy index's top-k, approximate mode (IVF-PQ)
finds most of it and more with more probes; `sbert index --vectors DIR --store lancedb` and
`sbert search` as a user runs them; the server's POST /search answers from a store as from an
index; bad input is one line, exit 2, nothing written."""

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
from sbert.errors import ConfigError
from sbert.inference.index import Index
from sbert.inference.stores import LanceStore, ann_settings, open_index

pytest.importorskip("lancedb")
pytest.importorskip("pyarrow")

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
TEXTS = [f"a sentence numbered {i} about {t}" for i, t in enumerate(["cats", "dogs", "rain"] * 40)]

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(seed: int) -> SentenceBert:
    torch.manual_seed(seed)
    return SentenceBert.from_config("tiny").eval()


def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    """Unit vectors around 50 random centres: neighbours that mean something, like embeddings."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).standard_normal((50, dim))
    x = centres[rng.integers(0, 50, n)] + 0.8 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def recall_at_10(ids: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, truth, strict=True)]))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("models") / "tiny"
    tiny(0).save(path)
    return path


def sbert(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sbert", *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, env=ENV, timeout=300)  # fmt: skip


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_ann_settings_follow_lancedbs_advice():
    assert ann_settings(4095, 384) is None  # too small: scanned exactly
    big = ann_settings(1_000_000, 384)
    assert big == {"type": "IVF_PQ", "distance": "dot", "num_partitions": 1000,
                   "num_sub_vectors": 24}  # fmt: skip
    assert ann_settings(10_000, 32)["num_partitions"] == 39  # N / 256 rows a partition, at most
    assert ann_settings(10_000, 40)["num_sub_vectors"] == 5  # dim / 8 when 16 does not divide


def test_exact_mode_equals_the_numpy_index_and_approximate_finds_most(tmp_path):
    model = tiny(0)
    vectors, queries = clustered(6000, 32, 1), clustered(40, 32, 2)
    texts = [f"t{i}" for i in range(len(vectors))]
    blocks = [(a, texts[a : a + 2500], vectors[a : a + 2500]) for a in range(0, 6000, 2500)]
    store = LanceStore.build(tmp_path / "st", model, blocks, len(vectors), 32)
    assert store.approximate and store.info["ann"]["num_partitions"] == 23
    index = Index(vectors, texts, {"name": None, "fingerprint": model.fingerprint()}, model)
    truth_scores, truth = index.search_vectors(queries, 10)

    exact = open_index(tmp_path / "st", model, exact=True)
    scores, ids = exact.search_vectors(queries, 10)
    assert np.array_equal(ids, truth)
    np.testing.assert_allclose(scores, truth_scores, atol=1e-5)
    hits = exact.hits(queries[:2], 3)
    assert [[(h.id, h.text) for h in row] for row in hits] == [
        [(int(i), f"t{i}") for i in row] for row in truth[:2, :3]
    ]

    recalls = []  # one partition and PQ's order, then every partition and 2,000 rescored
    for nprobes, refine in ((1, 1), (23, 200)):
        approximate = open_index(tmp_path / "st", model, nprobes=nprobes, refine_factor=refine)
        recalls.append(recall_at_10(approximate.search_vectors(queries, 10)[1], truth))
    assert recalls[0] < 0.9 and recalls[1] >= 0.98, recalls
    # One probed partition holds some 260 rows: asked for 1,000, the exact scan answers
    narrow = open_index(tmp_path / "st", model, nprobes=1, refine_factor=1)
    assert np.array_equal(narrow.search_vectors(queries[:3], 1000)[1],
                          exact.search_vectors(queries[:3], 1000)[1])  # fmt: skip
    assert all(len(row) == 1000 for row in narrow.hits(queries[:3], 1000))


def test_more_hits_than_the_store_holds_gives_every_row_once(tmp_path):
    """k past the store's size: each of its rows once, best first, as the numpy index answers;
    never slots padded with id -1 (the last text, to a caller indexing texts) and -inf."""
    model = tiny(0)
    vectors, queries = clustered(40, 32, 1), clustered(3, 32, 2)
    texts = [f"t{i}" for i in range(len(vectors))]
    store = LanceStore.build(tmp_path / "st", model, [(0, texts, vectors)], len(vectors), 32)
    scores, ids = store.search_vectors(queries, 500)
    assert ids.shape == scores.shape == (3, 40)
    assert all(sorted(row) == list(range(40)) for row in ids.tolist())
    np.testing.assert_allclose(scores, np.einsum("qh,qkh->qk", queries, vectors[ids]), atol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-6).all()
    assert [len(row) for row in store.hits(queries, 500)] == [40, 40, 40]


def test_store_command_lines_answer_as_the_numpy_index(model_dir, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(TEXTS) + "\n")
    emb, ix, st = tmp_path / "emb", tmp_path / "ix", tmp_path / "st"
    assert cli.main(["embed", "--model", str(model_dir), "--corpus", str(corpus), "--out",
                     str(emb)]) == 0  # fmt: skip
    assert cli.main(["index", "--model", str(model_dir), "--vectors", str(emb), "--out",
                     str(ix)]) == 0  # fmt: skip
    made = sbert("index", "--model", model_dir, "--vectors", emb, "--out", st, "--store", "lancedb")
    assert made.returncode == 0, made.stderr
    assert "LanceDB table" in made.stdout
    info = json.loads((st / "index.json").read_text())
    assert info["store"] == "lancedb" and info["count"] == len(TEXTS) and info["ann"] is None
    assert info["model"]["fingerprint"] == tiny(0).fingerprint()
    assert str(tmp_path) not in (st / "index.json").read_text()
    queries = tmp_path / "queries.txt"
    queries.write_text("cats\nrain on dogs\n")
    for folder in (ix, st):
        found = sbert("search", "--index", folder, "--model", model_dir, "--queries", queries,
                      "-k", 5, "--output", folder.with_suffix(".jsonl"))  # fmt: skip
        assert found.returncode == 0, found.stderr
    a, b = ([json.loads(x) for x in f.with_suffix(".jsonl").read_text().splitlines()]
            for f in (ix, st))  # fmt: skip
    assert [[h["id"] for h in q["hits"]] for q in a] == [[h["id"] for h in q["hits"]] for q in b]
    assert [[h["text"] for h in q["hits"]] for q in a] == [
        [h["text"] for h in q["hits"]] for q in b
    ]
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose([h["score"] for h in x["hits"]],
                                   [h["score"] for h in y["hits"]], atol=1e-5)  # fmt: skip

    # bad input: one line, exit 2, nothing written
    other = tmp_path / "other"
    tiny(1).save(other)
    line = one_line_error(sbert("search", "--index", st, "--model", other, "cats"))
    assert "fingerprint" in line and "another model" in line
    line = one_line_error(sbert("index", "--model", model_dir, "--corpus", corpus, "--out",
                                tmp_path / "x", "--store", "lancedb"))  # fmt: skip
    assert "--vectors" in line
    line = one_line_error(sbert("search", "--index", st, "--model", model_dir, "cats",
                                "--ef-search", 64))  # fmt: skip
    assert "--nprobes" in line
    line = one_line_error(sbert("search", "--index", st, "--model", model_dir, "cats",
                                "--nprobes", 50, "--refine-factor", 3))  # fmt: skip
    assert "--nprobes and --refine-factor tune an IVF-PQ search; this store of" in line
    store = open_index(st, tiny(0))  # the numpy index's checks, not LanceDB's own errors
    for k, words in ((0, "k must be at least 1"), (2.5, "k must be a whole number")):
        with pytest.raises(ConfigError, match=words):
            store.search("cats", k=k)  # k=0 gave [], -1 and 2.5 errors from inside LanceDB
    with pytest.raises(ConfigError, match="a query vector holds NaN or Inf"):
        store.search_vectors(np.full((1, 32), np.nan, np.float32))  # a hit of id -1
    with pytest.raises(ConfigError, match=r"shape \(1, 768\): this index holds 32-dim"):
        store.search_vectors(np.ones((1, 768), np.float32))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "corpus.txt", "emb", "ix", "ix.jsonl", "other", "queries.txt", "st", "st.jsonl"
    ]  # fmt: skip


def test_without_lancedb_the_store_names_the_install(model_dir, tmp_path, monkeypatch, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(TEXTS[:5]) + "\n")
    emb = tmp_path / "emb"
    assert cli.main(["embed", "--model", str(model_dir), "--corpus", str(corpus), "--out",
                     str(emb)]) == 0  # fmt: skip
    capsys.readouterr()
    monkeypatch.setitem(sys.modules, "lancedb", None)  # import lancedb now fails
    assert cli.main(["index", "--model", str(model_dir), "--vectors", str(emb), "--out",
                     str(tmp_path / "st"), "--store", "lancedb"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install lancedb" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt", "emb"]


def test_the_server_answers_search_from_a_store(tmp_path):
    pytest.importorskip("starlette")
    from starlette.testclient import TestClient

    from sbert import MultiTaskModel
    from sbert.serve.app import create_app
    from sbert.serve.config import ServeConfig
    from sbert.serve.server import build_state

    torch.manual_seed(0)
    model = MultiTaskModel(SentenceBert.from_config("tiny"), ["no", "yes"], (0.0, 5.0)).eval()
    vectors = model.encode(TEXTS, normalize=True)
    LanceStore.build(tmp_path / "st", model, [(0, TEXTS, vectors)], len(TEXTS), model.dim)
    Index(vectors, TEXTS, {"name": None, "fingerprint": model.fingerprint()}, model).save(
        tmp_path / "ix"
    )
    answers = []
    for folder in ("ix", "st"):
        config = ServeConfig(model="tiny", quiet=True, index=str(tmp_path / folder))
        with TestClient(create_app(build_state(config, model))) as client:
            answer = client.post("/search", json={"queries": ["cats", "dogs"], "k": 4})
            assert answer.status_code == 200, answer.text
            answers.append(answer.json())
            info = client.get("/info").json()["index"]
            assert info == {"texts": len(TEXTS), "precision": "fp32"}
    ids = [[[h["id"] for h in q["hits"]] for q in answer] for answer in answers]
    assert ids[0] == ids[1] and [len(x) for x in ids[0]] == [4, 4], answers
    assert answers[1][0]["hits"][0]["text"] in TEXTS
    for x, y in zip(answers[0], answers[1], strict=True):
        np.testing.assert_allclose([h["score"] for h in x["hits"]],
                                   [h["score"] for h in y["hits"]], atol=1e-5)  # fmt: skip
