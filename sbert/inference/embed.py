"""A corpus embedded once into Parquet shards: the input of `sbert index --vectors`, and of any
tool that reads Parquet (Spark, DuckDB, LanceDB, Ray Data).

An embedding folder: `shard-000000.parquet`, ... (columns `id` int64, the 0-based row of the
corpus; `text`, unless left out; `vector`, a fixed-size list of float32, unit length),
`embedding.json` (the model's name and fingerprint, dim, normalisation, the corpus and its row
count, the shards) and manifest.json; written atomically (fileio.atomic_dir).

Resumable at shard granularity: each finished shard is written atomically into the locked work
folder `.OUT.partial` (inference/index.work_folder) and its sha256 recorded in progress.json;
a rerun after a kill reuses the recorded shards and embeds only the others, so no row is lost
or written twice. The shards are embedded here, or on a Ray cluster (inference/embed_ray.py),
which hands back whole shards for the same writer.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sbert.errors import CheckpointError, ConfigError, SbertError
from sbert.fileio import (
    atomic_dir,
    atomic_write_bytes,
    check_output_dir,
    json_field,
    read_json,
    regular_file,
    sha256,
    verify_manifest,
)
from sbert.inference.encoder import Encoder
from sbert.inference.index import (
    check_rows,
    check_vectors,
    model_identity,
    recorded_name,
    texts_digest,
    work_folder,
)

EMBEDDING = "embedding.json"
FORMAT = 1
# What an embed work folder may hold: its record, its lock, its shards, atomic writes' temporary
# files. Anything else means the folder is not one `sbert embed` made.
WORK_FILES = re.compile(r"progress\.json|\.lock|shard-\d{6}\.parquet|\.(progress\.json|shard-\d{6}"
                        r"\.parquet)\.[^.]+\.tmp")  # fmt: skip


def shard_name(s: int) -> str:
    return f"shard-{s:06d}.parquet"


def is_embedding(folder: Path) -> bool:
    """True when `folder` was written by `sbert embed`."""
    return os.path.lexists(Path(folder) / EMBEDDING)


def pyarrow():
    """pyarrow, or one line naming the install (an optional extra: sbert[parquet])."""
    try:
        import pyarrow as pa
        import pyarrow.parquet  # noqa: F401  (pa.parquet below)
    except ImportError:
        raise ConfigError(
            "Parquet needs pyarrow: pip install pyarrow (or pip install 'sbert[parquet]')"
        ) from None
    return pa


@dataclass
class Embedding:
    """The rows of an embedding folder: ids 0..N-1 in order, their texts (None when left out),
    the unit vectors (N, H) and embedding.json."""

    ids: np.ndarray
    texts: list[str] | None
    vectors: np.ndarray
    info: dict


# ---------------------------------------------------------------------------------------------
# Writing


def shard_bytes(ids: np.ndarray, texts: list[str] | None, vectors: np.ndarray) -> bytes:
    """One shard as Parquet bytes: id int64, text (when given), vector fixed_size_list<float32>."""
    pa = pyarrow()
    dim = vectors.shape[1]
    columns = {"id": pa.array(np.asarray(ids, np.int64))}
    if texts is not None:
        columns["text"] = pa.array(texts, pa.string())
    flat = pa.array(np.ascontiguousarray(vectors, np.float32).reshape(-1))
    columns["vector"] = pa.FixedSizeListArray.from_arrays(flat, dim)
    sink = pa.BufferOutputStream()
    pa.parquet.write_table(pa.table(columns), sink)
    return sink.getvalue().to_pybytes()


def work_key(texts: list[str], identity: dict, shard_size: int, with_text: bool) -> dict:
    """What a work folder's shards were embedded from, and the sha256 of each written so far."""
    return {
        "model": identity["fingerprint"],
        "texts": texts_digest(texts),
        "count": len(texts),
        "shard_size": shard_size,
        "with_text": with_text,
        "shards": {},
    }


