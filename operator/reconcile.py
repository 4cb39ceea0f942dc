"""Reconciling one StreamModel: owned objects, the server (local runtime), models, status.

The kopf handlers in :mod:`streamml.operator.streammodel_handlers` only call :func:`reconcile`
(on create/update/resume) and :func:`refresh` (on the status timer). Both end in :func:`observe`,
which computes the desired status from what exists; the handlers write only what changed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pydantic

from streamml.errors import AuthError, ConflictError, DeliveryError, SpecError, StreamMLError
from streamml.operator import builders, retention
from streamml.operator import status as st
from streamml.operator.builders import Owner
from streamml.operator.kube import Kube, KubeError, decode_secret
from streamml.operator.localruntime import LocalRuntime, ServerProcess
from streamml.operator.settings import OperatorSettings
from streamml.sweep import access
from streamml.vocabulary.conditions import Observation, merge_conditions
from streamml.vocabulary.conditions import dump as dump_conditions
from streamml.vocabulary.conditions import parse as parse_conditions
from streamml.vocabulary.modelspec import ModelSpec
from streamml.vocabulary.streammodel import (
    DEFAULT_SERVER_IMAGE,
    LEGACY_DEFAULT_SERVER_IMAGE,
    StreamModelSpec,
    StreamModelStatus,
    dashboard_url,
)

#: emit(type "Normal"|"Warning", reason, message): posts a Kubernetes Event on the StreamModel
Emit = Callable[[str, str, str], None]


@dataclass
class OperatorContext:
    """What every handler shares: settings, the API client, the local runtime (if on)."""

    settings: OperatorSettings
    kube: Kube
    runtime: LocalRuntime | None = None

    def image(self, spec: StreamModelSpec) -> str:
        if spec.server.image in (DEFAULT_SERVER_IMAGE, LEGACY_DEFAULT_SERVER_IMAGE):
            return self.settings.server_image
        return spec.server.image


@dataclass
class ObjectState:
    """Per-StreamModel memory of this operator process (lost on restart, by design)."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: model name -> (spec hash, server's message): not retried until the model spec changes
    rejected: dict[str, tuple[str, str]] = field(default_factory=dict)
    credentials: tuple[str, str] | None = None
    #: generation this process last reconciled (the timer waits for the first reconcile, so a
    #: restarted operator never reports "not ready" just because it has not looked yet)
    reconciled: int | None = None
    #: consecutive refusals of an owned object by the API server (sets the retry delay)
    refusals: int = 0


class CredentialsError(StreamMLError):
    """The referenced auth Secret is missing or incomplete (may be fixed later: retried)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _decoded(secret: dict[str, Any]) -> dict[str, str]:
    """The auth Secret's data; a value that does not decode is ``AuthSecretInvalid`` (never
    skipped: a generated Secret would be replaced, a user's would lose its token silently)."""
    try:
        return decode_secret(secret)
    except access.SecretMalformed as exc:
        raise CredentialsError("AuthSecretInvalid", str(exc)) from exc


# -- validation -------------------------------------------------------------------------------

_TYPE_TAGS = {"bool", "int", "float", "str", "Component", "none", "dict"}


def _field_path(loc: tuple[int | str, ...]) -> str:
    path = "spec"
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in _TYPE_TAGS or "[" in part:
            continue  # a union member's tag, not a field
        else:
            path += f".{part}"
    return path


def validate(spec: Mapping[str, Any]) -> StreamModelSpec:
    """The validated spec, or :class:`SpecError` whose message names the field(s)."""
    try:
        return StreamModelSpec.model_validate(dict(spec))
    except pydantic.ValidationError as exc:
        found: dict[str, str] = {}
        for error in exc.errors():
            found.setdefault(_field_path(tuple(error["loc"])), str(error["msg"]))
        # A union reports every member; keep the most specific paths only.
        leaves = [p for p in found if not any(o != p and o.startswith(p) for o in found)]
        message = "; ".join(f"{p}: {found[p]}" for p in leaves[:3])
        raise SpecError(message, field=leaves[0] if leaves else "spec") from None


