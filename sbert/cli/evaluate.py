"""print dev metrics of a model as one JSON object"""

from __future__ import annotations

from dataclasses import dataclass

from sbert.cli.common import DEVICE_HELP
from sbert.options import option


@dataclass
class Options:
    model: str | None = option("model folder (with its classifier, if any)", required=True)
    data: str | None = option("data file, PATH[@SPLIT]", required=True)
    format: str | None = option("sts, sick, nli or csv (default: detected)")
    batch_size: int = option("pairs per batch", 128, minimum=1)
    device: str | None = option(DEVICE_HELP)


def run(o: Options) -> None:
    import json

    from sbert.data import batching
    from sbert.data.specs import read_spec
    from sbert.models.device import pick_device
    from sbert.models.multitask import MultiTaskModel
    from sbert.training.evaluate import evaluate

    data = read_spec(o.data, format=o.format)
    device = pick_device(o.device)
    model = MultiTaskModel.from_pretrained(o.model).to(device)
    index = {name: i for i, name in enumerate(model.labels)} or None
    pairs = batching.tokenize_pairs(data, model.encoder.tokenizer, index)
    print(json.dumps(evaluate(model, pairs, o.batch_size, device)))
