"""Where one client's time goes: `sbert serve` against the floor of any HTTP server that keeps
inference off its event loop, and against the same model called in process.

Four servers on 127.0.0.1 (all started, idle but for their own blocks), each answering one
sentence at /embed: `floor` (bench/floor_server.py: a bare Starlette route answering a fixed
vector: the HTTP round trip and this client), `hand-off` (the same after one round trip to a
worker thread that does nothing), `bare` (the same, the thread running the int8 export's
`encode`: no batching, limits, metrics or checks) and `sbert` (`sbert serve` on that export);
and in this process the export's `encode([sentence])` three ways: `encode` back to back,
`spaced` after the same idle time as `sbert`'s model has between one client's requests (that
round's median latency less its median model time, slept), and `evicted` straight after reading
64 MiB (more than this CPU's L3). Blocks alternate over the same sentences (this VM's speed
drifts), one client, one request at a time. Printed: each one's median, `sbert`'s model time (its
x-inference-time header) and what is left of its latency.

    python bench/serve_overhead.py [--export DIR] [--rounds 10] [--block 100]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import aiohttp
import numpy as np
import orjson
from common import ROOT, machine
from serve import Server, sentences, start, stop

PORTS = {"floor": 18766, "hand-off": 18767, "bare": 18768, "sbert": 18769}


def servers(export: Path) -> dict[str, Server]:
    floor = [sys.executable, str(ROOT / "bench" / "floor_server.py")]
    sbert = [sys.executable, "-m", "sbert", "serve", "--quiet", "--model", str(export)]
    commands = {
        "floor": [*floor, str(PORTS["floor"])],
        "hand-off": [*floor, str(PORTS["hand-off"]), "--hand-off"],
        "bare": [*floor, str(PORTS["bare"]), "--model", str(export)],
        "sbert": [*sbert, "--port", str(PORTS["sbert"])],
    }
    shape = {"route": "/embed", "body": None, "vectors": None, "reference": ""}
    return {name: Server(name, command, **shape) for name, command in commands.items()}


async def block(port: int, texts: list[str]) -> tuple[list[float], list[float]]:
    """Latencies of one request per text, one at a time, and the x-inference-time headers."""
    latencies, model = [], []
    headers = {"content-type": "application/json"}
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:
        for text in texts:
            body = orjson.dumps({"inputs": [text]})
            start = time.perf_counter()
            async with session.post("/embed", data=body, headers=headers) as answer:
                await answer.read()
            latencies.append(time.perf_counter() - start)
            if answer.status != 200:
                raise RuntimeError(f"HTTP {answer.status}")
            if "x-inference-time" in answer.headers:
                model.append(float(answer.headers["x-inference-time"]) / 1000)
    return latencies[1:], model[1:]  # the first request also opened the connection


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", help="an int8 export of all-MiniLM-L6-v2 (default: made here)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--block", type=int, default=100, help="requests per block")
    args = parser.parse_args()
    print(machine())
    import sbert

    export = Path(args.export) if args.export else Path(tempfile.mkdtemp()) / "int8"
    if not args.export:
        sbert.export("all-MiniLM-L6-v2", export, quantize="int8")
    encoder = sbert.load(export)
    texts = sentences()[: args.rounds * args.block]
    encoder.encode(texts[:64])  # warm
    times = {name: [] for name in (*PORTS, "encode", "spaced", "evicted")}
    model: list[float] = []
    flush = np.ones(64 << 20, np.uint8)
    chosen = servers(export)
    for name, server in chosen.items():
        start(server, f"http://127.0.0.1:{PORTS[name]}")
    try:
        for r in range(args.rounds):
            part = texts[r * args.block : (r + 1) * args.block]
            for name in chosen:
                latencies, inference = asyncio.run(block(PORTS[name], part))
                times[name] += latencies
                model += inference
                if name == "sbert":  # the idle time its model had between this block's calls
                    idle = statistics.median(latencies) - statistics.median(inference)
            for way, before in (
                ("encode", lambda: None),
                ("spaced", partial(time.sleep, idle)),
                ("evicted", flush.sum),
            ):
                for text in part:
                    before()
                    begin = time.perf_counter()
                    encoder.encode([text])
                    times[way].append(time.perf_counter() - begin)
    finally:
        for server in chosen.values():
            stop(server)
    p50 = {name: statistics.median(t) * 1000 for name, t in times.items()}
    print(f"{args.rounds} rounds of {args.block} requests, medians in ms: "
          + ", ".join(f"{name} {ms:.3f}" for name, ms in p50.items()))  # fmt: skip
    inference = statistics.median(model) * 1000
    rest = p50["sbert"] - inference
    print(f"the hand-off costs {p50['hand-off'] - p50['floor']:.3f} over the floor; sbert's "
          f"model {inference:.3f}, the rest of its latency {rest:.3f}")  # fmt: skip
    for way in ("encode", "spaced", "evicted"):
        print(f"against {way} in this process: bare {p50['bare'] / p50[way]:.2f}x, "
              f"sbert {p50['sbert'] / p50[way]:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
