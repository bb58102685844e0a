"""Exact top-k inner products over a matrix read in chunks, in numpy: no torch, so an ONNX
export searches (sbert/inference/index.py) and evaluates retrieval (retrieval.py) without it.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise

import numpy as np

# Columns a block in `top_k`: small enough that k blocks are few columns, large enough that the
# block maxima are few rows. At 128, 1,000 queries x 1M vectors search as fast as torch.topk
# (docs/performance.md, search).
BLOCK = 128


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest entries of each row of `scores` (Q, W), best first: values, columns (Q, k).

    A row of whole blocks of BLOCK columns is searched by its blocks' maxima: the k best entries
    lie in the k blocks with the largest maxima (an entry of any other block is exceeded by
    those k maxima, each in another block, so it is not among the k best, ties aside). Only
    k x BLOCK columns a row are then partitioned: np.argpartition over a whole row of 65,536 is
    about 25 times slower than torch.topk.
    """
    q, w = scores.shape
    k = min(k, w)
    blocks = w // BLOCK
    if w % BLOCK or blocks <= k:
        return best_k(scores, np.arange(w), k)
    grid = scores.reshape(q, blocks, BLOCK)
    top = np.argpartition(grid.max(axis=2), blocks - k, axis=1)[:, blocks - k :]  # (Q, k)
    values = grid[np.arange(q)[:, None], top].reshape(q, k * BLOCK)
    columns = (top[:, :, None] * BLOCK + np.arange(BLOCK)).reshape(q, k * BLOCK)
    return best_k(values, columns, k)


def best_k(values: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest values of each row of `values` (Q, W), best first, and their `ids` (Q, W)
    or (W,)."""
    pick = np.argpartition(values, values.shape[1] - k, axis=1)[:, -k:]
    order = np.argsort(-np.take_along_axis(values, pick, 1), axis=1, kind="stable")
    pick = np.take_along_axis(pick, order, 1)
    ids = np.broadcast_to(ids, values.shape)
    return np.take_along_axis(values, pick, 1), np.take_along_axis(ids, pick, 1)


def chunked_topk(
    queries: np.ndarray,
    n: int,
    block: Callable[[int, int], np.ndarray],
    k: int,
    chunk_size: int = 65536,
    query_chunk_size: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k inner products of queries (Q, H) against n rows, read `chunk_size` rows at a time
    through block(start, stop) -> (stop - start, H) float32. Returns scores, ids (Q, k), best
    first. Peak memory: one block plus a (query_chunk_size, chunk_size) score matrix."""
    k = min(k, n)
    edges = [*range(0, n, chunk_size), n]
    # The last chunk as whole blocks, then a tail under one block: both take top_k's fast path.
    tail = (n - edges[-2]) % BLOCK if n else 0  # an empty corpus: no chunks, no hits
    if 0 < tail < n - edges[-2]:
        edges.insert(-1, n - tail)
    scores_out, ids_out = [], []
    for q0 in range(0, len(queries), query_chunk_size):
        q = queries[q0 : q0 + query_chunk_size]
        best_s = np.empty((len(q), 0), np.float32)
        best_i = np.empty((len(q), 0), np.int64)
        for c0, c1 in pairwise(edges):
            s, i = top_k(q @ block(c0, c1).T, k)  # (q, k)
            best_s, best_i = best_k(
                np.concatenate([best_s, s], 1), np.concatenate([best_i, i + c0], 1), k
            )
        scores_out.append(best_s)
        ids_out.append(best_i)
    return np.concatenate(scores_out), np.concatenate(ids_out)


def ties_by_id(scores: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row of hits by score descending, equal scores lowest id first (as
    sentence-transformers ranks them): the top-k's partition leaves ties in any order, and
    duplicate texts in a corpus tie exactly."""
    order = np.lexsort((ids, -scores), axis=-1)
    return np.take_along_axis(scores, order, -1), np.take_along_axis(ids, order, -1)
