"""Semantic search: a corpus embedded once into an on-disk index, queried by meaning.

Vectors are L2-normalised, so the inner product is the cosine similarity (SBERT §3 compares
sentences by cosine). Search is exact by default: the corpus is scanned in chunks of rows, one
matrix product and a top-k per chunk, the running top-k merged, which keeps memory bounded and
needs nothing beyond numpy (an ONNX export indexes and searches without torch). Two ways to go
below the fp32 cost:

- `precision="int8" | "binary"`: the scan runs over quantised copies (int8 per dimension, 4x
  smaller; one sign bit per dimension, 32x smaller), then the best `rescore` x k candidates are
  rescored with the fp32 vectors, read from a memory-mapped file (Yamada et al., 2021, "Efficient
  Passage Retrieval with Hashing", rerank binary candidates with full vectors);
- `approximate=True`: a FAISS HNSW graph (Malkov & Yashunin, 2018), chosen over usearch by
  measuring (docs/performance.md, bench/search.py); an optional dependency, `pip install faiss-cpu`.

An index folder: index.json (model identity, settings, corpus), vectors.npy (fp32, N x H),
texts.jsonl (one JSON string a line: hit ids are their 0-based positions), the quantised codes
or the HNSW graph when asked for, and manifest.json; written atomically (fileio.atomic_dir).
`build` embeds in chunks; with `work_dir` each chunk is written there as it is done, so a killed
run resumes from the last complete chunk.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import re
import shutil
import stat
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sbert.choices import PRECISIONS
from sbert.errors import CheckpointError, ConfigError, SbertError, whole_number
from sbert.fileio import (
    atomic_dir,
    atomic_write_bytes,
    json_field,
    read_json,
    regular_file,
    sha256,
    verify_manifest,
)
from sbert.folders import INDEX_RECORD, PACKAGED, is_index
from sbert.inference.encoder import Encoder
from sbert.inference.load import load
from sbert.inference.topk import best_k, chunked_topk, ties_by_id
from sbert.tokenizer import text_list

INDEX, VECTORS, TEXTS, CODES, SCALES, GRAPH = (
    INDEX_RECORD,
    "vectors.npy",
    "texts.jsonl",
    "codes.npy",
    "int8_scales.npy",
    "hnsw.faiss",
)
FORMAT = 1
# Candidates rescored with fp32 vectors per wanted hit, for int8/binary (sentence-transformers'
# quantization example rescores 4x too). Recall@10 against fp32 measured: docs/performance.md.
RESCORE = 4
# Index vectors are unit length: a row whose norm is further than this from 1 is damaged (four
# flipped bytes of a float32 can make a score of 1e21 that tops every query).
NORM_TOLERANCE = 1e-3
# HNSW: 32 neighbours a node, a build beam of 128 and a search beam of 128 (bench/search.py).
# FAISS's default build beam, 40, makes a graph that caps recall@10 at 0.94 on 1M vectors even
# with a search beam of 1,024; 128 reaches 0.997 at 128 for twice the build time
# (docs/performance.md, search speed). A wider search beam, `ef_search`, trades query speed for
# recall.
HNSW_M, HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH = 32, 128, 128


@dataclass(frozen=True)
class Hit:
    id: int  # 0-based position of the text in the corpus
    score: float  # cosine similarity
    text: str


def model_identity(model: Encoder, name: str | None = None) -> dict:
    """Name and fingerprint (fingerprint.py) of a PyTorch model or an ONNX export: vectors from
    two models with different fingerprints must not be compared. The name is a packaged
    checkpoint's, or a folder's absolute path (index.json records it relative to the index)."""
    if name is not None and str(name) not in PACKAGED:
        name = os.path.realpath(name)
    return {"name": None if name is None else str(name), "fingerprint": model.fingerprint()}


def recorded_name(name: str | None, index: Path) -> str | None:
    """How index.json names the model: a packaged name as it is, a folder relative to the
    index, so that no absolute path of the machine that built it is kept."""
    if name is None or name in PACKAGED:
        return name
    return os.path.relpath(name, os.path.realpath(index))


def recorded_model(name: str | None, index: Path) -> str:
    """The model an index records, to load when none is given: a packaged name, or a folder
    that its relative path finds inside the folder holding the index (`runs/` holding both
    `runs/my-index` and `runs/demo/final`). Any other path (absolute, or leading further out)
    is refused: an index must not make `sbert search` open folders the user never named."""
    if not name:
        raise ConfigError(
            f"{index}: the index does not record its model (Index.build without name=, from a "
            f"model not loaded from a folder): pass it (--model, or Index.load(path, model))"
        )
    if name in PACKAGED:
        return name
    holder = os.path.realpath(Path(index).resolve().parent)
    target = os.path.realpath(os.path.join(os.path.realpath(index), name))
    if os.path.isabs(name) or os.path.commonpath([holder, target]) != holder:
        raise ConfigError(
            f"{index / INDEX}: records its model as {name!r}, outside the folder that holds the "
            f"index; an index follows its model only there: pass the model with --model"
        )
    return target


def int8_codes(vectors: np.ndarray, scales: np.ndarray | None = None):
    """Symmetric per-dimension int8 codes: x ~ code * scale, scale = max |x| / 127 over the
    corpus (values beyond a later add's range are clipped)."""
    if scales is None:
        # No corpus yet: any unit vector's components lie in [-1, 1], so 1 / 127 covers them.
        largest = np.abs(vectors).max(axis=0) if len(vectors) else np.ones(vectors.shape[1])
        scales = np.maximum(largest, 1e-12).astype(np.float32) / 127
    codes = np.clip(np.rint(vectors / scales), -127, 127).astype(np.int8)
    return codes, scales


def binary_codes(vectors: np.ndarray) -> np.ndarray:
    """One sign bit per dimension, packed 8 to a byte: (N, ceil(H / 8)) uint8."""
    return np.packbits(vectors > 0, axis=1)


def faiss_module(why: str = "approximate search needs FAISS"):
    """faiss, or one line naming the install. `sbert index --approximate` and
    `Index.build(..., approximate=True)` ask before embedding: failing after an hour of
    encoding would waste it and leave a work folder behind."""
    try:
        import faiss
    except ImportError:
        raise ConfigError(f"{why}: pip install faiss-cpu") from None
    return faiss


def _hnsw(vectors: np.ndarray, show_progress_bar: bool = False):
    faiss = faiss_module()
    graph = faiss.IndexHNSWFlat(vectors.shape[1], HNSW_M, faiss.METRIC_INNER_PRODUCT)
    graph.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    if show_progress_bar:
        # One add() of all vectors: FAISS then inserts the upper levels of the whole corpus
        # first. Adding in blocks to drive a progress bar lowered recall@10 on 1M vectors
        # from 0.997 to 0.994 (docs/performance.md), so say what is coming instead.
        print(
            f"building the HNSW graph over {len(vectors):,} vectors (minutes a million; "
            f"no progress is shown until it is done)",
            file=sys.stderr,
        )
    graph.add(vectors)
    return graph


def savable_texts(texts: list[str]) -> list[str]:
    """`texts`, refused before they are embedded if one cannot be saved (texts.jsonl is UTF-8,
    which has no unpaired surrogate, as from os.fsdecode of a bad file name)."""
    for i, text in enumerate(texts):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ConfigError(f"texts[{i}] holds an unpaired surrogate: not UTF-8, so it "
                              f"could not be saved with the index") from None  # fmt: skip
    return texts


# ---------------------------------------------------------------------------------------------
# The index


def checked_queries(queries, k, dim: int) -> tuple[np.ndarray, int]:
    """Query vectors as (Q, dim) float32, finite, and `k` a whole number of at least 1: what
    every index and store searches with (a (1, 768) array must not read as 2 queries of 384)."""
    k = whole_number(k, "k")
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if queries.ndim == 1:
        queries = queries[None]
    if queries.ndim != 2 or queries.shape[1] != dim:
        raise ConfigError(f"query vectors of shape {queries.shape}: this index holds "
                          f"{dim}-dimensional vectors (Q, {dim})")  # fmt: skip
    if not np.isfinite(queries).all():
        raise ConfigError("a query vector holds NaN or Inf")
    return queries, k


class Index:
    """Normalised sentence vectors of a corpus, its texts, and the model that embedded them.

    Build with `Index.build(model, texts)` or `Index.load(path)`; `search(queries, k)`;
    `add(texts)`; `save(path)`.
    """

    def __init__(
        self,
        vectors: np.ndarray,
        texts: list[str],
        identity: dict,
        model: Encoder | None = None,
        precision: str = "fp32",
        approximate: bool = False,
        corpus: dict | None = None,
    ):
        if precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
        if approximate and precision != "fp32":
            raise ConfigError("--approximate searches fp32 vectors: drop --precision")
        self.vectors, self.texts, self.identity, self.model = vectors, texts, identity, model
        self.precision, self.approximate, self.corpus = precision, approximate, corpus or {}
        self.codes = self.scales = self.graph = None
        self.folder: Path | None = None  # where it was loaded from: how errors name its files

    def _derive(self, show_progress_bar: bool = False) -> None:
        """The quantised codes or the HNSW graph, from the fp32 vectors."""
        if self.precision == "int8":
            self.codes, self.scales = int8_codes(self.vectors)
        elif self.precision == "binary":
            self.codes = binary_codes(self.vectors)
        if self.approximate:
            self.graph = _hnsw(np.ascontiguousarray(self.vectors), show_progress_bar)

    def __len__(self) -> int:
        return len(self.texts)

    def _file(self, name: str) -> Path:
        return self.folder / name if self.folder is not None else Path(name)

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    @classmethod
    def build(
        cls,
        model: Encoder,
        texts: Sequence[str],
        *,
        name: str | None = None,
        precision: str = "fp32",
        approximate: bool = False,
        batch_size: int = 64,
        chunk_size: int = 8192,
        work_dir: str | Path | None = None,
        device=None,
        show_progress_bar: bool = False,
        corpus: dict | None = None,
    ) -> Index:
        """Embed `texts` with `model` (normalised) into an index (in memory: see `save`).

        Args:
            name: the model's folder or packaged name, recorded so `load` can find the model
                (default: the folder `sbert.load` read it from, when it did).
            work_dir: write each chunk of `chunk_size` vectors there as it is done, and reuse
                the chunks found there: a killed build resumes where it stopped. A folder from
                `work_folder`, locked for this build.
        """
        if approximate:
            faiss_module()  # before the corpus is embedded, not after
        if name is None:
            name = getattr(model, "source", None)
        index = cls(
            np.empty((0, model.dim), np.float32),
            [],
            model_identity(model, name),
            model,
            precision,
            approximate,
            corpus,
        )
        texts = savable_texts(text_list(texts, "texts"))
        index.vectors = embed_in_chunks(
            model,
            texts,
            index.identity,
            batch_size,
            chunk_size,
            work_dir,
            device,
            show_progress_bar,
        )
        index.texts = texts
        index._derive(show_progress_bar)
        return index

    @classmethod
    def from_vectors(
        cls,
        model: Encoder,
        vectors: np.ndarray,
        texts: list[str],
        *,
        name: str | None = None,
        precision: str = "fp32",
        approximate: bool = False,
        corpus: dict | None = None,
        show_progress_bar: bool = False,
    ) -> Index:
        """An index of vectors `model` embedded before (`sbert embed`: normalised, row i the
        vector of `texts[i]`), without encoding again; the caller checks the fingerprint."""
        if name is None:
            name = getattr(model, "source", None)
        index = cls(np.asarray(vectors, np.float32), list(texts), model_identity(model, name),
                    model, precision, approximate, corpus)  # fmt: skip
        index._derive(show_progress_bar)
        return index

    def add(self, texts: Sequence[str], batch_size: int = 64) -> None:
        """Embed more texts with the index's model and append them (ids continue)."""
        texts = savable_texts(text_list(texts, "texts"))
        vectors = self._encode(texts, batch_size)
        self.vectors = np.concatenate([np.asarray(self.vectors), vectors])
        self.texts = self.texts + texts
        if self.precision == "int8":
            codes, _ = int8_codes(vectors, self.scales)
            self.codes = np.concatenate([self.codes, codes])
        elif self.precision == "binary":
            self.codes = np.concatenate([self.codes, binary_codes(vectors)])
        if self.graph is not None:
            self.graph.add(vectors)

    def _encode(self, queries: list[str], batch_size: int = 32) -> np.ndarray:
        if self.model is None:
            raise ConfigError("this index has no model to encode text with: pass model=")
        return self.model.encode(queries, batch_size, normalize=True)

    def search(
        self,
        queries: str | Sequence[str],
        k: int = 10,
        batch_size: int = 32,
        ef_search: int | None = None,
    ) -> list[list[Hit]] | list[Hit]:
        """The k best texts for each query, best first (one list for a single string)."""
        single = isinstance(queries, str)
        vectors = self._encode([queries] if single else text_list(queries, "queries"), batch_size)
        hits = self.hits(vectors, k, ef_search)
        return hits[0] if single else hits

    def hits(
        self, queries: np.ndarray, k: int = 10, ef_search: int | None = None
    ) -> list[list[Hit]]:
        """The k best hits (id, score, text) for each normalised query vector: what
        `search_vectors` finds, with the texts (the server's /search answers these)."""
        scores, ids = self.search_vectors(queries, k, ef_search)
        return [
            [Hit(int(i), float(s), self.texts[i]) for s, i in zip(row_s, row_i, strict=True)]
            for row_s, row_i in zip(scores.tolist(), ids.tolist(), strict=True)
        ]

    def search_vectors(
        self, queries: np.ndarray, k: int = 10, ef_search: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scores and ids (Q, k) of the k nearest rows to each normalised query vector.

        `ef_search`: the HNSW search beam of an approximate index (default 128; never below
        k); wider finds more of the true neighbours, slower. An exact index refuses it.
        """
        queries, k = checked_queries(queries, k, self.dim)
        if ef_search is not None:
            if not self.approximate:
                raise ConfigError(
                    "ef_search (--ef-search) applies to an approximate index "
                    "(sbert index --approximate); this one is exact"
                )
            ef_search = whole_number(ef_search, "ef_search (--ef-search)")
        k = min(k, len(self))  # more hits than texts: all of them (no (Q, 2**31) arrays)
        if len(queries) == 0 or k == 0:  # no queries, or an empty index
            return np.empty((len(queries), k), np.float32), np.empty((len(queries), k), np.int64)
        if self.graph is not None:
            return ties_by_id(*self._graph_search(queries, k, ef_search))
        if self.precision == "fp32":
            return ties_by_id(*self._exact(queries, k))

        def block(a: int, b: int) -> np.ndarray:
            if self.precision == "int8":
                return self.codes[a:b].astype(np.float32) * self.scales
            # binary: the query's fp32 vector against the corpus's signs (asymmetric)
            bits = np.unpackbits(self.codes[a:b], axis=1, count=self.dim)
            return bits.astype(np.float32) * 2 - 1

        _, candidates = chunked_topk(queries, len(self), block, RESCORE * k)
        # Rescore: exact cosine of each query with its candidates' fp32 vectors, reading each
        # needed row once (from the memory-mapped file when loaded from disk).
        wanted = np.unique(candidates)
        rows = np.asarray(self.vectors[wanted], dtype=np.float32)
        check_rows(rows, wanted, self._file(VECTORS))  # memory-mapped: not checked at load
        gathered = rows[np.searchsorted(wanted, candidates)]  # (Q, C, H)
        exact = (gathered @ queries[:, :, None])[:, :, 0]  # (Q, C)
        return ties_by_id(*best_k(exact, candidates, min(k, exact.shape[1])))

    def _exact(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The exact top-k over the fp32 vectors, scanned in chunks."""
        vectors = np.asarray(self.vectors)
        return chunked_topk(queries, len(self), lambda a, b: vectors[a:b], k)

    def _graph_search(
        self, queries: np.ndarray, k: int, ef_search: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The HNSW graph's top-k (k at most the corpus size); a query it answers with fewer
        than k rows is answered by the exact scan instead."""
        # A beam wider than the corpus finds nothing more.
        self.graph.hnsw.efSearch = min(max(ef_search or HNSW_EF_SEARCH, k), len(self))
        scores, ids = self.graph.search(queries, k)
        # The graph keeps its own copy of the vectors, not scanned at load: a damaged one
        # shows as a cosine beyond [-1, 1]. Unfilled slots (id -1) hold -3.4e38: not a cosine.
        if not (np.abs(scores[ids >= 0]) <= 1 + NORM_TOLERANCE).all():
            raise CheckpointError(self._file(GRAPH), "damaged: gives cosines beyond [-1, 1]")
        # FAISS pads the slots its beam could not fill (many equal vectors, a k near the corpus
        # size) with id -1, which would read as the last text. The user asked for k hits and
        # the corpus has them: the exact scan of those queries finds them (what an exact index
        # costs, for the few queries that need it), rather than quietly fewer hits.
        short = np.flatnonzero((ids < 0).any(axis=1))
        if short.size:
            scores[short], ids[short] = self._exact(queries[short], k)
        return scores, ids

    # -- on disk --------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write the index folder atomically, with a manifest."""
        path = Path(path)
        identity = {**self.identity, "name": recorded_name(self.identity.get("name"), path)}
        corpus = dict(self.corpus)
        for key in ("path", "vectors"):  # where the texts came from: relative too, never followed
            if corpus.get(key):
                corpus[key] = os.path.relpath(corpus[key], os.path.realpath(path))
        with atomic_dir(path, is_index, "an index") as tmp:
            settings = {
                "format": FORMAT,
                "model": identity,
                "count": len(self),
                "dim": self.dim,
                "precision": self.precision,
                "approximate": "faiss-hnsw" if self.approximate else None,
                "corpus": corpus,
            }
            with _writing(path / INDEX):
                (tmp / INDEX).write_text(json.dumps(settings, indent=2))
            with _writing(path / VECTORS):
                np.save(tmp / VECTORS, np.asarray(self.vectors))
            with _writing(path / TEXTS), open(tmp / TEXTS, "w", encoding="utf-8") as f:
                f.writelines(json.dumps(t, ensure_ascii=False) + "\n" for t in self.texts)
            if self.codes is not None:
                with _writing(path / CODES):
                    np.save(tmp / CODES, self.codes)
            if self.scales is not None:
                with _writing(path / SCALES):
                    np.save(tmp / SCALES, self.scales)
            if self.graph is not None:
                import faiss

                with _writing(path / GRAPH):
                    faiss.write_index(self.graph, str(tmp / GRAPH))

    @classmethod
    def load(cls, path: str | Path, model: Encoder | str | Path | None = None) -> Index:
        """Read an index folder (checked against its manifest) with its model: `model` (loaded
        or a folder or packaged name to load), or the one it records. A model other than the
        one that built the index is refused, and so is a file that disagrees with index.json (a
        folder without a manifest is checked here)."""
        path = Path(path)
        if isinstance(model, (str, Path)):
            model = load(model)
        if not is_index(path):
            raise CheckpointError(path, "not an index folder (no index.json)")
        verify_manifest(path)
        settings = read_json(path / INDEX)
        if settings.get("store") is not None:  # a LanceDB store (sbert/inference/stores.py)
            raise ConfigError(
                f"{path}: a {settings['store']} store, not a numpy index: open it with "
                f"sbert.inference.stores.open_index"
            )
        if settings.get("format") != FORMAT:
            raise CheckpointError(path / INDEX, f"unknown index format {settings.get('format')}")
        field = functools.partial(json_field, path / INDEX)
        identity = dict(field(settings, "model", dict))
        name = field(identity, "name", str, default=None)
        fingerprinted = field(identity, "fingerprint", str)
        if name is not None and name not in PACKAGED and not os.path.isabs(name):
            # in memory, a folder's absolute path again (a later save records it anew)
            identity["name"] = os.path.realpath(os.path.join(os.path.realpath(path), name))
        count, dim = field(settings, "count", int, 0), field(settings, "dim", int, 1)
        precision = field(settings, "precision", str)
        if precision not in PRECISIONS:
            raise CheckpointError(path / INDEX, f"unknown precision {precision!r}")
        approximate = field(settings, "approximate", str, default=None) is not None
        source = None if model is not None else recorded_model(name, path)
        # The files first (cheap, and what a damaged folder gets wrong), then the model.
        # Quantised: only the codes are read into memory; fp32 rows are read when rescored.
        vectors = _read_array(path / VECTORS, np.float32, (count, dim), mmap=precision != "fp32")
        if precision == "fp32":  # in memory: every row must be unit length (a memory-mapped
            check_rows(vectors, None, path / VECTORS)  # one is checked as rows are read)
        texts = _read_texts(path / TEXTS, count)
        corpus = field(settings, "corpus", dict, default=None)
        codes, scales = _read_codes(path, precision, count, dim)
        graph = _read_graph(path / GRAPH, count, dim) if approximate else None
        if model is None:
            model = load(source)
        theirs = model_identity(model)["fingerprint"]
        if theirs != fingerprinted:
            raise CheckpointError(
                path,
                f"built with model {name or '?'} (fingerprint {fingerprinted}); this model's is "
                f"{theirs}: queries would be compared with vectors of another model",
            )
        if dim != model.dim:
            raise CheckpointError(
                path / INDEX, f"dim {dim}, but the model's vectors have {model.dim}"
            )
        index = cls(vectors, texts, identity, model, precision, approximate, corpus)
        index.folder, index.codes, index.scales, index.graph = path, codes, scales, graph
        return index


def _read_codes(path: Path, precision: str, count: int, dim: int) -> tuple:
    """A quantised index's codes and int8 scales (None where fp32), checked as `_read_array`."""
    if precision == "int8":
        codes = _read_array(path / CODES, np.int8, (count, dim))
        return codes, _read_array(path / SCALES, np.float32, (dim,))
    if precision == "binary":
        return _read_array(path / CODES, np.uint8, (count, (dim + 7) // 8)), None
    return None, None


def _read_array(path: Path, dtype: type, shape: tuple[int, ...], mmap: bool = False) -> np.ndarray:
    """An array of an index folder, refused unless whole, of the dtype and the shape index.json
    implies, and finite. A memory-mapped one is not scanned for NaN: that would read the whole
    fp32 file, which a quantised index maps so as to read only the rows it rescores."""
    try:
        regular_file(path)  # a FIFO would block np.load
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except FileNotFoundError:
        raise CheckpointError(path, "file not found") from None
    except (OSError, ValueError, EOFError) as e:  # truncated, not .npy, or pickled objects
        raise CheckpointError(path, f"unreadable or truncated array ({e})") from None
    if array.dtype != dtype or array.shape != shape:
        raise CheckpointError(
            path,
            f"{array.dtype} {array.shape}, but {path.with_name(INDEX)} implies "
            f"{np.dtype(dtype)} {shape}",
        )
    if not mmap and array.dtype.kind == "f" and not np.isfinite(array).all():
        raise CheckpointError(path, "holds NaN or infinite values")
    return array


def _read_texts(path: Path, count: int) -> list[str]:
    """The corpus texts, one JSON string a line, `count` of them (one per vector)."""
    texts = []
    regular_file(path)  # a FIFO would block, /dev/zero never end
    try:
        with open(path, "rb") as f:  # bytes: a line that is not UTF-8 is then one bad line
            for n, line in enumerate(f, 1):
                try:
                    text = json.loads(line)
                except ValueError:  # JSONDecodeError and UnicodeDecodeError alike
                    text = None
                if not isinstance(text, str):
                    raise CheckpointError(path, f"line {n} is not a JSON string")
                texts.append(text)
    except FileNotFoundError:
        raise CheckpointError(path, "file not found") from None
    if len(texts) != count:
        raise CheckpointError(
            path, f"{len(texts)} lines, but {path.with_name(INDEX)} says count {count}"
        )
    return texts


def _read_graph(path: Path, count: int, dim: int):
    """The FAISS HNSW graph of an approximate index, over `count` vectors of `dim`."""
    faiss = faiss_module("this index is approximate")
    regular_file(path)
    try:
        graph = faiss.read_index(str(path))
    except RuntimeError as e:  # FAISS raises RuntimeError for any damaged file
        raise CheckpointError(path, f"unreadable FAISS index ({e})") from None
    if (graph.ntotal, graph.d) != (count, dim):
        raise CheckpointError(
            path,
            f"{graph.ntotal} vectors of {graph.d}, but {path.with_name(INDEX)} says "
            f"{count} of {dim}",
        )
    return graph


def check_rows(rows: np.ndarray, ids: np.ndarray | None, path: Path) -> None:
    """Refuse vectors that are not finite and unit length, naming the first bad row of `path`
    (`ids`: the rows' numbers in the file, when `rows` is a selection)."""
    norms = np.einsum("ij,ij->i", rows, rows, dtype=np.float64)  # no (N, H) temporary
    bad = np.flatnonzero(~(np.abs(norms - 1) <= 2 * NORM_TOLERANCE))  # NaN is bad too
    if bad.size:
        row = int(bad[0] if ids is None else ids[bad[0]])
        raise CheckpointError(
            path, f"row {row} has norm {np.sqrt(norms[bad[0]]):.4g}, not 1: damaged (an "
                  f"index's vectors are unit length); {bad.size} such row(s)"
        )  # fmt: skip


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """Name the file in a write error: numpy says only "367936 requested and 127968 written"."""
    try:
        yield
    except (OSError, RuntimeError) as e:  # FAISS raises RuntimeError for a failed write
        if isinstance(e, RuntimeError) and "write" not in str(e).lower():
            raise
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e).strip()
        raise CheckpointError(path, f"cannot write ({why}; is the disk full?)") from None


# ---------------------------------------------------------------------------------------------
# Building in resumable chunks

# What a work folder may hold: its record, its lock, its chunks, and atomic writes' temporary
# files. Anything else means the folder is not one `work_folder` made.
WORK_FILES = re.compile(r"progress\.json|\.lock|chunk-\d{6}\.npy|\.(progress\.json|chunk-\d{6}"
                        r"\.npy)\.[^.]+\.tmp")  # fmt: skip


def work_folder_of(out: Path) -> Path:
    """The resumable work folder of an index written to `out`: `.NAME.partial` beside it."""
    return Path(out).parent / f".{Path(out).name}.partial"


@contextlib.contextmanager
def work_folder(
    out: str | Path, files: re.Pattern = WORK_FILES, command: str = "sbert index"
) -> Iterator[Path]:
    """The work folder of an index being built at `out`, checked to be ours and locked for this
    process; removed when the block ends without an error (or holds no chunk yet).
    `sbert embed` keeps its shards in one too (`files`: the names its folder may hold).

    Refused with one line: a work folder that is a symlink (it would make the build write into
    another folder), is not a folder, belongs to another user or holds files no build writes;
    and one that another process is using (two builds of one index would mix their chunks, and
    the last to finish would win).
    """
    out = Path(out)
    work = work_folder_of(out)
    _check_work_folder(work, files, command)
    work.mkdir(exist_ok=True)
    lock = _lock(work, out, command)
    try:
        yield work
    except BaseException:
        if not any(work.glob("chunk-*.npy")) and not any(work.glob("shard-*.parquet")):
            shutil.rmtree(work, ignore_errors=True)
        raise
    else:
        shutil.rmtree(work, ignore_errors=True)  # while still locked
    finally:
        os.close(lock)


def _check_work_folder(
    work: Path, files: re.Pattern = WORK_FILES, command: str = "sbert index"
) -> None:
    try:
        info = os.lstat(work)
    except FileNotFoundError:
        return
    what = None
    if stat.S_ISLNK(info.st_mode):
        what = "is a symlink"
    elif not stat.S_ISDIR(info.st_mode):
        what = "is not a folder"
    elif info.st_uid != os.geteuid():
        what = f"belongs to another user (uid {info.st_uid})"
    else:
        strangers = sorted(e.name for e in work.iterdir() if not files.fullmatch(e.name))
        links = sorted(e.name for e in work.iterdir() if e.is_symlink())
        if strangers or links:
            what = f"holds {', '.join((strangers + links)[:3])}, which no {command} writes"
    if what is not None:
        raise CheckpointError(
            work, f"{what}: not a work folder of {command}; left as it is (delete it, or "
                  f"choose another --out)"
        )  # fmt: skip


def _lock(work: Path, out: Path, command: str = "sbert index") -> int:
    """An exclusive lock on `work/.lock`, held through the returned descriptor; refused when
    another process holds it. The lock file must still be the one in `work` once locked: a
    build that just finished removes its work folder while holding the lock."""
    import fcntl

    for _ in range(3):
        work.mkdir(exist_ok=True)
        fd = os.open(work / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise CheckpointError(
                out, f"another {command} (process {holder}) is writing this output; wait for "
                     f"it to end or choose another --out"
            ) from None  # fmt: skip
        try:
            same = os.stat(work / ".lock").st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)  # the previous build removed it between our open and our lock: again
    raise CheckpointError(work, "cannot lock the work folder: it keeps being removed")


def check_vectors(vectors: np.ndarray, first: int, model: Encoder) -> None:
    """Refuse vectors an encoder gave that are not finite and unit length (texts from `first`
    on): an index of them would answer nonsense, and refuse to load."""
    norms = np.einsum("ij,ij->i", vectors, vectors, dtype=np.float64)
    bad = np.flatnonzero(~(np.abs(norms - 1) <= 2 * NORM_TOLERANCE))
    if bad.size:
        source = getattr(model, "source", None) or "the model"
        raise SbertError(
            f"{source}: gave a vector of norm {np.sqrt(norms[bad[0]]):.4g} (NaN or Inf in it, "
            f"or zero) for text {first + int(bad[0])} of the corpus: its weights are damaged; "
            f"no index written"
        )


def embed_in_chunks(
    model: Encoder,
    texts: list[str],
    identity: dict,
    batch_size: int,
    chunk_size: int,
    work_dir: str | Path | None,
    device=None,
    show_progress_bar: bool = False,
) -> np.ndarray:
    """Normalised vectors (N, H) of `texts`, embedded `chunk_size` at a time; with `work_dir`,
    each finished chunk is saved there atomically, its sha256 recorded in the folder's
    progress.json, and a chunk already there is reused once checked: the record's sha256,
    float32 (rows, H), finite, unit length."""
    from tqdm.auto import tqdm

    chunk_size = whole_number(chunk_size, "chunk_size")  # -1 left rows of garbage unfilled
    batch_size = whole_number(batch_size, "batch_size")  # before it sizes the bar's steps
    n, starts = len(texts), range(0, len(texts), chunk_size)
    out = np.empty((n, model.dim), np.float32)
    done: set[int] = set()
    progress: dict = {}
    if work_dir is not None:
        work_dir = Path(work_dir)
        progress = _work_key(texts, identity, chunk_size)
        done = _reuse_chunks(work_dir, progress, starts, out)
    resumed = sum(min(chunk_size, n - starts[c]) for c in done)
    bar = tqdm(total=n, initial=resumed, desc="index", unit="sent", unit_scale=True,
               disable=not show_progress_bar, dynamic_ncols=True)  # fmt: skip
    with bar:
        if resumed:
            bar.write(f"resuming: {resumed} of {n} texts were embedded before", file=sys.stderr)
        step = 4 * batch_size  # sentences per encode call: progress-bar updates
        for c, start in enumerate(starts):
            if c in done:
                continue
            stop = min(n, start + chunk_size)
            for a in range(start, stop, step):
                b = min(stop, a + step)
                out[a:b] = model.encode(texts[a:b], batch_size, normalize=True, device=device)
                bar.update(b - a)
            check_vectors(out[start:stop], start, model)
            if work_dir is not None:
                buffer = io.BytesIO()
                np.save(buffer, out[start:stop])
                name = f"chunk-{c:06d}.npy"
                atomic_write_bytes(work_dir / name, buffer.getvalue())
                progress["chunks"][name] = hashlib.sha256(buffer.getvalue()).hexdigest()
                atomic_write_bytes(work_dir / "progress.json", json.dumps(progress).encode())
    return out


def texts_digest(texts: list[str]) -> str:
    """sha256 of a corpus's texts in order: what a work folder records it was made from."""
    digest = hashlib.sha256()
    for t in texts:
        digest.update(t.encode("utf-8", "surrogatepass") + b"\0")
    return digest.hexdigest()


def _work_key(texts: list[str], identity: dict, chunk_size: int) -> dict:
    """What a work folder's chunks were embedded from (model, corpus and chunk size), and the
    sha256 of each chunk written so far."""
    return {
        "model": identity["fingerprint"],
        "texts": texts_digest(texts),
        "count": len(texts),
        "chunk_size": chunk_size,
        "chunks": {},
    }


def _reuse_chunks(work_dir: Path, key: dict, starts: range, out: np.ndarray) -> set[int]:
    """Copy the chunks a killed build left in `work_dir` into `out`; their numbers. A work
    folder of another corpus, model or chunk size is refused, and so is a chunk that is not
    the one the folder recorded, or not float32 unit vectors of the chunk's shape. A chunk
    written but not yet recorded (killed between the two) is embedded again."""
    _check_work_folder(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    progress = work_dir / "progress.json"
    recorded: dict = {}
    if os.path.lexists(progress):
        found = read_json(progress)
        chunks = found.pop("chunks", {})
        if found != {k: v for k, v in key.items() if k != "chunks"} or not isinstance(chunks, dict):
            raise CheckpointError(
                work_dir,
                "holds a partial index of another corpus, model or chunk size; delete it to "
                "start over",
            )
        recorded = chunks
    done = set()
    for c, start in enumerate(starts):
        name = f"chunk-{c:06d}.npy"
        chunk = work_dir / name
        if name not in recorded or not os.path.lexists(chunk):
            continue
        rows = min(key["chunk_size"], len(out) - start)
        vectors = _read_chunk(chunk, recorded[name], (rows, out.shape[1]))
        out[start : start + rows] = vectors
        key["chunks"][name] = recorded[name]
        done.add(c)
    atomic_write_bytes(progress, json.dumps(key).encode())
    return done


def _read_chunk(path: Path, digest: object, shape: tuple[int, int]) -> np.ndarray:
    regular_file(path)
    if sha256(path) != digest:
        raise CheckpointError(
            path, "is not the chunk this work folder recorded (damaged, or not ours); delete "
                  "the folder to start over"
        )  # fmt: skip
    try:
        vectors = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise CheckpointError(path, f"unreadable chunk ({e})") from None
    if vectors.dtype != np.float32 or vectors.shape != shape:
        raise CheckpointError(
            path, f"{vectors.dtype} {vectors.shape}, but a chunk here is float32 {shape}"
        )
    check_rows(vectors, None, path)
    return vectors
