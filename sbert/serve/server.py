"""`sbert serve`: load the model (and index), then serve the app on uvicorn until SIGTERM/SIGINT.

On a signal the server stops accepting (a request that still arrives is answered 503), lets
what is queued finish for up to `grace_seconds`, answers whatever is left 503 rather than
dropping it, and exits 0.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
from pathlib import Path

from sbert.errors import ConfigError
from sbert.fileio import read_bounded
from sbert.inference.encoder import Encoder
from sbert.serve.app import create_app
from sbert.serve.batcher import Batcher
from sbert.serve.config import ServeConfig
from sbert.serve.metrics import Metrics
from sbert.serve.state import ServerState

API_KEY_VARIABLE = "SBERT_API_KEY"


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to host:port, as uvicorn binds one (IPv6 where the host has a colon), made
    before the model loads: a port in use or a host that is not this machine's is a one-line
    error at once, not uvicorn's log line and exit 3 after the start-up message."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except (OSError, OverflowError) as e:
        sock.close()
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ConfigError(f"--host {host} --port {port}: cannot listen there ({why})") from None
    return sock


def serve(config: ServeConfig, encoder: Encoder, device=None, sock=None) -> None:
    """Serve `encoder` (loaded from `config.model`) until a signal ends the server, on `sock`
    (default: `listen(config.host, config.port)`)."""
    import uvicorn

    sock = sock or listen(config.host, config.port)

    state = build_state(config, encoder, device)
    app = create_app(state)
    if not config.quiet:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    # Whatever is still queued when the grace time is up hears 503, not silence.
    deadline = threading.Timer(config.grace_seconds, state.batcher.stop)
    deadline.daemon = True  # a server that drained sooner exits at once

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            if not state.draining:
                state.draining = True
                deadline.start()
            super().handle_exit(sig, frame)
            # uvicorn re-raises a caught signal once it has shut down, so the process would die
            # of it; drained as promised, it exits 0 instead.
            self._captured_signals.clear()

    server = Server(
        uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            access_log=False,  # ours: one line per request, with its id (sbert.serve.app.Gate)
            log_level="warning",
            timeout_graceful_shutdown=int(config.grace_seconds) + 5,
        )
    )
    print(startup_line(state), file=sys.stderr, flush=True)
    server.run(sockets=[sock])
    deadline.cancel()


def build_state(config: ServeConfig, encoder: Encoder, device=None) -> ServerState:
    metrics = Metrics(lambda: batcher.depth, lambda: state.in_flight)
    batcher = Batcher(
        encoder, config.max_batch_tokens, config.max_batch_size, metrics.batch, device
    )
    index = None
    if config.index is not None:
        from sbert.inference.stores import open_index  # an index folder or a LanceDB store

        index = open_index(config.index, encoder)  # its fingerprint must match the model's
    name = Path(config.model).name if Path(config.model).is_dir() else config.model
    state = ServerState(
        encoder, name, encoder.fingerprint(), config, batcher, metrics, index, api_key(config)
    )
    return state


def api_key(config: ServeConfig) -> str | None:
    """The key requests must send: from --api-key-file, else $SBERT_API_KEY; None for none."""
    if config.api_key_file is not None:
        path = Path(config.api_key_file)
        try:  # a regular file of at most 4 KiB: not a FIFO, not /dev/zero
            key = read_bounded(path, limit=4096).decode("utf-8").strip()
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: the API key file is not UTF-8") from None
        if not key:
            raise ConfigError(f"{path}: the API key file is empty")
        return header_safe(key, str(path))
    key = os.environ.get(API_KEY_VARIABLE)
    return header_safe(key, f"${API_KEY_VARIABLE}") if key else None


def header_safe(key: str, source: str) -> str:
    """`key`, refused unless a client can send it as it is: printable ASCII without spaces
    (HTTP carries header values as bytes, and a client encodes others as it likes)."""
    if not (key.isascii() and key.isprintable()) or any(c.isspace() for c in key):
        raise ConfigError(f"{source}: the API key must be printable ASCII without spaces")
    return key


def startup_line(state: ServerState) -> str:
    from sbert.serve.routes import runtime

    c, encoder = state.config, state.encoder
    index = f", index of {len(state.index):,} texts" if state.index is not None else ""
    auth = "API key required" if state.api_key else "no API key"
    return (
        f"sbert serve: http://{c.host}:{c.port} model {state.name} ({runtime(encoder)}, "
        f"dim {encoder.dim}, {encoder.max_seq_length} tokens{index}); limits: "
        f"{c.max_batch_tokens} tokens / {c.max_batch_size} sentences a batch, "
        f"{c.max_client_batch_size} inputs a request, {c.max_concurrent_requests} requests, "
        f"{c.max_body_bytes:,} bytes a body, in within {c.body_timeout_seconds:g} s; {auth}"
    )
