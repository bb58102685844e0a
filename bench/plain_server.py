"""The server a user would write in ten minutes, for bench/serve.py to measure against: FastAPI,
one route, `SentenceTransformer.encode` per request.

    python bench/plain_server.py MODEL_FOLDER PORT
"""

from __future__ import annotations

import sys

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from sentence_transformers import SentenceTransformer

model = SentenceTransformer(sys.argv[1], device="cpu")
app = FastAPI()


class Embed(BaseModel):
    inputs: str | list[str]


@app.post("/embed")
def embed(body: Embed) -> list[list[float]]:  # FastAPI runs a plain def in its thread pool
    texts = [body.inputs] if isinstance(body.inputs, str) else body.inputs
    return model.encode(texts, normalize_embeddings=True).tolist()


@app.get("/health")
def health() -> dict:
    return {"status": "ok"}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
