"""The routes: each validates its body (schemas.py), hands its texts to the batcher, and shapes
the answer as its anchor does. None runs the model on the event loop.

- POST /v1/embeddings (and /embeddings): OpenAI's embeddings API, float or base64;
- POST /embed, /similarity, /rerank: text-embeddings-inference's shapes (rerank scores are the
  bi-encoder's cosine similarities, not a cross-encoder's);
- POST /predict: both heads on sentence pairs (label, probabilities, similarity, score), the
  answers of `sbert predict`; POST /search: the served index's top-k, those of `sbert search`;
- GET /health, /info, /metrics.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version

import numpy as np
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sbert.inference.onnx_runner import OnnxEncoder
from sbert.inference.predict import predictions
from sbert.serve import schemas
from sbert.serve.batcher import Job, ShuttingDown
from sbert.serve.errors import JSON, ApiError, parse
from sbert.serve.openapi import document
from sbert.serve.state import ServerState


def version() -> str:
    try:
        return package_version("sbert")
    except PackageNotFoundError:  # a source tree that was never installed
        return "unknown"


def state_of(request: Request) -> ServerState:
    return request.app.state.sbert


@dataclass
class Embedded:
    """A request's vectors (N, H), its tokens, and its queue and model times in milliseconds
    (the x-queue-time and x-inference-time headers, as text-embeddings-inference sends them)."""

    vectors: np.ndarray
    tokens: int
    headers: dict[str, str]

    def answer(self, content) -> JSON:
        return JSON(content, headers=self.headers)


async def embed(
    request: Request, texts: list[str], truncate: bool, inputs: int, field: Callable[[int], str]
) -> Embedded:
    """Embed a request's texts through the batcher. `inputs`: what the client sent, counted
    against --max-client-batch-size as text-embeddings-inference counts them (texts; pairs;
    not a query or source sentence); `field(i)`: the body's name for text i, for errors."""
    state = state_of(request)
    limit = state.config.max_client_batch_size
    if inputs > limit:
        raise ApiError(413, "payload_too_large", f"{inputs} inputs; at most {limit} a request")
    lengths, truncated = state.encoder.tokenizer.lengths(texts)
    if not truncate and any(truncated):
        where = field(truncated.index(True))
        window = state.encoder.max_seq_length
        message = f"{where} is longer than the model's {window} tokens (truncate: true cuts it)"
        raise ApiError(413, "payload_too_large", message)
    try:
        job = state.batcher.submit(texts, lengths)
    except ShuttingDown as e:
        raise ApiError(503, "unavailable", str(e)) from None
    try:
        vectors = await result(job, request)
    except ShuttingDown as e:
        raise ApiError(503, "unavailable", str(e)) from None
    if vectors is None:  # the client went away; nobody reads this
        raise ApiError(499, "client_closed", "the client closed the connection")
    started = job.started_at or job.queued_at
    headers = {
        "x-queue-time": f"{(started - job.queued_at) * 1000:.2f}",
        "x-inference-time": f"{job.inference_seconds * 1000:.2f}",
    }
    return Embedded(vectors, sum(lengths), headers)


async def result(job: Job, request: Request) -> np.ndarray | None:
    """A job's vectors, or None if the client went away first (its texts are then dropped)."""

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    def hang_up(watcher: asyncio.Task) -> None:  # the watcher ended: the client is gone
        if watcher.cancelled() or job.future.done():
            return
        watcher.exception()  # (retrieved: a failed receive means the client is gone too)
        job.cancelled = True  # the batcher drops its texts not yet taken
        job.future.cancel()

    # A callback on the watcher, not asyncio.wait over both (a waiter and two callbacks a
    # request): one client's requests 16-34 us faster (medians, 1,200 requests each way,
    # alternating, in process; 2-core AMD EPYC, 2026-12-04).
    watcher = asyncio.ensure_future(disconnected())
    watcher.add_done_callback(hang_up)
    try:
        return await job.future
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if job.cancelled and not (hasattr(task, "cancelling") and task.cancelling()):
            return None  # hang_up's cancellation, not the server's of this request (3.11+)
        raise
    finally:
        watcher.cancel()


