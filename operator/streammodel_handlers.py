"""Thin kopf handlers for StreamModel: register, delegate to :mod:`streamml.operator.reconcile`.

Handlers are registered by :func:`register` (called by ``streamml operator`` at start-up) rather
than at import, because the timer interval and the delete handler depend on the settings: a
finalizer is only added in the local runtime, where deleting a StreamModel must stop a process.
"""

from __future__ import annotations

from typing import Any

import kopf

from streamml.errors import SpecError
from streamml.operator import reconcile as rc
from streamml.operator import retention
from streamml.operator.builders import Owner
from streamml.operator.kube import KubeError
from streamml.operator.reconcile import ObjectState, OperatorContext
from streamml.operator.retention import ClaimRefused
from streamml.operator.status import status_document, status_patch
from streamml.vocabulary.streammodel import STREAMMODEL

_RESOURCE = (STREAMMODEL.group, STREAMMODEL.version, STREAMMODEL.plural)
_STATE_KEY = "streammodel"


def _state(memo: kopf.Memo) -> ObjectState:
    state = memo.get(_STATE_KEY)
    if not isinstance(state, ObjectState):
        state = ObjectState()
        memo[_STATE_KEY] = state
    return state


def _owner(body: kopf.Body) -> Owner:
    return Owner(str(body.meta.name), str(body.meta.namespace), str(body.meta.uid))


def _emitter(body: kopf.Body) -> rc.Emit:
    def emit(kind: str, reason: str, message: str) -> None:
        kopf.event(body, type=kind, reason=reason, message=message[:1000])

    return emit


def _write(patch: kopf.Patch, body: kopf.Body, desired: dict[str, Any]) -> None:
    """Only the keys that changed: an unchanged StreamModel is never written."""
    for key, value in status_patch(body.get("status"), desired).items():
        patch.status[key] = value


def _refused(
    patch: kopf.Patch,
    body: kopf.Body,
    state: ObjectState,
    context: OperatorContext,
    error: KubeError | ClaimRefused,
) -> kopf.TemporaryError:
    """The API server refused an owned object (quota, admission, RBAC, no free Service IP):
    Ready=False with its message, an Event, and a retry after a growing delay."""
    reason = error.reason if isinstance(error, ClaimRefused) else rc.refusal_reason(error)
    delay = rc.retry_delay(context.settings, state.refusals)
    state.refusals += 1
    _write(patch, body, rc.invalid_status(body, error, reason))
    _emitter(body)("Warning", reason, f"{error} (retry {state.refusals} in {delay:g}s)")
    return kopf.TemporaryError(f"{reason}: {error}", delay=delay)


def register(registry: kopf.OperatorRegistry, context: OperatorContext) -> None:
    """Register the StreamModel handlers of one operator process.

    The handlers are closures over ``context`` and kopf's registry (longer than ~60 lines on
    purpose: each handler is short and delegates to :mod:`.reconcile`).
    """

    async def reconcile(
        body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, reason: str = "", **_: Any
    ) -> None:
        fresh = reason == "create"  # owns nothing yet: skip the reads that find leftovers
        owner, state, emit = _owner(body), _state(memo), _emitter(body)
        try:
            spec = rc.validate(body.spec)
        except SpecError as exc:
            _write(patch, body, rc.invalid_status(body, exc, "InvalidSpec"))
            emit("Warning", "InvalidSpec", str(exc))
            raise kopf.PermanentError(str(exc)) from exc
        async with state.lock:
            try:
                state.credentials = await rc.ensure_credentials(
                    context.kube, owner, spec, fresh=fresh
                )
            except rc.CredentialsError as exc:
                _write(patch, body, rc.invalid_status(body, exc, exc.reason))
                emit("Warning", exc.reason, str(exc))
                raise kopf.TemporaryError(str(exc), delay=30) from exc
            except KubeError as exc:
                raise _refused(patch, body, state, context, exc) from exc
            try:
                deployment, ingress = await rc.apply_objects(context, owner, spec, fresh=fresh)
            except SpecError as exc:  # the API server refused an object built from the spec
                _write(patch, body, rc.invalid_status(body, exc, "InvalidSpec"))
                emit("Warning", "InvalidSpec", str(exc))
                raise kopf.PermanentError(str(exc)) from exc
            except KubeError as exc:
                raise _refused(patch, body, state, context, exc) from exc
            except ClaimRefused as exc:  # a retained claim it may not adopt (nothing written)
                raise _refused(patch, body, state, context, exc) from exc
            state.refusals = 0
            runtime = context.runtime
            if runtime is not None:
                if spec.server.replicas > 0:
                    await runtime.ensure(owner.namespace, owner.name, *state.credentials)
                else:
                    await runtime.stop(owner.namespace, owner.name, remove_data=False)
            desired = await rc.observe(
                context,
                state,
                owner,
                spec,
                body,
                deployment=deployment,
                ingress=ingress,
                emit=emit,
            )
            state.reconciled = body.meta.get("generation")
        _write(patch, body, status_document(desired))

    async def refresh(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
        state = _state(memo)
        if state.reconciled is None or state.reconciled != body.meta.get("generation"):
            return  # a change handler has this object; it writes the status itself
        try:
            spec = rc.validate(body.spec)
        except SpecError:
            return
        owner, emit = _owner(body), _emitter(body)
        async with state.lock:
            deployment = None
            if context.runtime is None:
                deployment = await context.kube.get(
                    "apps/v1", "Deployment", owner.namespace, owner.name
                )
            ingress = None
            if spec.ingress.enabled:
                ingress = await context.kube.get(
                    "networking.k8s.io/v1", "Ingress", owner.namespace, owner.name
                )
            desired = await rc.observe(
                context,
                state,
                owner,
                spec,
                body,
                deployment=deployment,
                ingress=ingress,
                emit=emit,
            )
        _write(patch, body, status_document(desired))

    for decorator in (kopf.on.create, kopf.on.update, kopf.on.resume):
        decorator(*_RESOURCE, registry=registry, id="reconcile")(reconcile)
    kopf.timer(
        *_RESOURCE,
        registry=registry,
        id="status",
        interval=context.settings.status_poll_interval,
        initial_delay=context.settings.status_poll_interval,
    )(refresh)

    runtime = context.runtime
    if runtime is not None:

        async def stop_server(body: kopf.Body, **_: Any) -> None:
            retained = retention.data_retained(body.spec)  # the next one of that name adopts it
            await runtime.stop(
                str(body.meta.namespace), str(body.meta.name), remove_data=not retained
            )

        kopf.on.delete(*_RESOURCE, registry=registry, id="stop-server")(stop_server)

    async def cleanup(**_: Any) -> None:
        if context.runtime is not None:
            await context.runtime.close()
        await context.kube.close()

    kopf.on.cleanup(registry=registry, id="streammodel-cleanup")(cleanup)
