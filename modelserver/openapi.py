"""The OpenAPI 3.1 document of the whole HTTP API, generated from the shared wire schemas."""

from __future__ import annotations

from functools import cache
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from streamml import __version__
from streamml.vocabulary import wire

_SCHEMAS: list[type[BaseModel]] = [
    wire.ErrorReply,
    wire.ServiceInfo,
    wire.TokenReply,
    wire.CreatedReply,
    wire.ModelsReply,
    wire.DeclarativeModelRequest,
    wire.LearnRequest,
    wire.LearnReply,
    wire.BatchLearnRequest,
    wire.BatchLearnReply,
    wire.PredictRequest,
    wire.PredictReply,
    wire.BatchPredictRequest,
    wire.BatchPredictReply,
    wire.LabelRequest,
    wire.ModelQuery,
    wire.StatsReply,
    wire.DeletedReply,
    wire.HealthReply,
]

NAME_PARAM = {
    "in": "path",
    "required": True,
    "schema": {
        "type": "string",
        "pattern": "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$",
        "maxLength": 63,
    },
}
FLAVOR_PARAM = {
    "name": "flavor",
    "in": "path",
    "required": True,
    "schema": {
        "type": "string",
        "enum": ["regression", "binary", "multiclass", "cluster", "custom"],
    },
}
MODEL_QUERY = {"name": "model", "in": "query", "required": True, "schema": NAME_PARAM["schema"]}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: str) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": _ref(schema)}}}


def _op(
    summary: str,
    ok: str | None,
    *,
    status: str = "200",
    body: str | None = None,
    params: list[dict[str, Any]] | None = None,
    public: bool = False,
) -> dict[str, Any]:
    responses: dict[str, Any] = {
        status: {"description": "success", **(_json(ok) if ok else {})},
        "400": {"description": "invalid request", **_json("ErrorReply")},
        "404": {"description": "unknown model", **_json("ErrorReply")},
    }
    if not public:
        responses["401"] = {"description": "authentication required", **_json("ErrorReply")}
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if body:
        op["requestBody"] = {"required": True, **_json(body)}
    if params:
        op["parameters"] = params
    if public:
        op["security"] = []
    return op


@cache
def document() -> dict[str, Any]:
    _, defs = models_json_schema(
        [(schema, "validation") for schema in _SCHEMAS], ref_template="#/components/schemas/{model}"
    )
    sse = {"content": {"text/event-stream": {"schema": {"type": "string"}}}, "description": "SSE"}
    #: a bounded buffer (pending predictions, event streams) is full
    full = {"429": {"description": "a bounded buffer is full: retry later", **_json("ErrorReply")}}
    upload = _op(
        "upload a model (JSON spec, or a dill pickle when enabled)",
        "CreatedReply",
        status="201",
        params=[FLAVOR_PARAM],
    )
    upload["requestBody"] = {
        "required": True,
        "content": {
            "application/json": {"schema": _ref("DeclarativeModelRequest")},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
    upload["responses"]["403"] = {"description": "pickle upload refused", **_json("ErrorReply")}
    upload["responses"]["409"] = {"description": "name taken", **_json("ErrorReply")}
    named = {**upload, "parameters": [FLAVOR_PARAM, {"name": "name", **NAME_PARAM}]}
    delete = _op("delete a model", "DeletedReply")
    delete["requestBody"] = {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "properties": {"model": NAME_PARAM["schema"]},
                    "required": ["model"],
                }
            }
        },
    }
    paths: dict[str, Any] = {
        "/api/": {"get": _op("service information", "ServiceInfo", public=True)},
        "/api/auth/token/": {
            "get": _op("exchange Basic credentials for a bearer token", "TokenReply", public=True)
        },
        "/api/models/": {"get": _op("list models", "ModelsReply")},
        "/api/model/{flavor}/": {"post": upload},
        "/api/model/{flavor}/{name}/": {"post": named},
        "/api/model/{name}/": {
            "get": _op("model parameters as JSON", None, params=[{"name": "name", **NAME_PARAM}])
        },
        "/api/model/download/{name}/": {
            "get": {
                **_op("download the pickled model", None, params=[{"name": "name", **NAME_PARAM}]),
            }
        },
        "/api/model/": {"delete": delete},
        "/api/learn/": {
            "post": _op(
                "learn one sample (one, some or all models)", "LearnReply", body="LearnRequest"
            )
        },
        "/api/learn/batch/": {
            "post": _op("learn many samples", "BatchLearnReply", body="BatchLearnRequest")
        },
        "/api/predict/": {"post": _op("predict one sample", "PredictReply", body="PredictRequest")},
        "/api/predict/batch/": {
            "post": _op("predict many samples", "BatchPredictReply", body="BatchPredictRequest")
        },
        "/api/label/": {"post": _op("label an earlier prediction", None, body="LabelRequest")},
        "/api/metrics/": {"get": _op("progressive-validation metrics", None, params=[MODEL_QUERY])},
        "/api/stats/": {
            "get": _op("call counts and durations (ns)", "StatsReply", params=[MODEL_QUERY])
        },
        "/api/stream/events/": {
            "get": {"summary": "learn/predict/label events", "responses": {"200": sse, **full}}
        },
        "/api/stream/metrics/": {
            "get": {"summary": "metrics after each learn", "responses": {"200": sse, **full}}
        },
        "/healthz": {"get": _op("liveness", "HealthReply", public=True)},
        "/readyz": {"get": _op("readiness (models loaded)", "HealthReply", public=True)},
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "security": [],
                "responses": {"200": {"description": "text exposition format"}},
            }
        },
        "/api/openapi.json": {
            "get": {
                "summary": "this document",
                "security": [],
                "responses": {"200": {"description": "OpenAPI 3.1"}},
            }
        },
    }
    for path in ("/api/predict/", "/api/predict/batch/"):  # pending predictions are bounded
        paths[path]["post"]["responses"].update(full)
    return {
        "openapi": "3.1.0",
        "info": {"title": "streamml model server", "version": __version__},
        "components": {
            "schemas": defs["$defs"],
            "securitySchemes": {
                "basic": {"type": "http", "scheme": "basic"},
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            },
        },
        "security": [{"bearer": []}, {"basic": []}],
        "paths": paths,
    }


async def document_view(request: web.Request) -> web.Response:
    return web.json_response(document())