def _reuse_shards(work: Path, key: dict, dim: int) -> set[int]:
    """The shards a killed run left in `work` that it recorded, checked (sha256, rows, ids,
    width, unit length); a work folder of another corpus, model or shard size is refused."""
    progress = work / "progress.json"
    recorded: dict = {}
    if os.path.lexists(progress):
        found = read_json(progress)
        shards = found.pop("shards", {})
        if found != {k: v for k, v in key.items() if k != "shards"} or not isinstance(shards, dict):
            raise CheckpointError(
                work, "holds a partial embedding of another corpus, model or shard size; delete "
                      "it to start over"
            )  # fmt: skip
        recorded = shards
    done = set()
    for s, start in enumerate(range(0, key["count"], key["shard_size"])):
        name = shard_name(s)
        if name not in recorded or not os.path.lexists(work / name):
            continue
        regular_file(work / name)
        if sha256(work / name) != recorded[name]:
            raise CheckpointError(
                work / name, "is not the shard this work folder recorded (damaged, or not "
                             "ours); delete the folder to start over"
            )  # fmt: skip
        rows = min(key["shard_size"], key["count"] - start)
        _read_shard(work / name, dim, start, rows, key["with_text"])
        key["shards"][name] = recorded[name]
        done.add(s)
    atomic_write_bytes(progress, json.dumps(key).encode())
    return done


def embed_corpus(
    model: Encoder,
    texts: list[str],
    out: str | Path,
    *,
    name: str | None = None,
    corpus: dict | None = None,
    shard_size: int = 65536,
    batch_size: int = 64,
    with_text: bool = True,
    device=None,
    show_progress_bar: bool = False,
    shards: Callable[[list[int], object], Iterator[tuple[int, np.ndarray]]] | None = None,
) -> dict:
    """Embed `texts` with `model` (normalised) into the embedding folder `out`; its
    embedding.json. Resumable: a rerun after a kill embeds only the shards not yet finished.

    Args:
        name: the model's folder or packaged name, recorded (default: where `sbert.load` read
            it from).
        shards: `shards(todo, bar)` embeds the shard numbers `todo` elsewhere, yields
            (shard, vectors) as each is done, in any order, and counts the texts done on the
            tqdm `bar` (embed_ray.RayShards); default: here, in order.
    """
    from tqdm.auto import tqdm

    pyarrow()  # before any work: one line naming the install
    out = Path(out)
    check_output_dir(out, is_embedding, "an embedding folder")  # before the work, not after
    if not texts:
        raise SbertError("the corpus has no texts: nothing to embed")
    identity = model_identity(model, name if name is not None else getattr(model, "source", None))
    n = len(texts)
    starts = list(range(0, n, shard_size))
    with work_folder(out, WORK_FILES, "sbert embed") as work:
        key = work_key(texts, identity, shard_size, with_text)
        done = _reuse_shards(work, key, model.dim)
        rows_of = [min(shard_size, n - a) for a in starts]
        resumed = sum(rows_of[s] for s in done)
        bar = tqdm(total=n, initial=resumed, desc="embed", unit="sent", unit_scale=True,
                   disable=not show_progress_bar, dynamic_ncols=True)  # fmt: skip
        with bar:
            if resumed:
                bar.write(f"resuming: {resumed} of {n} texts were embedded before", file=sys.stderr)
            todo = [s for s in range(len(starts)) if s not in done]
            if shards is None:
                shards = functools.partial(
                    _local_shards, model, texts, starts, rows_of, batch_size, device
                )
            for s, vectors in shards(todo, bar):
                a, b = starts[s], starts[s] + rows_of[s]
                _write_shard(work, key, s, a, texts[a:b] if with_text else None, vectors, model)
        info = _embedding_info(key, identity, model.dim, out, corpus or {})
        _publish(work, out, info, key)
    return info


def _write_shard(work: Path, key: dict, s: int, first: int, texts: list[str] | None,
                 vectors: np.ndarray, model: Encoder) -> None:  # fmt: skip
    """Check shard `s`'s vectors, write it atomically into the work folder and record its
    sha256 in progress.json (after the shard: a shard written but not recorded is redone)."""
    rows = min(key["shard_size"], key["count"] - first)
    if vectors.shape != (rows, model.dim):
        raise SbertError(f"shard {s}: got vectors {vectors.shape}, expected {(rows, model.dim)}")
    check_vectors(vectors, first, model)
    data = shard_bytes(np.arange(first, first + rows), texts, vectors)
    atomic_write_bytes(work / shard_name(s), data)
    key["shards"][shard_name(s)] = hashlib.sha256(data).hexdigest()
    atomic_write_bytes(work / "progress.json", json.dumps(key).encode())


