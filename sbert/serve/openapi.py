"""The OpenAPI document of the routes, from their request models (pydantic's JSON schemas):
what `GET /openapi.json` serves, so that clients and tools can read the API."""

from __future__ import annotations

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

ERROR = {
    "type": "object",
    "properties": {"error": {"type": "string"}, "error_type": {"type": "string"}},
    "required": ["error", "error_type"],
}


def document(posts: dict[str, tuple[type[BaseModel], str]], gets: dict[str, str], version: str):
    """OpenAPI 3.1: `posts` maps a path to its body model and summary, `gets` a path to its."""
    _, schemas = models_json_schema(
        [(model, "validation") for model, _ in posts.values()],
        ref_template="#/components/schemas/{model}",
    )
    errors = {str(s): {"description": d, "content": {"application/json": {"schema": ERROR}}}
              for s, d in ((400, "unreadable body"), (401, "no or wrong API key"),
                           (413, "too large"), (422, "invalid"), (429, "too many waiting"),
                           (503, "shutting down"))}  # fmt: skip
    paths = {}
    for path, (model, summary) in posts.items():
        body = {"$ref": f"#/components/schemas/{model.__name__}"}
        paths[path] = {"post": {
            "summary": summary,
            "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
            "responses": {"200": {"description": "OK"}, **errors},
        }}  # fmt: skip
    for path, summary in gets.items():
        paths[path] = {"get": {"summary": summary, "responses": {"200": {"description": "OK"}}}}
    info = {
        "title": "sbert",
        "version": version,
        "summary": "Sentence-BERT embeddings, similarity, pair classification and search",
    }
    return {"openapi": "3.1.0", "info": info, "paths": paths,
            "components": {"schemas": schemas.get("$defs", {})}}  # fmt: skip
