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

import functools
import hashlib
import io
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sbert.choices import PRECISIONS
from sbert.errors import CheckpointError, ConfigError
from sbert.fileio import atomic_dir, atomic_write_bytes, json_field, read_json, verify_manifest
from sbert.inference.encoder import Encoder
from sbert.inference.load import load
from sbert.inference.topk import best_k, chunked_topk

INDEX, VECTORS, TEXTS, CODES, SCALES, GRAPH = (
    "index.json",
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


def is_index(folder: Path) -> bool:
    """True when `folder` was written by `Index.save`."""
    return (Path(folder) / INDEX).is_file()


def model_identity(model: Encoder, name: str | None = None) -> dict:
    """Name and fingerprint (fingerprint.py) of a PyTorch model or an ONNX export: vectors from
    two models with different fingerprints must not be compared."""
    return {"name": name, "fingerprint": model.fingerprint()}


def int8_codes(vectors: np.ndarray, scales: np.ndarray | None = None):
    """Symmetric per-dimension int8 codes: x ~ code * scale, scale = max |x| / 127 over the
    corpus (values beyond a later add's range are clipped)."""
    if scales is None:
        scales = np.maximum(np.abs(vectors).max(axis=0), 1e-12).astype(np.float32) / 127
    codes = np.clip(np.rint(vectors / scales), -127, 127).astype(np.int8)
    return codes, scales


def binary_codes(vectors: np.ndarray) -> np.ndarray:
    """One sign bit per dimension, packed 8 to a byte: (N, ceil(H / 8)) uint8."""
    return np.packbits(vectors > 0, axis=1)


def _hnsw(vectors: np.ndarray, show_progress_bar: bool = False):
    try:
        import faiss
    except ImportError:
        raise ConfigError("approximate search needs FAISS: pip install faiss-cpu") from None
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


# ---------------------------------------------------------------------------------------------
# The index


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
            name: the model's folder or packaged name, recorded so `load` can find the model.
            work_dir: write each chunk of `chunk_size` vectors there as it is done, and reuse
                the chunks found there: a killed build resumes where it stopped.
        """
        index = cls(
            np.empty((0, model.dim), np.float32),
            [],
            model_identity(model, name),
            model,
            precision,
            approximate,
            corpus,
        )
        texts = list(texts)
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

    def add(self, texts: Sequence[str], batch_size: int = 64) -> None:
        """Embed more texts with the index's model and append them (ids continue)."""
        vectors = self._encode(list(texts), batch_size)
        self.vectors = np.concatenate([np.asarray(self.vectors), vectors])
        self.texts = self.texts + list(texts)
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
        vectors = self._encode([queries] if single else list(queries), batch_size)
        scores, ids = self.search_vectors(vectors, k, ef_search)
        hits = [
            [Hit(int(i), float(s), self.texts[i]) for s, i in zip(row_s, row_i, strict=True)]
            for row_s, row_i in zip(scores.tolist(), ids.tolist(), strict=True)
        ]
        return hits[0] if single else hits

    def search_vectors(
        self, queries: np.ndarray, k: int = 10, ef_search: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scores and ids (Q, k) of the k nearest rows to each normalised query vector.

        `ef_search`: the HNSW search beam of an approximate index (default 128; never below
        k); wider finds more of the true neighbours, slower. An exact index refuses it.
        """
        if k < 1:
            raise ConfigError(f"k must be at least 1, got {k}")
        if ef_search is not None:
            if not self.approximate:
                raise ConfigError(
                    "ef_search (--ef-search) applies to an approximate index "
                    "(sbert index --approximate); this one is exact"
                )
            if ef_search < 1:
                raise ConfigError(f"ef_search must be at least 1, got {ef_search}")
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        if self.graph is not None:
            self.graph.hnsw.efSearch = max(ef_search or HNSW_EF_SEARCH, k)
            scores, ids = self.graph.search(queries, min(k, len(self)))
            return scores, ids
        if self.precision == "fp32":
            vectors = np.asarray(self.vectors)
            return chunked_topk(queries, len(self), lambda a, b: vectors[a:b], k)

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
        gathered = rows[np.searchsorted(wanted, candidates)]  # (Q, C, H)
        exact = (gathered @ queries[:, :, None])[:, :, 0]  # (Q, C)
        return best_k(exact, candidates, min(k, exact.shape[1]))

    # -- on disk --------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write the index folder atomically, with a manifest."""
        with atomic_dir(Path(path)) as tmp:
            settings = {
                "format": FORMAT,
                "model": self.identity,
                "count": len(self),
                "dim": self.dim,
                "precision": self.precision,
                "approximate": "faiss-hnsw" if self.approximate else None,
                "corpus": self.corpus,
            }
            (tmp / INDEX).write_text(json.dumps(settings, indent=2))
            np.save(tmp / VECTORS, np.asarray(self.vectors))
            with open(tmp / TEXTS, "w", encoding="utf-8") as f:
                f.writelines(json.dumps(t, ensure_ascii=False) + "\n" for t in self.texts)
            if self.codes is not None:
                np.save(tmp / CODES, self.codes)
            if self.scales is not None:
                np.save(tmp / SCALES, self.scales)
            if self.graph is not None:
                import faiss

                faiss.write_index(self.graph, str(tmp / GRAPH))

    @classmethod
    def load(cls, path: str | Path, model: Encoder | None = None) -> Index:
        """Read an index folder (checked against its manifest) with its model: `model`, or the
        one it records. A model other than the one that built the index is refused, and so is
        a file that disagrees with index.json (a folder without a manifest is checked here)."""
        path = Path(path)
        if not is_index(path):
            raise CheckpointError(path, "not an index folder (no index.json)")
        verify_manifest(path)
        settings = read_json(path / INDEX)
        if settings.get("format") != FORMAT:
            raise CheckpointError(path / INDEX, f"unknown index format {settings.get('format')}")
        field = functools.partial(json_field, path / INDEX)
        identity = field(settings, "model", dict)
        name = field(identity, "name", str, default=None)
        fingerprinted = field(identity, "fingerprint", str)
        count, dim = field(settings, "count", int, 0), field(settings, "dim", int, 1)
        precision = field(settings, "precision", str)
        if precision not in PRECISIONS:
            raise CheckpointError(path / INDEX, f"unknown precision {precision!r}")
        approximate = field(settings, "approximate", str, default=None) is not None
        if model is None:
            if not name:
                raise ConfigError(f"{path}: the index does not record its model: pass one")
            model = load(name)
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
        # Quantised: only the codes are read into memory; fp32 rows are read when rescored.
        vectors = _read_array(path / VECTORS, np.float32, (count, dim), mmap=precision != "fp32")
        texts = _read_texts(path / TEXTS, count)
        corpus = field(settings, "corpus", dict, default=None)
        index = cls(vectors, texts, identity, model, precision, approximate, corpus)
        if precision == "int8":
            index.codes = _read_array(path / CODES, np.int8, (count, dim))
            index.scales = _read_array(path / SCALES, np.float32, (dim,))
        elif precision == "binary":
            index.codes = _read_array(path / CODES, np.uint8, (count, (dim + 7) // 8))
        if approximate:
            index.graph = _read_graph(path / GRAPH, count, dim)
        return index


def _read_array(path: Path, dtype: type, shape: tuple[int, ...], mmap: bool = False) -> np.ndarray:
    """An array of an index folder, refused unless whole, of the dtype and the shape index.json
    implies, and finite. A memory-mapped one is not scanned for NaN: that would read the whole
    fp32 file, which a quantised index maps so as to read only the rows it rescores."""
    try:
        array = np.load(path, mmap_mode="r" if mmap else None)
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
    try:
        import faiss
    except ImportError:
        raise ConfigError("this index is approximate: pip install faiss-cpu") from None
    if not path.is_file():
        raise CheckpointError(path, "file not found")
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
    each finished chunk is saved there atomically and a chunk already there is reused."""
    from tqdm.auto import tqdm

    n, starts = len(texts), range(0, len(texts), chunk_size)
    out = np.empty((n, model.dim), np.float32)
    done = set()
    if work_dir is not None:
        work_dir = Path(work_dir)
        done = _reuse_chunks(work_dir, _work_key(texts, identity, chunk_size), starts, out)
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
            if work_dir is not None:
                buffer = io.BytesIO()
                np.save(buffer, out[start:stop])
                atomic_write_bytes(work_dir / f"chunk-{c:06d}.npy", buffer.getvalue())
    return out


def _work_key(texts: list[str], identity: dict, chunk_size: int) -> dict:
    """What a work folder's chunks were embedded from: model, corpus and chunk size."""
    digest = hashlib.sha256()
    for t in texts:
        digest.update(t.encode("utf-8", "surrogatepass") + b"\0")
    return {
        "model": identity["fingerprint"],
        "texts": digest.hexdigest(),
        "count": len(texts),
        "chunk_size": chunk_size,
    }


def _reuse_chunks(work_dir: Path, key: dict, starts: range, out: np.ndarray) -> set[int]:
    """Copy the chunks a killed build left in `work_dir` into `out`; their numbers. A work
    folder of another corpus, model or chunk size is refused."""
    work_dir.mkdir(parents=True, exist_ok=True)
    progress = work_dir / "progress.json"
    if progress.is_file() and read_json(progress) != key:
        raise CheckpointError(
            work_dir,
            "holds a partial index of another corpus, model or chunk size; delete it to start over",
        )
    atomic_write_bytes(progress, json.dumps(key).encode())
    done = set()
    for c, start in enumerate(starts):
        chunk = work_dir / f"chunk-{c:06d}.npy"
        if chunk.is_file():  # written atomically: present means complete
            out[start : start + key["chunk_size"]] = np.load(chunk)
            done.add(c)
    return done
