"""The HTTP application in this process (Starlette's test client runs its lifespan, so the
batcher runs as in `sbert serve`): every limit and malformed request gets its status and a JSON
body naming the problem, and a property-based fuzz of every route finds no 5xx."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sbert import MultiTaskModel, SentenceBert

pytest.importorskip("starlette")

from starlette.testclient import TestClient  # noqa: E402

from sbert.serve.app import create_app  # noqa: E402
from sbert.serve.config import ServeConfig  # noqa: E402
from sbert.serve.server import build_state  # noqa: E402

POST_ROUTES = ["/v1/embeddings", "/embed", "/similarity", "/rerank", "/predict", "/search"]


def app_for(model, **limits) -> TestClient:
    config = ServeConfig(model="tiny", quiet=True, **limits)
    return TestClient(create_app(build_state(config, model)), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return MultiTaskModel(SentenceBert.from_config("tiny"), ["no", "yes"], (0.0, 5.0)).eval()


@pytest.fixture(scope="module")
def client(tiny):
    with app_for(tiny, max_client_batch_size=4, max_body_bytes=2000) as c:
        yield c


def refused(answer, status: int, error_type: str, words: str) -> None:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["error_type"] == error_type and words in body["error"], body


@pytest.mark.parametrize(
    "body, status, error_type, words",
    [
        ({"inputs": []}, 422, "validation", "inputs: List should have at least 1 item"),
        ({"inputs": ["a cat", "  "]}, 422, "validation", "inputs[1]: an empty text"),
        ({"inputs": "\u200b\u200f"}, 422, "validation", "inputs: an empty text"),  # no tokens
        ({"inputs": ["a", "\u0000"]}, 422, "validation", "inputs[1]: an empty text"),
        ({"inputs": 3}, 422, "validation", "inputs: expected a string or a list"),
        ({"inputs": ["a", 3]}, 422, "validation", "inputs[1]: Input should be a valid string"),
        ({"text": "a cat"}, 422, "validation", "inputs: Field required"),
        ({"inputs": ["a"] * 5}, 413, "payload_too_large", "5 inputs; at most 4 a request"),
        ({"inputs": "word " * 300, "truncate": False}, 413, "payload_too_large", "longer than"),
        ({"inputs": "x" * 3000}, 413, "payload_too_large", "over 2,000 bytes"),
    ],
)
def test_bad_embed_requests(client, body, status, error_type, words):
    refused(client.post("/embed", json=body), status, error_type, words)


def test_embed_answers_the_models_vectors_unit_length_unless_told_not_to(client, tiny):
    texts = ["a cat sits on the mat", "rain"]
    raw = tiny.encode(texts)
    unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    assert not np.allclose(raw, unit, atol=1e-3)  # the tiny model's vectors are not unit length
    for body, want in (({}, unit), ({"normalize": True}, unit), ({"normalize": False}, raw)):
        got = client.post("/embed", json={"inputs": texts, **body}).json()
        np.testing.assert_allclose(np.array(got), want, atol=1e-5, err_msg=str(body))


def test_unreadable_bodies_are_400(client):
    refused(client.post("/embed", content=b'{"inputs": '), 400, "bad_request",
            "not valid JSON (EOF while parsing")  # fmt: skip
    refused(client.post("/embed", content=b'{"inputs": "\xff"}'), 400, "bad_request", "UTF-8")


def test_a_body_without_a_length_is_counted_as_it_arrives(client):
    def chunks():
        yield b'{"inputs": "'
        for _ in range(30):
            yield b"y" * 100
        yield b'"}'

    refused(client.post("/embed", content=chunks()), 413, "payload_too_large", "over 2,000")


@pytest.mark.parametrize("streamed", [False, True])  # with a content-length, and without
def test_the_body_limit_is_its_byte_count(client, streamed):
    def body(size: int) -> bytes:
        text = b'{"inputs": "' + b"a " * size
        return text[: size - 2] + b'"}'

    for size, status in ((2000, 200), (2001, 413)):
        sent = body(size)
        assert len(sent) == size
        content = (part for part in (sent[:1000], sent[1000:])) if streamed else sent
        assert client.post("/embed", content=content).status_code == status, size


def test_the_limit_of_requests_in_flight_is_its_count(tiny):
    state = build_state(ServeConfig(model="tiny", quiet=True, max_concurrent_requests=2), tiny)
    with TestClient(create_app(state), raise_server_exceptions=False) as client:
        state.in_flight = 1  # one request already in: a second is let in
        assert client.post("/embed", json={"inputs": "a cat"}).status_code == 200
        state.in_flight = 2  # two: the limit is full
        answer = client.post("/embed", json={"inputs": "a cat"})
        refused(answer, 429, "overloaded", "more than 2 requests waiting")
        assert answer.headers["retry-after"] == "1"
        assert state.in_flight == 2  # a refused request takes no place


def test_a_declared_length_over_the_limit_is_413_before_the_body_is_read(tiny):
    """A client that announces a body over --max-body-bytes is answered at once: the server
    neither reads nor waits for what it would refuse."""
    app = create_app(build_state(ServeConfig(model="tiny", quiet=True, max_body_bytes=2000), tiny))
    sent = []

    async def receive():
        raise AssertionError("the body was read")

    async def send(message):
        sent.append(message)

    for length in (b"2001", b"12x"):
        scope = {"type": "http", "method": "POST", "path": "/embed", "query_string": b"",
                 "headers": [(b"content-length", length)]}  # fmt: skip
        asyncio.run(app(scope, receive, send))
        assert sent[0]["status"] == 413, length
        assert b"over 2,000 bytes" in sent[1]["body"]
        sent.clear()


async def queued(app, state, client) -> tuple[asyncio.Task, list]:
    """One /embed request of one text sent into `app` as a task, returned once its text waits
    in the batcher's queue (not started in these tests), with the messages sent back to it.
    `client`: what it does after its body (awaited by the app's `receive`)."""
    content = b'{"inputs": "text"}'
    body, sent = [{"type": "http.request", "body": content, "more_body": False}], []

    async def receive():
        return body.pop() if body else await client()

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/embed", "query_string": b"",
             "headers": [(b"content-length", str(len(content)).encode())]}  # fmt: skip
    request = asyncio.ensure_future(app(scope, receive, send))
    while not state.batcher.depth and not request.done():  # (answered unqueued: tests fail)
        await asyncio.sleep(0.001)
    return request, sent


