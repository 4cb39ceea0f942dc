"""Scheduler backends behind one interface (:mod:`.base`), built from typed options.

:func:`build_scheduler` takes the options model of one kind (:mod:`.options`) and returns that
kind's backend (its return type follows the options' type). :func:`make_scheduler` is the same
for a camelCase mapping (a sweep file, a test, a benchmark), validated by the options models:

- ``local``: ``root`` (job directories; default a temp dir), ``maxParallel`` (default #CPUs).
- ``slurm`` / ``slurm-cli``: ``partition``, ``env`` (e.g. ``{"SLURM_CONF": ...}``),
  ``sbatchArgs`` (extra sbatch options).
- ``slurm-rest``: ``url`` (slurmrestd), ``user``, ``token`` or ``tokenFile`` (a JWT),
  ``partition``.
- ``flux``: ``uri`` (the instance's ``FLUX_URI``: ``local://…`` or ``ssh://…``; default
  ``$FLUX_URI``), ``flux`` (the command; default ``$STREAMML_FLUX``, PATH, the project's build).
- ``kubernetes``: ``namespace``, ``image``, ``kubeconfig`` (else in-cluster config),
  ``serviceAccount``, ``ttlSecondsAfterFinished``.

Backends are imported lazily: the kubernetes client is heavy and only the operator needs it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from pydantic import TypeAdapter, ValidationError

from streamml.errors import ConfigurationError, SpecError, UnknownComponentError
from streamml.files import read_secret
from streamml.sweep.schedulers.base import JobRequest, JobState, JobStatus, Scheduler
from streamml.sweep.schedulers.options import (
    FluxOptions,
    KubernetesOptions,
    LocalOptions,
    SchedulerOptions,
    SlurmCliOptions,
    SlurmRestOptions,
)

if TYPE_CHECKING:
    from streamml.sweep.schedulers.flux import FluxScheduler
    from streamml.sweep.schedulers.kubernetes import KubernetesScheduler
    from streamml.sweep.schedulers.local import LocalScheduler
    from streamml.sweep.schedulers.slurm_cli import SlurmCliScheduler
    from streamml.sweep.schedulers.slurm_rest import SlurmRestScheduler

KINDS: tuple[str, ...] = ("local", "slurm", "slurm-cli", "slurm-rest", "flux", "kubernetes")
_MODELS: dict[str, type[Any]] = {
    "local": LocalOptions,
    "slurm": SlurmCliOptions,
    "slurm-cli": SlurmCliOptions,
    "slurm-rest": SlurmRestOptions,
    "flux": FluxOptions,
    "kubernetes": KubernetesOptions,
}
_ADAPTER: TypeAdapter[SchedulerOptions] = TypeAdapter(SchedulerOptions)

__all__ = [
    "KINDS",
    "JobRequest",
    "JobState",
    "JobStatus",
    "Scheduler",
    "SchedulerOptions",
    "build_scheduler",
    "make_scheduler",
]


def make_scheduler(kind: str, settings: Mapping[str, Any] | None = None) -> Scheduler:
    """The backend ``kind`` configured from ``settings``; UnknownComponentError if no such kind."""
    if kind not in KINDS:
        raise UnknownComponentError(
            f"unknown scheduler {kind!r}; choose one of {', '.join(KINDS)}", field="scheduler"
        )
    try:
        options = _ADAPTER.validate_python({**(settings or {}), "kind": kind})
    except ValidationError as exc:
        raise _setting_error(kind, exc) from exc
    return build_scheduler(options)


def _setting_error(kind: str, exc: ValidationError) -> SpecError:
    """The first problem as SpecError naming the setting (its camelCase name)."""
    first = exc.errors()[0]
    loc = [str(p) for p in first["loc"][1:]]  # [0] is the kind (the union's tag)
    if not loc:  # a rule over several settings (a model validator)
        message = str(first["msg"]).removeprefix("Value error, ")
        return SpecError(message, field="token" if "token" in message else None)
    name = loc[0]
    if first["type"] == "missing":
        return SpecError(f"the {kind} scheduler needs {name!r}", field=name)
    model = _MODELS[kind]
    by_alias = {f.alias or n: f for n, f in model.model_fields.items()}
    expected = by_alias[name].description if name in by_alias else first["msg"]
    return SpecError(f"scheduler setting {name!r} {expected}", field=name)


@overload
def build_scheduler(options: LocalOptions) -> LocalScheduler: ...
@overload
def build_scheduler(options: SlurmCliOptions) -> SlurmCliScheduler: ...
@overload
def build_scheduler(options: SlurmRestOptions) -> SlurmRestScheduler: ...
@overload
def build_scheduler(options: FluxOptions) -> FluxScheduler: ...
@overload
def build_scheduler(options: KubernetesOptions) -> KubernetesScheduler: ...
@overload
def build_scheduler(options: SchedulerOptions) -> Scheduler: ...


def build_scheduler(options: SchedulerOptions) -> Scheduler:
    """The backend of ``options``' kind; SpecError (naming the setting) for what only shows now."""
    if isinstance(options, LocalOptions):
        from streamml.sweep.schedulers.local import LocalScheduler

        root = options.root or tempfile.mkdtemp(prefix="streamml-jobs-")
        return LocalScheduler(Path(root), max_parallel=options.max_parallel)
    if isinstance(options, SlurmCliOptions):
        from streamml.sweep.schedulers.slurm_cli import SlurmCliScheduler

        return SlurmCliScheduler(
            partition=options.partition, env=options.env, sbatch_args=options.sbatch_args
        )
    if isinstance(options, SlurmRestOptions):
        from streamml.sweep.schedulers.slurm_rest import SlurmRestScheduler

        return SlurmRestScheduler(
            options.url,
            user=options.user or "root",
            token=_slurm_token(options),
            partition=options.partition,
        )
    if isinstance(options, FluxOptions):
        from streamml.sweep.schedulers.flux import FluxScheduler

        uri = options.uri or os.environ.get("FLUX_URI")
        if not uri:
            raise SpecError("the flux scheduler needs 'uri' (or FLUX_URI)", field="uri")
        return FluxScheduler(uri=uri, flux=options.flux, env=options.env)
    from streamml.sweep.schedulers.kubernetes import KubernetesScheduler

    return KubernetesScheduler(
        namespace=options.namespace or "default",
        image=options.image,
        kubeconfig=options.kubeconfig,
        service_account=options.service_account,
        ttl_seconds_after_finished=options.ttl_seconds_after_finished,
    )


def _slurm_token(options: SlurmRestOptions) -> str:
    token = options.token
    if token is None and options.token_file is not None:
        try:
            token = read_secret(Path(options.token_file), "tokenFile")
        except ConfigurationError as exc:
            raise SpecError(str(exc), field="tokenFile") from None
    if not token:
        raise SpecError("the slurm-rest scheduler needs 'token' or 'tokenFile'", field="token")
    return token
