"""Thin kopf handlers for LammpsSweep: a daemon per sweep, a delete handler that cancels jobs.

The work is in :mod:`streamml.operator.sweep_driver`; ``streamml operator`` calls
:func:`register` at start-up.
"""

from __future__ import annotations

from typing import Any

import kopf

from streamml.operator.settings import OperatorSettings
from streamml.operator.sweep_driver import SweepDriver, SweepKube, cancel_recorded
from streamml.vocabulary.lammpssweep import LAMMPSSWEEP

_RESOURCE = (LAMMPSSWEEP.group, LAMMPSSWEEP.version, LAMMPSSWEEP.plural)


def register(registry: kopf.OperatorRegistry, settings: OperatorSettings) -> None:
    kube = SweepKube()

    @kopf.daemon(
        *_RESOURCE,
        registry=registry,
        id="sweep",
        cancellation_timeout=30.0,
        backoff=10.0,
    )
    async def drive(
        stopped: kopf.DaemonStopped,
        name: str,
        namespace: str | None,
        uid: str,
        logger: kopf.Logger,
        **_: Any,
    ) -> None:
        namespace = namespace or "default"  # LammpsSweep is namespaced; kopf types it optional
        driver = SweepDriver(kube, settings, namespace, name, uid)
        try:
            while not stopped:
                if await driver.step():
                    logger.info("LammpsSweep %s/%s: done", namespace, name)
                    return
                await stopped.wait(settings.sweeps.interval)
            reason = stopped.reason
            if reason is not None and reason & kopf.DaemonStoppingReason.RESOURCE_DELETED:
                cancelled = await driver.cancel("the sweep was deleted")
                logger.info(
                    "LammpsSweep %s/%s deleted: %d jobs cancelled", namespace, name, cancelled
                )
        finally:
            await driver.close()

    @kopf.on.delete(*_RESOURCE, registry=registry, id="cancel-jobs")
    async def cancel_jobs(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
        # Also covers a sweep deleted while no daemon ran (finished, or the operator was down).
        cancelled = await cancel_recorded(kube, settings, body)
        if cancelled:
            logger.info("cancelled %d jobs recorded in status", cancelled)