def test_a_client_that_leaves_while_queued_is_499_and_its_texts_are_dropped(tiny):
    """A client gone while its texts wait for a batch: its request ends as 499, and its texts
    are marked so that no batch takes them."""
    state = build_state(ServeConfig(model="tiny", quiet=True), tiny)

    async def leave_while_queued():
        gone = asyncio.Event()

        async def client():
            await gone.wait()
            return {"type": "http.disconnect"}

        request, sent = await queued(create_app(state), state, client)
        gone.set()
        await asyncio.wait_for(request, 10)
        return sent

    assert asyncio.run(leave_while_queued())[0]["status"] == 499
    assert [job.cancelled for job, _ in state.batcher._queue] == [True]
    assert state.in_flight == 0


def test_a_request_the_server_cancels_stays_cancelled(tiny):
    """The server cancelling a waiting request (uvicorn at shutdown) is not a client that left:
    the cancellation goes on up, and nothing is answered for it."""
    state = build_state(ServeConfig(model="tiny", quiet=True), tiny)

    async def cancel_while_queued():
        async def client():  # stays
            await asyncio.Event().wait()

        request, sent = await queued(create_app(state), state, client)
        request.cancel()
        await asyncio.wait({request}, timeout=10)
        return request, sent

    request, sent = asyncio.run(cancel_while_queued())
    assert request.cancelled() and sent == []
    assert [job.cancelled for job, _ in state.batcher._queue] == [False]


def test_a_draining_server_answers_503_to_new_requests(tiny):
    """After SIGTERM (state.draining) a new request, /health included, is 503: a load
    balancer stops sending here while what was queued is finished."""
    state = build_state(ServeConfig(model="tiny", quiet=True), tiny)
    with TestClient(create_app(state), raise_server_exceptions=False) as client:
        assert client.get("/health").status_code == 200
        state.draining = True
        refused(client.post("/embed", json={"inputs": "a"}), 503, "unavailable", "shutting down")
        refused(client.get("/health"), 503, "unavailable", "shutting down")