def _embedding_info(key: dict, identity: dict, dim: int, out: Path, corpus: dict) -> dict:
    """embedding.json of a finished embedding (`key`: its work folder's record)."""
    n, size = key["count"], key["shard_size"]
    return {
        "format": FORMAT,
        "model": {**identity, "name": recorded_name(identity["name"], out)},
        "dim": dim,
        "normalized": True,
        "dtype": "float32",
        "count": n,
        "with_text": key["with_text"],
        "corpus": {**_relative(corpus, out), "sha256": key["texts"]},
        "shards": [
            {"file": shard_name(s), "first_id": a, "rows": min(size, n - a)}
            for s, a in enumerate(range(0, n, size))
        ],  # fmt: skip
    }


def _publish(work: Path, out: Path, info: dict, key: dict) -> None:
    """The finished shards and embedding.json swapped in at `out` as one folder; refused if
    a shard is not recorded as written (never a folder with holes)."""
    missing = [x["file"] for x in info["shards"] if x["file"] not in key["shards"]]
    if missing:
        raise SbertError(f"shards {missing[:5]} were not embedded; run again to finish")
    with atomic_dir(out, is_embedding, "an embedding folder") as tmp:
        for shard in info["shards"]:
            try:  # the finished shards move over without a copy
                os.link(work / shard["file"], tmp / shard["file"])
            except OSError:
                shutil.copyfile(work / shard["file"], tmp / shard["file"])
        (tmp / EMBEDDING).write_text(json.dumps(info, indent=2))


def _relative(corpus: dict, out: Path) -> dict:
    """The corpus's path relative to the output folder: no absolute path of this machine."""
    if corpus.get("path"):
        corpus = {**corpus, "path": os.path.relpath(corpus["path"], os.path.realpath(out))}
    return corpus


def _local_shards(model, texts, starts, rows_of, batch_size, device, todo, bar):
    """Embed the shards `todo` in this process, in order."""
    step = 4 * batch_size  # sentences per encode call: progress-bar updates
    for s in todo:
        a, b = starts[s], starts[s] + rows_of[s]
        vectors = np.empty((b - a, model.dim), np.float32)
        for x in range(a, b, step):
            y = min(b, x + step)
            vectors[x - a : y - a] = model.encode(texts[x:y], batch_size, normalize=True,
                                                  device=device)  # fmt: skip
            bar.update(y - x)
        yield s, vectors


# ---------------------------------------------------------------------------------------------
# Reading


def _read_shard(path: Path, dim: int, first: int, rows: int, with_text: bool):
    """The (texts, vectors) of one shard, refused unless its columns are the ones written:
    ids first..first+rows-1 in order, a text column when recorded, float32 vectors of `dim`,
    finite and unit length."""
    pa = pyarrow()
    regular_file(path)
    try:
        table = pa.parquet.read_table(path)
    except (OSError, pa.ArrowException) as e:
        raise CheckpointError(path, f"unreadable Parquet ({str(e).strip()})") from None
    names = table.schema.names
    for column in ("id", "vector") + (("text",) if with_text else ()):
        if column not in names:
            raise CheckpointError(path, f"no column {column!r} (columns: {', '.join(names)})")
    kind = table.schema.field("vector").type
    if not (pa.types.is_fixed_size_list(kind) and kind.value_type == pa.float32()):
        raise CheckpointError(path, f"vector column is {kind}, not a fixed-size list of float32")
    if kind.list_size != dim:
        raise CheckpointError(
            path, f"vector width {kind.list_size}, but {EMBEDDING} says dim {dim}"
        )
    if table.num_rows != rows:
        raise CheckpointError(path, f"{table.num_rows} rows, but {EMBEDDING} implies {rows}")
    ids = table.column("id").to_numpy()
    if not np.array_equal(ids, np.arange(first, first + rows)):
        raise CheckpointError(path, f"ids are not {first}..{first + rows - 1} in order")
    column = table.column("vector").combine_chunks()
    if column.null_count:
        raise CheckpointError(path, "a vector is null")
    vectors = column.values.to_numpy(zero_copy_only=False).reshape(rows, dim)
    if not np.isfinite(vectors).all():
        raise CheckpointError(path, "holds NaN or infinite values")
    check_rows(vectors, np.arange(first, first + rows), path)
    texts = None
    if with_text:
        texts = table.column("text").to_pylist()
        if any(not isinstance(t, str) for t in texts):
            raise CheckpointError(path, "a text is null")
    return texts, vectors


