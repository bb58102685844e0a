"""The search index: exact search against sentence-transformers' `util.semantic_search`,
quantised search with rescoring, save/load, refusal of another model, resumable indexing after
a real SIGKILL, and `sbert index` / `sbert search` as a user runs them."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sentence_transformers import util

from sbert import CheckpointError, ConfigError, SentenceBert
from sbert.inference.index import Index, int8_codes, model_identity
from sbert.inference.topk import chunked_topk, top_k

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
TOPICS = ["cats", "dogs", "cars", "food", "music", "rain", "chess"]
TEXTS = [f"a sentence numbered {i} about {TOPICS[i % 7]}" for i in range(300)]


def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    """Unit vectors around 50 random centres: neighbours that mean something, like embeddings."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).standard_normal((50, dim))
    x = centres[rng.integers(0, 50, n)] + 0.8 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def recall_at_10(ids: np.ndarray, truth: np.ndarray) -> float:
    """The mean share of each query's true top 10 that `ids` found."""
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, truth, strict=True)]))


def tiny(seed: int) -> SentenceBert:
    torch.manual_seed(seed)
    return SentenceBert.from_config("tiny").eval()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, one_thread) -> Path:
    path = tmp_path_factory.mktemp("models") / "tiny"
    tiny(0).save(path)
    return path


@pytest.fixture(scope="module")
def other_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("models") / "other"
    tiny(1).save(path)
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


def test_exact_search_equals_semantic_search(one_thread):
    corpus, queries = clustered(5000, 48, 1), clustered(37, 48, 2)
    theirs = util.semantic_search(torch.from_numpy(queries), torch.from_numpy(corpus), top_k=10)
    want_ids = [[h["corpus_id"] for h in q] for q in theirs]
    want_scores = np.array([[h["score"] for h in q] for q in theirs])
    index = Index(corpus, [str(i) for i in range(len(corpus))], {"fingerprint": "-"})
    runs = [index.search_vectors(queries, 10)]  # one chunk: 39 blocks of 128, a tail of 8
    # The running top-k merged across many chunks: 333 rows (no whole blocks: the plain
    # path); 2,048 (16 blocks each, then 7, then the tail); query chunks of 8.
    for chunk_size in (333, 2048):
        runs.append(chunked_topk(queries, len(corpus), lambda a, b: corpus[a:b], 10, chunk_size, 8))
    for scores, ids in runs:
        assert ids.tolist() == want_ids
        np.testing.assert_allclose(scores, want_scores, atol=1e-6, rtol=0)


def test_an_empty_corpus_gives_no_hits():
    scores, ids = chunked_topk(np.ones((3, 8), np.float32), 0, lambda a, b: None, 10)
    assert scores.shape == ids.shape == (3, 0)


@pytest.mark.parametrize(("width", "k"), [(128 * 40, 10), (128 * 40, 1), (128 * 3, 5), (1000, 7)])
def test_top_k_by_block_maxima_equals_a_full_sort(width, k):
    """Rows of whole blocks are searched by their blocks' maxima; the best entries crowded into
    one block, or spread one per block, must come out as a full sort gives them."""
    rng = np.random.default_rng(width + k)
    scores = rng.standard_normal((64, width)).astype(np.float32)
    scores[0, 128:138] += 10  # row 0: the best ten in one block
    scores[1, ::128] += 10  # row 1: the best in every block's first column
    values, columns = top_k(scores, k)
    want = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    assert columns.tolist() == want.tolist()
    np.testing.assert_array_equal(values, np.take_along_axis(scores, want, 1))


def stretched(vectors: np.ndarray) -> np.ndarray:
    """Unit vectors whose first 8 dimensions spread 10x wider: int8's per-dimension scales."""
    x = vectors.copy()
    x[:, :8] *= 10
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize(
    ("precision", "dim", "shape", "min_recall"),
    [
        ("int8", 64, clustered, 0.97),
        ("int8", 64, lambda *a: stretched(clustered(*a)), 0.97),
        ("binary", 64, clustered, 0.85),
        ("binary", 60, clustered, 0.85),  # not a whole number of bytes
    ],
)
def test_quantised_search_rescores_with_fp32(one_thread, precision, dim, shape, min_recall):
    corpus, queries = shape(4000, dim, 3), shape(50, dim, 4)
    exact = Index(corpus, ["t"] * len(corpus), {"fingerprint": "-"})
    index = Index(corpus, ["t"] * len(corpus), {"fingerprint": "-"}, precision=precision)
    index._derive()
    _, truth = exact.search_vectors(queries, 10)
    scores, ids = index.search_vectors(queries, 10)
    assert recall_at_10(ids, truth) >= min_recall
    # The returned scores are the fp32 cosines of the returned ids, best first.
    np.testing.assert_allclose(scores, np.einsum("qh,qkh->qk", queries, corpus[ids]), atol=1e-6)
    assert (np.diff(scores, axis=1) <= 0).all()


