"""embed a corpus into Parquet shards of vectors

Writes OUT/shard-*.parquet (id, text, vector) and OUT/embedding.json (the model's fingerprint,
dim, the corpus); `sbert index --vectors OUT` builds an index from them without encoding again.
A killed run, rerun, embeds only the shards it had not finished. With --ray, the shards are
embedded on a Ray cluster by a pool of actors, each loading the model once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sbert.cli.common import DEVICE_HELP, MODEL_HELP, device_for, on_terminal
from sbert.folders import DEFAULT_MODEL
from sbert.options import option


@dataclass
class Options:
    corpus: str | None = option("texts: one a line, or a CSV/TSV/JSONL/Parquet column",
                                required=True)  # fmt: skip
    out: str | None = option("the embedding folder to write", required=True)
    model: str = option(MODEL_HELP, DEFAULT_MODEL)
    column: str | None = option(
        "the CSV/TSV column, JSONL field or Parquet column holding the texts (default: the file "
        "is one text a line); ids are 0-based row numbers"
    )
    no_text: bool = option("leave the text column out of the shards (ids and vectors only)",
                           False)  # fmt: skip
    shard_size: int = option("texts per Parquet shard: a killed run restarts at its shard",
                             65536, minimum=1)  # fmt: skip
    batch_size: int = option("texts per batch", 64, minimum=1)
    device: str | None = option(DEVICE_HELP)
    ray: str | None = option(
        "embed on Ray Data: `auto` (the cluster `ray start` made), an address HOST:PORT, or "
        "no value for a Ray started here (pip install 'ray[data]')",
        const="local",
    )
    actors: int = option("--ray: model replicas (actors), each loading the model once", 2,
                         minimum=1)  # fmt: skip
    cpus_per_actor: float = option("--ray: CPUs each actor reserves (its torch threads)", 1.0,
                                   minimum=0)  # fmt: skip
    gpus_per_actor: float = option("--ray: GPUs each actor reserves (0.5: two share one)", 0.0,
                                   minimum=0)  # fmt: skip


def run(o: Options) -> None:
    import contextlib
    import os

    from sbert.data.readers import read_corpus
    from sbert.errors import ConfigError
    from sbert.fileio import check_output_dir
    from sbert.inference.embed import embed_corpus, is_embedding, pyarrow
    from sbert.inference.load import load

    out = Path(o.out)
    pyarrow()  # one line naming the install, before any work
    check_output_dir(out, is_embedding, "an embedding folder")
    if o.ray is None and (o.gpus_per_actor or o.actors != 2 or o.cpus_per_actor != 1.0):
        raise ConfigError("--actors, --cpus-per-actor and --gpus-per-actor go with --ray")
    texts, column = read_corpus(o.corpus, o.column)
    model = load(o.model)
    shards, cluster = None, contextlib.nullcontext()
    if o.ray is not None:
        from sbert.inference.embed_ray import RayShards, check_resources, connect

        if o.device is not None:
            raise ConfigError("--device does not go with --ray: give --gpus-per-actor")
        if o.gpus_per_actor and not hasattr(model, "parameters"):
            raise ConfigError(
                f"{o.model} is an export, which runs on the CPU: --gpus-per-actor does not "
                f"apply (leave it out, or use the model folder it was exported from)"
            )
        cluster = connect(o.ray)  # an address that does not answer: one line, nothing written
        source = getattr(model, "source", None) or o.model
        shards = RayShards(source, texts, o.shard_size, o.batch_size, o.actors,
                           o.cpus_per_actor, o.gpus_per_actor)  # fmt: skip
    with cluster:
        if o.ray is not None:  # an actor pool Ray cannot place would wait forever
            check_resources(o.actors, o.cpus_per_actor, o.gpus_per_actor)
        info = embed_corpus(
            model,
            texts,
            out,
            corpus={"path": os.path.realpath(o.corpus), "column": column},
            shard_size=o.shard_size,
            batch_size=o.batch_size,
            with_text=not o.no_text,
            device=None if o.ray is not None else device_for(model, o.device),
            show_progress_bar=on_terminal(),
            shards=shards,
        )
    where = f" on Ray ({o.ray})" if o.ray is not None else ""
    print(f"embedded {info['count']} texts (dim {info['dim']}) into {len(info['shards'])} "
          f"shard(s) in {out}{where}")  # fmt: skip
