"""Search speed and quality: `sbert.Index` beside sentence-transformers, in one process.

1. Indexing throughput on real sentences (STS-B dev, both sides, distinct): `Index.build` with
   all-MiniLM-L6-v2, sentences/s, beside `SentenceTransformer.encode(normalize_embeddings=True)`.
2. Exact search: N synthetic 384-d unit vectors (clustered: 1,000 random centres plus noise,
   so that neighbours mean something, as with real embeddings), Q queries from the same
   distribution, k = 10. Our chunked matmul + top-k (numpy) beside `util.semantic_search`
   (torch) on the same vectors: time, GFLOP/s (2 Q N H flops) against this CPU's fp32 matmul
   peak measured here (torch's), and whether the ids agree.
3. int8 / binary scans with fp32 rescoring: memory scanned, time, recall@10 against exact.
4. The approximate index (FAISS HNSW) on the first `--approx-n` vectors: build time, and the
   query time and recall@10 against exact search on the same vectors at each search beam.

    python bench/search.py [--n 1000000] [--queries 1000] [--approx-n 1000000] [--sentences N]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch
from common import matmul_peak, sts_sentences

K = 10


def clustered(n: int, dim: int, seed: int, centres: np.ndarray) -> np.ndarray:
    """n unit vectors: a random centre plus Gaussian noise, generated in float32 blocks."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), np.float32)
    for a in range(0, n, 100_000):
        b = min(n, a + 100_000)
        x = centres[rng.integers(0, len(centres), b - a)]
        x += 0.7 * rng.standard_normal((b - a, dim), dtype=np.float32)
        out[a:b] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def recall(ids: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / K for a, b in zip(ids, truth, strict=True)]))


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def bench_indexing(limit: int) -> None:
    from sentence_transformers import SentenceTransformer

    from sbert.folders import resolve
    from sbert.inference.index import Index
    from sbert.models.sentence import SentenceBert

    sentences = list(dict.fromkeys(sts_sentences()))[: limit or None]
    ours = SentenceBert.from_pretrained("all-MiniLM-L6-v2")
    theirs = SentenceTransformer(str(resolve("all-MiniLM-L6-v2")), device="cpu")
    ours.encode(sentences[:64])  # warm-up
    theirs.encode(sentences[:64])
    t_ours, index = timed(lambda: Index.build(ours, sentences, batch_size=64))
    t_theirs, _ = timed(lambda: theirs.encode(sentences, batch_size=64, normalize_embeddings=True))
    n = len(sentences)
    print(f"\n## indexing {n} distinct STS-B dev sentences (batch 64)")
    print(f"ours  Index.build            {t_ours:7.1f} s  {n / t_ours:7.1f} sentences/s")
    print(f"ST    encode(normalize=True) {t_theirs:7.1f} s  {n / t_theirs:7.1f} sentences/s")
    print(f"ratio ours/theirs (throughput): {t_theirs / t_ours:.2f}; {len(index)} vectors")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1_000_000, help="corpus vectors")
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--approx-n", type=int, default=1_000_000, help="vectors for the HNSW index")
    p.add_argument("--sentences", type=int, default=0, help="limit the indexing sentences")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads:  # torch's threads (sentence-transformers) and numpy's BLAS (ours)
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)
    from sentence_transformers import util

    from sbert.inference.index import Index

    print("# bench/search.py")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"{torch.get_num_threads()} torch threads; python {platform.python_version()}, "
        f"torch {torch.__version__}"
    )
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    peak = matmul_peak(torch.device("cpu"))
    print(f"fp32 matmul peak (4096^3, best of 3): {peak:.1f} GFLOP/s")

    bench_indexing(args.sentences)

    dim = 384
    centres = np.random.default_rng(0).standard_normal((1000, dim), dtype=np.float32)
    corpus, queries = clustered(args.n, dim, 1, centres), clustered(args.queries, dim, 2, centres)
    exact = Index(corpus, [""] * args.n, {"fingerprint": "synthetic"})
    print(f"\n## exact search: {args.queries} queries x {args.n:,} x {dim} fp32, k = {K}")
    t_ours, (_, truth) = timed(lambda: exact.search_vectors(queries, K))
    q, c = torch.from_numpy(queries), torch.from_numpy(corpus)
    t_st, hits = timed(lambda: util.semantic_search(q, c, top_k=K))
    flops = 2 * args.queries * args.n * dim
    theirs = [[h["corpus_id"] for h in row] for row in hits]
    agree = np.mean([a == list(b) for a, b in zip(theirs, truth, strict=True)])
    for name, t in (("ours  Index.search_vectors", t_ours), ("ST    util.semantic_search", t_st)):
        print(
            f"{name}  {t:7.2f} s  {flops / t / 1e9:6.1f} GFLOP/s  "
            f"({100 * flops / t / 1e9 / peak:4.1f}% of peak)"
        )
    print(
        f"ratio ours/theirs (speed): {t_st / t_ours:.2f}; identical top-{K} ids for "
        f"{100 * agree:.1f}% of queries"
    )

    print(f"\n## quantised scans + fp32 rescoring of {4 * K} candidates, recall@{K} vs exact")
    print(f"fp32    {corpus.nbytes / 2**20:8.1f} MiB scanned  {t_ours:7.2f} s  recall 1.0000")
    for precision in ("int8", "binary"):
        index = Index(corpus, exact.texts, exact.identity, precision=precision)
        index._derive()
        t, (_, ids) = timed(lambda index=index: index.search_vectors(queries, K))
        size = index.codes.nbytes / 2**20
        print(
            f"{precision:6s}  {size:8.1f} MiB scanned  {t:7.2f} s  recall {recall(ids, truth):.4f}"
        )

    n = min(args.approx_n, args.n)
    print(f"\n## approximate: FAISS HNSW on the first {n:,} vectors")
    sub = Index(corpus[:n], exact.texts[:n], exact.identity, approximate=True)
    t_build, _ = timed(sub._derive)
    _, sub_truth = Index(corpus[:n], sub.texts, exact.identity).search_vectors(queries, K)
    print(f"build {t_build:7.1f} s; {args.queries} queries at each search beam (ef_search):")
    for ef in (64, 128, 256, 512, 1024):  # 128: the default
        t_query, (_, ids) = timed(lambda ef=ef: sub.search_vectors(queries, K, ef))
        print(
            f"ef_search {ef:5d}   query {t_query:6.2f} s   recall@{K} {recall(ids, sub_truth):.4f}"
        )


if __name__ == "__main__":
    main()
