"""`sbert serve` as a user runs it: a real process on a free port of 127.0.0.1, talked to over
HTTP with httpx and with the official `openai` client. Its answers equal the library's own
(encode, predict, search); many concurrent requests each get exactly their own vectors; a flood
gets 429s and no 5xx; SIGTERM lets what is in flight finish, and the process exits 0.

One tiny multi-task model (seeded classifier, score scale) is saved, exported (fp32) and
indexed per module. Request loops are bounded in count and time, and go to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import re
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

import sbert
from sbert import MultiTaskModel, SentenceBert

pytest.importorskip("starlette")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

ROOT = Path(__file__).resolve().parents[2]
LABELS = ["contradiction", "entailment", "neutral"]
WORDS = [
    "cat",
    "dog",
    "rain",
    "sun",
    "tree",
    "car",
    "book",
    "song",
    "river",
    "stone",
    "bird",
    "cloud",
]


def text(i: int) -> str:
    """A distinct sentence of a length that depends on i (2 to 41 words)."""
    return " ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(2 + i % 40)) + f" {i}"


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("serve")
    torch.manual_seed(0)
    model = MultiTaskModel(SentenceBert.from_config("tiny"), LABELS, (1.0, 5.0))
    torch.nn.init.normal_(model.classifier.weight, std=0.5)  # decisive: not all one label
    model.save(root / "model")
    sbert.export(root / "model", root / "fp32")
    index = sbert.Index.build(sbert.load(root / "model"), [text(i) for i in range(300)])
    index.save(root / "index")
    return {name: root / name for name in ("model", "fp32", "index")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server(*args: str, serving_only: bool = False, env: dict | None = None):
    """`sbert serve ARGS` on a free port; yields (base URL, process). Stopped with SIGTERM."""
    port = free_port()
    launcher = [str(ROOT / "tests" / "serving_only.py")] if serving_only else ["-m", "sbert"]
    command = [sys.executable, *launcher, "serve", *args, "--port", str(port), "--quiet"]
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env or {})}
    process = subprocess.Popen(command, env=environment, cwd=ROOT, stderr=subprocess.PIPE,
                               text=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stderr.read()
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not start in 60 s"
            time.sleep(0.2)
        yield url, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)


@pytest.fixture(scope="module")
def model_server(folders):
    with server("--model", str(folders["model"]), "--index", str(folders["index"])) as (url, _):
        yield url


def test_embeddings_equal_the_librarys_through_httpx_and_the_openai_client(folders, model_server):
    texts = [text(i) for i in range(12)]
    want = sbert.load(folders["model"]).encode(texts, normalize=True)
    got = httpx.post(f"{model_server}/embed", json={"inputs": texts}).json()
    np.testing.assert_allclose(np.array(got), want, atol=1e-5, rtol=0)
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{model_server}/v1", api_key="unused", max_retries=0)
    # Unless told otherwise the client asks for base64 and decodes it itself.
    for extra in ({}, {"encoding_format": "float"}):
        answer = client.embeddings.create(model="tiny", input=texts, **extra)
        vectors = np.array([d.embedding for d in answer.data])
        assert [d.index for d in answer.data] == list(range(len(texts)))
        np.testing.assert_allclose(vectors, want, atol=1e-5, rtol=0)
    lengths = sbert.load(folders["model"]).tokenizer.lengths(texts)[0]
    assert answer.usage.prompt_tokens == answer.usage.total_tokens == sum(lengths)
    assert answer.model == "tiny"


def test_predict_and_search_answer_as_the_library_does(folders, model_server):
    model = sbert.load(folders["model"])
    pairs = [(text(i), text(i + 50)) for i in range(6)]
    got = httpx.post(f"{model_server}/predict", json={"inputs": pairs}).json()
    want = [p.to_json() for p in sbert.predict(model, pairs)]
    assert [g["label"] for g in got] == [w["label"] for w in want]
    for g, w in zip(got, want, strict=True):
        assert g["similarity"] == pytest.approx(w["similarity"], abs=1e-5)
        assert g["score"] == pytest.approx(w["score"], abs=1e-4)
    queries = [text(7), "rain on the river"]
    got = httpx.post(f"{model_server}/search", json={"queries": queries, "k": 4}).json()
    want = sbert.Index.load(folders["index"], model).search(queries, k=4)
    assert [[h["id"] for h in g["hits"]] for g in got] == [[h.id for h in w] for w in want]
    for g, w in zip(got, want, strict=True):  # cosines: a query left unnormalised ranks alike
        assert [h["score"] for h in g["hits"]] == pytest.approx([h.score for h in w], abs=1e-5)
    assert got[0]["hits"][0]["text"] == text(7)


def test_similarity_and_rerank_are_cosines(folders, model_server):
    model = sbert.load(folders["model"])
    a, others = text(1), [text(2), text(1), text(3)]
    u, *vs = model.encode([a, *others], normalize=True)
    body = {"inputs": {"source_sentence": a, "sentences": others}}
    similarity = httpx.post(f"{model_server}/similarity", json=body).json()
    np.testing.assert_allclose(similarity, [u @ v for v in vs], atol=1e-5)
    ranked = httpx.post(f"{model_server}/rerank", json={"query": a, "texts": others,
                                                        "return_text": True}).json()  # fmt: skip
    assert ranked[0] == {"index": 1, "score": pytest.approx(1.0, abs=1e-5), "text": text(1)}
    want = sorted(((float(u @ v), i) for i, v in enumerate(vs)), reverse=True)
    assert [r["index"] for r in ranked] == [i for _, i in want]
    assert [r["score"] for r in ranked] == pytest.approx([score for score, _ in want], abs=1e-5)
    assert [r["text"] for r in ranked] == [others[i] for _, i in want]


def test_health_info_metrics_and_headers(folders, model_server):
    model = sbert.load(folders["model"])
    assert httpx.get(f"{model_server}/info").json() == {
        "model": folders["model"].name,
        "fingerprint": model.fingerprint(),
        "dim": 32,
        "max_seq_length": model.max_seq_length,
        "runtime": "pytorch cpu",
        "labels": LABELS,
        "score_scale": [1.0, 5.0],
        "index": {"texts": 300, "precision": "fp32"},
        "limits": {
            "max_batch_tokens": 16384,
            "max_batch_size": 64,
            "max_client_batch_size": 32,
            "max_concurrent_requests": 512,
            "max_body_bytes": 2_000_000,
            "body_timeout_seconds": 60.0,
        },  # fmt: skip
        "version": importlib.metadata.version("sbert"),  # installed, as .ci/run does
    }
    answer = httpx.post(f"{model_server}/embed", json={"inputs": "a cat"})
    assert {"x-request-id", "x-queue-time", "x-inference-time"} <= answer.headers.keys()
    mine = {"x-request-id": "trace-42"}  # a client's own id comes back, for its logs
    echoed = httpx.post(f"{model_server}/embed", json={"inputs": "a cat"}, headers=mine)
    assert echoed.headers["x-request-id"] == "trace-42"
    for method, path, status, kind in (("GET", "/nowhere", 404, "not_found"),
                                       ("GET", "/embed", 405, "method_not_allowed")):  # fmt: skip
        answer = httpx.request(method, f"{model_server}{path}")
        assert (answer.status_code, answer.json()["error_type"]) == (status, kind)
    before = metric_values(httpx.get(f"{model_server}/metrics").text)
    sentence = "a cat sits on the mat"  # alone in its batch: its tokens are the batch's
    for _ in range(5):
        assert httpx.post(f"{model_server}/embed", json={"inputs": sentence}).status_code == 200
    httpx.get(f"{model_server}/nowhere/else")
    after = metric_values(httpx.get(f"{model_server}/metrics").text)
    grew = {name: after[name] - before.get(name, 0.0) for name in after}
    tokens = model.tokenizer.lengths([sentence])[0][0]
    assert grew['sbert_requests_total{route="/embed",status="200"}'] == 5
    assert grew['sbert_request_seconds_count{route="/embed"}'] == 5
    assert 0 < grew['sbert_request_seconds_sum{route="/embed"}'] < 5 * 2.0  # seconds, not ms
    assert (grew["sbert_batch_sentences_sum"], grew["sbert_batch_tokens_sum"]) == (5, 5 * tokens)
    assert grew['sbert_requests_total{route="other",status="404"}'] == 1  # no label per path
    assert "sbert_queue_depth" in after
    paths = httpx.get(f"{model_server}/openapi.json").json()["paths"]
    assert {"/v1/embeddings", "/embeddings"} <= set(paths)  # the alias is documented too


def metric_values(text: str) -> dict[str, float]:
    """Prometheus text's samples by name and labels."""
    samples = (line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    return {name: float(value) for name, value in samples}


async def flood(url: str, bodies: list[dict], route: str = "/embed") -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(bodies))
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        return await asyncio.gather(*(client.post(route, json=b) for b in bodies))


