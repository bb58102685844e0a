"""Retrieval metrics, so that search quality is measured: each query's corpus texts ranked by
cosine similarity, scored against the relevant ones with accuracy@k, precision@k, recall@k,
MRR@10, NDCG@10 (binary relevance, Järvelin & Kekäläinen, 2002) and MAP@100, the definitions
and defaults of sentence-transformers' InformationRetrievalEvaluator.

A retrieval set can be built from any scored pair file: the pairs scoring at least a threshold
give query (first sentence) -> relevant text (second sentence), and all second sentences form
the corpus (for STS-B dev at >= 4: "the two sentences mean the same, or nearly").
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

from sbert.data.specs import DataSpec, parse_spec, read_spec
from sbert.errors import ConfigError, DataError
from sbert.inference.encoder import Encoder, check_finite
from sbert.inference.topk import chunked_topk, ties_by_id

ACCURACY_AT, MRR_AT, NDCG_AT, MAP_AT = (1, 3, 5, 10), 10, 10, 100


@dataclass(frozen=True)
class RetrievalSet:
    """Queries, a corpus, and for each query the ids (corpus positions) of its relevant texts."""

    queries: list[str]
    corpus: list[str]
    relevant: list[set[int]]

    def __post_init__(self) -> None:
        """Refuse a set the metrics cannot score: every query needs a relevant text (recall
        divides by their count), and an id past the corpus could never be found."""
        if not self.queries or not self.corpus:
            raise ConfigError("a retrieval set needs at least one query and one corpus text")
        if len(self.relevant) != len(self.queries):
            raise ConfigError(f"relevant: {len(self.relevant)} sets for {len(self.queries)} "
                              f"queries; one set of corpus ids a query")  # fmt: skip
        for i, ids in enumerate(self.relevant):
            if not ids:
                raise ConfigError(f"relevant[{i}]: query {i} has no relevant text")
            outside = [x for x in ids if not (isinstance(x, int) and 0 <= x < len(self.corpus))]
            if outside:
                raise ConfigError(f"relevant[{i}]: {outside[0]!r} is no corpus id (0 to "
                                  f"{len(self.corpus) - 1})")  # fmt: skip


def retrieval_set_from_pairs(
    spec: str | DataSpec, min_score: float = 4.0, columns: dict[str, str] | None = None
) -> RetrievalSet:
    """Pairs scoring >= min_score: first sentence = query, second = its relevant text; every
    distinct second sentence of the pairs is in the corpus. Each distinct text appears once, so
    no two corpus entries tie. `spec`: a file, with a split and a range of its pairs
    (`sick.txt@TRIAL[0:200]`, read as training data is: sbert/data/specs.py); `columns`: a
    table's columns by role where the spec names none."""
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    data = read_spec(spec, columns=columns)
    if not data.has_scores:
        raise DataError(spec.path, None, "a retrieval set needs scored pairs; this file has none "
                                         "(a column mapping names them: score=COL)")  # fmt: skip
    corpus = list(dict.fromkeys(p.b for p in data.pairs))
    position = {text: i for i, text in enumerate(corpus)}
    relevant: dict[str, set[int]] = {}
    for p in data.pairs:
        if p.score >= min_score:
            relevant.setdefault(p.a, set()).add(position[p.b])
    if not relevant:
        raise DataError(spec.path, None, f"no pair scores {min_score:g} or more")
    return RetrievalSet(list(relevant), corpus, list(relevant.values()))


def ranking_metrics(ranked: Sequence[Sequence[int]], relevant: Sequence[set[int]]) -> dict:
    """Mean metrics over queries of ranked corpus ids (best first) against relevant ids."""
    sums: dict[str, float] = {}

    def add(name: str, value: float) -> None:
        sums[name] = sums.get(name, 0.0) + value

    for ids, rel in zip(ranked, relevant, strict=True):
        hit = [i in rel for i in ids]
        for k in ACCURACY_AT:
            add(f"accuracy@{k}", float(any(hit[:k])))
            add(f"precision@{k}", sum(hit[:k]) / k)
            add(f"recall@{k}", sum(hit[:k]) / len(rel))
        first = next((r for r, h in enumerate(hit[:MRR_AT]) if h), None)
        add(f"mrr@{MRR_AT}", 0.0 if first is None else 1 / (first + 1))
        dcg = sum(1 / math.log2(r + 2) for r, h in enumerate(hit[:NDCG_AT]) if h)
        ideal = sum(1 / math.log2(r + 2) for r in range(min(len(rel), NDCG_AT)))
        add(f"ndcg@{NDCG_AT}", dcg / ideal)
        found, precisions = 0, 0.0
        for r, h in enumerate(hit[:MAP_AT]):
            if h:
                found += 1
                precisions += found / (r + 1)
        add(f"map@{MAP_AT}", precisions / min(MAP_AT, len(rel)))
    return {name: total / len(ranked) for name, total in sums.items()}


def evaluate_retrieval(
    model: Encoder,
    data: RetrievalSet | str | os.PathLike[str] | DataSpec,
    batch_size: int = 32,
    device=None,
    show_progress_bar: bool = False,
) -> dict[str, float]:
    """Retrieval metrics of `model` (a PyTorch model or an ONNX export) on `data` (exact cosine
    search), one flat dict. `data`: a RetrievalSet, or a scored pair file or data spec, whose
    pairs scoring 4 or more are the relevant ones (`retrieval_set_from_pairs`: what `sbert
    evaluate-retrieval --data` reads). Vectors of NaN (damaged weights) are an SbertError, not
    metrics."""
    if isinstance(data, (str, os.PathLike, DataSpec)):
        data = retrieval_set_from_pairs(data if isinstance(data, DataSpec) else os.fspath(data))
    elif not isinstance(data, RetrievalSet):
        raise TypeError(f"data: a RetrievalSet or a pair file, not {type(data).__name__}")
    encode = functools.partial(model.encode, batch_size=batch_size, normalize=True,
                               device=device, show_progress_bar=show_progress_bar)  # fmt: skip
    q, c = encode(data.queries), encode(data.corpus)
    check_finite(q, model, "query")
    check_finite(c, model, "corpus text")
    k = max(*ACCURACY_AT, MRR_AT, NDCG_AT, MAP_AT)
    # Equal scores rank by corpus id, as sentence-transformers does: the order is deterministic.
    _, ranked = ties_by_id(*chunked_topk(q, len(c), lambda a, b: c[a:b], k))
    return {
        "queries": len(data.queries),
        "corpus": len(data.corpus),
        **ranking_metrics(ranked.tolist(), data.relevant),
    }