def as_list(texts: str | list[str]) -> list[str]:
    return [texts] if isinstance(texts, str) else texts


def named(name: str, texts: str | list[str]) -> Callable[[int], str]:
    """The body's name for text i of a field holding one text or a list."""
    return (lambda i: name) if isinstance(texts, str) else (lambda i: f"{name}[{i}]")


def first_then(first: str, rest: str) -> Callable[[int], str]:
    """Names for [first, *rest]: a query or source sentence, then its list."""
    return lambda i: first if i == 0 else f"{rest}[{i - 1}]"


def normalized(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


async def openai_embeddings(request: Request) -> JSON:
    """OpenAI's embeddings API: `embeddings.create` of the official client works unchanged."""
    body, state = await parse(request, schemas.OpenAIEmbeddings), state_of(request)
    if body.dimensions is not None and body.dimensions != state.encoder.dim:
        raise ApiError(422, "validation", f"dimensions: this model gives {state.encoder.dim}")
    texts = as_list(body.input)
    embedded = await embed(request, texts, True, len(texts), named("input", body.input))
    vectors, tokens = normalized(embedded.vectors), embedded.tokens
    if body.encoding_format == "base64":  # little-endian float32, as OpenAI sends them
        encoded = [base64.b64encode(v.astype("<f4").tobytes()).decode() for v in vectors]
    else:
        encoded = list(vectors)
    data = [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(encoded)]
    return embedded.answer({
        "object": "list",
        "data": data,
        "model": body.model or state.name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })  # fmt: skip


async def tei_embed(request: Request) -> JSON:
    """Text-embeddings-inference's /embed: one vector per input."""
    body = await parse(request, schemas.Embed)
    texts = as_list(body.inputs)
    embedded = await embed(request, texts, body.truncate, len(texts), named("inputs", body.inputs))
    vectors = embedded.vectors
    return embedded.answer(normalized(vectors) if body.normalize else vectors)


async def tei_similarity(request: Request) -> JSON:
    """Text-embeddings-inference's /similarity: cosine of the source with each sentence."""
    body = await parse(request, schemas.Similarity)
    texts = [body.inputs.source_sentence, *body.inputs.sentences]
    names = first_then("inputs.source_sentence", "inputs.sentences")
    embedded = await embed(request, texts, body.truncate, len(texts) - 1, names)
    vectors = normalized(embedded.vectors)
    return embedded.answer(vectors[1:] @ vectors[0])


async def tei_rerank(request: Request) -> JSON:
    """Text-embeddings-inference's /rerank shape, best first; the score is the cosine of the
    query and the text's sentence vectors (a bi-encoder, not a cross-encoder)."""
    body = await parse(request, schemas.Rerank)
    texts, names = [body.query, *body.texts], first_then("query", "texts")
    embedded = await embed(request, texts, body.truncate, len(body.texts), names)
    vectors = normalized(embedded.vectors)
    scores = (vectors[1:] @ vectors[0]).tolist()
    ranked = sorted(range(len(scores)), key=lambda i: -scores[i])
    text = (lambda i: {"text": body.texts[i]}) if body.return_text else (lambda i: {})
    return embedded.answer([{"index": i, "score": scores[i], **text(i)} for i in ranked])


async def predict(request: Request) -> JSON:
    """Both heads on sentence pairs: the answers of `sbert predict`, one per pair."""
    body, state = await parse(request, schemas.Predict), state_of(request)
    if state.encoder.heads.classifier is None:
        raise ApiError(422, "no_classifier", "this model has no classifier: use /similarity")
    one = isinstance(body.inputs, tuple)
    pairs = [body.inputs] if one else body.inputs
    texts = [t for pair in pairs for t in pair]
    names = (lambda i: f"inputs[{i}]") if one else (lambda i: f"inputs[{i // 2}][{i % 2}]")
    embedded = await embed(request, texts, body.truncate, len(pairs), names)
    u, v = embedded.vectors[0::2], embedded.vectors[1::2]
    return embedded.answer([p.to_json() for p in predictions(u, v, state.encoder.heads)])


async def search(request: Request) -> JSON:
    """The served index's top-k texts for each query: the answers of `sbert search`."""
    body, state = await parse(request, schemas.Search), state_of(request)
    if state.index is None:
        raise ApiError(404, "no_index", "no index is served: start with --index DIR")
    queries = as_list(body.queries)
    names = named("queries", body.queries)
    embedded = await embed(request, queries, body.truncate, len(queries), names)
    # The scan is numpy work over the whole corpus: off the event loop too.
    vectors = normalized(embedded.vectors)
    found = await asyncio.to_thread(state.index.hits, vectors, body.k)  # an Index or a store
    results = [
        {"query": query, "hits": [{"id": h.id, "score": h.score, "text": h.text} for h in hits]}
        for query, hits in zip(queries, found, strict=True)
    ]
    return embedded.answer(results)


async def health(request: Request) -> JSON:
    """200 while the model is loaded and its worker runs; 503 otherwise."""
    if not state_of(request).batcher.alive:
        raise ApiError(503, "unhealthy", "the inference worker is not running")
    return JSON({"status": "ok"})


async def info(request: Request) -> JSON:
    """The model, its runtime and the limits in force."""
    state = state_of(request)
    encoder, config, index = state.encoder, state.config, state.index
    head = encoder.heads.classifier
    return JSON({
        "model": state.name,
        "fingerprint": state.fingerprint,
        "dim": encoder.dim,
        "max_seq_length": encoder.max_seq_length,
        "runtime": runtime(encoder),
        "labels": head.labels if head is not None else None,
        "score_scale": encoder.heads.score_scale,
        "index": None if index is None else {"texts": len(index), "precision": index.precision},
        "limits": {
            name: getattr(config, name)
            for name in (
                "max_batch_tokens",
                "max_batch_size",
                "max_client_batch_size",
                "max_concurrent_requests",
                "max_body_bytes",
                "body_timeout_seconds",
            )  # fmt: skip
        },
        "version": version(),
    })  # fmt: skip


async def metrics(request: Request) -> Response:
    """Prometheus text format."""
    body = state_of(request).metrics.text()
    return Response(body, media_type="text/plain; version=0.0.4")


POSTS = {  # path -> (handler, request model)
    "/v1/embeddings": (openai_embeddings, schemas.OpenAIEmbeddings),
    "/embeddings": (openai_embeddings, schemas.OpenAIEmbeddings),  # OpenAI clients without /v1
    "/embed": (tei_embed, schemas.Embed),
    "/similarity": (tei_similarity, schemas.Similarity),
    "/rerank": (tei_rerank, schemas.Rerank),
    "/predict": (predict, schemas.Predict),
    "/search": (search, schemas.Search),
}
GETS = {"/health": health, "/info": info, "/metrics": metrics}


async def openapi(request: Request) -> JSON:
    """The OpenAPI document of these routes."""
    return JSON(OPENAPI)


OPENAPI = document(
    {path: (model, handler.__doc__.splitlines()[0]) for path, (handler, model) in POSTS.items()},
    {path: handler.__doc__.splitlines()[0] for path, handler in GETS.items()},
    version(),
)
ROUTES = [
    *(Route(path, handler, methods=["POST"]) for path, (handler, _) in POSTS.items()),
    *(Route(path, handler, methods=["GET"]) for path, handler in GETS.items()),
    Route("/openapi.json", openapi, methods=["GET"]),
]


def runtime(encoder) -> str:
    """How the model runs: "onnxruntime int8", "openvino openvino_int8", "pytorch cpu"..."""
    if isinstance(encoder, OnnxEncoder):  # an export, on ONNX Runtime or OpenVINO
        graphs = {path: name for name, path in encoder.record.get("graphs", {}).items()}
        engine = encoder.record.get("runtime", "onnxruntime")
        return f"{engine} {graphs.get(encoder.graph, encoder.graph)}"
    return f"pytorch {next(encoder.parameters()).device}"
