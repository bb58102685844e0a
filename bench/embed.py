"""Embedding and storage at scale, through the real commands.

1. `sbert embed` throughput on real sentences (STS-B dev, both sides, repeated to
   `--sentences`) with all-MiniLM-L6-v2, each run a whole `python -m sbert embed` process: in
   process (torch's threads = the cores) beside `--ray` (a Ray started by the command,
   `--actors` actors of one CPU each). Each mode also embeds 64 sentences: what it costs to
   start (imports; for Ray its start and the model loaded in every actor); the difference
   gives the steady rate, whose ratio is Ray's overhead once it runs.
2. A synthetic corpus of `--n` 384-d unit vectors (clustered: 1,000 random centres plus noise,
   as in bench/search.py) written as an embedding folder by `sbert embed`'s own writer, then
   `sbert index --vectors` into the numpy index, our FAISS HNSW index (`--approximate`) and a
   LanceDB store (IVF-PQ): build time;
   single-query latency (median of `--queries` queries, one at a time) and recall@10 against
   the numpy index's exact top-10, for LanceDB exact (bypass_vector_index) and approximate at
   several nprobes (refine_factor 10).

    python bench/embed.py [--n 1000000] [--queries 100] [--actors 2] [--sentences 24000]
                          [--skip-throughput] [--skip-stores]
                          [--dir DIR [--reuse]]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
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


def embed_seconds(corpus: Path, out: Path, extra: list) -> float:
    """Wall time of one `sbert embed` process, from launch to exit."""
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "sbert", "embed", "--model", "all-MiniLM-L6-v2",
               "--corpus", corpus, "--out", out, *extra]  # fmt: skip
    start = time.perf_counter()
    subprocess.run([str(c) for c in command], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def bench_throughput(folder: Path, actors: int, count: int) -> None:
    """Each mode on 64 sentences (what it costs to start: imports, Ray, loading the model in
    every actor) and on `count`; the difference gives the steady rate."""
    sentences = sts_sentences()
    sentences = (sentences * (count // len(sentences) + 1))[:count]
    corpus, small = folder / "corpus.txt", folder / "small.txt"
    corpus.write_text("\n".join(sentences) + "\n")
    small.write_text("\n".join(sentences[:64]) + "\n")
    print(f"\n## sbert embed: {count:,} STS-B dev sentences (repeated), all-MiniLM-L6-v2")
    print(f"{'':34s} {'whole':>8s} {'sent/s':>7s} {'start-up':>9s} {'steady sent/s':>14s}")
    rates = {}
    for name, extra in [("in process", []),
                        (f"--ray (local, {actors} actors x 1 CPU)",
                         ["--ray", "--actors", actors, "--cpus-per-actor", 1])]:  # fmt: skip
        fixed = embed_seconds(small, folder / "emb", extra)
        whole = embed_seconds(corpus, folder / "emb", extra)
        rates[name] = steady = (count - 64) / (whole - fixed)
        print(f"{name:34s} {whole:7.1f}s {count / whole:7.0f} {fixed:8.1f}s {steady:14.0f}")
    local, ray = rates.values()
    print(f"Ray's steady rate against in process: {ray / local:.2f}x")


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
    builds = {"numpy": (folder / "ix", ["--store", "numpy"]),
              "lancedb": (folder / "st", ["--store", "lancedb"]),
              "FAISS HNSW": (folder / "hnsw", ["--approximate"])}  # fmt: skip
    if reuse and (folder / "vectors").is_dir():  # an earlier run's folders (--dir): build what
        centres = np.random.default_rng(0).standard_normal((1000, 384)).astype(np.float32)
        query_vectors = clustered(1000, 384, 2, centres)  # is missing, then search
        emb = folder / "vectors"
    else:
        emb, query_vectors = synthetic_embedding(folder, n)
    for name, (out, flags) in builds.items():
        if not out.is_dir():
            seconds, _ = timed(lambda o=out, f=flags: cli(
                "index", "--vectors", emb, "--out", o, *f))  # fmt: skip
            print(f"build {name:10s} {seconds:7.1f} s")
    query_vectors = query_vectors[:queries]
    index = open_index(folder / "ix", None)
    truth = index.search_vectors(query_vectors, K)[1]

    def latency(searcher, m: int | None = None, **options) -> tuple[float, float]:
        searcher.search_vectors(query_vectors[:1], K, **options)  # warm-up
        times, ids = [], []
        for q in query_vectors[:m]:
            t, (_, i) = timed(lambda q=q: searcher.search_vectors(q[None], K, **options))
            times.append(t)
            ids.append(i[0])
        return 1000 * float(np.median(times)), recall(np.array(ids), truth[:m])

    ms, r = latency(index)
    print(f"{'numpy exact (fp32 scan)':40s} {ms:8.1f} ms/query  recall@10 {r:.3f}")
    hnsw = open_index(folder / "hnsw", None)
    for ef in (64, 128, 256):
        ms, r = latency(hnsw, ef_search=ef)
        name = f"FAISS HNSW (M 32), ef_search {ef}"
        print(f"{name:40s} {ms:8.1f} ms/query  recall@10 {r:.3f}")
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
    parser.add_argument("--sentences", type=int, default=24_000, help="embedded in each mode")
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
            bench_throughput(folder, args.actors, args.sentences)
        if not args.skip_stores:
            bench_stores(folder, args.n, args.queries, args.reuse)
    finally:
        if args.dir is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
