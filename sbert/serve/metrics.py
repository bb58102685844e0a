"""Prometheus metrics of one server: requests by route and status, latency, requests in flight,
queue depth, batch sizes in sentences and tokens, and model time. One registry per app, so that
several apps (tests) do not share counters."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from sbert.serve.batcher import BatchStats

LATENCY = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10)


class Metrics:
    def __init__(self, queue_depth, in_flight) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("sbert_requests", "HTTP requests", ["route", "status"], registry=r)
        self.latency = Histogram("sbert_request_seconds", "request latency", ["route"],
                                 buckets=LATENCY, registry=r)  # fmt: skip
        self.queue = Gauge("sbert_queue_depth", "texts waiting for a batch", registry=r)
        self.queue.set_function(queue_depth)
        self.in_flight = Gauge("sbert_requests_in_flight", "inference requests waiting or running",
                               registry=r)  # fmt: skip
        self.in_flight.set_function(in_flight)
        self.batch_sentences = Histogram(
            "sbert_batch_sentences", "sentences per model call",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r,
        )  # fmt: skip
        self.batch_tokens = Histogram(
            "sbert_batch_tokens", "padded tokens per model call",
            buckets=(16, 64, 256, 1024, 4096, 16384, 65536), registry=r,
        )  # fmt: skip
        self.inference = Histogram("sbert_inference_seconds", "model time per call",
                                   buckets=LATENCY, registry=r)  # fmt: skip

    def batch(self, stats: BatchStats) -> None:
        self.batch_sentences.observe(stats.sentences)
        self.batch_tokens.observe(stats.tokens)
        self.inference.observe(stats.seconds)

    def request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def text(self) -> bytes:
        return generate_latest(self.registry)
