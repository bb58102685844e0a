"""The gate every request passes (pure ASGI middleware, cheaper than Starlette's
BaseHTTPMiddleware): a request id, the refusals made before any work (draining, API key, body
size, too many requests in), reading the body of a route that runs the model, timing, metrics
and the access log."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import uuid

from starlette.datastructures import MutableHeaders

from sbert.serve.errors import ApiError, error_response
from sbert.serve.state import ServerState

log = logging.getLogger("sbert.serve")
# Routes that run the model: the concurrency limit counts these.
INFERENCE = frozenset(
    {"/v1/embeddings", "/embeddings", "/embed", "/similarity", "/rerank", "/predict", "/search"}
)
OPEN = frozenset({"/health"})  # answered without an API key (a load balancer's probe)
ROUTES = INFERENCE | OPEN | {"/info", "/metrics", "/openapi.json"}


class Gate:
    """Wraps the app: see the module's docstring."""

    def __init__(self, app, state: ServerState):
        self.app, self.state = app, state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, state = time.perf_counter(), self.state
        headers = MutableHeaders(scope=scope)
        rid = headers.get("x-request-id") or uuid.uuid4().hex[:16]
        path = scope["path"]
        status = 500

        async def send_with_id(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["x-request-id"] = rid
            await send(message)

        try:
            self.refuse(path, headers)
            if path in INFERENCE:
                body = await self.body(receive)
                if body is None:  # the client left before its body was in: nobody to answer
                    status = 499
                else:
                    self.refuse_when_full()
                    state.in_flight += 1
                    try:
                        await self.app(scope, replay(body, receive), send_with_id)
                    finally:
                        state.in_flight -= 1
            else:
                await self.app(scope, receive, send_with_id)
        except ApiError as e:
            await error_response(e)(scope, receive, send_with_id)
        seconds = time.perf_counter() - start
        state.metrics.request(path if path in ROUTES else "other", status, seconds)
        if not state.config.quiet:
            client = (scope.get("client") or ("-",))[0]
            log.info('%s "%s %s" %d %.1fms id=%s', client, scope["method"], path, status,
                     seconds * 1000, rid)  # fmt: skip

    def refuse(self, path: str, headers: MutableHeaders) -> None:
        """Raise the ApiError a request gets before any work, if any."""
        state = self.state
        if state.draining:
            raise ApiError(503, "unavailable", "the server is shutting down")
        if state.api_key is not None and path not in OPEN:
            scheme, _, key = headers.get("authorization", "").partition(" ")
            given = key.strip().encode() if scheme.lower() == "bearer" else b""
            if not hmac.compare_digest(given, state.api_key.encode()):  # constant time
                raise ApiError(401, "unauthorized", "send the API key: Authorization: Bearer KEY",
                               {"www-authenticate": "Bearer"})  # fmt: skip
        length = headers.get("content-length", "0")
        if not length.isdigit() or int(length) > state.config.max_body_bytes:
            raise self.too_large()

    def refuse_when_full(self) -> None:
        """429 when --max-concurrent-requests requests are already in: asked once a body is
        read, so that clients slow to send theirs hold no place (text-embeddings-inference
        takes its permit after reading the body too)."""
        limit = self.state.config.max_concurrent_requests
        if self.state.in_flight >= limit:
            raise ApiError(429, "overloaded", f"more than {limit} requests waiting: try again "
                           "shortly", {"retry-after": "1"})  # fmt: skip

    def too_large(self) -> ApiError:
        limit = self.state.config.max_body_bytes
        return ApiError(413, "payload_too_large", f"the request body is over {limit:,} bytes")

    async def body(self, receive) -> bytes | None:
        """The whole request body, refused (413) once it outgrows the limit, which a body sent
        without a length can only be as it arrives, and (408) if it is not all in within
        --body-timeout-seconds; None if the client disconnects first."""
        seconds = self.state.config.body_timeout_seconds
        task, expired = asyncio.current_task(), False

        def expire() -> None:
            nonlocal expired
            expired = True
            task.cancel()

        # What asyncio.timeout (Python 3.11) does, without wait_for's task per request.
        timer = asyncio.get_running_loop().call_later(seconds, expire)
        try:
            return await self.read(receive)
        except asyncio.CancelledError:
            if not expired:
                raise
            if hasattr(task, "uncancel"):  # 3.11+: this cancellation is ours, not the server's
                task.uncancel()
            message = f"the request body did not arrive within {seconds:g} s"
            raise ApiError(408, "timeout", message) from None
        finally:
            timer.cancel()

    async def read(self, receive) -> bytes | None:
        limit, parts, seen = self.state.config.max_body_bytes, [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            part = message.get("body", b"")
            seen += len(part)
            if seen > limit:
                raise self.too_large()
            parts.append(part)
            if not message.get("more_body", False):
                return b"".join(parts)


def replay(body: bytes, receive):
    """`receive` for an app whose body was already read: the body once, then the client's own
    messages (a disconnect, which the routes watch for)."""
    sent = False

    async def replayed():
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed
