"""Serving throughput and latency: `sbert serve` beside the servers people use, in one run.

Each server is started in turn on 127.0.0.1 with the same model (the packaged all-MiniLM-L6-v2)
and loaded with the same real sentences (STS-B train and dev, distinct) by an asyncio + aiohttp
load generator in this process (`pip install aiohttp`: httpx cost the client 7.5 ms of CPU a
request here, aiohttp 0.3 ms, and on 2 cores the client's CPU is taken from the server's). Every
answer is checked: HTTP 200, then each vector's cosine with its own sentence's vector from the
same model and runtime in this process must be >= 0.999 (a vector handed to the wrong request,
or wrong pooling, fails). Servers:

- `sbert-int8`: `sbert serve` on an `sbert export --quantize int8` folder (ONNX Runtime);
- `sbert-torch`: `sbert serve` on the PyTorch folder;
- `infinity`: infinity-emb (`--infinity PYTHON`: the python of a venv where infinity-emb is
  installed; bench/README.md says how), with `--infinity-engine` (torch, or optimum: its ONNX
  engine, which needs `--infinity-model` and `--infinity-flags "--pooling-method mean"`);
- `plain`: FastAPI + `SentenceTransformer.encode` (bench/plain_server.py).

Points: closed-loop concurrency 1, 8 and 64 with one sentence per request, and 4 with 32 per
request (`--seconds` each, after a warm-up), then an open-loop overload at twice the server's
own concurrency-64 rate for `--overload-seconds`. Printed per point: sentences/s, sentences per
second of the server's own CPU time (the machine is shared with this load generator), p50/p90/
p99 latency, answers by status, and for the overload the server's peak RSS growth. For
concurrency 1 of our servers, in alternating blocks over the same sentences: one sentence over
HTTP against one `encode` call of the same model and runtime in this process.

    python bench/serve.py [--servers sbert-int8,sbert-torch,plain] [--seconds 15]
                          [--infinity /path/to/venv/bin/python] [--infinity-engine optimum]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import httpx
import numpy as np
import orjson
from common import ROOT, STSB_DEV, STSB_TRAIN, machine

from sbert.data.readers import read_pairs
from sbert.folders import resolve

TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Server:
    name: str
    command: list[str]
    route: str  # POST route taking a list of texts
    body: callable  # texts -> JSON body
    vectors: callable  # JSON answer -> list of vectors
    reference: str  # whose in-process vectors its answers must equal: "st" or "int8"
    model: str | None = None  # ours: what `sbert.load` loads, for the in-process comparison
    process: subprocess.Popen | None = None


@dataclass
class Point:
    sentences: int = 0
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    wrong: int = 0  # answers with a vector that is not its sentence's
    cpu: float = 0.0  # the server's CPU seconds
    seconds: float = 0.0
    rss_growth_mib: float | None = None


def sentences() -> list[str]:
    pairs = read_pairs(STSB_TRAIN).pairs + read_pairs(STSB_DEV).pairs
    return list(dict.fromkeys(s for p in pairs for s in (p.a, p.b)))


def servers(args, port: int, export: Path) -> dict[str, Server]:
    model = str(resolve("all-MiniLM-L6-v2"))
    sbert = [sys.executable, "-m", "sbert", "serve", "--port", str(port), "--quiet"]
    tei = {"route": "/embed", "body": lambda t: {"inputs": t}, "vectors": lambda j: j}
    openai = {
        "route": "/embeddings",
        "body": lambda t: {"input": t, "model": "m"},
        "vectors": lambda j: [d["embedding"] for d in j["data"]],
    }
    plain = [sys.executable, str(ROOT / "bench" / "plain_server.py"), model, str(port)]
    out = {
        "sbert-int8": Server(
            "sbert-int8",
            [*sbert, "--model", str(export)],
            **tei,
            reference="int8",
            model=str(export),
        ),
        "sbert-torch": Server(
            "sbert-torch", [*sbert, "--model", model], **tei, reference="st", model=model
        ),
        "plain": Server("plain", plain, **tei, reference="st"),
    }
    if args.infinity:
        folder = args.infinity_model or model
        command = [args.infinity, "-m", "infinity_emb.cli", "v2", "--model-id", folder,
                   "--engine", args.infinity_engine, "--device", "cpu", "--host", "127.0.0.1",
                   "--port", str(port), "--url-prefix", "", "--log-level", "warning",
                   *args.infinity_flags.split()]  # fmt: skip
        out["infinity"] = Server("infinity", command, **openai, reference="st")
    return out


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return 0.0


class Load:
    """Requests of `n` sentences to one server, each answer checked."""

    def __init__(
        self, server: Server, url: str, texts: list[str], reference: dict[str, np.ndarray]
    ):
        self.server, self.url, self.texts, self.reference = server, url, texts, reference
        self.next = 0

    def batch(self, n: int) -> list[str]:
        start = self.next
        self.next = (self.next + n) % (len(self.texts) - n)
        return self.texts[start : start + n]

    def session(self, connections: int, timeout: float) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=connections)
        return aiohttp.ClientSession(self.url, connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=timeout))  # fmt: skip

    async def one(self, session: aiohttp.ClientSession, n: int, point: Point) -> None:
        texts = self.batch(n)
        body = orjson.dumps(self.server.body(texts))
        start = time.perf_counter()
        try:
            headers = {"content-type": "application/json"}
            async with session.post(self.server.route, data=body, headers=headers) as answer:
                status, raw = answer.status, await answer.read()
        except (aiohttp.ClientError, asyncio.TimeoutError):
            status = 0  # no answer: a timeout or a dropped connection
        point.latencies.append(time.perf_counter() - start)
        point.statuses[status] = point.statuses.get(status, 0) + 1
        if status != 200:
            return
        vectors = np.asarray(self.server.vectors(orjson.loads(raw)), dtype=np.float32)
        want = np.stack([self.reference[t] for t in texts])
        cosine = (vectors * want).sum(1) / np.linalg.norm(vectors, axis=1)
        point.wrong += int((cosine < 0.999).sum())
        point.sentences += n

    async def against_in_process(self, encoder, rounds: int, sentences: int) -> tuple[Point, list]:
        """One client, one sentence a request, in blocks that alternate with `encoder.encode`
        of the same sentences in this process (while the server idles): both latencies over
        the same minutes of a machine whose speed drifts, and the same sentences."""
        point, direct = Point(), []
        async with self.session(1, 60) as session:
            for _ in range(rounds):
                for text in self.texts[self.next : self.next + sentences]:
                    start = time.perf_counter()
                    encoder.encode([text])
                    direct.append(time.perf_counter() - start)
                for _ in range(sentences):
                    await self.one(session, 1, point)
        return point, direct

    async def closed(self, concurrency: int, n: int, seconds: float) -> Point:
        """`concurrency` clients, each sending its next request when its answer is in."""
        point = Point()
        async with self.session(concurrency, 120) as session:
            end = time.perf_counter() + seconds

            async def worker() -> None:
                while time.perf_counter() < end:
                    await self.one(session, n, point)

            cpu, start = cpu_seconds(self.server.process.pid), time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            point.seconds = time.perf_counter() - start
            point.cpu = cpu_seconds(self.server.process.pid) - cpu
        return point

    async def open(self, rate: float, seconds: float) -> Point:
        """Requests of one sentence sent at `rate` a second whatever the answers (overload);
        the server's peak RSS growth sampled meanwhile."""
        point, pid = Point(), self.server.process.pid
        before, peak = rss_mib(pid), 0.0
        async with self.session(4000, 60) as session:
            tasks, start = [], time.perf_counter()
            cpu = cpu_seconds(pid)
            while (now := time.perf_counter()) - start < seconds:
                due = int((now - start) * rate) + 1 - len(tasks)
                tasks += [asyncio.ensure_future(self.one(session, 1, point)) for _ in range(due)]
                peak = max(peak, rss_mib(pid))
                await asyncio.sleep(0.01)
            while not all(t.done() for t in tasks):
                peak = max(peak, rss_mib(pid))
                await asyncio.sleep(0.05)
            point.seconds, point.cpu = time.perf_counter() - start, cpu_seconds(pid) - cpu
        point.rss_growth_mib = peak - before
        return point


