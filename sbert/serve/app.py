"""The HTTP application over a loaded model: FastAPI with the gate, the error bodies and the
routes; the batcher runs while the app is served (its lifespan)."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from sbert.serve import routes
from sbert.serve.errors import JSON, install_error_handlers
from sbert.serve.gate import Gate
from sbert.serve.state import ServerState


def create_app(state: ServerState) -> FastAPI:
    """The application over a loaded model (`state`); the batcher runs while it is served."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.batcher.start()
        yield
        state.batcher.stop()

    app = FastAPI(
        title="sbert",
        summary="Sentence-BERT embeddings, similarity, pair classification and search",
        version=routes.version(),
        default_response_class=JSON,
        lifespan=lifespan,
    )
    app.state.sbert = state
    install_error_handlers(app)
    app.include_router(routes.router)
    app.add_middleware(Gate, state=state)
    return app
