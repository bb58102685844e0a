"""Vector stores beside the numpy index: a LanceDB table of a corpus's vectors, with its
approximate (IVF-PQ) index, searched as `Index` is searched.

A store folder: index.json (as an index's, with `"store": "lancedb"`: the model's name and
fingerprint, count, dim, corpus, the ANN settings), `lancedb/` (a LanceDB database whose table
`vectors` holds
`id` int64, `text`, `vector` fixed-size float32) and manifest.json; written atomically
(fileio.atomic_dir). Built from an `sbert embed` folder (`sbert index --vectors DIR --store
lancedb`), so nothing is encoded twice; the same folder works on object storage once copied
there, since LanceDB reads `s3://` tables alike.

Search has two modes: exact (`exact=True`: every vector scanned, LanceDB's
`bypass_vector_index`; the same top-k as the numpy index's exact scan) and approximate (the
IVF-PQ index: the `nprobes` nearest partitions of the query scanned with compressed vectors,
then the best `refine_factor` x k rescored with the full vectors). A table smaller than
MIN_ANN_ROWS gets no ANN index: it is always scanned exactly.

`open_index(path)` opens either kind; both answer `search`, `hits`, `search_vectors`, `len`,
`precision` (what `sbert search` and the server's POST /search use). LanceDB is optional
(`pip install 'sbert[lancedb]'`) and imported only here, only when a store is built or opened.
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from sbert.errors import CheckpointError, ConfigError
from sbert.fileio import atomic_dir, json_field, read_json, verify_manifest
from sbert.folders import is_index
from sbert.inference.encoder import Encoder
from sbert.inference.index import (
    INDEX,
    Hit,
    Index,
    checked_queries,
    model_identity,
    recorded_model,
    recorded_name,
)
from sbert.inference.load import load
from sbert.tokenizer import text_list

TABLE, FOLDER, FORMAT = "vectors", "lancedb", 1
STORES = ("numpy", "lancedb")
# IVF-PQ as LanceDB's IvfPq documents it: about sqrt(N) partitions, but no more than N / 256
# (lance trains each partition's centroid from 256 sampled rows and trains fewer otherwise),
# and dim / 16 sub-vectors (dim / 8 when 16 does not divide it: 8 or 16 values a sub-vector
# keep its SIMD kernels). Below MIN_ANN_ROWS rows an exact scan takes about a millisecond and
# PQ's 256 centroids a sub-vector would be trained from too few rows: no ANN index.
MIN_ANN_ROWS = 4096
# Search defaults: LanceDB's nprobes default (20), and a refine step that rescores 200 x k PQ
# candidates with the full vectors: PQ alone orders close neighbours coarsely. Measured on 1M
# clustered 384-d vectors (bench/embed.py, docs/beyond-one-machine.md): recall@10 0.325 at
# refine 10 whatever nprobes, 0.847 at 50, 1.000 at 200 (34 ms a query; exact numpy: 89 ms).
NPROBES, REFINE_FACTOR = 20, 200


def lancedb():
    """lancedb, or one line naming the install."""
    os.environ.setdefault("LANCEDB_LOG", "error")  # its Rust warnings go to stderr otherwise
    try:
        import lancedb as module
    except ImportError:
        raise ConfigError(
            "a LanceDB store needs lancedb: pip install lancedb (or pip install 'sbert[lancedb]')"
        ) from None
    return module


def ann_settings(count: int, dim: int) -> dict | None:
    """The IVF-PQ settings for a table of `count` vectors of `dim`; None: too small for one."""
    if count < MIN_ANN_ROWS:
        return None
    partitions = max(1, min(round(math.sqrt(count)), count // 256))
    sub_vectors = dim // 16 if dim % 16 == 0 else dim // 8 if dim % 8 == 0 else 1
    return {"type": "IVF_PQ", "distance": "dot", "num_partitions": partitions,
            "num_sub_vectors": sub_vectors}  # fmt: skip


def open_index(path: str | Path, model: Encoder | None = None, **settings) -> Index | LanceStore:
    """The index folder or LanceDB store at `path` (index.json says which), with its model
    (`model`, or the one it records; another model is refused). `settings`: a store's search
    settings (exact, nprobes, refine_factor)."""
    path = Path(path)
    if is_index(path) and path.is_dir():
        kind = read_json(path / INDEX).get("store")
        if kind == "lancedb":
            return LanceStore.load(path, model, **settings)
        if kind is not None:
            raise CheckpointError(path / INDEX, f"unknown store {kind!r}")
    if any(v is not None and v is not False for v in settings.values()):
        given = ", ".join("--" + k.replace("_", "-") for k, v in settings.items() if v)
        raise ConfigError(f"{given}: for a LanceDB store (sbert index --store lancedb); "
                          f"{path} is a numpy index")  # fmt: skip
    return Index.load(path, model)


def _record_batches(rows, count: int, dim: int, schema) -> Iterator:
    """Arrow record batches of blocks of (first id, texts, vectors), checked to be the ids
    0..count-1 in order, one block at a time."""
    import pyarrow as pa

    at = 0
    for first, texts, vectors in rows:
        b = first + len(vectors)
        if first != at or vectors.shape[1:] != (dim,) or len(texts) != len(vectors):
            raise ValueError(f"rows {first}..{b - 1}: not the next block of {dim}-d rows")
        flat = pa.array(np.ascontiguousarray(vectors, np.float32).reshape(-1))
        yield pa.RecordBatch.from_arrays(
            [pa.array(np.arange(first, b, dtype=np.int64)), pa.array(list(texts)),
             pa.FixedSizeListArray.from_arrays(flat, dim)], schema=schema,
        )  # fmt: skip
        at = b
    if at != count:
        raise ValueError(f"{at} rows given, not {count}")


class LanceStore:
    """A LanceDB table of unit vectors, their texts and ids, and the model that embedded them.

    Build with `LanceStore.build(path, model, rows, count, dim)`, open with `LanceStore.load`;
    `search(queries, k)`, `hits(vectors, k)`, `search_vectors(vectors, k)` as `Index`.
    """

    precision = "fp32"

    def __init__(self, table, info: dict, model: Encoder | None, folder: Path,
                 exact: bool = False, nprobes: int | None = None,
                 refine_factor: int | None = None):  # fmt: skip
        self.table, self.info, self.model, self.folder = table, info, model, folder
        self.exact, self.nprobes = exact, nprobes or NPROBES
        self.refine_factor = refine_factor or REFINE_FACTOR
        self.approximate = info.get("ann") is not None
        given = {"--nprobes": nprobes, "--refine-factor": refine_factor}
        tuning = [name for name, value in given.items() if value]
        if tuning and not self.approximate:  # as an exact Index refuses --ef-search
            raise ConfigError(f"{' and '.join(tuning)} tune an IVF-PQ search; this store of "
                              f"{len(self):,} rows has none and is searched exactly")  # fmt: skip

    def __len__(self) -> int:
        return int(self.info["count"])

    @property
    def dim(self) -> int:
        return int(self.info["dim"])

    @classmethod
    def build(
        cls,
        path: str | Path,
        model: Encoder,
        rows: Iterable[tuple[int, Sequence[str], np.ndarray]],
        count: int,
        dim: int,
        *,
        name: str | None = None,
        corpus: dict | None = None,
    ) -> LanceStore:
        """Write the store folder `path` (atomically) from `rows`, blocks of (first id, texts,
        normalised vectors) that `model` embedded, ids 0..count-1 in order (an embedding's
        shards: one block in memory at a time), with its IVF-PQ index when big enough."""
        db = lancedb()
        import pyarrow as pa

        path = Path(path)
        if name is None:
            name = getattr(model, "source", None)
        identity = model_identity(model, name)
        schema = pa.schema([("id", pa.int64()), ("text", pa.string()),
                            ("vector", pa.list_(pa.float32(), dim))])  # fmt: skip

        ann = ann_settings(count, dim)
        corpus = dict(corpus or {})
        with atomic_dir(path, is_index, "an index") as tmp:
            table = db.connect(tmp / FOLDER).create_table(
                TABLE, data=_record_batches(rows, count, dim, schema), schema=schema
            )
            if ann is not None:
                from lancedb.index import IvfPq

                table.create_index("vector", config=IvfPq(
                    distance_type="dot", num_partitions=ann["num_partitions"],
                    num_sub_vectors=ann["num_sub_vectors"]))  # fmt: skip
            for key in ("path", "vectors"):  # relative: no absolute path of this machine
                if corpus.get(key):
                    corpus[key] = os.path.relpath(corpus[key], os.path.realpath(path))
            info = {
                "format": FORMAT,
                "store": "lancedb",
                "model": {**identity, "name": recorded_name(identity["name"], path)},
                "count": count,
                "dim": dim,
                "precision": "fp32",
                "ann": ann,
                "corpus": corpus,
            }
            (tmp / INDEX).write_text(json.dumps(info, indent=2))
        return cls.load(path, model)

    @classmethod
    def load(
        cls,
        path: str | Path,
        model: Encoder | None = None,
        *,
        exact: bool = False,
        nprobes: int | None = None,
        refine_factor: int | None = None,
    ) -> LanceStore:
        """Open a store folder (checked against its manifest) with its model: `model`, or the
        one it records; a model other than the one that embedded the vectors is refused."""
        db = lancedb()
        path = Path(path)
        verify_manifest(path)
        info = read_json(path / INDEX)
        field = functools.partial(json_field, path / INDEX)
        if info.get("format") != FORMAT or info.get("store") != "lancedb":
            raise CheckpointError(path / INDEX, "not a LanceDB store of this version")
        identity = field(info, "model", dict)
        fingerprinted = field(identity, "fingerprint", str)
        name = field(identity, "name", str, default=None)
        count, dim = field(info, "count", int, 0), field(info, "dim", int, 1)
        try:
            table = db.connect(path / FOLDER).open_table(TABLE)
            rows, schema = table.count_rows(), table.schema
        except Exception as e:  # lance raises ValueError, OSError or its own for a bad table
            raise CheckpointError(path / FOLDER, f"unreadable LanceDB table ({e})") from None
        width = schema.field("vector").type.list_size if "vector" in schema.names else None
        if rows != count or width != dim or not {"id", "text"} <= set(schema.names):
            raise CheckpointError(
                path / FOLDER, f"{rows} rows of vector width {width}, but {INDEX} says {count} "
                               f"of {dim} (with id and text columns)"
            )  # fmt: skip
        if model is None:
            model = load(recorded_model(name, path))
        theirs = model_identity(model)["fingerprint"]
        if theirs != fingerprinted:
            raise CheckpointError(
                path, f"built with model {name or '?'} (fingerprint {fingerprinted}); this "
                      f"model's is {theirs}: queries would be compared with vectors of another "
                      f"model"
            )  # fmt: skip
        if model.dim != dim:
            raise CheckpointError(
                path / INDEX, f"dim {dim}, but the model's vectors have {model.dim}"
            )
        return cls(table, info, model, path, exact, nprobes, refine_factor)

    def search(self, queries: str | Sequence[str], k: int = 10, batch_size: int = 32,
               ef_search: int | None = None) -> list[list[Hit]] | list[Hit]:  # fmt: skip
        """The k best texts for each query, best first (one list for a single string)."""
        if self.model is None:
            raise ConfigError("this store has no model to encode text with: pass model=")
        single = isinstance(queries, str)
        vectors = self.model.encode([queries] if single else text_list(queries, "queries"),
                                    batch_size, normalize=True)  # fmt: skip
        hits = self.hits(vectors, k, ef_search)
        return hits[0] if single else hits

    def hits(self, queries: np.ndarray, k: int = 10, ef_search: int | None = None):
        """The k best hits (id, score, text) for each normalised query vector."""
        scores, ids, texts = self._query(queries, k, ef_search, with_text=True)
        return [  # `rt` may be shorter than k: probed partitions with fewer rows
            [Hit(int(i), float(s), t) for s, i, t in zip(rs, ri, rt, strict=False)]
            for rs, ri, rt in zip(scores.tolist(), ids.tolist(), texts, strict=True)
        ]

    def search_vectors(self, queries: np.ndarray, k: int = 10, ef_search: int | None = None):
        """(scores, ids), each (Q, min(k, N)), best first: cosine similarity and row ids."""
        scores, ids, _ = self._query(queries, k, ef_search, with_text=False)
        return scores, ids

    def _query(self, queries: np.ndarray, k: int, ef_search: int | None, with_text: bool):
        if ef_search is not None:
            raise ConfigError("--ef-search is for an HNSW index; a LanceDB store takes --nprobes")
        queries, k = checked_queries(queries, k, self.dim)
        k = min(k, len(self))
        q = len(queries)
        if q == 0 or k == 0:
            return np.empty((q, k), np.float32), np.empty((q, k), np.int64), [[]] * q
        approximate = self.approximate and not self.exact
        scores, ids, texts = self._search(queries, k, approximate, with_text)
        # The partitions an IVF-PQ search probes may hold fewer than k rows: such a query is
        # answered by the exact scan (k real hits), not padded with id -1 or cut short.
        short = np.flatnonzero((ids < 0).any(axis=1)) if approximate else []
        if len(short):
            scores[short], ids[short], exact_texts = self._search(
                queries[short], k, False, with_text
            )
            for j, row in zip(short, exact_texts, strict=True):
                texts[j] = row
        return scores, ids, texts

    def _search(self, queries: np.ndarray, k: int, approximate: bool, with_text: bool):
        """One LanceDB query of every row of `queries`: (scores, ids) (Q, k), best first, -inf
        and -1 where fewer than k came back, and each query's texts (with `with_text`)."""
        q = len(queries)
        search = self.table.search(
            list(queries) if q > 1 else queries[0], vector_column_name="vector"
        )
        search = search.distance_type("dot").limit(k)
        search = search.select(["id", "text", "_distance"] if with_text else ["id", "_distance"])
        if approximate:
            search = search.nprobes(self.nprobes).refine_factor(self.refine_factor)
        else:
            search = search.bypass_vector_index()
        found = search.to_arrow()
        which = found.column("query_index").to_numpy() if q > 1 else np.zeros(found.num_rows, int)
        distance = found.column("_distance").to_numpy()
        ids = found.column("id").to_numpy()
        texts = found.column("text").to_pylist() if with_text else None
        out_s = np.full((q, k), -np.inf, np.float32)
        out_i = np.full((q, k), -1, np.int64)
        out_t: list[list[str]] = [[] for _ in range(q)]
        for j in range(q):
            rows = np.flatnonzero(which == j)
            rows = rows[np.argsort(distance[rows], kind="stable")][:k]
            out_s[j, : len(rows)] = 1 - distance[rows]  # lance's dot distance is 1 - dot
            out_i[j, : len(rows)] = ids[rows]
            if texts is not None:
                out_t[j] = [texts[r] for r in rows]
        return out_s, out_i, out_t
