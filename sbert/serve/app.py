"""The HTTP application over a loaded model: Starlette with the gate, the error bodies and the
routes; the batcher runs while the app is served (its lifespan).

Starlette rather than FastAPI, by measuring: on uvicorn with httptools and uvloop, a route that
validates a small JSON body with pydantic and answers one vector cost the server 237-273 us of
CPU a request on Starlette, 387-423 us on FastAPI reading the body itself and 463-517 us on
FastAPI's typed body (16 concurrent clients, 3,000 requests, 2-core AMD EPYC, 2026-12-02,
docs/serving.md). The request models stay pydantic, and /openapi.json is built from them.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from starlette.applications import Starlette

from sbert.serve import routes
from sbert.serve.errors import HANDLERS
from sbert.serve.gate import Gate
from sbert.serve.state import ServerState


def create_app(state: ServerState) -> Starlette:
    """The application over a loaded model (`state`); the batcher runs while it is served."""

    @asynccontextmanager
    async def lifespan(app: Starlette):
        state.batcher.start()
        yield
        state.batcher.stop()

    app = Starlette(routes=routes.ROUTES, exception_handlers=HANDLERS, lifespan=lifespan)
    app.state.sbert = state
    app.add_middleware(Gate, state=state)
    return app
