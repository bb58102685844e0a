"""print dev metrics of a model as one JSON object"""

from __future__ import annotations

from dataclasses import dataclass

from sbert.cli.common import DEVICE_HELP, on_terminal
from sbert.options import option


@dataclass
class Options:
    model: str | None = option("model folder (with its classifier, if any)", required=True)
    data: str | None = option(
        "data file, PATH[@SPLIT][[FROM:TO]][:COLUMNS][:OBJECTIVE]: STS-B, SICK, NLI JSON lines, "
        "or a CSV/TSV, JSON lines or Parquet table; OBJECTIVE regression or classification "
        "scores only that", required=True
    )  # fmt: skip
    format: str | None = option("sts, sick, nli, csv, jsonl or parquet (default: detected)")
    columns: dict[str, str] | None = option(
        "a table's columns by role, a=COL,b=COL,label=COL,score=COL (for names the readers do "
        "not know)"
    )
    batch_size: int = option("pairs per batch", 128, minimum=1)
    device: str | None = option(DEVICE_HELP)


def run(o: Options) -> None:
    import json
    import math
    import sys

    from sbert.data import batching
    from sbert.data.specs import read_scored_spec
    from sbert.errors import SbertError
    from sbert.models.device import pick_device
    from sbert.models.multitask import MultiTaskModel
    from sbert.training.evaluate import evaluate

    data = read_scored_spec(o.data, format=o.format, columns=o.columns)
    if not (data.has_labels or data.has_scores):  # a pair count alone is no evaluation
        raise SbertError(f"{o.data}: no labels and no scores to evaluate against (a column "
                         f"mapping names them: label=COL, score=COL)")  # fmt: skip
    device = pick_device(o.device)
    model = MultiTaskModel.from_pretrained(o.model).to(device)
    if data.has_labels and model.classifier is None:
        if not data.has_scores:
            raise SbertError(f"{o.data}: labels only, and {o.model} has no classifier to score")
        print(f"note: {o.model} has no classifier: {o.data}'s labels are not scored",
              file=sys.stderr)  # fmt: skip
    index = {name: i for i, name in enumerate(model.labels)} or None
    pairs = batching.tokenize_pairs(data, model.encoder.tokenizer, index)
    metrics = evaluate(model, pairs, o.batch_size, device, show_progress_bar=on_terminal())
    undefined = [name for name, value in metrics.items() if not math.isfinite(value)]
    if undefined:  # NaN is no JSON, and no score: say why instead
        why = (f"{', '.join(undefined)} undefined: a correlation needs two or more scored pairs "
               f"whose cosines, and whose gold scores, are not all equal")  # fmt: skip
        if len(undefined) == len(metrics) - 1:  # nothing but the pair count is left
            raise SbertError(f"{o.data}: {why}")
        print(f"note: {o.data}: {why}", file=sys.stderr)
    print(json.dumps({k: v for k, v in metrics.items() if k not in undefined}, allow_nan=False))
