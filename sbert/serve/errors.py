"""Error bodies: every refusal is a JSON body `{"error": ..., "error_type": ...}` with its
status, as text-embeddings-inference answers (router/src/http/server.rs): 400 unreadable body,
401 no or wrong API key, 404/405 no such route, 408 body too slow, 413 too large, 422 invalid,
429 too many requests waiting (with Retry-After), 503 shutting down. Client input never gets a
500.
"""

from __future__ import annotations

import logging
from typing import TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

log = logging.getLogger("sbert.serve")
Model = TypeVar("Model", bound=BaseModel)


class ApiError(Exception):
    """A request refused: its status, a machine-readable type and a sentence for the user."""

    def __init__(self, status: int, error_type: str, message: str, headers=None):
        super().__init__(message)
        self.status, self.error_type, self.headers = status, error_type, headers


class JSON(Response):
    """orjson, which writes numpy arrays directly (a vector is not turned into a list first)."""

    media_type = "application/json"

    def render(self, content) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def error_response(error: ApiError) -> JSON:
    body = {"error": str(error), "error_type": error.error_type}
    return JSON(body, status_code=error.status, headers=error.headers)


async def parse(request: Request, model: type[Model]) -> Model:
    """The request's body as `model`: 400 if it is not UTF-8 JSON, 422 naming the field if it
    does not fit."""
    body = await request.body()
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "bad_request", "the body is not UTF-8") from None
    try:
        return model.model_validate_json(body)
    except ValidationError as e:
        errors = e.errors()
        for err in errors:
            if err["type"] == "json_invalid":  # with the parser's reason: "EOF while parsing..."
                reason = err.get("ctx", {}).get("error")
                why = f" ({reason})" if reason else ""
                raise ApiError(400, "bad_request", f"the body is not valid JSON{why}") from None
        raise ApiError(422, "validation", describe(errors)) from None


def describe(errors: list[dict]) -> str:
    """Pydantic's errors as one sentence naming the field, e.g. `inputs[2]: ...`. Of a union
    (a string or a list of strings; a pair or a list of pairs) the branch that went deepest into
    the input says most, a missing item counting as deep as the container the input has; there,
    a broken rule says more than a missing item, and that more than a wrong type. Where no branch
    got past the input's type, the sentence names the types that would do."""

    def path(err) -> list:  # the union's branch names left out
        return [p for p in err["loc"] if isinstance(p, int) or (p != "str" and "[" not in p)]

    def depth(err) -> int:
        return len(path(err)) - (err["type"] == "missing")

    def kind(err) -> int:
        return 2 if err["type"].endswith("_type") else 1 if err["type"] == "missing" else 0

    deepest = max(map(depth, errors))
    found = [e for e in errors if depth(e) == deepest]
    err = min(found, key=kind)  # the first of the most telling kind
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path(err)).lstrip(".")
    message = err["msg"].removeprefix("Value error, ")
    if kind(err) == 2:
        kinds = {"string_type": "a string", "list_type": "a list", "tuple_type": "a pair"}
        wanted = dict.fromkeys(kinds.get(e["type"], e["type"]) for e in found
                               if kind(e) == 2 and path(e) == path(err))  # fmt: skip
        if len(wanted) > 1:
            message = "expected " + " or ".join(wanted)
    return f"{where or 'body'}: {message}"


async def api_error(request: Request, e: ApiError) -> JSON:
    return error_response(e)


async def http_error(request: Request, e: HTTPException) -> JSON:
    """Starlette's own refusals (no such route, wrong method) in our shape."""
    kind = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code, "error")
    return error_response(ApiError(e.status_code, kind, str(e.detail), e.headers))


async def failed(request: Request, e: Exception) -> JSON:
    """A fault of ours, not the client's: logged, and still a JSON body."""
    log.exception("request %s failed", request.url.path)
    return error_response(ApiError(500, "internal", f"the server failed: {type(e).__name__}"))


HANDLERS = {ApiError: api_error, HTTPException: http_error, Exception: failed}