def read_embedding_info(path: str | Path) -> dict:
    """embedding.json of the embedding folder `path`, checked: the folder against its manifest,
    the fields, and the shard list (in order, adding up to the row count). The shards
    themselves are checked as they are read (embedding_shards)."""
    path = Path(path)
    if not path.is_dir() or not is_embedding(path):
        raise CheckpointError(path, f"not an embedding folder from sbert embed (no {EMBEDDING})")
    verify_manifest(path)
    info = read_json(path / EMBEDDING)
    field = functools.partial(json_field, path / EMBEDDING)
    if info.get("format") != FORMAT:
        raise CheckpointError(path / EMBEDDING, f"unknown format {info.get('format')}")
    identity = field(info, "model", dict)
    field(identity, "fingerprint", str)
    count = field(info, "count", int, 0)
    field(info, "dim", int, 1)
    field(info, "with_text", bool)
    at = 0
    for n, shard in enumerate(field(info, "shards", list)):
        if not isinstance(shard, dict):
            raise CheckpointError(path / EMBEDDING, f"shard {n} is not a JSON object")
        file = field(shard, "file", str)
        rows = field(shard, "rows", int, 0)
        if file != shard_name(n) or field(shard, "first_id", int, 0) != at or at + rows > count:
            raise CheckpointError(path / EMBEDDING, f"shard {n} ({file}) is out of order")
        at += rows
    if at != count:
        raise CheckpointError(path / EMBEDDING, f"the shards hold {at} rows, not count {count}")
    name = identity.get("name")
    if isinstance(name, str) and not os.path.isabs(name):  # recorded relative to the folder
        found = os.path.join(os.path.realpath(path), name)
        if os.path.exists(found):
            identity["name"] = os.path.realpath(found)
    return info


def embedding_shards(
    path: str | Path, info: dict
) -> Iterator[tuple[int, list[str] | None, np.ndarray]]:
    """Each shard's (first id, texts, vectors), in order, checked against `info`
    (read_embedding_info): one shard in memory at a time, for stores that outgrow memory."""
    for shard in info["shards"]:
        first = shard["first_id"]
        texts, vectors = _read_shard(Path(path) / shard["file"], info["dim"], first,
                                     shard["rows"], info["with_text"])  # fmt: skip
        yield first, texts, vectors


def read_embedding(path: str | Path, info: dict | None = None) -> Embedding:
    """Read an embedding folder from `sbert embed` whole (checked against its manifest, then
    every shard against embedding.json; `info`: read_embedding_info's, if read already)."""
    info = info if info is not None else read_embedding_info(path)
    vectors = np.empty((info["count"], info["dim"]), np.float32)
    texts: list[str] | None = [] if info["with_text"] else None
    for first, shard_texts, shard_vectors in embedding_shards(path, info):
        vectors[first : first + len(shard_vectors)] = shard_vectors
        if texts is not None:
            texts.extend(shard_texts)
    return Embedding(np.arange(info["count"], dtype=np.int64), texts, vectors, info)


def check_fingerprint(info: dict, model: Encoder, path: str | Path) -> None:
    """Refuse a model other than the one that embedded the vectors (`info`: embedding.json)."""
    theirs, ours = model_identity(model)["fingerprint"], info["model"]["fingerprint"]
    if theirs != ours:
        raise CheckpointError(
            Path(path),
            f"embedded with model {info['model'].get('name') or '?'} (fingerprint {ours}); "
            f"this model's is {theirs}: queries would be compared with vectors of another model",
        )
    if info["dim"] != model.dim:
        raise CheckpointError(
            Path(path), f"dim {info['dim']}, but the model's vectors have {model.dim}"
        )
