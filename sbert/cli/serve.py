"""serve a model over HTTP: OpenAI- and TEI-compatible routes, pair classification, search

Binds 127.0.0.1:8080 unless told otherwise. A model folder runs on PyTorch; an `sbert export`
folder on ONNX Runtime, without torch. SIGTERM or SIGINT: stop accepting, finish what is
queued (up to --grace-seconds), exit 0.
"""

from __future__ import annotations

from sbert.serve.config import ServeConfig as Options


def run(config: Options) -> None:
    from sbert.cli.common import device_for
    from sbert.inference.load import load
    from sbert.serve.server import listen, serve

    sock = listen(config.host, config.port)  # a port in use fails here, before the model loads
    encoder = load(config.model)
    device = device_for(encoder, config.device)
    if device is not None:
        encoder.to(device)
    serve(config, encoder, device, sock)