def test_an_int8_index_codes_added_texts_on_its_own_scales(model_dir):
    index = Index.build(SentenceBert.from_pretrained(model_dir), TEXTS[:100], precision="int8")
    scales = index.scales.copy()
    index.add(TEXTS[100:150])
    np.testing.assert_array_equal(index.scales, scales)
    np.testing.assert_array_equal(index.codes[100:], int8_codes(index.vectors[100:], scales)[0])


def test_int8_codes_round_to_the_nearest_step():
    """Codes are round(x / scale), scale = max |x| / 127 per dimension: truncating toward zero
    would shift every score by up to a whole step."""
    vectors = np.array([[1.0, -0.5], [0.25, 0.2], [-0.1, -0.33]], np.float32)
    codes, scales = int8_codes(vectors)
    np.testing.assert_allclose(scales, [1 / 127, 0.5 / 127], rtol=1e-6)
    # 31.75 -> 32, 50.8 -> 51, -12.7 -> -13, -83.82 -> -84 (truncated: 31, 50, -12, -83)
    assert codes.tolist() == [[127, -127], [32, 51], [-13, -84]]
    assert codes.dtype == np.int8


def test_equal_scores_rank_lowest_id_first(one_thread):
    """Twenty copies of one vector tie exactly: every kind of index ranks them by id, as
    sbert/inference/retrieval.py does (a top-k's partition leaves them in any order)."""
    corpus = clustered(300, 16, 7)
    copies = np.arange(5, 300, 15)
    corpus[copies] = corpus[5]
    kinds = [("fp32", False), ("int8", False), ("binary", False)]
    if importlib.util.find_spec("faiss") is not None:
        kinds.append(("fp32", True))
    for precision, approximate in kinds:
        index = Index(corpus, ["t"] * len(corpus), {"fingerprint": "-"}, precision=precision,
                      approximate=approximate)  # fmt: skip
        index._derive()
        scores, ids = index.search_vectors(corpus[[5, 5]], len(copies))
        assert np.unique(scores).size == 1, (precision, approximate)  # the copies tie
        assert ids.tolist() == [copies.tolist()] * 2, (precision, approximate)


def test_build_save_load_add_and_search(tmp_path, model_dir):
    model = SentenceBert.from_pretrained(model_dir)
    beside = shutil.copytree(model_dir, tmp_path / "model")  # in the folder holding the index
    index = Index.build(model, TEXTS[:200], name=str(beside), chunk_size=64)
    index.save(tmp_path / "idx")
    loaded = Index.load(tmp_path / "idx")  # finds its model from the recorded name
    np.testing.assert_array_equal(loaded.vectors, index.vectors)
    hits = loaded.search(TEXTS[17], k=3)
    assert hits[0].id == 17 and hits[0].text == TEXTS[17]
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    loaded.add(TEXTS[200:])
    assert loaded.search([TEXTS[250]], k=1)[0][0].id == 250
    # A damaged index file is named on load.
    with open(tmp_path / "idx" / "vectors.npy", "r+b") as f:
        f.seek(-1, 2)
        f.write(b"\x01")
    with pytest.raises(CheckpointError, match="vectors.npy"):
        Index.load(tmp_path / "idx")


def test_a_text_that_cannot_be_saved_is_refused_before_it_is_embedded(model_dir, monkeypatch):
    """An unpaired surrogate (os.fsdecode of a bad name) is no UTF-8: save would fail after
    the whole corpus was embedded, with a bare UnicodeEncodeError."""
    model = SentenceBert.from_pretrained(model_dir)
    index = Index.build(model, TEXTS[:4])
    monkeypatch.setattr(SentenceBert, "encode", lambda *a, **k: pytest.fail("embedded"))
    for call in (lambda t: Index.build(model, t), index.add):
        with pytest.raises(ConfigError, match=r"texts\[1\] holds an unpaired surrogate"):
            call(["fine", "bad \udcff name"])


def test_an_index_refuses_another_model(tmp_path, model_dir, other_dir):
    model = SentenceBert.from_pretrained(model_dir)
    assert model_identity(model) == model_identity(SentenceBert.from_pretrained(model_dir))
    Index.build(model, TEXTS[:20], name=str(model_dir)).save(tmp_path / "idx")
    with pytest.raises(CheckpointError, match="built with model"):
        Index.load(tmp_path / "idx", SentenceBert.from_pretrained(other_dir))
    line = one_line_error(sbert("search", "--index", tmp_path / "idx", "--model", other_dir, "q"))
    assert "built with model" in line