def test_every_concurrent_request_gets_its_own_vectors(folders, model_server):
    """250 requests at once, of 1 to 4 distinct texts of different lengths: a batching mix-up
    (vectors handed to the wrong request, or in the wrong order) fails here."""
    requests = [[text(i * 4 + j) for j in range(1 + i % 4)] for i in range(250)]
    answers = asyncio.run(flood(model_server, [{"inputs": r} for r in requests]))
    assert {a.status_code for a in answers} == {200}
    model = sbert.load(folders["model"])
    want = model.encode([t for r in requests for t in r], normalize=True)
    got = np.concatenate([np.array(a.json()) for a in answers])
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    batches = httpx.get(f"{model_server}/metrics").text
    assert "sbert_batch_sentences_count" in batches


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")))


def test_a_flood_gets_429s_no_5xx_and_bounded_memory(folders):
    limits = ["--max-concurrent-requests", "8"]
    with server("--model", str(folders["fp32"]), *limits) as (url, process):
        asyncio.run(flood(url, [{"inputs": text(i)} for i in range(16)]))  # warm
        before = rss_kib(process.pid)
        bodies = [{"inputs": [text(i), text(i + 1)]} for i in range(300)]
        answers = asyncio.run(flood(url, bodies))
        codes = [a.status_code for a in answers]
        assert set(codes) <= {200, 429} and codes.count(429) > 0 and codes.count(200) >= 8
        refused = next(a for a in answers if a.status_code == 429)
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error_type"] == "overloaded"
        assert httpx.get(f"{url}/health").status_code == 200
        assert rss_kib(process.pid) - before < 200 * 1024


def test_bodies_begun_then_stalled_or_abandoned_hold_no_place(folders):
    """A request counts against --max-concurrent-requests once its body is in: three clients
    that start a body and stall do not lock out a fourth (the limit is 2), and leaving
    mid-body is a 499 in the metrics, with no traceback in the log."""
    limits = ["--max-concurrent-requests", "2"]
    with server("--model", str(folders["fp32"]), *limits) as (url, process):
        port = int(url.rsplit(":", 1)[1])
        head = (b"POST /embed HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                b'content-length: 100\r\n\r\n{"inputs": ')  # fmt: skip
        stalled = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(3)]
        for connection in stalled:
            connection.sendall(head)
        time.sleep(0.3)
        assert httpx.post(f"{url}/embed", json={"inputs": "a"}, timeout=10).status_code == 200
        for connection in stalled:
            connection.close()
        left = 'sbert_requests_total{route="/embed",status="499"} 3.0'
        for _ in range(100):  # until the server has seen all three leave (10 s)
            if left in httpx.get(f"{url}/metrics").text:
                break
            time.sleep(0.1)
        assert left in httpx.get(f"{url}/metrics").text
    assert "Traceback" not in process.stderr.read()


def read_answer(connection: socket.socket) -> str:
    """One HTTP answer off a raw socket, its body whole (its head and body may come apart)."""
    data = b""
    while True:
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep and len(body) >= int(re.search(rb"content-length: (\d+)", head.lower())[1]):
            return data.decode()
        part = connection.recv(4096)
        assert part, data  # closed before the answer was whole
        data += part


def test_a_body_that_stalls_is_answered_408_in_time(folders):
    """A client that stops mid-body would hold its connection and what it sent forever; past
    --body-timeout-seconds it hears 408 (our JSON), and the server serves on."""
    with server("--model", str(folders["fp32"]), "--body-timeout-seconds", "0.5") as (url, _):
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
            connection.sendall(
                b"POST /embed HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: "
                b'application/json\r\ncontent-length: 100\r\n\r\n{"inputs": '
            )
            began = time.monotonic()
            answer = read_answer(connection)
            waited = time.monotonic() - began
        assert answer.startswith("HTTP/1.1 408"), answer
        assert '"error_type":"timeout"' in answer and "within 0.5 s" in answer, answer
        assert 0.4 < waited < 5, waited
        assert httpx.post(f"{url}/embed", json={"inputs": "a"}, timeout=10).status_code == 200
        assert 'route="/embed",status="408"} 1.0' in httpx.get(f"{url}/metrics").text


def test_a_port_in_use_is_one_line_before_the_model_loads(folders):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        command = [sys.executable, "-m", "sbert", "serve", "--model", str(folders["fp32"]),
                   "--port", str(port)]  # fmt: skip
        environment = {**os.environ, "PYTHONPATH": str(ROOT)}
        done = subprocess.run(command, env=environment, capture_output=True, text=True,
                              timeout=120)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        f"sbert serve: error: --host 127.0.0.1 --port {port}: cannot listen there "
        "(Address already in use)"
    )


