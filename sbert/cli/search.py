"""the top-k texts of an index for queries"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from sbert.cli.common import write_lines
from sbert.options import option


@dataclass
class Options:
    index: str | None = option("an index folder or LanceDB store from `sbert index`",
                               required=True)  # fmt: skip
    query: str | None = option("one query (or --queries FILE)", positional=True)
    queries: str | None = option("a file of queries, one a line")
    k: int = option("hits per query", 10, minimum=1)
    ef_search: int | None = option(
        "approximate index only: the HNSW search beam (default 128); wider finds more of the "
        "true neighbours, slower",
        minimum=1,
    )
    exact: bool = option(
        "LanceDB store: scan every vector (bypass its IVF-PQ index): the exact top-k", False
    )
    nprobes: int | None = option(
        "LanceDB store: IVF partitions scanned a query (default 20); more finds more of the "
        "true neighbours, slower",
        minimum=1,
    )
    refine_factor: int | None = option(
        "LanceDB store: rescore refine-factor x k PQ candidates with the full vectors "
        "(default 200)",
        minimum=1,
    )
    output: str | None = option("with --queries: write JSON lines here")
    model: str | None = option(
        "the model to encode queries (default: the one the index records; another model is refused)"
    )


def run(o: Options) -> None:
    import dataclasses
    import json

    from sbert.data.readers import check_sentences, read_sentences
    from sbert.errors import ConfigError
    from sbert.fileio import check_output_file
    from sbert.inference.load import load
    from sbert.inference.stores import open_index

    if (o.query is None) == (o.queries is None):
        raise ConfigError("give one query, or --queries FILE")
    if o.output is not None and o.queries is None:
        raise ConfigError("--output goes with --queries")
    if o.query is not None:  # "" too: an empty query, not a missing file
        queries = check_sentences([o.query], ["query"])
    else:
        queries = read_sentences(o.queries)
    if o.output is not None:
        check_output_file(o.output, [o.queries, o.index, o.model])
    index = open_index(o.index, load(o.model) if o.model else None, exact=o.exact,
                       nprobes=o.nprobes, refine_factor=o.refine_factor)  # fmt: skip
    if o.output is not None and o.model is None:  # nor into the model the index recorded
        check_output_file(o.output, [getattr(index.model, "source", None)])
    results = index.search(queries, o.k, ef_search=o.ef_search)
    if o.output is None:
        for query, hits in zip(queries, results, strict=True):
            if len(queries) > 1:
                print(f"# {query}")
            for rank, hit in enumerate(hits, 1):
                print(f"{rank:3d}  {hit.score:.4f}  {hit.text}  [id {hit.id}]")
        return
    write_lines(o.output, [
        json.dumps({"query": q, "hits": [dataclasses.asdict(h) for h in hits]},
                   ensure_ascii=False, allow_nan=False) + "\n"
        for q, hits in zip(queries, results, strict=True)
    ])  # fmt: skip
    print(f"wrote the top {o.k} hits of {len(queries)} queries to {o.output}", file=sys.stderr)
