"""``streamml operator``: run the kopf operator with this project's handlers and settings."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--local-runtime",
        action="store_true",
        default=None,
        help="run each StreamModel's server as a local process on 127.0.0.1 (no kubelet)",
    )
    parser.add_argument(
        "--namespace",
        "-n",
        action="append",
        dest="namespaces",
        metavar="N",
        help="watch this namespace (repeatable; default: cluster-wide)",
    )
    parser.add_argument("--liveness", metavar="URL", help="e.g. http://127.0.0.1:8081/healthz")
    parser.add_argument("--state-dir", type=Path, help="local runtime: where servers keep data")
    parser.add_argument(
        "--poll-interval", type=float, dest="status_poll_interval", help="status poll seconds"
    )


def kopf_settings(settings: Any) -> Any:
    """kopf's own settings: bookkeeping in our annotations, events only for warnings."""
    import kopf

    conf = kopf.OperatorSettings()
    conf.persistence.finalizer = "streamml.io/finalizer"
    conf.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="streamml.io")
    conf.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="streamml.io", key="last-handled-configuration"
    )
    # Handlers post their own events on transitions; kopf's per-handler chatter would flood them.
    conf.posting.level = logging.WARNING
    # No cluster-wide CRD/namespace watching: the resources are known, and RBAC stays minimal.
    conf.scanning.disabled = True
    conf.watching.server_timeout = 300
    conf.batching.worker_limit = 200
    return conf


def build(settings: Any) -> tuple[Any, Any]:
    """(registry, context) with every handler registered; used by the command and the tests."""
    import kopf

    from streamml.operator import main as entry
    from streamml.operator.kube import Kube
    from streamml.operator.localruntime import LocalRuntime
    from streamml.operator.reconcile import OperatorContext

    registry = kopf.get_default_registry()
    runtime = None
    if settings.local_runtime:
        runtime = LocalRuntime(settings.state_dir, settings.server_command or None)
    context = OperatorContext(settings=settings, kube=Kube(), runtime=runtime)
    entry.streammodel_handlers.register(registry, context)
    entry.sweep_handlers.register(registry, settings)
    return registry, context


def run(args: argparse.Namespace) -> int:
    import kopf

    from streamml.errors import ConfigurationError
    from streamml.operator.settings import OperatorSettings

    overrides = {
        key: value
        for key in ("local_runtime", "namespaces", "liveness", "state_dir", "status_poll_interval")
        if (value := getattr(args, key, None)) is not None
    }
    try:
        settings = OperatorSettings(**overrides)
    except ValueError as exc:
        raise ConfigurationError(f"invalid operator settings: {exc}") from exc
    elector = None
    if settings.leader_election.enabled:
        from streamml.operator import leadership

        elector = leadership.LeaderElector.from_settings(settings)
        leadership.wait_for_leadership(elector, settings.liveness)
    registry, _ = build(settings)
    if elector is not None:
        leadership.register(registry, elector)
    logger.info(
        "operator: %s, %s, status every %.1fs, contacting servers: %s",
        "local runtime" if settings.local_runtime else "in-cluster servers",
        "cluster-wide" if settings.clusterwide else f"namespaces {settings.namespaces}",
        settings.status_poll_interval,
        settings.reach_servers,
    )
    try:
        kopf.run(
            registry=registry,
            settings=kopf_settings(settings),
            standalone=True,  # one active operator: the Lease, not kopf's peering
            clusterwide=settings.clusterwide,
            namespaces=settings.namespaces,
            liveness_endpoint=settings.liveness,
            memo=kopf.Memo(),
        )
    finally:
        if elector is not None:
            asyncio.run(elector.release())
    return 0
