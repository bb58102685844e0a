"""What the routes share: the model, its batcher and metrics, the optional index, the limits."""

from __future__ import annotations

from dataclasses import dataclass

from sbert.inference.encoder import Encoder
from sbert.inference.index import Index
from sbert.inference.stores import LanceStore
from sbert.serve.batcher import Batcher
from sbert.serve.config import ServeConfig
from sbert.serve.metrics import Metrics


@dataclass
class ServerState:
    """What the routes share: the model, its batcher and metrics, the optional index."""

    encoder: Encoder
    name: str  # how /info and OpenAI's `model` name the model
    fingerprint: str  # the encoder's, computed once (it hashes every weight)
    config: ServeConfig
    batcher: Batcher
    metrics: Metrics
    index: Index | LanceStore | None = None
    api_key: str | None = None
    in_flight: int = 0  # inference requests waiting or running
    draining: bool = False  # SIGTERM: no new requests