def admitted(metrics: str) -> float:
    """/embed requests the server has taken: those in flight plus those answered 200."""
    wanted = ("sbert_requests_in_flight ", 'sbert_requests_total{route="/embed",status="200"} ')
    return sum(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith(wanted))


def terminated_with_requests_in_flight(url: str, process) -> list[httpx.Response]:
    """12 requests of 32 texts each taken in, then SIGTERM: their answers."""

    async def in_flight() -> list[httpx.Response]:
        bodies = [{"inputs": [text(i * 32 + j) for j in range(32)]} for i in range(12)]
        sent = asyncio.ensure_future(flood(url, bodies))
        async with httpx.AsyncClient(base_url=url) as client:
            for _ in range(3000):  # until all 12 are queued, running or answered (30 s)
                if admitted((await client.get("/metrics")).text) == 12:
                    break
                await asyncio.sleep(0.01)
        process.send_signal(signal.SIGTERM)
        return await sent

    return asyncio.run(in_flight())


def test_sigterm_answers_what_is_in_flight_then_exits_0(folders):
    with server("--model", str(folders["model"])) as (url, process):
        answers = terminated_with_requests_in_flight(url, process)
        assert [a.status_code for a in answers] == [200] * 12
        assert process.wait(timeout=60) == 0


def test_what_the_grace_time_leaves_is_answered_503(folders):
    # One sentence a model call: the 384 queued texts outlast a grace time of 0.
    args = ["--model", str(folders["model"]), "--grace-seconds", "0", "--max-batch-size", "1"]
    with server(*args) as (url, process):
        answers = terminated_with_requests_in_flight(url, process)
        assert process.wait(timeout=60) == 0
    statuses = [a.status_code for a in answers]
    assert set(statuses) <= {200, 503} and 503 in statuses, statuses
    refused = next(a for a in answers if a.status_code == 503).json()
    assert "shut down before this request was embedded" in refused["error"], refused


def test_the_export_is_served_without_torch(folders):
    """Only requirements-serve.txt's packages can be imported (tests/serving_only.py), as on a
    serving machine installed with `pip install "sbert[serve]"`."""
    texts = [text(i) for i in range(5)]
    with server("--model", str(folders["fp32"]), serving_only=True) as (url, _):
        got = httpx.post(f"{url}/v1/embeddings", json={"input": texts}).json()
        info = httpx.get(f"{url}/info").json()
    want = sbert.load(folders["model"]).encode(texts, normalize=True)
    vectors = np.array([d["embedding"] for d in got["data"]])
    np.testing.assert_allclose(vectors, want, atol=1e-5, rtol=0)
    assert info["runtime"] == "onnxruntime fp32"


def test_the_api_key_is_required_and_never_printed(folders, tmp_path):
    key = "s3cret-key-" + "x" * 20
    (tmp_path / "key").write_text(key + "\n")
    args = ["--model", str(folders["fp32"]), "--api-key-file", str(tmp_path / "key")]
    with server(*args) as (url, process):
        missing = httpx.post(f"{url}/embed", json={"inputs": "a"})
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert missing.json()["error_type"] == "unauthorized"
        for wrong in ("Bearer " + key[:-1] + "y", f"Basic {key}", key):  # the key, not as Bearer
            answer = httpx.post(
                f"{url}/embed", json={"inputs": "a"}, headers={"authorization": wrong}
            )
            assert answer.status_code == 401, wrong
        right = {"authorization": f"Bearer {key}"}
        assert httpx.post(f"{url}/embed", json={"inputs": "a"}, headers=right).status_code == 200
        assert httpx.get(f"{url}/health").status_code == 200  # a load balancer's probe
    assert key not in process.stderr.read()


def test_an_int8_vector_does_not_depend_on_what_shared_its_batch(minilm_export):
    """Requests batched together on the int8 export of all-MiniLM-L6-v2 (a tiny random model's
    activations are too tame to show it): each vector equals the export's vector of the
    sentence encoded alone (cos >= 0.9999)."""
    texts = [text(i) for i in range(48)]
    int8 = sbert.load(minilm_export)
    alone = np.stack([int8.encode([t], normalize=True)[0] for t in texts])
    with server("--model", str(minilm_export)) as (url, _):
        answers = asyncio.run(flood(url, [{"inputs": t} for t in texts]))
        batched = httpx.get(f"{url}/metrics").text
    got = np.concatenate([np.array(a.json()) for a in answers])
    assert (got * alone).sum(axis=1).min() >= 0.9999
    assert 'sbert_batch_sentences_bucket{le="1.0"} 48.0' not in batched  # really batched