def test_approximate_index_finds_the_neighbours(one_thread):
    pytest.importorskip("faiss")
    corpus, queries = clustered(3000, 32, 5), clustered(40, 32, 6)
    exact = Index(corpus, ["t"] * len(corpus), {"fingerprint": "-"})
    approx = Index(corpus, ["t"] * len(corpus), {"fingerprint": "-"}, approximate=True)
    approx._derive()
    _, truth = exact.search_vectors(queries, 10)
    _, ids = approx.search_vectors(queries, 10)
    assert recall_at_10(ids, truth) > 0.9


def test_a_wider_search_beam_finds_more_of_the_true_neighbours(one_thread):
    pytest.importorskip("faiss")
    # Uniform random directions have no clusters to guide the graph: a hard case for HNSW.
    rng = np.random.default_rng(0)
    corpus, queries = (rng.standard_normal((n, 64)).astype(np.float32) for n in (2000, 40))
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    exact = Index(corpus, ["t"] * len(corpus), {"fingerprint": "-"})
    approx = Index(corpus, ["t"] * len(corpus), {"fingerprint": "-"}, approximate=True)
    approx._derive()
    _, truth = exact.search_vectors(queries, 10)

    def recall(ef_search):
        _, ids = approx.search_vectors(queries, 10, ef_search)
        return recall_at_10(ids, truth)

    assert recall(10) < 0.95  # a beam of k misses some (0.725 when written)
    assert recall(len(corpus)) == 1.0  # a beam as wide as the corpus misses none
    with pytest.raises(ConfigError, match="at least 1"):
        approx.search_vectors(queries, 10, 0)
    with pytest.raises(ConfigError, match="--ef-search"):  # the flag, for sbert serve too
        approx.search_vectors(queries, 10, -5)
    with pytest.raises(ConfigError, match="approximate index"):
        exact.search_vectors(queries, 10, 64)


