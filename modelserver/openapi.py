"""The OpenAPI 3.1 document of the whole HTTP API, generated from the shared schemas: the
requests of ``vocabulary/wire.py`` and the replies of ``vocabulary/replies.py`` (which the
client returns too)."""

from __future__ import annotations

from functools import cache
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from streamml import __version__
from streamml.vocabulary import replies, sweepsummary, wire

_SCHEMAS: list[type[BaseModel]] = [
    replies.ErrorReply,
    replies.ServiceInfo,
    replies.TokenReply,
    replies.CreatedReply,
    replies.ModelsReply,
    wire.DeclarativeModelRequest,
    wire.LearnRequest,
    replies.LearnReply,
    wire.BatchLearnRequest,
    replies.BatchLearnReply,
    wire.TargetsLearnRequest,
    wire.PredictRequest,
    replies.PredictReply,
    wire.BatchPredictRequest,
    replies.BatchPredictReply,
    wire.LabelRequest,
    replies.LabelReply,
    wire.ModelQuery,
    replies.MetricsReply,
    replies.StatsReply,
    replies.DeletedReply,
    replies.HealthReply,
    replies.ProvenanceReply,
    sweepsummary.SweepSummary,
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


#: every error status the server answers with, and what it means (the body is an ErrorReply)
ERRORS: dict[str, str] = {
    "400": "invalid request (the message names the field, class or parameter)",
    "401": "authentication required, or wrong credentials",
    "403": "refused: a pickle upload (disabled), a write with a read-only credential or a "
    "dashboard session, a login form from another site",
    "404": "unknown model or identifier",
    "409": "the model name is taken",
    "413": "request body over the server's limit (--max-body-bytes)",
    "415": "the body is not application/json",
    "429": "a bounded buffer (predictions awaiting a label, event streams) is full: retry later",
    "503": "storage failure (nothing was applied) or a quarantined model: retry",
}
#: the statuses of each kind of operation, besides its success (public ones have no 401)
READ = ("400", "401", "404", "503")  # 503: the named model is quarantined
READ_BODY = ("400", "401", "404", "413", "503")  # ?model= or riverapi's JSON body on a GET
PREDICT = ("400", "401", "403", "404", "413", "415", "429", "503")  # 429: pending full
STREAM = ("401", "429")  # 429: the event streams' byte budget is taken
WRITE = ("400", "401", "403", "404", "413", "415", "503")  # 403: a read-only credential


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: str) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": _ref(schema)}}}


def _op(
    summary: str,
    ok: str | None,
    errors: tuple[str, ...],
    *,
    status: tuple[str, ...] = ("200",),
    body: str | None = None,
    params: list[dict[str, Any]] | None = None,
    public: bool = False,
    ok_content: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One operation; ``errors`` lists exactly the error statuses it can answer with."""
    success = ok_content or (_json(ok) if ok else {})
    responses: dict[str, Any] = {code: {"description": "success", **success} for code in status}
    for code in errors:
        responses[code] = {"description": ERRORS[code], **_json("ErrorReply")}
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if body:
        op["requestBody"] = {"required": True, **_json(body)}
    if params:
        op["parameters"] = params
    if public:
        op["security"] = []
    return op


def _model_ops() -> dict[str, Any]:
    """Create (generated or given name), read, download and delete a model."""
    upload_errors = ("400", "401", "403", "409", "413", "503")
    upload = _op(
        "upload a model (JSON spec, or a dill pickle when enabled)",
        "CreatedReply",
        upload_errors,
        status=("201",),
        params=[FLAVOR_PARAM],
    )
    upload["requestBody"] = {
        "required": True,
        "content": {
            "application/json": {"schema": _ref("DeclarativeModelRequest")},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
    named = {**upload, "parameters": [FLAVOR_PARAM, {"name": "name", **NAME_PARAM}]}
    delete = _op("delete a model", "DeletedReply", ("400", "401", "404", "413", "503"))
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
    name_param = [{"name": "name", **NAME_PARAM}]
    pickled = {"content": {"application/octet-stream": {"schema": {"type": "string"}}}}
    return {
        "/api/model/{flavor}/": {"post": upload},
        "/api/model/{flavor}/{name}/": {"post": named},
        "/api/model/{name}/": {
            "get": _op("model parameters as JSON", None, READ, params=name_param)
        },
        "/api/model/download/{name}/": {
            "get": _op(
                "download the pickled model", None, READ, params=name_param, ok_content=pickled
            )
        },
        "/api/model/": {"delete": delete},
    }


def _learning_ops() -> dict[str, Any]:
    key = {"type": "string", "pattern": wire.PROVENANCE_KEY.pattern}
    provenance_params = [
        {"name": "model", **NAME_PARAM},
        {"name": "by", "in": "query", "required": False, "schema": key},
        {"name": "limit", "in": "query", "required": False, "schema": {"type": "string"}},
    ]
    return {
        "/api/learn/": {
            # 201 when a model learned the sample, 200 when every model had seen its identifier
            "post": _op(
                "learn one sample (one, some or all models)",
                "LearnReply",
                WRITE,
                status=("200", "201"),
                body="LearnRequest",
            )
        },
        "/api/learn/batch/": {
            "post": _op("learn many samples", "BatchLearnReply", WRITE, body="BatchLearnRequest")
        },
        "/api/learn/targets/": {
            "post": _op(
                "learn one sample's several targets, each on its own models",
                "LearnReply",
                WRITE,
                status=("200", "201"),
                body="TargetsLearnRequest",
            )
        },
        "/api/predict/": {
            "post": _op("predict one sample", "PredictReply", PREDICT, body="PredictRequest")
        },
        "/api/predict/batch/": {
            "post": _op(
                "predict many samples", "BatchPredictReply", PREDICT, body="BatchPredictRequest"
            )
        },
        "/api/label/": {
            "post": _op("label an earlier prediction", "LabelReply", WRITE, body="LabelRequest")
        },
        "/api/metrics/": {
            "get": _op(
                "progressive-validation metrics", "MetricsReply", READ_BODY, params=[MODEL_QUERY]
            )
        },
        "/api/stats/": {
            "get": _op(
                "call counts and durations (ns)", "StatsReply", READ_BODY, params=[MODEL_QUERY]
            )
        },
        "/api/provenance/{model}": {
            "get": _op(
                "the model's samples by origin (?by=KEY: per value count, first, last)",
                "ProvenanceReply",
                READ,
                params=provenance_params,
            )
        },
    }


def _service_ops() -> dict[str, Any]:
    sse = {"content": {"text/event-stream": {"schema": {"type": "string"}}}}
    text = {"content": {"text/plain": {"schema": {"type": "string"}}}}
    return {
        "/api/": {"get": _op("service information", "ServiceInfo", (), public=True)},
        "/api/auth/token/": {
            "get": _op(
                "exchange Basic credentials for a bearer token (400 when auth is off)",
                "TokenReply",
                ("400", "401"),
                public=True,
            )
        },
        "/api/models/": {"get": _op("list models", "ModelsReply", ("401",))},
        "/api/stream/events/": {
            "get": _op("learn/predict/label events (SSE)", None, STREAM, ok_content=sse)
        },
        "/api/stream/metrics/": {
            "get": _op("metrics after each learn (SSE)", None, STREAM, ok_content=sse)
        },
        "/api/stream/dashboard/": {
            "get": _op(
                "the dashboard's batches: learns per model, newest metrics, events and pairs,"
                " at most 2 a second (SSE)",
                None,
                STREAM,
                ok_content=sse,
            )
        },
        "/healthz": {"get": _op("liveness", "HealthReply", (), public=True)},
        "/readyz": {
            "get": {
                **_op("readiness (models loaded)", "HealthReply", (), public=True),
                "responses": {
                    "200": {"description": "ready", **_json("HealthReply")},
                    "503": {"description": "still loading models", **_json("ErrorReply")},
                },
            }
        },
        "/metrics": {
            "get": _op("Prometheus metrics (text format)", None, (), public=True, ok_content=text)
        },
        "/api/openapi.json": {"get": _op("this document (OpenAPI 3.1)", None, (), public=True)},
    }


def _page_op(summary: str, statuses: tuple[str, ...], *, public: bool) -> dict[str, Any]:
    """A page (HTML) or a redirect; its errors are JSON like every other."""
    html = {"content": {"text/html": {"schema": {"type": "string"}}}}
    responses: dict[str, Any] = {}
    for code in statuses:
        if code.startswith("2"):
            responses[code] = {"description": "the page", **html}
        elif code.startswith("3"):
            responses[code] = {"description": "redirect (to the dashboard or its login)"}
        else:
            responses[code] = {"description": ERRORS[code], **_json("ErrorReply")}
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if public:
        op["security"] = []
    return op


def _dashboard_ops() -> dict[str, Any]:
    """The dashboard: its pages and login, and the data it draws (``modelserver/dashboard.py``).

    One table of operations as one literal (longer than ~60 lines on purpose: it reads as the
    OpenAPI document it becomes)."""
    obj = {"content": {"application/json": {"schema": {"type": "object"}}}}
    whole = {"type": "string", "pattern": "^[0-9]{1,16}$"}
    history_params = [
        {"name": "model", **NAME_PARAM},
        {"name": "since", "in": "query", "required": False, "schema": whole},
        {"name": "limit", "in": "query", "required": False, "schema": whole},
    ]
    sweep_param = [
        {"name": "name", "in": "path", "required": True,
         "schema": {"type": "string", "pattern": sweepsummary.SWEEP_NAME, "maxLength": 253}}
    ]  # fmt: skip
    login = _page_op(
        "log in (form: username, token): sets the read-only session cookie",
        ("200", "303", "400", "401", "403", "415", "429"),
        public=True,
    )
    login["requestBody"] = {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "properties": {"username": {"type": "string"}, "token": {"type": "string"}},
                    "required": ["username", "token"],
                }
            }
        },
    }
    put = _op(
        "publish a sweep's summary (the write credential)",
        None,
        ("400", "401", "403", "409", "413", "415", "503"),
        status=("200", "201"),
        body="SweepSummary",
        params=sweep_param,
        ok_content=obj,
    )
    return {
        "/": {
            "get": _page_op("links: a browser goes to the dashboard", ("200", "302"), public=True)
        },
        "/dashboard": {"get": _page_op("to /dashboard/", ("200", "302", "303"), public=True)},
        "/dashboard/": {"get": _page_op("the dashboard page", ("200", "303"), public=False)},
        "/dashboard/login": {
            "get": _page_op("the login form", ("200",), public=True),
            "post": login,
        },
        "/dashboard/logout": {"post": _page_op("log out", ("200", "303"), public=True)},
        "/dashboard/{asset}": {
            "get": {
                **_page_op("the page's script and style", ("200", "303", "404"), public=False),
                "parameters": [
                    {"name": "asset", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
            }
        },
        "/api/dashboard/models": {
            "get": _op(
                "every model with spec, samples, metrics", None, ("400", "401"), ok_content=obj
            )
        },
        "/api/history/{model}": {
            "get": _op(
                "a model's metrics history", None, READ, params=history_params, ok_content=obj
            )
        },
        "/api/sweeps": {
            "get": _op("published sweep summaries", None, ("400", "401"), ok_content=obj)
        },
        "/api/sweeps/{name}": {
            "get": _op("one sweep's summary", None, READ, params=sweep_param, ok_content=obj),
            "put": put,
            "delete": _op(
                "forget a sweep's summary",
                None,
                ("400", "401", "403", "404", "503"),
                params=sweep_param,
                ok_content=obj,
            ),
        },
    }


@cache
def document() -> dict[str, Any]:
    _, defs = models_json_schema(
        [(schema, "validation") for schema in _SCHEMAS], ref_template="#/components/schemas/{model}"
    )
    paths = {**_service_ops(), **_model_ops(), **_learning_ops(), **_dashboard_ops()}
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