def test_route_specific_refusals(client, tiny):
    refused(client.post("/search", json={"queries": "a", "k": 0}), 422, "validation", "k:")
    refused(client.post("/search", json={"queries": "a"}), 404, "no_index", "--index")
    pair = {"inputs": ["a cat", "a dog"]}
    assert client.post("/predict", json=pair).json()[0]["label"] in ("no", "yes")
    refused(client.post("/predict", json={"inputs": [["a"]]}), 422, "validation", "inputs[0][1]")
    refused(client.post("/predict", json={"inputs": []}), 422, "validation", "at least 1 item")
    refused(client.post("/v1/embeddings", json={"input": [1, 2]}), 422, "validation",
            "input[0]: Input should be a valid string")  # fmt: skip
    dims = {"input": "a", "dimensions": 7}
    refused(client.post("/v1/embeddings", json=dims), 422, "validation", "gives 32")
    with app_for(MultiTaskModel(tiny.encoder)) as plain:  # no classifier
        refused(plain.post("/predict", json=pair), 422, "no_classifier", "no classifier")


def test_each_route_counts_its_inputs_and_names_the_field_at_fault(client):
    """--max-client-batch-size (4 here) counts texts, pairs, not a query or source sentence, as
    text-embeddings-inference does; an error names the field in the body, not a flat index."""
    ok = {"query": "a", "texts": ["b", "c", "d", "e"]}
    assert client.post("/rerank", json=ok).status_code == 200
    refused(client.post("/rerank", json={**ok, "texts": ["b"] * 5}), 413, "payload_too_large",
            "5 inputs")  # fmt: skip
    similar = {"inputs": {"source_sentence": "a", "sentences": ["b", "c", "d", "e"]}}
    assert client.post("/similarity", json=similar).status_code == 200
    pairs = {"inputs": [["a", "b"]] * 4}
    assert client.post("/predict", json=pairs).status_code == 200
    long = "word " * 300
    cases = [
        ("/similarity", {"inputs": {"source_sentence": "a", "sentences": ["b", long]}},
         "inputs.sentences[1] is longer"),
        ("/similarity", {"inputs": {"source_sentence": long, "sentences": ["b"]}},
         "inputs.source_sentence is longer"),
        ("/rerank", {"query": "a", "texts": ["b", long]}, "texts[1] is longer"),
        ("/predict", {"inputs": [["a", "b"], ["c", long]]}, "inputs[1][1] is longer"),
        ("/predict", {"inputs": ["a", long]}, "inputs[1] is longer"),
        ("/embed", {"inputs": long}, "inputs is longer"),
        ("/v1/embeddings", {"input": ["a", long]}, "input[1] is longer"),
    ]  # fmt: skip
    for route, body, words in cases:
        if route != "/v1/embeddings":  # OpenAI's route always truncates
            refused(client.post(route, json={**body, "truncate": False}), 413,
                    "payload_too_large", words)  # fmt: skip


def test_a_form_content_type_is_read_as_json(client):
    """`curl -d` says application/x-www-form-urlencoded; the body is JSON all the same."""
    form = {"content-type": "application/x-www-form-urlencoded"}
    answer = client.post("/embed", content=json.dumps({"inputs": "a cat"}), headers=form)
    assert answer.status_code == 200 and len(answer.json()[0]) == 32


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),  # fmt: skip
    max_leaves=12,
)
FIELDS = ["input", "inputs", "model", "encoding_format", "dimensions", "normalize", "truncate",
          "query", "texts", "return_text", "queries", "k", "source_sentence",
          "sentences"]  # fmt: skip
BODIES = st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES, max_size=4) | JSON_VALUES


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(route=st.sampled_from(POST_ROUTES), body=BODIES)
def test_no_request_gets_a_5xx(client, route, body):
    answer = client.post(route, content=json.dumps(body, allow_nan=True))
    assert answer.status_code in (200, 400, 404, 413, 422), (route, body, answer.text)
    if answer.status_code != 200:
        assert set(answer.json()) == {"error", "error_type"}


