"""Embedding and storage at scale, through the real commands (sbert.cli.main in this process).

1. `sbert embed` throughput on real sentences (STS-B dev, both sides, 3,000) with
   all-MiniLM-L6-v2: in this process (torch's threads = the cores) beside `--ray` (a Ray
   started here, `--actors` actors of one CPU each); wall time of the whole command, Ray's
   start included, and sentences/s.
2. A synthetic corpus of `--n` 384-d unit vectors (clustered: 1,000 random centres plus noise,
   as in bench/search.py) written as an embedding folder by `sbert embed`'s own writer, then
   `sbert index --vectors` into the numpy index and into a LanceDB store (IVF-PQ): build time;
   single-query latency (median of `--queries` queries, one at a time) and recall@10 against
   the numpy index's exact top-10, for LanceDB exact (bypass_vector_index) and approximate at
   several nprobes (refine_factor 10).

    python bench/embed.py [--n 1000000] [--queries 100] [--actors 2] [--skip-throughput]
                          [--dir DIR [--reuse]]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from common import machine, sts_sentences
from search import clustered, recall

K = 10


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def cli(*args) -> None:
    from sbert.cli import main

    code = main([str(a) for a in args])
    if code != 0:
        raise SystemExit(f"sbert {args[0]} failed ({code})")


def bench_throughput(folder: Path, actors: int) -> None:
    sentences = list(dict.fromkeys(sts_sentences()))
    corpus = folder / "sts.txt"
    corpus.write_text("\n".join(sentences) + "\n")
    print(f"\n## sbert embed: {len(sentences)} STS-B dev sentences, all-MiniLM-L6-v2")
    for name, extra in [("in process", []),
                        (f"--ray (local, {actors} actors x 1 CPU)",
                         ["--ray", "--actors", actors, "--cpus-per-actor", 1])]:  # fmt: skip
        out = folder / "emb"
        shutil.rmtree(out, ignore_errors=True)
        seconds, _ = timed(lambda e=extra, o=out: cli(
            "embed", "--corpus", corpus, "--out", o, "--shard-size", 1000, *e))  # fmt: skip
        print(f"{name:40s} {seconds:7.1f} s  {len(sentences) / seconds:7.0f} sentences/s")


def synthetic_embedding(folder: Path, n: int) -> tuple[Path, np.ndarray]:
    """An embedding folder of n clustered vectors, written by sbert embed's writer."""
    from sbert.inference.embed import embed_corpus
    from sbert.inference.load import load

    model = load("all-MiniLM-L6-v2")
    centres = np.random.default_rng(0).standard_normal((1000, model.dim)).astype(np.float32)
    vectors = clustered(n, model.dim, 1, centres)
    texts = [f"synthetic text {i}" for i in range(n)]
    size = 100_000

    def shards(todo, bar):
        for s in todo:
            bar.update(min(size, n - s * size))
            yield s, vectors[s * size : (s + 1) * size]

    out = folder / "vectors"
    seconds, _ = timed(lambda: embed_corpus(model, texts, out, shard_size=size, shards=shards))
    print(f"wrote {n:,} x {model.dim} vectors as Parquet shards in {seconds:.1f} s")
    return out, clustered(1000, model.dim, 2, centres)


def bench_stores(folder: Path, n: int, queries: int, reuse: bool = False) -> None:
    from sbert.inference.stores import open_index

    print(f"\n## {n:,} synthetic 384-d vectors: sbert index --vectors, numpy index and LanceDB")
    if reuse and (folder / "st").is_dir():  # the folders of an earlier run with --dir: search only
        centres = np.random.default_rng(0).standard_normal((1000, 384)).astype(np.float32)
        query_vectors = clustered(1000, 384, 2, centres)
    else:
        emb, query_vectors = synthetic_embedding(folder, n)
        for store, out in (("numpy", folder / "ix"), ("lancedb", folder / "st")):
            seconds, _ = timed(lambda s=store, o=out: cli(
                "index", "--vectors", emb, "--out", o, "--store", s))  # fmt: skip
            print(f"build {store:8s} {seconds:7.1f} s")
    query_vectors = query_vectors[:queries]
    index = open_index(folder / "ix", None)
    truth = index.search_vectors(query_vectors, K)[1]

    def latency(searcher, m: int | None = None) -> tuple[float, float]:
        searcher.search_vectors(query_vectors[:1], K)  # warm-up
        times, ids = [], []
        for q in query_vectors[:m]:
            t, (_, i) = timed(lambda q=q: searcher.search_vectors(q[None], K))
            times.append(t)
            ids.append(i[0])
        return 1000 * float(np.median(times)), recall(np.array(ids), truth[:m])

    ms, r = latency(index)
    print(f"{'numpy exact (fp32 scan)':40s} {ms:8.1f} ms/query  recall@10 {r:.3f}")
    store = open_index(folder / "st", None, exact=True)
    print(f"LanceDB ANN settings: {store.info['ann']}")
    ms, r = latency(store, 20)  # a full scan a query: 20 queries say enough
    print(f"{'LanceDB exact (bypass_vector_index)':40s} {ms:8.1f} ms/query  recall@10 {r:.3f}"
          f"  (20 queries)")  # fmt: skip
    for nprobes, refine in ((10, 10), (20, 10), (100, 10), (20, 50), (20, 200), (50, 200)):
        store = open_index(folder / "st", None, nprobes=nprobes, refine_factor=refine)
        ms, r = latency(store)
        name = f"LanceDB IVF-PQ nprobes {nprobes}, refine {refine}"
        print(f"{name:40s} {ms:8.1f} ms/query  recall@10 {r:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-stores", action="store_true")
    parser.add_argument("--dir", help="work folder (default: a temporary one, removed)")
    parser.add_argument(
        "--reuse", action="store_true", help="with --dir: search the stores a run built there"
    )
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(f"# bench/embed.py on {machine()}")
    folder = Path(args.dir or tempfile.mkdtemp(prefix="sbert-bench-embed-"))
    try:
        if not args.skip_throughput:
            bench_throughput(folder, args.actors)
        if not args.skip_stores:
            bench_stores(folder, args.n, args.queries, args.reuse)
    finally:
        if args.dir is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
