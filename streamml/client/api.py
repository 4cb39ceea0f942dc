"""An async client for the model server (riverapi's wire format plus our extensions).

Used by the job-side program, the sweep engine, the operator and ``streamml watch``::

    async with ModelServerClient("http://127.0.0.1:8080", username="u", token="t") as client:
        reply = await client.learn({"nx": 8, "ny": 8, "nz": 8}, 0.42, identifier="sweep-t0007")
        print(reply.results["linear"].learned, await client.metrics("linear"))

Every method returns the reply models the server documents (``streamml/vocabulary/replies.py``,
the same models its OpenAPI document is made of); a reply that does not fit its model is a
:class:`DeliveryError`, as an unreachable server is.

Authentication follows riverapi's handshake: a request without credentials gets 401, the client
exchanges ``username:token`` (HTTP Basic) at ``/api/auth/token/`` for a bearer token, and retries.
The token endpoint is always taken from the configured base URL, never from the server's
``Www-Authenticate`` realm, so a server cannot redirect credentials elsewhere.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar

import aiohttp
from pydantic import BaseModel, ValidationError

from streamml.errors import (
    AuthError,
    ConflictError,
    DeliveryError,
    NotFoundError,
    SpecError,
    StreamMLError,
)
from streamml.vocabulary.modelspec import ModelSpec
from streamml.vocabulary.replies import (
    BatchLearnReply,
    BatchPrediction,
    BatchPredictReply,
    CreatedReply,
    DeletedReply,
    LabelReply,
    LearnReply,
    MetricsReply,
    ModelsReply,
    PredictReply,
    ProvenanceReply,
    StatsReply,
)
from streamml.vocabulary.sweepsummary import SweepSummary

Features = Mapping[str, float | int | str | bool]
Reply = TypeVar("Reply", bound=BaseModel)


class ModelServerClient:
    """One connection pool to one model server; safe for concurrent use from one event loop."""

    def __init__(
        self,
        base_url: str,
        *,
        username: str | None = None,
        token: str | None = None,
        timeout: float = 10.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._username = username
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session = session
        self._owns_session = session is None
        self._bearer: str | None = None
        self._auth_lock = asyncio.Lock()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None and self._owns_session:
            await self._session.close()
        self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
            self._owns_session = True
        return self._session

    # -- the API -------------------------------------------------------------------------

    async def models(self) -> list[str]:
        return (await self._call(ModelsReply, "GET", "/api/models/")).models

    async def create_model(self, spec: ModelSpec) -> str:
        """Create a declarative model; :class:`ConflictError` when the name is taken."""
        body: dict[str, Any] = {"pipeline": [step.to_data() for step in spec.pipeline]}
        if spec.drift is not None:
            body["drift"] = spec.drift.model_dump(mode="json")
        path = f"/api/model/{spec.flavor}/{spec.name}/"
        return (await self._call(CreatedReply, "POST", path, json=body)).name

    async def ensure_model(self, spec: ModelSpec) -> bool:
        """Create the model unless one of that name exists; True when it was created."""
        try:
            await self.create_model(spec)
        except ConflictError:
            return False
        return True

    async def put_sweep(self, name: str, summary: SweepSummary) -> None:
        """Publish a sweep's summary for the server's dashboard (the write credential)."""
        await self._request("PUT", f"/api/sweeps/{name}", json=summary.model_dump(mode="json"))

    async def delete_model(self, name: str) -> None:
        await self._call(DeletedReply, "DELETE", "/api/model/", data={"model": name})

    async def learn(
        self,
        features: Features,
        ground_truth: float | int | str | bool,
        *,
        model: str | None = None,
        models: Sequence[str] | None = None,
        identifier: str | None = None,
        provenance: Mapping[str, str] | None = None,
    ) -> LearnReply:
        """Learn one sample on one model, a subset, or (neither given) every model;
        ``provenance``: where it came from (``wire.PROVENANCE_KEYS`` and a few more)."""
        body: dict[str, Any] = {"features": dict(features), "ground_truth": ground_truth}
        if model is not None:
            body["model"] = model
        if models is not None:
            body["models"] = list(models)
        if identifier is not None:
            body["identifier"] = identifier
        if provenance:
            body["provenance"] = dict(provenance)
        return await self._call(LearnReply, "POST", "/api/learn/", json=body)

    async def learn_targets(
        self,
        features: Features,
        targets: Sequence[Mapping[str, Any]],
        *,
        identifier: str,
        provenance: Mapping[str, str] | None = None,
    ) -> LearnReply:
        """One sample's several targets (``{"name", "models", "ground_truth"}`` each), each
        learned by its own models, in one request (``POST /api/learn/targets/``)."""
        body: dict[str, Any] = {
            "features": dict(features),
            "identifier": identifier,
            "targets": [dict(t) for t in targets],
        }
        if provenance:
            body["provenance"] = dict(provenance)
        return await self._call(LearnReply, "POST", "/api/learn/targets/", json=body)

    async def learn_batch(
        self,
        samples: Sequence[Mapping[str, Any]],
        *,
        model: str | None = None,
        models: Sequence[str] | None = None,
        update_metrics: bool = True,
        provenance: Mapping[str, str] | None = None,
    ) -> BatchLearnReply:
        """Learn many samples (``{"features", "ground_truth", "identifier"?}``) in one request;
        ``update_metrics=False`` learns without progressive validation (a backfill);
        ``provenance``: the origin of every sample."""
        body: dict[str, Any] = {"samples": [dict(s) for s in samples]}
        if not update_metrics:
            body["update_metrics"] = False
        if provenance:
            body["provenance"] = dict(provenance)
        if model is not None:
            body["model"] = model
        if models is not None:
            body["models"] = list(models)
        return await self._call(BatchLearnReply, "POST", "/api/learn/batch/", json=body)

    async def predict(
        self, features: Features, *, model: str, identifier: str | None = None
    ) -> PredictReply:
        body: dict[str, Any] = {"model": model, "features": dict(features)}
        if identifier is not None:
            body["identifier"] = identifier
        return await self._call(PredictReply, "POST", "/api/predict/", json=body)

    async def predict_batch(
        self, samples: Sequence[Mapping[str, Any]], *, model: str, uncertainty: bool = False
    ) -> list[BatchPrediction]:
        """Predictions of many samples; ``uncertainty``: each with its predictive standard
        deviation (``std``, None when the model has none) and none kept for a label."""
        body: dict[str, Any] = {"model": model, "samples": [dict(s) for s in samples]}
        if uncertainty:
            body["uncertainty"] = True
        reply = await self._call(BatchPredictReply, "POST", "/api/predict/batch/", json=body)
        return reply.predictions

    async def label(
        self, *, model: str, identifier: str, label: float | int | str | bool
    ) -> LabelReply:
        body = {"model": model, "identifier": identifier, "label": label}
        return await self._call(LabelReply, "POST", "/api/label/", json=body)

    async def metrics(self, model: str) -> dict[str, float]:
        """The metrics that are defined so far (a metric still undefined is left out)."""
        reply = await self._call(MetricsReply, "GET", "/api/metrics/", params={"model": model})
        return {name: value for name, value in reply.root.items() if value is not None}

    async def stats(self, model: str) -> StatsReply:
        return await self._call(StatsReply, "GET", "/api/stats/", params={"model": model})

    async def provenance(
        self, model: str, *, by: str | None = None, limit: int | None = None
    ) -> ProvenanceReply:
        """The model's samples by origin; ``by``: split by this key (``host``, ``sweep``, ...)."""
        params = {"by": by} if by is not None else {}
        if limit is not None:
            params["limit"] = str(limit)
        return await self._call(
            ProvenanceReply, "GET", f"/api/provenance/{model}", params=params or None
        )

    async def get_unchecked(self, path: str, **params: str) -> dict[str, Any]:
        """The decoded JSON body of a GET, not validated against a reply model: for tools that
        must keep what is sane in a reply from a broken or hostile server (``streamml watch``)
        where :meth:`metrics` and :meth:`stats` would refuse the whole reply."""
        return await self._request("GET", path, params=params or None)

    async def model_json(self, model: str) -> dict[str, Any]:
        """The parameters of each pipeline step (free-form: river's own parameters)."""
        return await self._request("GET", f"/api/model/{model}/")

    async def ready(self) -> bool:
        """True when ``/readyz`` answers 200; never raises for an unreachable server."""
        try:
            async with self._http().get(f"{self.base_url}/readyz") as response:
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False

    # -- plumbing ------------------------------------------------------------------------

    async def _call(
        self,
        reply: type[Reply],
        method: str,
        path: str,
        *,
        json: Any = None,
        data: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Reply:
        """A request whose reply is one of the documented reply models."""
        payload = await self._request(method, path, json=json, data=data, params=params)
        try:
            return reply.model_validate(payload)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()[:3]
            )
            raise DeliveryError(
                f"{method} {path}: the reply is not a {reply.__name__} ({problems})"
            ) from None

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        url = f"{self.base_url}{path}"
        for attempt in range(2):
            headers = {"Authorization": f"Bearer {self._bearer}"} if self._bearer else {}
            try:
                async with self._http().request(
                    method, url, json=json, data=data, params=params, headers=headers
                ) as response:
                    if response.status == 401 and attempt == 0 and self._username is not None:
                        await self._authenticate(stale=self._bearer)
                        continue
                    payload = await _payload(response)
                    _raise_for_status(response.status, payload, method, path)
                    return payload
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise DeliveryError(f"{method} {url}: {exc or type(exc).__name__}") from exc
        raise AuthError(f"{method} {path}: the server rejected the credentials")

    async def _authenticate(self, *, stale: str | None) -> None:
        async with self._auth_lock:
            if self._bearer is not None and self._bearer != stale:
                return  # another task refreshed it meanwhile
            if self._username is None or self._token is None:
                raise AuthError("the server requires credentials: set a username and a token")
            basic = base64.b64encode(f"{self._username}:{self._token}".encode()).decode()
            url = f"{self.base_url}/api/auth/token/"
            headers = {"Authorization": f"Basic {basic}"}
            async with self._http().get(url, headers=headers) as response:
                payload = await _payload(response)
                if response.status != 200 or not isinstance(payload.get("token"), str):
                    raise AuthError(f"token exchange failed ({response.status}): {_msg(payload)}")
                self._bearer = payload["token"]


async def _payload(response: aiohttp.ClientResponse) -> dict[str, Any]:
    try:
        payload = await response.json(content_type=None)
    except ValueError:
        text = await response.text()
        return {"message": text[:500]}
    if isinstance(payload, dict):
        return payload
    return {"value": payload}


def _msg(payload: Mapping[str, Any]) -> str:
    return str(payload.get("message") or payload.get("detail") or payload)


def _raise_for_status(status: int, payload: Mapping[str, Any], method: str, path: str) -> None:
    if status < 400:
        return
    where = f"{method} {path}"
    error: type[StreamMLError]
    if status in (401, 403):
        error = AuthError
    elif status == 404:
        error = NotFoundError
    elif status == 409:
        error = ConflictError
    elif status < 500:
        error = SpecError
    else:
        error = DeliveryError
    raise error(f"{where}: {status} {_msg(payload)}")
