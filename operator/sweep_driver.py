"""The operator's side of a LammpsSweep: the engine of :mod:`streamml.sweep.engine`, fed from
the API server.

One :func:`drive` coroutine per sweep (a kopf daemon) loops: read the sweep, validate its spec,
find the referenced StreamModel's address and credentials, wait (phase ``Waiting``, condition
``StreamModelReady=False``) while it is not Ready, and tick the engine. The engine's state is the
CR's status, written through :class:`StatusStore` (a merge patch of ``/status``) before every
submission, so a restarted operator resumes without resubmitting anything.

A spec the CRD schema could not reject (min > max, an impossible count, a space edited after the
start) becomes phase ``Failed`` with ``Ready=False``, reason ``InvalidSpec`` and a message that
names the field; the daemon then waits for the next generation instead of retrying.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from streamml.errors import SpecError, StreamMLError
from streamml.operator.kube import Kube, KubeError, decode_secret
from streamml.operator.settings import OperatorSettings
from streamml.sweep import access
from streamml.sweep import snapshot as inputs
from streamml.sweep import wiring as rt
from streamml.sweep.access import ServerAccess
from streamml.sweep.engine import SweepEngine
from streamml.sweep.schedulers import Scheduler
from streamml.sweep.spec import validate
from streamml.vocabulary.conditions import set_condition
from streamml.vocabulary.lammpssweep import LAMMPSSWEEP, LammpsSweepSpec
from streamml.vocabulary.stopping import check_stop_model
from streamml.vocabulary.streammodel import STREAMMODEL
from streamml.vocabulary.sweepstatus import LammpsSweepStatus
from streamml.vocabulary.targets import check_served

log = logging.getLogger(__name__)


class SweepKube(Kube):
    """The few extra calls the sweep driver needs (custom objects, ConfigMaps)."""

    @staticmethod
    def sweep_path(namespace: str, name: str) -> str:
        info = LAMMPSSWEEP
        return f"/apis/{info.api_version}/namespaces/{namespace}/{info.plural}/{name}"

    async def get_path(self, path: str) -> dict[str, Any] | None:
        try:
            return await self._call("GET", path)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    async def sweep(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self.get_path(self.sweep_path(namespace, name))

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        await self._call(
            "PATCH",
            self.sweep_path(namespace, name) + "/status",
            body={"status": status},
            content_type="application/merge-patch+json",
        )

    async def stream_model(self, namespace: str, name: str) -> dict[str, Any] | None:
        info = STREAMMODEL
        return await self.get_path(
            f"/apis/{info.api_version}/namespaces/{namespace}/{info.plural}/{name}"
        )

    async def secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        secret = await self.get_path(f"/api/v1/namespaces/{namespace}/secrets/{name}")
        return decode_secret(secret) if secret is not None else None

    async def config_map_files(self, namespace: str, name: str) -> dict[str, bytes] | None:
        """A ConfigMap's keys as file contents (``data`` as UTF-8, ``binaryData`` decoded)."""
        cm = await self.get_path(f"/api/v1/namespaces/{namespace}/configmaps/{name}")
        if cm is None:
            return None
        files = {k: str(v).encode() for k, v in (cm.get("data") or {}).items()}
        for key, value in (cm.get("binaryData") or {}).items():
            files[key] = base64.b64decode(str(value))
        return files


class StatusStore:
    """The engine's state as the sweep's ``status`` (merge patch; removed map keys nulled)."""

    def __init__(self, kube: SweepKube, namespace: str, name: str) -> None:
        self.kube, self.namespace, self.name = kube, namespace, name
        self._attempt_keys: set[str] = set()

    async def load(self) -> LammpsSweepStatus | None:
        body = await self.kube.sweep(self.namespace, self.name)
        raw = (body or {}).get("status")
        if not raw:
            return None
        status = LammpsSweepStatus.model_validate(raw)
        self._attempt_keys = set(status.attempts)
        return status

    async def save(self, status: LammpsSweepStatus) -> None:
        doc = status.model_dump(by_alias=True, mode="json")
        attempts: dict[str, Any] = dict(doc["attempts"])
        for gone in self._attempt_keys - set(attempts):
            attempts[gone] = None  # merge patch deletes a key only when told to
        doc["attempts"] = attempts
        await self.kube.patch_status(self.namespace, self.name, doc)
        self._attempt_keys = set(status.attempts)


@dataclass
class ServerLookup:
    """Where the referenced StreamModel's server is, or why it cannot be used yet."""

    access: ServerAccess | None
    reason: str
    message: str


def check_allowed(spec: LammpsSweepSpec, settings: OperatorSettings) -> None:
    """SpecError when the spec asks for something this operator was not allowed to do."""
    if spec.scheduler.type == "local" and not settings.local_jobs_allowed:
        raise SpecError(
            "spec.scheduler.type: 'local' would run trials inside the operator's own process; "
            "this operator does not allow it (it needs --local-runtime or "
            "STREAMML_SWEEPS__ALLOW_LOCAL_JOBS=true): use slurm, slurm-rest or kubernetes",
            field="scheduler.type",
        )