def model_hash(model: ModelSpec) -> str:
    data = model.model_dump(mode="json", by_alias=True, exclude={"name"})
    if data.get("drift") is None:
        data.pop("drift", None)  # the digest of a model declared before drift settings existed
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


# -- refusals ---------------------------------------------------------------------------------


def refusal_reason(error: KubeError) -> str:
    """The condition reason for the API server's refusal to create or update an owned object."""
    text = error.detail.lower()
    if "exceeded quota" in text or (error.status == 403 and "quota" in text):
        return "QuotaExceeded"
    if "admission webhook" in text or "validatingadmissionpolicy" in text:
        return "AdmissionDenied"
    if "range is full" in text or "failed to allocate" in text:
        return "ServiceIPsExhausted"
    if error.status == 403:
        return "Forbidden"
    return "APIServerError"


def retry_delay(settings: OperatorSettings, refusals: int) -> float:
    """Seconds before retrying after ``refusals`` consecutive refusals: doubling, capped."""
    return float(min(settings.retry_delay * 2 ** min(refusals, 32), settings.retry_max_delay))


# -- owned objects ----------------------------------------------------------------------------


async def ensure_credentials(
    kube: Kube, owner: Owner, spec: StreamModelSpec, *, fresh: bool = False
) -> tuple[str, str]:
    """(username, token) from the referenced Secret, or from the generated one (created once)."""
    name = builders.auth_secret_name(owner, spec)
    if fresh and not spec.server.auth.secret_name:
        token = builders.new_token()
        try:  # one request for a new StreamModel; an existing Secret is never overwritten
            await kube.create(builders.secret(owner, spec, token))
            return spec.server.auth.username, token
        except ConflictError:
            pass
    found = await kube.get("v1", "Secret", owner.namespace, name)
    if spec.server.auth.secret_name:
        if found is None:
            raise CredentialsError(
                "AuthSecretMissing", f"spec.server.auth.secretName: Secret {name!r} does not exist"
            )
        data = _decoded(found)
        if not data.get("username") or not data.get("token"):
            raise CredentialsError(
                "AuthSecretInvalid",
                f"spec.server.auth.secretName: Secret {name!r} needs keys 'username' and 'token'",
            )
        return data["username"], data["token"]
    if found is None:
        token = builders.new_token()
        try:
            await kube.create(builders.secret(owner, spec, token))
            return spec.server.auth.username, token
        except ConflictError:  # created meanwhile (another reconcile): use that one
            found = await kube.get("v1", "Secret", owner.namespace, name)
            if found is None:
                raise
    data = _decoded(found)
    token = data.get("token") or ""
    # A Secret left by a deleted StreamModel of the same name (not yet garbage-collected) is
    # taken over with its token: the collector would delete it under the new one otherwise.
    if (
        data.get("username") != spec.server.auth.username
        or not token
        or not _owned_by(found, owner)
    ):
        token = token or builders.new_token()  # keep a token that exists: clients hold it
        await kube.apply(builders.secret(owner, spec, token))
    return spec.server.auth.username, token