def test_a_query_the_graph_answers_short_is_answered_by_the_exact_scan(one_thread):
    """FAISS fills the slots its HNSW beam cannot reach with id -1 and score -3.4e38, which
    read as the last text: 150 copies of one vector among 200 leave queries short of k = 100.
    Those queries are answered by the exact scan: k real hits, the exact index's."""
    pytest.importorskip("faiss")
    rng = np.random.default_rng(0)
    corpus = rng.standard_normal((200, 8)).astype(np.float32)
    corpus[50:] = corpus[0]
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    queries = rng.standard_normal((10, 8)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    texts = [f"t{i}" for i in range(len(corpus))]
    approx = Index(corpus, texts, {"fingerprint": "-"}, approximate=True)
    approx._derive()
    approx.graph.hnsw.efSearch = 128  # the default search beam, as search_vectors sets it
    short = (approx.graph.search(queries, 100)[1] < 0).any(axis=1)
    assert short.any()  # the graph alone pads these queries' hits with -1
    want_scores, want_ids = Index(corpus, texts, {"fingerprint": "-"}).search_vectors(queries, 100)
    scores, ids = approx.search_vectors(queries, 100)
    assert ids.shape == (10, 100) and (ids >= 0).all()
    np.testing.assert_array_equal(ids[short], want_ids[short])
    np.testing.assert_allclose(scores[short], want_scores[short], atol=1e-6)
    # Every row: a hit's score is its text's cosine, and no text comes twice.
    np.testing.assert_allclose(scores, np.einsum("qh,qkh->qk", queries, corpus[ids]), atol=1e-6)
    assert all(len(set(row)) == 100 for row in ids.tolist())
    hits = approx.hits(queries, 100)
    assert [[(h.id, h.text) for h in row] for row in hits] == [
        [(i, f"t{i}") for i in row] for row in ids.tolist()
    ]


def test_building_the_graph_says_so_first(model_dir, capsys):
    pytest.importorskip("faiss")
    model = SentenceBert.from_pretrained(model_dir)
    Index.build(model, TEXTS[:30], approximate=True, show_progress_bar=True)
    assert "building the HNSW graph over 30 vectors" in capsys.readouterr().err


def test_more_hits_or_a_wider_beam_than_the_corpus_has_gives_every_text(one_thread):
    """k or ef_search past the corpus (or past a C int, which faiss's beam is): all texts,
    at once, from either kind of index."""
    pytest.importorskip("faiss")
    corpus, queries = clustered(50, 8, 0), clustered(2, 8, 1)
    for approximate in (False, True):
        index = Index(corpus, ["t"] * 50, {"fingerprint": "-"}, approximate=approximate)
        if approximate:
            index._derive()  # the HNSW graph (built lazily otherwise)
        beam = 3_000_000_000 if approximate else None
        scores, ids = index.search_vectors(queries, 2**31, beam)
        assert ids.shape == (2, 50) and sorted(ids[0]) == list(range(50))


def test_approximate_without_faiss_names_the_install_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss now raises ImportError
    index = Index(clustered(10, 8, 0), ["t"] * 10, {"fingerprint": "-"}, approximate=True)
    with pytest.raises(ConfigError, match="pip install faiss-cpu"):
        index._derive()


def test_a_killed_index_run_resumes_where_it_stopped(tmp_path, model_dir):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(TEXTS) + "\n")
    args = (
        "index",
        "--model",
        model_dir,
        "--corpus",
        corpus,
        "--out",
        tmp_path / "idx",
        "--chunk-size",
        64,
    )
    # SIGKILL just before the third chunk file is written: two chunks are on disk.
    killed = sbert(*args, trap=("sbert.inference.index:atomic_write_bytes", "1", "kill",
                                "chunk-000002"))  # fmt: skip
    assert killed.returncode == -9
    assert not (tmp_path / "idx").exists()
    assert len(list((tmp_path / ".idx.partial").glob("chunk-*.npy"))) == 2
    resumed = sbert(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming: 128 of 300 texts" in resumed.stderr
    assert not (tmp_path / ".idx.partial").exists()
    index = Index.load(tmp_path / "idx", SentenceBert.from_pretrained(model_dir))
    fresh = Index.build(SentenceBert.from_pretrained(model_dir), TEXTS, chunk_size=64)
    np.testing.assert_allclose(index.vectors, fresh.vectors, atol=1e-6, rtol=0)
    assert index.texts == TEXTS


def test_index_and_search_command_lines(tmp_path, model_dir):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": i, "body": t}) + "\n" for i, t in enumerate(TEXTS)))
    result = sbert(
        "index",
        "--model",
        model_dir,
        "--corpus",
        corpus,
        "--column",
        "body",
        "--out",
        tmp_path / "idx",
        "--precision",
        "int8",
    )
    assert result.returncode == 0, result.stderr
    queries = tmp_path / "q.txt"
    queries.write_text(f"{TEXTS[5]}\n{TEXTS[123]}\n")
    result = sbert(
        "search",
        "--index",
        tmp_path / "idx",
        "--model",  # the index records it, but outside the folder that holds the index
        model_dir,
        "--queries",
        queries,
        "-k",
        4,
        "--output",
        tmp_path / "hits.jsonl",
    )
    assert result.returncode == 0, result.stderr
    rows = [json.loads(x) for x in (tmp_path / "hits.jsonl").read_text().splitlines()]
    assert [r["query"] for r in rows] == [TEXTS[5], TEXTS[123]]
    for row, want in zip(rows, (5, 123), strict=True):
        assert len(row["hits"]) == 4 and set(row["hits"][0]) == {"id", "score", "text"}
        assert row["hits"][0]["id"] == want and row["hits"][0]["text"] == TEXTS[want]
    printed = sbert("search", "--index", tmp_path / "idx", "--model", model_dir, TEXTS[9], "-k", 2)
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.splitlines()[0].split()[1:] == ["1.0000", *TEXTS[9].split(), "[id", "9]"]


def test_approximate_index_and_search_beam_command_lines(tmp_path, model_dir):
    pytest.importorskip("faiss")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(t + "\n" for t in TEXTS))
    args = ("--model", model_dir, "--corpus", corpus, "--out", tmp_path / "idx")
    built = sbert("index", *args, "--approximate")
    assert built.returncode == 0, built.stderr
    assert "approximate" in built.stdout
    found = sbert("search", "--index", tmp_path / "idx", "--model", model_dir, TEXTS[42], "-k", 3,
                  "--ef-search", 300)  # fmt: skip
    assert found.returncode == 0, found.stderr
    assert found.stdout.splitlines()[0].endswith("[id 42]")


def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, model_dir):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("one\n\nthree\n")  # a blank line: ids would be ambiguous
    line = one_line_error(
        sbert("index", "--model", model_dir, "--corpus", corpus, "--out", tmp_path / "idx")
    )
    assert "corpus.txt:2" in line
    Index.build(SentenceBert.from_pretrained(model_dir), ["one", "two"], name=str(model_dir)).save(
        tmp_path / "idx"
    )
    missing, out = tmp_path / "missing.txt", tmp_path / "h.jsonl"
    line = one_line_error(
        sbert("search", "--index", tmp_path / "idx", "--queries", missing, "--output", out)
    )
    assert "missing.txt" in line
    line = one_line_error(sbert("search", "--index", tmp_path, "q"))
    assert "not an index folder" in line
    line = one_line_error(
        sbert("search", "--index", tmp_path / "idx", "--model", model_dir, "q", "--ef-search", 64)
    )
    assert "--ef-search" in line and "exact" in line
    line = one_line_error(
        sbert("search", "--index", tmp_path / "idx", "--model", model_dir, "q", "--ef-search", -5)
    )
    assert "--ef-search must be at least 1" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt", "idx"]