async def resolve_target(kube: SweepKube, namespace: str, ref: str) -> ServerLookup:
    """The StreamModel's access once it can take jobs (rules in :mod:`streamml.sweep.access`)."""
    try:
        where = access.locate(
            repr(ref), await kube.stream_model(namespace, ref), require_ready=True
        )
        data = await kube.secret_data(namespace, where.secret_name) if where.secret_name else None
        return ServerLookup(access.with_credentials(where, data), "Ready", "")
    except access.ServerUnavailable as exc:
        return ServerLookup(None, exc.reason, str(exc))
    except access.SecretMalformed as exc:
        return ServerLookup(None, "CredentialsMalformed", str(exc))


async def scheduler_for(
    kube: SweepKube,
    namespace: str,
    spec: LammpsSweepSpec,
    workdir: Path,
) -> Scheduler:
    token = None
    ref = spec.scheduler.jwt_secret_ref
    if spec.scheduler.type == "slurm-rest" and ref is not None:
        try:
            data = await kube.secret_data(namespace, ref.name)
        except access.SecretMalformed as exc:
            raise SpecError(
                f"scheduler.jwtSecretRef: {exc}", field="scheduler.jwtSecretRef"
            ) from exc
        if data is None or not data.get(ref.key):
            raise SpecError(
                f"scheduler.jwtSecretRef: Secret {ref.name!r} has no key {ref.key!r}",
                field="scheduler.jwtSecretRef",
            )
        token = data[ref.key]
    options = rt.scheduler_options(spec, workdir, namespace=namespace, slurm_token=token)
    return rt.build_scheduler(options)


async def input_config_map(
    kube: SweepKube, namespace: str, spec: LammpsSweepSpec
) -> dict[str, bytes] | None:
    """The keys of the ConfigMap ``lammps.configMapRef`` names (text and binary), or None."""
    ref = spec.lammps.config_map_ref
    if ref is None:
        return None
    data = await kube.config_map_files(namespace, ref.name)
    if data is None:
        raise SpecError(
            f"lammps.configMapRef: ConfigMap {ref.name!r} does not exist",
            field="lammps.configMapRef",
        )
    return data


def input_roots(settings: OperatorSettings) -> inputs.Roots:
    """Paths a sweep may name (inputFile, inputDir, files): only under the configured roots."""
    return inputs.Roots(
        allowed=tuple(settings.sweeps.input_roots),
        hint="; this operator reads input files only under STREAMML_SWEEPS__INPUT_ROOTS"
        " (use lammps.input or lammps.configMapRef)",
    )


def work_dir(settings: OperatorSettings, namespace: str, name: str, uid: str) -> Path:
    base = settings.sweeps.work_dir or settings.state_dir / "sweeps"
    return base / namespace / f"{name}-{uid[:8]}"


