"""embed a corpus into a search index folder"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sbert.choices import Precision
from sbert.cli.common import DEVICE_HELP, MODEL_HELP, device_for, on_terminal
from sbert.folders import DEFAULT_MODEL
from sbert.options import option


@dataclass
class Options:
    corpus: str | None = option(
        "texts: one a line, or a CSV/TSV, JSON-lines or Parquet column (or --vectors)"
    )
    vectors: str | None = option(
        "an embedding folder from `sbert embed` (of this model): index its vectors and texts "
        "without encoding again"
    )
    out: str | None = option("the index folder to write", required=True)
    model: str = option(MODEL_HELP, DEFAULT_MODEL)
    column: str | None = option(
        "the CSV/TSV or Parquet column or JSONL field holding the texts (default: one text a "
        "line); hit ids are 0-based row numbers"
    )
    precision: Precision = option(
        "scan quantised vectors, rescore with fp32 (int8: 4x, binary: 32x less memory scanned)",
        "fp32",
    )
    approximate: bool = option(
        "add a FAISS HNSW graph for large corpora (pip install faiss-cpu)", False
    )
    store: Literal["numpy", "lancedb"] = option(
        "numpy: this library's index folder; lancedb: a LanceDB table with an IVF-PQ index "
        "(with --vectors; pip install lancedb)",
        "numpy",
    )
    batch_size: int = option("texts per batch", 64, minimum=1)
    chunk_size: int = option("texts per resumable chunk: a killed run restarts at its chunk",
                             8192, minimum=1)  # fmt: skip
    device: str | None = option(DEVICE_HELP)


def run(o: Options) -> None:
    import os

    from sbert.data.readers import read_corpus
    from sbert.errors import ConfigError
    from sbert.fileio import check_output_dir
    from sbert.folders import is_index
    from sbert.inference.index import Index, faiss_module, work_folder
    from sbert.inference.load import load

    out = Path(o.out)
    if (o.corpus is None) == (o.vectors is None):
        raise ConfigError("give --corpus FILE, or --vectors DIR from sbert embed")
    if o.vectors is not None and o.column is not None:
        raise ConfigError("--column goes with --corpus: --vectors DIR holds its texts")
    if o.store == "lancedb" and o.vectors is None:
        raise ConfigError("--store lancedb reads --vectors DIR (sbert embed it first)")
    if o.store == "lancedb" and (o.precision != "fp32" or o.approximate):
        raise ConfigError("--store lancedb makes its own IVF-PQ index: drop --precision and "
                          "--approximate")  # fmt: skip
    check_output_dir(out, is_index, "an index")
    if o.approximate:  # one line naming the install, before the corpus is read or embedded
        faiss_module()
    if o.store == "lancedb":
        store = _store_from_vectors(o, out)
        kind = "IVF-PQ index" if store.approximate else "too small for an ANN index: exact"
        print(f"stored {len(store)} texts from {o.vectors} in a LanceDB table ({kind}) at {out}")
        return
    if o.vectors is not None:
        index = _from_vectors(o, out)
        kind = index.precision + (", approximate" if index.approximate else "")
        print(f"indexed {len(index)} texts ({kind}) from {o.vectors} into {out}")
        return
    texts, column = read_corpus(o.corpus, o.column)
    with work_folder(out) as work:  # locked: a second `sbert index --out OUT` is refused
        model = load(o.model)
        index = Index.build(
            model,
            texts,
            precision=o.precision,
            approximate=o.approximate,
            batch_size=o.batch_size,
            chunk_size=o.chunk_size,
            work_dir=work,
            device=device_for(model, o.device),
            show_progress_bar=on_terminal(),
            corpus={"path": os.path.realpath(o.corpus), "column": column},
        )
        index.save(out)
    kind = index.precision + (", approximate" if index.approximate else "")
    print(f"indexed {len(index)} texts ({kind}) into {out}")


def _read_vectors(o: Options):
    """An embedding folder's embedding.json, checked, and the model (the one that embedded
    the vectors); the shards are read by the caller."""
    import os

    from sbert.errors import ConfigError
    from sbert.inference.embed import check_fingerprint, read_embedding_info
    from sbert.inference.load import load

    info = read_embedding_info(o.vectors)  # the files first: cheap, and what goes wrong
    if not info["with_text"]:
        raise ConfigError(
            f"{o.vectors}: embedded with --no-text: an index answers with texts; embed again "
            f"without --no-text"
        )
    model = load(o.model)
    check_fingerprint(info, model, o.vectors)
    corpus = {**info.get("corpus", {}), "vectors": os.path.realpath(o.vectors)}
    if isinstance(corpus.get("path"), str):  # recorded relative to the embedding folder
        corpus["path"] = os.path.realpath(os.path.join(o.vectors, corpus["path"]))
    return info, model, corpus


def _from_vectors(o: Options, out: Path):
    """The index of an embedding folder's vectors: the model must be the one that embedded them."""
    from sbert.inference.embed import read_embedding
    from sbert.inference.index import Index

    info, model, corpus = _read_vectors(o)
    embedding = read_embedding(o.vectors, info)  # in memory: the numpy index holds them all
    index = Index.from_vectors(
        model, embedding.vectors, embedding.texts, precision=o.precision,
        approximate=o.approximate, corpus=corpus, show_progress_bar=on_terminal(),
    )  # fmt: skip
    index.save(out)
    return index


def _store_from_vectors(o: Options, out: Path):
    """A LanceDB store of an embedding folder's vectors (sbert/inference/stores.py), built
    shard by shard: the corpus need not fit in memory."""
    from sbert.inference.embed import embedding_shards
    from sbert.inference.stores import LanceStore, lancedb

    lancedb()  # one line naming the install, before reading the vectors
    info, model, corpus = _read_vectors(o)
    rows = embedding_shards(o.vectors, info)
    return LanceStore.build(out, model, rows, info["count"], info["dim"], corpus=corpus)
