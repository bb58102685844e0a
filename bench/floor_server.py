"""The least an HTTP embedding server can cost, for bench/serve_overhead.py: one Starlette route
on uvicorn (httptools, uvloop: as `sbert serve` runs) answering a fixed 384-d vector; with
`--hand-off`, first making one round trip to a worker thread that does nothing (the least that
keeping inference off the event loop costs); with `--model DIR`, answering the request's own
vectors from `sbert.load(DIR).encode` in that thread (no batching, limits, metrics or checks).

    python bench/floor_server.py PORT [--hand-off | --model DIR]
"""

from __future__ import annotations

import argparse
import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

parser = argparse.ArgumentParser()
parser.add_argument("port", type=int)
parser.add_argument("--hand-off", action="store_true")
parser.add_argument("--model")
args = parser.parse_args()
VECTOR = np.ones((1, 384), np.float32)
worker = ThreadPoolExecutor(1)  # one thread, as `sbert serve`'s batcher
encoder = None
if args.model:
    import sbert

    encoder = sbert.load(args.model)
    encoder.encode(["warm up"])


def encode(texts: list[str]) -> np.ndarray:
    return VECTOR if encoder is None else encoder.encode(texts)


async def embed(request: Request) -> Response:
    texts = orjson.loads(await request.body())["inputs"]
    if args.hand_off or args.model:
        vectors = await asyncio.get_running_loop().run_in_executor(worker, encode, texts)
    else:
        vectors = VECTOR
    return Response(orjson.dumps(vectors, option=orjson.OPT_SERIALIZE_NUMPY),
                    media_type="application/json")  # fmt: skip


async def health(request: Request) -> Response:
    return Response(b"ok")


app = Starlette(routes=[Route("/embed", embed, methods=["POST"]), Route("/health", health)])
uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
