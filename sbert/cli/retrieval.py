"""retrieval metrics (MRR@10, NDCG@10, recall@k...) of a model as one JSON object

Queries, relevant texts and corpus come from a scored pair file: pairs scoring >= --min-score
give query -> relevant text; all second sentences are the corpus.
"""

from __future__ import annotations

from dataclasses import dataclass

from sbert.cli.common import DEVICE_HELP, MODEL_HELP, device_for, on_terminal
from sbert.folders import DEFAULT_MODEL, REPO_DATA
from sbert.options import option


@dataclass
class Options:
    model: str = option(MODEL_HELP, DEFAULT_MODEL)
    data: str = option(
        "scored pair file, PATH[@SPLIT][[FROM:TO]][:COLUMNS]",
        str(REPO_DATA / "stsbenchmark" / "sts-dev.csv"),
    )
    columns: dict[str, str] | None = option(
        "a table's columns by role, a=COL,b=COL,score=COL (for names the readers do not know)"
    )
    min_score: float = option("relevance threshold", 4.0)
    batch_size: int = option("texts per batch", 32, minimum=1)
    device: str | None = option(DEVICE_HELP)


def run(o: Options) -> None:
    import json
    import sys

    from sbert.inference.load import load
    from sbert.inference.retrieval import evaluate_retrieval, retrieval_set_from_pairs

    data = retrieval_set_from_pairs(o.data, o.min_score, o.columns)  # its split and rows too
    model = load(o.model)
    device = device_for(model, o.device)
    metrics = evaluate_retrieval(model, data, o.batch_size, device, on_terminal())
    json.dump(metrics, sys.stdout, allow_nan=False)
    print()