async def apply_objects(
    context: OperatorContext, owner: Owner, spec: StreamModelSpec, *, fresh: bool = False
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Apply PVC, Deployment, Service and Ingress; returns (Deployment, Ingress) as stored.

    The objects do not depend on each other at creation (a pod waits for its Secret and
    claim), so they are written concurrently: one round trip of latency, not four. A ``fresh``
    StreamModel (just created) owns nothing yet, which saves the reads that look for leftovers.
    """
    kube = context.kube
    claim = builders.pvc(owner, spec)
    if claim is not None and spec.server.storage.reclaim_policy == "Retain":
        # before the Deployment: its pod must never mount a claim it may not adopt
        await retention.ensure_retained_claim(kube, owner, claim)
        claim = None
    deployment, _, _, ingress = await asyncio.gather(
        kube.apply(builders.deployment(owner, spec, context.image(spec))),
        kube.apply(builders.service(owner, spec)),
        _apply_claim(kube, owner, claim, fresh),
        _apply_ingress(kube, owner, spec, fresh),
    )
    return deployment, ingress


async def _apply_claim(kube: Kube, owner: Owner, claim: dict[str, Any] | None, fresh: bool) -> None:
    if claim is None:
        return
    if fresh:
        await kube.apply(claim)
        return
    existing = await kube.get(
        "v1", "PersistentVolumeClaim", owner.namespace, claim["metadata"]["name"]
    )
    # A claim's spec is immutable but for its size, and re-applying an unchanged claim
    # still bumps its resourceVersion once (API server defaulting): apply only changes.
    if existing is None or not _claim_matches(existing, claim, owner):
        await kube.apply(claim)


async def _apply_ingress(
    kube: Kube, owner: Owner, spec: StreamModelSpec, fresh: bool
) -> dict[str, Any] | None:
    wanted = builders.ingress(owner, spec)
    if wanted is not None:
        return await kube.apply(wanted)
    if fresh:
        return None
    existing = await kube.get("networking.k8s.io/v1", "Ingress", owner.namespace, owner.name)
    if existing is not None and _owned_by(existing, owner):
        await kube.delete("networking.k8s.io/v1", "Ingress", owner.namespace, owner.name)
    return None


def _claim_matches(existing: Mapping[str, Any], wanted: Mapping[str, Any], owner: Owner) -> bool:
    meta, spec = existing.get("metadata") or {}, existing.get("spec") or {}
    size = (spec.get("resources") or {}).get("requests", {}).get("storage")
    wanted_spec = wanted["spec"]
    return (
        _owned_by(existing, owner)
        and size == wanted_spec["resources"]["requests"]["storage"]
        and wanted["metadata"]["labels"].items() <= (meta.get("labels") or {}).items()
        and spec.get("storageClassName")
        == wanted_spec.get("storageClassName", spec.get("storageClassName"))
    )


def _owned_by(obj: Mapping[str, Any], owner: Owner) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("uid") == owner.uid for ref in refs)


# -- observation ------------------------------------------------------------------------------


def deployment_available(
    deployment: Mapping[str, Any] | None, desired: int
) -> tuple[Observation, int, int]:
    """(Available, replicas, readyReplicas) from the Deployment's status (set by the cluster)."""
    if desired == 0:
        return Observation(st.AVAILABLE, "False", "ScaledToZero", "replicas is 0"), 0, 0
    if deployment is None:
        message = "the Deployment does not exist yet"
        return Observation(st.AVAILABLE, "False", "DeploymentMissing", message), 0, 0
    status = deployment.get("status") or {}
    generation = int((deployment.get("metadata") or {}).get("generation") or 0)
    observed = int(status.get("observedGeneration") or 0)
    replicas = int(status.get("replicas") or 0)
    ready = int(status.get("readyReplicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    if observed < generation or updated < desired:
        message = f"{updated}/{desired} replicas updated to the current spec"
        obs = Observation(st.AVAILABLE, "False", "RollingOut", message)
    elif available < desired:
        message = f"{available}/{desired} replicas available"
        obs = Observation(st.AVAILABLE, "False", "ReplicasUnavailable", message)
    else:
        message = f"{available}/{desired} replicas available"
        obs = Observation(st.AVAILABLE, "True", "MinimumReplicasAvailable", message)
    return obs, replicas, ready


async def process_available(
    server: ServerProcess | None, ready: bool, desired: int
) -> tuple[Observation, int, int]:
    if desired == 0:
        return Observation(st.AVAILABLE, "False", "ScaledToZero", "replicas is 0"), 0, 0
    if server is None:
        return Observation(st.AVAILABLE, "False", "NotStarted", "no server process"), 0, 0
    if not server.running:
        message = f"the server process exited; restart {server.restarts} pending"
        return Observation(st.AVAILABLE, "False", "Restarting", message), 0, 0
    if not ready:
        message = f"the server process is starting on {server.address}"
        return Observation(st.AVAILABLE, "False", "Starting", message), 1, 0
    message = f"the server process answers on {server.address}"
    return Observation(st.AVAILABLE, "True", "ProcessReady", message), 1, 1


def ingress_observation(
    spec: StreamModelSpec, ingress: Mapping[str, Any] | None
) -> tuple[Observation | None, str | None]:
    if not spec.ingress.enabled:
        return None, None
    entries = ((ingress or {}).get("status") or {}).get("loadBalancer", {}).get("ingress") or []
    host = None
    if entries:
        host = entries[0].get("hostname") or entries[0].get("ip")
    url = builders.ingress_url(spec, host)
    if host:
        return Observation(st.INGRESS_READY, "True", "AddressAssigned", f"at {host}"), url
    message = "waiting for an ingress controller to assign an address"
    return Observation(st.INGRESS_READY, "False", "AddressPending", message), url


async def sync_models(
    context: OperatorContext,
    state: ObjectState,
    spec: StreamModelSpec,
    address: str,
    credentials: tuple[str, str],
    previous: list[Mapping[str, Any]],
    emit: Emit,
) -> tuple[Observation, list[st.ModelPoll], dict[str, str]]:
    """Create/replace/remove the declared models on the server and poll their metrics."""
    from streamml.client.api import ModelServerClient

    username, token = credentials
    hashes = {str(m.get("name")): m.get("specHash") for m in previous}
    declared = {m.name for m in spec.models}
    problems: list[str] = []
    held: dict[str, str] = {}
    async with ModelServerClient(
        address, username=username, token=token, timeout=context.settings.api_timeout
    ) as client:
        present = set(await client.models())
        for index, model in enumerate(spec.models):
            digest = model_hash(model)
            old = hashes.get(model.name)
            if model.name in present and old not in (None, digest):
                await client.delete_model(model.name)  # its pipeline changed: learning restarts
                present.discard(model.name)
                emit("Normal", "ModelReplaced", f"model {model.name}: pipeline changed")
            if model.name not in present:
                rejected = state.rejected.get(model.name)
                if rejected and rejected[0] == digest:
                    problems.append(rejected[1])
                    continue
                try:
                    await client.ensure_model(model)
                except SpecError as exc:
                    message = f"spec.models[{index}] ({model.name}): {exc}"
                    state.rejected[model.name] = (digest, message)
                    problems.append(message)
                    emit("Warning", "ModelRejected", message)
                    continue
                present.add(model.name)
                emit("Normal", "ModelCreated", f"model {model.name} created on the server")
            held[model.name] = digest
        for name, old_digest in hashes.items():
            if name not in declared and name in present and old_digest:
                await client.delete_model(name)
                emit("Normal", "ModelRemoved", f"model {name} removed from the spec")
        polls = await asyncio.gather(*(_poll(client, name) for name in held))
    if problems:
        obs = Observation(st.MODELS_READY, "False", "ModelRejected", "; ".join(problems))
    else:
        message = f"{len(held)} model(s) on the server"
        obs = Observation(st.MODELS_READY, "True", "ModelsCreated", message)
    return obs, list(polls), held


async def _poll(client: Any, name: str) -> st.ModelPoll:
    metrics, stats = await asyncio.gather(client.metrics(name), client.stats(name))
    drift = st.model_drift(stats.drift)
    return st.ModelPoll(name, True, stats.learn.n_calls, st.clean_metrics(metrics), drift)


async def observe(
    context: OperatorContext,
    state: ObjectState,
    owner: Owner,
    spec: StreamModelSpec,
    body: Mapping[str, Any],
    *,
    deployment: Mapping[str, Any] | None,
    ingress: Mapping[str, Any] | None,
    emit: Emit,
) -> StreamModelStatus:
    """The desired ``status`` of the StreamModel, from what exists now."""
    previous = dict(body.get("status") or {})
    generation = (body.get("metadata") or {}).get("generation")
    runtime = context.runtime
    address: str | None
    if runtime is not None:
        server = runtime.get(owner.namespace, owner.name)
        address = server.address if server is not None else None
        ready = False
        if server is not None and server.running:
            from streamml.client.api import ModelServerClient

            async with ModelServerClient(server.address, timeout=2.0) as probe:
                ready = await probe.ready()
        available, replicas, ready_replicas = await process_available(
            server, ready, spec.server.replicas
        )
    else:
        address = builders.service_address(owner, spec)
        available, replicas, ready_replicas = deployment_available(deployment, spec.server.replicas)
    ingress_obs, url = ingress_observation(spec, ingress)
    old_models = [m for m in previous.get("models") or [] if isinstance(m, Mapping)]
    models_obs, polls, held = await _observe_models(
        context, state, spec, available, address, old_models, emit
    )
    observed = [available] + ([ingress_obs] if ingress_obs else []) + [models_obs]
    counted = [o for o in observed if o.reason != "NotVerified"]
    observed.insert(0, st.aggregate_ready(counted))
    observed.append(st.drift_observation(polls))
    st.announce_drift(old_models, polls, emit)
    before = parse_conditions(previous.get("conditions"))
    conditions = merge_conditions(before, observed, generation=generation, order=st.CONDITION_ORDER)
    st.announce(before, conditions, emit)
    section = st.models_section(spec.models, polls, held)
    return StreamModelStatus(
        observed_generation=generation,
        conditions=conditions,
        url=url,
        address=address,
        dashboard_url=dashboard_url(url or address),
        auth_secret_name=builders.auth_secret_name(owner, spec),
        replicas=replicas,
        ready_replicas=ready_replicas,
        selector=builders.selector_string(owner),
        models=section.models,
        models_ready=section.models_ready,
        samples_learned=section.samples_learned,
        best=section.best,
    )


async def _observe_models(
    context: OperatorContext,
    state: ObjectState,
    spec: StreamModelSpec,
    available: Observation,
    address: str | None,
    old_models: list[Mapping[str, Any]],
    emit: Emit,
) -> tuple[Observation, list[st.ModelPoll], dict[str, str]]:
    """``ModelsReady``, the models' polls and held spec hashes (the last known while the server
    cannot be asked)."""
    polls, held = st.carry_over(old_models)
    if not spec.models:
        models_obs = Observation(st.MODELS_READY, "True", "NoModels", "no models declared")
    elif not context.settings.reach_servers:
        models_obs = Observation(
            st.MODELS_READY,
            "Unknown",
            "NotVerified",
            "this operator does not contact in-cluster servers (contactServers is off)",
        )
    elif available.status != "True" or address is None or state.credentials is None:
        models_obs = Observation(
            st.MODELS_READY, "False", "ServerNotReady", "waiting for the server"
        )
    else:
        try:
            models_obs, polls, held = await sync_models(
                context, state, spec, address, state.credentials, old_models, emit
            )
        except AuthError as exc:
            models_obs = Observation(st.MODELS_READY, "False", "AuthFailed", str(exc))
        except (DeliveryError, StreamMLError) as exc:
            models_obs = Observation(st.MODELS_READY, "False", "ServerUnreachable", str(exc))
    return models_obs, polls, held


def invalid_status(body: Mapping[str, Any], error: StreamMLError, reason: str) -> dict[str, Any]:
    """Ready=False naming the problem (the other conditions are left as they were)."""
    previous = dict(body.get("status") or {})
    generation = (body.get("metadata") or {}).get("generation")
    before = parse_conditions(previous.get("conditions"))
    kept = [
        Observation(c.type, c.status, c.reason, c.message) for c in before if c.type != st.READY
    ]
    ready = Observation(st.READY, "False", reason, str(error))
    conditions = merge_conditions(
        before, [ready, *kept], generation=generation, order=st.CONDITION_ORDER
    )
    return {"observedGeneration": generation, "conditions": dump_conditions(conditions)}
