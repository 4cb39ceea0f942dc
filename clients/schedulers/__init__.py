"""Scheduler backends behind one interface (:mod:`.base`), chosen by name.

``make_scheduler(kind, settings)`` builds one; ``settings`` is the plain mapping a LammpsSweep
carries under ``spec.scheduler.settings`` (or a sweep file), validated here:

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
from typing import Any

from streamml.clients.schedulers.base import JobRequest, JobState, JobStatus, Scheduler
from streamml.errors import ConfigurationError, SpecError, UnknownComponentError
from streamml.files import read_secret

KINDS: tuple[str, ...] = ("local", "slurm", "slurm-cli", "slurm-rest", "flux", "kubernetes")

__all__ = ["KINDS", "JobRequest", "JobState", "JobStatus", "Scheduler", "make_scheduler"]


def _str(settings: Mapping[str, Any], key: str, default: str | None = None) -> str | None:
    value = settings.get(key, default)
    if value is not None and not isinstance(value, str):
        raise SpecError(f"scheduler setting {key!r} must be a string", field=key)
    return value


def _int(settings: Mapping[str, Any], key: str, default: int) -> int:
    value = settings.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SpecError(f"scheduler setting {key!r} must be a positive integer", field=key)
    return value


def _str_map(settings: Mapping[str, Any], key: str) -> dict[str, str]:
    value = settings.get(key) or {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise SpecError(f"scheduler setting {key!r} must map strings to strings", field=key)
    return dict(value)


def _str_list(settings: Mapping[str, Any], key: str) -> list[str]:
    value = settings.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SpecError(f"scheduler setting {key!r} must be a list of strings", field=key)
    return list(value)


def make_scheduler(kind: str, settings: Mapping[str, Any] | None = None) -> Scheduler:
    """The backend ``kind`` configured from ``settings``; UnknownComponentError if no such kind."""
    settings = settings or {}
    if kind == "local":
        from streamml.clients.schedulers.local import LocalScheduler

        root = _str(settings, "root") or tempfile.mkdtemp(prefix="streamml-jobs-")
        return LocalScheduler(
            Path(root), max_parallel=_int(settings, "maxParallel", os.cpu_count() or 1)
        )
    if kind in ("slurm", "slurm-cli"):
        from streamml.clients.schedulers.slurm_cli import SlurmCliScheduler

        return SlurmCliScheduler(
            partition=_str(settings, "partition"),
            env=_str_map(settings, "env"),
            sbatch_args=_str_list(settings, "sbatchArgs"),
        )
    if kind == "slurm-rest":
        from streamml.clients.schedulers.slurm_rest import SlurmRestScheduler

        url = _str(settings, "url")
        if not url:
            raise SpecError("the slurm-rest scheduler needs 'url'", field="url")
        token = _str(settings, "token")
        token_file = _str(settings, "tokenFile")
        if token is None and token_file is not None:
            try:
                token = read_secret(Path(token_file), "tokenFile")
            except ConfigurationError as exc:
                raise SpecError(str(exc), field="tokenFile") from None
        if not token:
            raise SpecError("the slurm-rest scheduler needs 'token' or 'tokenFile'", field="token")
        return SlurmRestScheduler(
            url,
            user=_str(settings, "user", "root") or "root",
            token=token,
            partition=_str(settings, "partition"),
        )
    if kind == "flux":
        from streamml.clients.schedulers.flux import FluxScheduler

        uri = _str(settings, "uri") or os.environ.get("FLUX_URI")
        if not uri:
            raise SpecError("the flux scheduler needs 'uri' (or FLUX_URI)", field="uri")
        return FluxScheduler(uri=uri, flux=_str(settings, "flux"), env=_str_map(settings, "env"))
    if kind == "kubernetes":
        from streamml.clients.schedulers.kubernetes import KubernetesScheduler

        return KubernetesScheduler(
            namespace=_str(settings, "namespace", "default") or "default",
            image=_str(settings, "image"),
            kubeconfig=_str(settings, "kubeconfig"),
            service_account=_str(settings, "serviceAccount"),
            ttl_seconds_after_finished=_int(settings, "ttlSecondsAfterFinished", 3600),
        )
    raise UnknownComponentError(
        f"unknown scheduler {kind!r}; choose one of {', '.join(KINDS)}", field="scheduler"
    )
