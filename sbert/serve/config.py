"""The settings of `sbert serve`: one typed dataclass, whose fields are its flags and config-file
keys (sbert/options.py). The limits follow text-embeddings-inference's defaults where it has one.
"""

from __future__ import annotations

from dataclasses import dataclass

from sbert.options import option


@dataclass
class ServeConfig:
    model: str | None = option(
        "model folder (PyTorch) or `sbert export` folder (ONNX Runtime, no torch)", required=True
    )
    index: str | None = option("an `sbert index` folder to serve POST /search from")
    host: str = option("address to bind; 0.0.0.0 serves every interface", "127.0.0.1")
    port: int = option("port to listen on", 8080, minimum=1, maximum=65535)
    max_batch_tokens: int = option(
        "most padded tokens in one model call (longest sentence x sentences)", 16384, minimum=1
    )
    max_batch_size: int = option("most sentences in one model call", 64, minimum=1)
    max_client_batch_size: int = option("most inputs in one request (413 beyond)", 32, minimum=1)
    max_concurrent_requests: int = option(
        "most requests waiting or running at once; more are answered 429 at once", 512, minimum=1
    )
    max_body_bytes: int = option("largest request body (413 beyond)", 2_000_000, minimum=1)
    body_timeout_seconds: float = option(
        "how long a request's body may take to arrive (408 beyond): a client that stalls "
        "mid-body holds its connection and the part it sent until then",
        60.0,
        minimum=0.001,
        maximum=86400,
    )
    api_key_file: str | None = option(
        "a file holding the API key that requests must send as `Authorization: Bearer KEY` "
        "(or set SBERT_API_KEY); the key is never printed"
    )
    grace_seconds: float = option(
        "on SIGTERM/SIGINT: how long queued requests may take to finish before they are "
        "answered 503",
        30.0,
        minimum=0,
        maximum=86400,  # a day; threading's timers refuse far larger ones
    )
    device: str | None = option("cpu, cuda, cuda:1 ... for a PyTorch model (default: cuda when "
                                "available)")  # fmt: skip
    quiet: bool = option("no access log line per request", False)