def test_an_api_key_file_must_be_a_small_regular_file(tiny, tmp_path):
    """A FIFO or /dev/zero as the key file is one line, at once (it would hang or never end);
    so is a key a client cannot send as it is (non-ASCII, spaces)."""
    import os

    from sbert.errors import SbertError

    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "zero").symlink_to("/dev/zero")
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "accented").write_text("s3cr\u00e9t\n")  # a client would send it as it likes
    (tmp_path / "spaced").write_text("two words\n")
    for name, words in (("fifo", "not a regular file"), ("zero", "not a regular file"),
                        ("empty", "is empty"), ("accented", "printable ASCII"),
                        ("spaced", "without spaces")):  # fmt: skip
        config = ServeConfig(model="tiny", api_key_file=str(tmp_path / name))
        with pytest.raises(SbertError, match=words):
            build_state(config, tiny)


def test_predict_answers_the_librarys_probabilities_whatever_the_label_order(tiny):
    """/predict equals `sbert.predict` (u the first sentence, v the second), for a classifier
    whose labels are not in sorted order ("yes" is row 0): probabilities by the right name."""
    from sbert.inference.predict import predict

    torch.manual_seed(1)
    model = MultiTaskModel(tiny.encoder, ["yes", "no"], (0.0, 5.0)).eval()
    pairs = [["a cat sits on the mat", "rain"], ["rain", "a cat sits on the mat"]]
    want = predict(model, [tuple(p) for p in pairs])
    with app_for(model) as c:
        got = c.post("/predict", json={"inputs": pairs}).json()
    for answer, expected in zip(got, want, strict=True):
        assert answer["label"] == expected.label
        assert answer["probabilities"] == pytest.approx(expected.probabilities, abs=1e-6)
        assert answer["similarity"] == pytest.approx(expected.similarity, abs=1e-6)
    assert got[0]["probabilities"] != pytest.approx(got[1]["probabilities"], abs=1e-4)  # u, v
    with torch.no_grad():  # the classifier itself: row 0 of its output is "yes"
        u, v = (model.encoder.encode([p[i] for p in pairs], convert_to_tensor=True) for i in (0, 1))
        rows = torch.softmax(model.classifier(torch.cat([u, v, (u - v).abs()], 1)), 1)
    assert [a["probabilities"]["yes"] for a in got] == pytest.approx(rows[:, 0].tolist(), abs=1e-5)


def test_fields_limits_headers_and_metrics_the_fuzz_cannot_see(client):
    long = "word " * 300
    refused(client.post("/predict", json={"inputs": [["c", long], ["a", "b"]], "truncate": False}),
            413, "payload_too_large", "inputs[0][1] is longer")  # fmt: skip
    refused(client.post("/rerank", json={"query": "a", "texts": []}), 422, "validation",
            "at least 1 item")  # fmt: skip
    similar = {"inputs": {"source_sentence": "a", "sentences": [long]}}
    assert client.post("/similarity", json=similar).status_code == 200  # truncated by default
    answer = client.post("/embed", json={"inputs": "a cat"})
    assert float(answer.headers["x-queue-time"]) >= 0
    assert float(answer.headers["x-inference-time"]) > 0
    client.get("/info")
    assert 'sbert_requests_total{route="/info",status="200"}' in client.get("/metrics").text


def test_health_is_503_while_the_batcher_does_not_run(tiny):
    """Without its lifespan (the batcher never started), the server is not healthy: a load
    balancer must not send it work that would wait for ever."""
    client = TestClient(create_app(build_state(ServeConfig(model="tiny", quiet=True), tiny)),
                        raise_server_exceptions=False)  # fmt: skip
    answer = client.get("/health")
    assert answer.status_code == 503 and answer.json()["error_type"] == "unhealthy", answer.text


def test_the_api_key_file_wins_over_the_environment(tmp_path, monkeypatch, tiny):
    """--api-key-file is what the command line names: it beats $SBERT_API_KEY, as
    docs/serving.md says."""
    key_file = tmp_path / "key"
    key_file.write_text("from-the-file\n")
    monkeypatch.setenv("SBERT_API_KEY", "from-the-environment")
    config = ServeConfig(model="tiny", quiet=True, api_key_file=str(key_file))
    assert build_state(config, tiny).api_key == "from-the-file"
    assert (
        build_state(ServeConfig(model="tiny", quiet=True), tiny).api_key == "from-the-environment"
    )
