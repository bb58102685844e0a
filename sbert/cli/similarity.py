"""print the cosine similarity of two sentences"""

from __future__ import annotations

from dataclasses import dataclass

from sbert.cli.common import DEVICE_HELP, MODEL_HELP, PAIR, device_for
from sbert.folders import DEFAULT_MODEL
from sbert.options import option


@dataclass
class Options:
    first: str | None = option("the first sentence", positional=True, required=True)
    second: str | None = option("the second sentence", positional=True, required=True)
    model: str = option(MODEL_HELP, DEFAULT_MODEL)
    device: str | None = option(DEVICE_HELP)


def run(o: Options) -> None:
    from sbert.data.readers import check_sentences
    from sbert.inference.encoder import check_finite
    from sbert.inference.load import load

    first, second = check_sentences([o.first, o.second], PAIR)
    model = load(o.model)
    vectors = model.encode([first, second], normalize=True, device=device_for(model, o.device))
    u, v = check_finite(vectors, model)
    print(f"{float(u @ v):.4f}")