def start(server: Server, url: str) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
        "INFINITY_ANONYMOUS_USAGE_STATS": "0",
    }
    server.process = subprocess.Popen(server.command, env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"{server.name} did not start: {server.process.stderr.read()[-2000:]}"
            )
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{server.name} did not start in 300 s")


def stop(server: Server) -> None:
    server.process.send_signal(signal.SIGTERM)
    try:
        server.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.process.kill()


def row(name: str, label: str, p: Point) -> str:
    lat = sorted(p.latencies) or [0.0]
    q = lambda f: lat[min(len(lat) - 1, int(f * len(lat)))] * 1000  # noqa: E731
    statuses = " ".join(f"{k}:{v}" for k, v in sorted(p.statuses.items()))
    rss = f" rss+{p.rss_growth_mib:.0f}MiB" if p.rss_growth_mib is not None else ""
    rates = f"{p.sentences / p.seconds:8.1f} {p.sentences / max(p.cpu, 1e-9):8.1f}"
    return (
        f"{name:<12} {label:<10} {rates} {q(0.5):8.1f} {q(0.9):8.1f} {q(0.99):8.1f}  {statuses}"
        f"{f' WRONG {p.wrong}' if p.wrong else ''}{rss}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", default="sbert-int8,sbert-torch,infinity,plain")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--overload-seconds", type=float, default=30.0)
    parser.add_argument("--infinity", help="python of a venv with infinity-emb installed")
    parser.add_argument("--infinity-engine", default="optimum", choices=["torch", "optimum"])
    parser.add_argument("--infinity-flags", default="", help="more flags for infinity_emb v2")
    parser.add_argument(
        "--infinity-model",
        help="the model folder infinity loads (its optimum engine wants model.onnx beside the "
        "configs: bench/README.md); default: the packaged checkpoint",
    )
    parser.add_argument("--export", help="an int8 export of all-MiniLM-L6-v2 (default: made here)")
    args = parser.parse_args()
    print(machine())
    texts = sentences()
    from sentence_transformers import SentenceTransformer

    import sbert

    export = Path(args.export) if args.export else Path(tempfile.mkdtemp()) / "int8"
    if not args.export:
        sbert.export("all-MiniLM-L6-v2", export, quantize="int8")
    st = SentenceTransformer(str(resolve("all-MiniLM-L6-v2")), device="cpu")
    references = {  # each sentence encoded alone is what every server must answer for it
        "st": st.encode(texts, batch_size=64, normalize_embeddings=True),
        "int8": sbert.load(export).encode(texts, batch_size=64, normalize=True),
    }
    references = {k: dict(zip(texts, v, strict=True)) for k, v in references.items()}
    del st
    print(f"references encoded; load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    port = 18765
    url = f"http://127.0.0.1:{port}"
    chosen = servers(args, port, export)
    print(f"{len(texts)} distinct STS-B sentences; {args.seconds:g} s a point")
    heads = ("sent/s", "sent/cpu", "p50 ms", "p90 ms", "p99 ms")
    print(f"{'server':<12} {'point':<10} " + " ".join(f"{h:>8}" for h in heads) + "  statuses")
    for name in args.servers.split(","):
        if name not in chosen:
            print(f"{name}: skipped (see --help)")
            continue
        server = chosen[name]
        start(server, url)
        load = Load(server, url, texts, references[server.reference])
        try:
            asyncio.run(load.closed(8, 1, 3))  # warm-up
            rate = 0.0
            for concurrency, n in ((1, 1), (8, 1), (64, 1), (4, 32)):
                point = asyncio.run(load.closed(concurrency, n, args.seconds))
                print(row(name, f"c{concurrency}x{n}", point), flush=True)
                rate = point.sentences / point.seconds if concurrency == 64 else rate
            print(row(name, "overload", asyncio.run(load.open(2 * rate, args.overload_seconds))))
            if server.model:
                print(one_client_vs_in_process(load, server.model), flush=True)
        finally:
            stop(server)


def one_client_vs_in_process(load: Load, model: str) -> str:
    """The issue's concurrency-1 target: one sentence over HTTP against one in-process `encode`
    of the same model and runtime, measured in alternating blocks of the same sentences."""
    import sbert

    encoder = sbert.load(model)
    encoder.encode(load.texts[:64])  # warm
    point, direct = asyncio.run(load.against_in_process(encoder, rounds=10, sentences=30))
    http, alone = statistics.median(point.latencies), statistics.median(direct)
    return (f"{load.server.name:<12} c1 vs in process, same sentences, alternating: HTTP p50 "
            f"{http * 1000:.2f} ms, encode p50 {alone * 1000:.2f} ms: {http / alone:.2f}x"
            f"{f' WRONG {point.wrong}' if point.wrong else ''}")  # fmt: skip


if __name__ == "__main__":
    main()