class SweepDriver:
    """One sweep as the operator sees it; :meth:`step` is called once per tick."""

    def __init__(
        self, kube: SweepKube, settings: OperatorSettings, namespace: str, name: str, uid: str
    ) -> None:
        self.kube, self.settings = kube, settings
        self.namespace, self.name, self.uid = namespace, name, uid
        self.store = StatusStore(kube, namespace, name)
        self.engine: SweepEngine | None = None
        self.access: ServerAccess | None = None
        self.failed_generation: int | None = None

    async def step(self) -> bool:
        """One tick; True when there is nothing left to do (finished, or the sweep is gone)."""
        body = await self.kube.sweep(self.namespace, self.name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return True
        generation = body["metadata"].get("generation")
        if generation == self.failed_generation:
            return False  # invalid until the spec changes
        try:
            spec = validate(body.get("spec") or {})
            check_allowed(spec, self.settings)
            return await self._step(spec, generation)
        except SpecError as exc:
            await self._invalid(exc, generation)
            return False

    async def _step(self, spec: LammpsSweepSpec, generation: int | None) -> bool:
        if self.engine is not None and self.engine.finished:
            return True
        if self.engine is None:
            stored = await self.store.load()
            if (
                stored is not None
                and stored.phase in ("Succeeded", "Failed")
                and (stored.plan_fingerprint is not None)
            ):
                return True  # finished before this operator started
        target = await resolve_target(self.kube, self.namespace, spec.stream_model_ref.name)
        if target.access is None:
            await self._wait(target, generation)
            return False
        if (
            self.engine is None
            or target.access != self.access
            # an edited input (script, files) goes to the trials submitted from now on: the
            # snapshot is prepared again (the trials in flight keep the one they copied)
            or not inputs.same_input(spec.lammps, self.engine.spec.lammps)
        ):
            await self._check_learners(spec)
            await self._build(spec, target.access, generation)
        assert self.engine is not None
        self.engine.update_spec(spec, generation)
        set_condition(self.engine.status.conditions, "StreamModelReady", True, "Ready")
        return await self.engine.tick()

    async def _check_learners(self, spec: LammpsSweepSpec) -> None:
        """Every model a target names (and an adaptive sweep's cost model, and stopWhen's
        model) is one the StreamModel declares, of a flavor that has stopWhen's metric
        (SpecError naming the field)."""
        cost = spec.sampling.cost_model
        if spec.targets is None and cost is None and spec.stop_when is None:
            return
        ref = spec.stream_model_ref.name
        body = await self.kube.stream_model(self.namespace, ref) or {}
        models = (body.get("spec") or {}).get("models") or []
        flavors = {
            m["name"]: str(m.get("flavor") or "regression")
            for m in models
            if isinstance(m, dict) and "name" in m
        }
        served = list(flavors)
        problem = check_stop_model(spec.stop_when, flavors, f"StreamModel {ref!r}")
        if problem is None:
            problem = check_served(list(spec.targets or ()), served, f"StreamModel {ref!r}")
        if problem is None and cost is not None and cost not in served:
            problem = (
                f"sampling.costModel: model {cost!r} is not a model of StreamModel {ref!r} "
                f"(it has {', '.join(served) or 'none'})"
            )
        if problem is not None:
            field, _, message = problem.partition(": ")
            raise SpecError(message, field=field)

    async def _build(
        self, spec: LammpsSweepSpec, access: ServerAccess, generation: int | None
    ) -> None:
        workdir = work_dir(self.settings, self.namespace, self.name, self.uid)
        if self.engine is not None:
            await self.engine.scheduler.close()
        prefix = self.settings.sweeps.job_command  # empty: the engine's default for the backend
        scheduler = await scheduler_for(self.kube, self.namespace, spec, workdir)
        self.engine = rt.build_engine(
            self.name,
            spec,
            self.store,
            access=access,
            workdir=workdir,
            identity=self.uid,
            scheduler=scheduler,
            roots=input_roots(self.settings),
            config_map=await input_config_map(self.kube, self.namespace, spec),
            job_prefix=prefix,
            generation=generation,
        )
        self.access = access
        await self.engine.load()

    async def _status(self) -> LammpsSweepStatus:
        if self.engine is not None:
            return self.engine.status
        return await self.store.load() or LammpsSweepStatus()

    async def _wait(self, target: ServerLookup, generation: int | None) -> None:
        status = await self._status()
        before = status.model_dump_json()
        if status.phase not in ("Succeeded", "Failed", "Suspended"):
            status.phase = "Waiting"
        set_condition(status.conditions, "StreamModelReady", False, target.reason, target.message)
        set_condition(status.conditions, "Ready", False, target.reason, target.message)
        if generation is not None:
            status.observed_generation = generation
        if status.model_dump_json() != before:
            await self.store.save(status)

    async def _invalid(self, error: SpecError, generation: int | None) -> None:
        log.warning("LammpsSweep %s/%s: invalid spec: %s", self.namespace, self.name, error)
        status = await self._status()
        if self.engine is not None:
            await self.engine.cancel_all("invalid spec")
        status.phase = "Failed"
        message = str(error)
        if error.field and not message.startswith("spec."):
            message = f"spec.{error.field}: {message}"  # always name the field
        set_condition(status.conditions, "Ready", False, "InvalidSpec", message)
        status.observed_generation = generation
        await self.store.save(status)
        self.failed_generation = generation

    async def cancel(self, reason: str) -> int:
        """Cancel everything in flight (the sweep is being deleted)."""
        if self.engine is None:
            return 0
        return await self.engine.cancel_all(reason)

    async def close(self) -> None:
        if self.engine is not None:
            await self.engine.scheduler.close()


async def cancel_recorded(
    kube: SweepKube, settings: OperatorSettings, body: Mapping[str, Any]
) -> int:
    """Cancel the jobs a sweep's status records as in flight (delete handler, no daemon state)."""
    meta = body.get("metadata") or {}
    namespace, name, uid = meta.get("namespace"), meta.get("name"), meta.get("uid", "")
    raw = body.get("status") or {}
    try:
        spec = validate(body.get("spec") or {})
        status = LammpsSweepStatus.model_validate(raw)
    except (SpecError, ValidationError):
        return 0
    active = [t for t in status.trials if t.state in ("Submitting", "Pending", "Running")]
    if not active:
        return 0
    workdir = work_dir(settings, str(namespace), str(name), str(uid))
    scheduler = await scheduler_for(kube, str(namespace), spec, workdir)
    count = 0
    try:
        for trial in active:
            job_id = trial.job_id or await scheduler.lookup(trial.job_name)
            if job_id is None:
                continue
            try:
                await scheduler.cancel(job_id)
                count += 1
            except StreamMLError as exc:
                log.warning("cancel %s: %s", trial.job_name, exc)
    finally:
        await scheduler.close()
    return count
