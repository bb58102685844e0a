"""Error bodies: every refusal is a JSON body `{"error": ..., "error_type": ...}` with its
status, as text-embeddings-inference answers (router/src/http/server.rs): 400 unreadable body,
401 no or wrong API key, 413 too large, 422 invalid, 429 too many requests waiting (with
Retry-After), 503 shutting down. Client input never gets a 500.
"""

from __future__ import annotations

import logging

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

log = logging.getLogger("sbert.serve")


class ApiError(HTTPException):
    """A request refused: its status, a machine-readable type and a sentence for the user.

    An HTTPException, so that FastAPI passes it through when it is raised while the body is read
    (the body-size limit) instead of turning it into a generic 400.
    """

    def __init__(self, status: int, error_type: str, message: str, headers=None):
        super().__init__(status, message, headers)
        self.status, self.error_type = status, error_type

    def __str__(self) -> str:
        return str(self.detail)


class JSON(Response):
    """orjson, which writes numpy arrays directly (a vector is not turned into a list first)."""

    media_type = "application/json"

    def render(self, content) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def error_response(error: ApiError) -> JSON:
    body = {"error": str(error), "error_type": error.error_type}
    return JSON(body, status_code=error.status, headers=error.headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError):
        return error_response(e)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError):
        errors = e.errors()
        if any(err["type"] == "json_invalid" for err in errors):
            return error_response(ApiError(400, "bad_request", "the body is not valid JSON"))
        return error_response(ApiError(422, "validation", describe(errors)))

    @app.exception_handler(Exception)
    async def failed(request: Request, e: Exception):  # a fault of ours, not the client's
        log.exception("request %s failed", request.url.path)
        return error_response(ApiError(500, "internal", f"the server failed: {type(e).__name__}"))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException):
        kind = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}
        error = ApiError(e.status_code, kind.get(e.status_code, "error"), str(e.detail))
        if e.status_code == 400:  # Starlette's "error parsing the body": not UTF-8, mostly
            error = ApiError(400, "bad_request", "the body is not UTF-8 JSON")
        return error_response(error)


def describe(errors: list[dict]) -> str:
    """Pydantic's errors as one sentence naming the field, e.g. `inputs[2]: ...`. Of a union
    (a string or a list of strings) the branch that went deepest into the input says most; where
    no branch got past the input's type, the sentence names the types that would do."""
    specific = [e for e in errors if not e["type"].endswith("_type")]
    deepest = max(len(e["loc"]) for e in errors)
    candidates = specific or [e for e in errors if len(e["loc"]) == deepest]
    err = candidates[0]
    where = ""
    for part in err["loc"]:
        if isinstance(part, int):
            where += f"[{part}]"
        elif part not in ("body", "str") and "[" not in part:  # not the union's branch names
            where += f".{part}" if where else part
    message = err["msg"].removeprefix("Value error, ")
    if not specific and len(candidates) > 1:
        kinds = {"string_type": "a string", "list_type": "a list", "tuple_type": "a pair"}
        message = "expected " + " or ".join(kinds.get(e["type"], e["type"]) for e in candidates)
    return f"{where or 'body'}: {message}"
