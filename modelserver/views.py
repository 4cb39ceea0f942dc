"""HTTP handlers: parse and validate the request, call the model service, shape the reply.

Views know nothing of river internals: models are built by ``components`` and learned by the
service. Errors are raised as project exceptions and turned into JSON by the middleware.
"""

from __future__ import annotations

import asyncio
import contextlib
import pickle
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from streamml import __version__
from streamml.errors import AuthError, SpecError
from streamml.modelserver import components
from streamml.modelserver.appkeys import AUTH, LIMITS, READY, SERVICE, SETTINGS, TELEMETRY
from streamml.modelserver.events import jsonable
from streamml.modelserver.middleware import ForbiddenError
from streamml.modelserver.names import generate_name
from streamml.modelserver.registry import ModelQuarantinedError, Quarantine
from streamml.modelserver.snapshots import yielding_dumps
from streamml.vocabulary.modelcost import model_cost
from streamml.vocabulary.modelspec import FLAVORS
from streamml.vocabulary.wire import (
    BatchLearnEnvelope,
    BatchPredictRequest,
    DeclarativeModelRequest,
    FieldError,
    LabelRequest,
    LearnRequest,
    ModelQuery,
    PredictRequest,
    fast_learn,
    fast_predict,
    learn_samples,
)

M = TypeVar("M", bound=BaseModel)
#: batches with more samples than this are checked off the event loop
INLINE_SAMPLES = 100
_NAME_CHECK = ModelQuery  # validates a model name with the shared pattern


def reply(data: Any, status: int = 200) -> web.Response:
    body = orjson.dumps(data, default=jsonable, option=orjson.OPT_NON_STR_KEYS)
    return web.Response(body=body, status=status, content_type="application/json")


async def parse(request: web.Request, schema: type[M]) -> M:
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(
            text=f"expected Content-Type application/json, got {request.content_type!r}"
        )
    body = await request.read()
    if not body:
        raise SpecError("the request needs a JSON body")
    return schema.model_validate_json(body)


async def json_body(request: web.Request) -> tuple[bytes, Any]:
    """The raw body and its orjson parse (None when orjson refuses it), for the hot paths."""
    # the exact header is the common case; parsing it (request.content_type) costs ~2 us more
    plain = request.headers.get("Content-Type") == "application/json"
    if not plain and request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(
            text=f"expected Content-Type application/json, got {request.content_type!r}"
        )
    body = await request.read()
    if not body:
        raise SpecError("the request needs a JSON body")
    try:
        return body, orjson.loads(body)
    except orjson.JSONDecodeError:
        return body, None


def checked_name(name: str, what: str = "model name") -> str:
    try:
        return _NAME_CHECK(model=name).model
    except ValidationError:
        raise SpecError(
            f"invalid {what} {name[:80]!r}: use lowercase letters, digits and '-' (a DNS label)"
        ) from None


async def model_from_query(request: web.Request) -> str:
    """``?model=NAME``, or riverapi's JSON body on a GET."""
    name = request.query.get("model")
    if name is None and request.can_read_body:
        body = await request.read()
        if body:
            return (ModelQuery.model_validate_json(body)).model
    if name is None:
        raise SpecError('give the model as ?model=NAME or a JSON body {"model": NAME}')
    return checked_name(name)


# -- service -------------------------------------------------------------------------------------


async def service_info(request: web.Request) -> web.Response:
    from importlib.metadata import version

    return reply(
        {
            "id": "streamml",
            "status": "running",
            "name": "streamml model server",
            "description": "river online-learning server (riverapi compatible)",
            "documentationUrl": "/api/openapi.json",
            "storage": "sqlite",
            "river_version": version("river"),
            "version": __version__,
        }
    )


async def auth_token(request: web.Request) -> web.Response:
    auth = request.app[AUTH]
    if auth is None:
        raise SpecError("authentication is disabled on this server (--no-auth); no token needed")
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        raise AuthError("send Basic credentials (username:token) to obtain a bearer token")
    user = auth.check_basic(value.strip())
    token, expires_in, issued = auth.issue(user)
    issued_at = datetime.fromtimestamp(issued, UTC).isoformat()
    return reply({"token": token, "expires_in": expires_in, "issued_at": issued_at})


async def healthz(request: web.Request) -> web.Response:
    return reply({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready once loaded; "degraded" (still 200: the other models serve) while models are
    quarantined or the data-dir checks found a loss, with the reasons."""
    if not request.app[READY][0]:
        return reply({"message": "loading models"}, status=503)
    service = request.app[SERVICE]
    quarantined = service.registry.quarantined
    findings = service.report.findings
    if not quarantined and not findings:
        return reply({"status": "ready"})
    return reply(
        {
            "status": "degraded",
            "quarantined": {name: _quarantine_data(q) for name, q in quarantined.items()},
            "findings": findings,
        }
    )


def _quarantine_data(quarantine: Quarantine) -> dict[str, Any]:
    return {"kind": quarantine.kind, "reason": quarantine.reason, "log_rows": quarantine.log_rows}


async def prometheus(request: web.Request) -> web.Response:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    body = generate_latest(request.app[TELEMETRY].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


# -- models ----------------------------------------------------------------------------------------


def _flavor(request: web.Request) -> str:
    flavor = request.match_info["flavor"]
    if flavor not in FLAVORS:
        raise SpecError(f"unknown flavor {flavor[:40]!r} (flavors: {', '.join(FLAVORS)})")
    return flavor


async def upload_model(request: web.Request) -> web.Response:
    flavor = _flavor(request)
    service = request.app[SERVICE]
    raw_name = request.match_info.get("name")
    name = checked_name(raw_name) if raw_name else generate_name(service.registry.models)
    service.registry.check_free(name)  # before reading the body: a duplicate costs no unpickle
    if request.content_type == "application/json":
        definition = await parse(request, DeclarativeModelRequest)
        if definition.flavor is not None and definition.flavor != flavor:
            raise SpecError(
                f"flavor {definition.flavor!r} in the body contradicts {flavor!r} in the URL"
            )
        cost = model_cost(definition.pipeline, request.app[LIMITS])  # before building anything
        model = components.build_pipeline(definition.pipeline, flavor)
        spec = definition.model_dump(mode="json", by_alias=True)
        origin = "spec"
        max_features: int | None = cost.max_features
        heavy = components.is_heavy(definition.pipeline)
        drift = definition.drift
    else:
        model = await _unpickle(request, flavor)
        spec, origin, max_features, heavy, drift = None, "pickle", None, True, None
    await service.create(
        name,
        flavor,
        model,
        origin=origin,
        spec=spec,
        max_features=max_features,
        heavy=heavy,
        drift=drift,
    )
    return reply({"name": name}, status=201)


async def _unpickle(request: web.Request, flavor: str) -> Any:
    settings = request.app[SETTINGS]
    if not settings.allow_pickle_upload:
        raise ForbiddenError(
            "pickle upload is disabled on this server (it executes code); create the model "
            "from a declarative JSON spec (Content-Type: application/json), or start the "
            "server with --allow-pickle-upload"
        )
    if request.app[AUTH] is None:
        raise ForbiddenError(
            "pickle upload needs an authenticated caller, and this server runs with --no-auth"
        )
    body = await request.read()
    if not body:
        raise SpecError("the request body is empty: expected a dill pickle of a river model")
    import dill

    try:
        model = dill.loads(body)  # noqa: S301 - enabled explicitly, authenticated caller only
    except Exception as exc:
        raise SpecError(f"the body is not a loadable dill pickle: {type(exc).__name__}") from None
    components.check_flavor(model, flavor)
    return model


async def get_model_json(request: web.Request) -> web.Response:
    try:
        state = request.app[SERVICE].registry.get(checked_name(request.match_info["name"]))
    except ModelQuarantinedError as exc:
        quarantine = exc.quarantine
        data = {"message": str(exc), "model": quarantine.name, "status": "quarantined"}
        return reply({**data, **_quarantine_data(quarantine)}, status=503)
    return reply(components.model_json(state.model))


def _pickled(model: Any, heavy: bool) -> bytes:
    try:
        if heavy:  # on the model's thread: the pure-Python pickler hands the GIL over
            with contextlib.suppress(Exception):
                return yielding_dumps(model)
        return pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError):
        import dill  # an uploaded model plain pickle cannot handle (a lambda, say)

        return bytes(dill.dumps(model))


async def download_model(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    state = service.registry.get(checked_name(request.match_info["name"]))
    body = await service.workers.call(
        state.name, not state.heavy, _pickled, state.model, state.heavy
    )
    return web.Response(
        body=body,
        content_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{state.name}.pkl"'},
    )


async def delete_model(request: web.Request) -> web.Response:
    """riverapi sends a form body ``model=NAME``; JSON and ``?model=`` work too."""
    name: str | None = request.query.get("model")
    if name is None and request.content_type == "application/x-www-form-urlencoded":
        try:
            form = await request.post()
        except (UnicodeDecodeError, ValueError):
            raise SpecError("the form body is not valid UTF-8 form data", field="model") from None
        value = form.get("model")
        name = value if isinstance(value, str) else None
    elif name is None and request.content_type == "application/json":
        name = (await parse(request, ModelQuery)).model
    if not name:
        raise SpecError("give the model to delete as form field 'model' (or ?model=NAME)")
    name = checked_name(name)
    await request.app[SERVICE].delete(name)
    return reply({"deleted": name})


async def list_models(request: web.Request) -> web.Response:
    return reply({"models": list(request.app[SERVICE].registry.models)})


# -- learning ------------------------------------------------------------------------------------


async def learn(request: web.Request) -> web.Response:
    raw, data = await json_body(request)
    service = request.app[SERVICE]
    try:  # the hot path, checked by hand; a refusal gets pydantic's reply (the same verdict)
        model, models, features, truth, prediction, identifier, provenance = fast_learn(
            data, service.registry.models
        )
    except FieldError:
        body = LearnRequest.model_validate_json(raw)
        model, models, features = body.model, body.models, body.features
        truth, prediction, identifier = body.ground_truth, body.prediction, body.identifier
        provenance = body.provenance
    results = await service.learn(
        features,
        truth,
        model=model,
        models=models,
        identifier=identifier,
        prediction=prediction,
        provenance=provenance,
    )
    reply_data: dict[str, Any] = {"results": results}
    if model is not None:
        reply_data["model"] = model
    return reply(reply_data, status=201 if any(r["learned"] for r in results.values()) else 200)


async def learn_batch(request: web.Request) -> web.Response:
    # The hot path for bulk learning: orjson + a pydantic envelope + hand-checked samples
    # (wire.fast_sample, the verdicts of wire.LearnSample), not one pydantic model per sample.
    plain = request.headers.get("Content-Type") == "application/json"
    if not plain and request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(
            text=f"expected Content-Type application/json, got {request.content_type!r}"
        )
    try:
        data = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        raise SpecError(f"malformed JSON body: {exc}") from None
    body = BatchLearnEnvelope.model_validate(data)
    try:
        # checking thousands of samples is pure-Python work: a large batch is checked on a
        # thread (the GIL is handed over), so the event loop keeps serving meanwhile
        if len(body.samples) > INLINE_SAMPLES:
            samples = await asyncio.to_thread(learn_samples, body.samples)
        else:
            samples = learn_samples(body.samples)
    except ValueError as exc:
        raise SpecError(str(exc), field="samples") from None
    results = await request.app[SERVICE].learn_batch(
        samples,
        model=body.model,
        models=body.models,
        update_metrics=body.update_metrics,
        provenance=body.provenance,
    )
    return reply({"results": results})


async def predict(request: web.Request) -> web.Response:
    raw, data = await json_body(request)
    service = request.app[SERVICE]
    try:  # the hot path, checked by hand; a refusal gets pydantic's reply (the same verdict)
        model, features, given = fast_predict(data, service.registry.models)
    except FieldError:
        body = PredictRequest.model_validate_json(raw)
        model, features, given = body.model, body.features, body.identifier
    state = service.registry.models.get(model)
    if state is not None and not state.heavy and service.workers.idle(model):
        value, identifier = service.predict_now(state, features, given)  # the hot path
    else:
        value, identifier = await service.predict(model, features, given)
    return reply({"model": model, "prediction": value, "identifier": identifier})


async def predict_batch(request: web.Request) -> web.Response:
    body = await parse(request, BatchPredictRequest)
    if body.uncertainty:
        return await _predict_spread(request, body)
    samples = [(sample.features, sample.identifier) for sample in body.samples]
    answers = await request.app[SERVICE].predict_many(body.model, samples)
    predictions = [{"prediction": value, "identifier": identifier} for value, identifier in answers]
    return reply({"model": body.model, "predictions": predictions})


async def _predict_spread(request: web.Request, body: BatchPredictRequest) -> web.Response:
    """``"uncertainty": true``: each prediction with its ``std``, none kept for a label."""
    for i, sample in enumerate(body.samples):
        if sample.identifier is not None:
            raise SpecError(
                f"samples[{i}].identifier: with uncertainty the predictions wait for no label:"
                " give no identifier",
                field=f"samples[{i}].identifier",
            )
    features = [sample.features for sample in body.samples]
    answers = await request.app[SERVICE].predict_spread(body.model, features)
    predictions = [{"prediction": value, "std": std, "identifier": None} for value, std in answers]
    return reply({"model": body.model, "predictions": predictions})


async def label(request: web.Request) -> web.Response:
    body = await parse(request, LabelRequest)
    learned = await request.app[SERVICE].label(body.model, body.identifier, body.label)
    return reply(
        {
            "model": body.model,
            "identifier": body.identifier,
            "learned": learned,
            "duplicate": not learned,
        }
    )


async def metrics(request: web.Request) -> web.Response:
    name = await model_from_query(request)
    return reply(request.app[SERVICE].registry.get(name).metric_values())


async def stats(request: web.Request) -> web.Response:
    name = await model_from_query(request)
    return reply(request.app[SERVICE].registry.get(name).stats())
