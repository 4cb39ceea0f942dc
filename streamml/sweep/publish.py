"""A sweep shows itself on its model server's dashboard: each saved status is also published as a
:class:`~streamml.vocabulary.sweepsummary.SweepSummary` (``PUT /api/sweeps/{name}``).

The engine does not know: :class:`PublishingStore` wraps the driver's :class:`StateStore` (the
operator's CR status, the CLI's file), saving first and publishing after. Publishing never fails
the sweep and never holds it up for long: a failure (server away, refused, too slow) is one log
line, and the next save tries again. At most one publication a second while the sweep runs (a
save in between is published when that second is over); the final status is always published.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable

from streamml.sweep.state import StateStore
from streamml.vocabulary.lammpssweep import LammpsSweepSpec
from streamml.vocabulary.sweepstatus import LammpsSweepStatus
from streamml.vocabulary.sweepsummary import (
    MAX_CURVE_POINTS,
    MAX_HELD_OUT,
    MAX_MODELS,
    SummaryCurve,
    SummaryEvaluation,
    SummaryHeldOut,
    SummaryPoint,
    SweepSummary,
)

log = logging.getLogger(__name__)

#: the shortest time between two publications of a running sweep
MIN_INTERVAL = 1.0
#: how long one publication may take before it is given up
TIMEOUT = 5.0
Publish = Callable[[SweepSummary], Awaitable[None]]


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def summary_of(spec: LammpsSweepSpec, status: LammpsSweepStatus) -> SweepSummary:
    """The dashboard's view of a status: the newest curve points and held-out runs that fit."""
    curves = [
        SummaryCurve(
            model=curve.model,
            metric=curve.metric,
            points=[
                SummaryPoint(trials=p.trials, samples=p.samples, value=_finite(p.value))
                for p in curve.points[-MAX_CURVE_POINTS:]
            ],
        )
        for curve in status.learning_curve[:MAX_MODELS]
    ]
    evaluation = [
        SummaryEvaluation(
            model=e.model, n=e.n, mae=_finite(e.mae), rmse=_finite(e.rmse), r2=_finite(e.r2)
        )
        for e in status.evaluation[:MAX_MODELS]
    ]
    held_out = [
        SummaryHeldOut(
            id=r.id,
            target=r.target,
            predictions={
                m: v for m, v in list(r.predictions.items())[:MAX_MODELS] if math.isfinite(v)
            },
        )
        for r in status.test_results[-MAX_HELD_OUT:]
        if math.isfinite(r.target)
    ]
    return SweepSummary(
        phase=status.phase,
        scheduler=spec.scheduler.type,
        target=str(getattr(spec.lammps, "target", ""))[:200],
        trials=spec.trials,
        test_trials=spec.test_trials,
        succeeded=status.succeeded,
        failed=status.failed,
        running=status.running,
        pending=max(status.pending, 0),
        best_model=status.best_model,
        held_out_r2=_finite(status.held_out_r2),
        learning_curve=curves,
        evaluation=evaluation,
        held_out=held_out,
    )


class PublishingStore:
    """A :class:`StateStore` that also publishes each saved status (best effort)."""

    def __init__(
        self, inner: StateStore, spec: Callable[[], LammpsSweepSpec], publish: Publish
    ) -> None:
        self.inner = inner
        self.spec = spec
        self.publish = publish
        self.published = 0
        self._last = -math.inf
        self._later: asyncio.Task[None] | None = None
        self._status: LammpsSweepStatus | None = None

    async def load(self) -> LammpsSweepStatus | None:
        return await self.inner.load()

    async def save(self, status: LammpsSweepStatus) -> None:
        await self.inner.save(status)
        self._status = status
        final = status.phase in ("Succeeded", "Failed")
        wait = self._last + MIN_INTERVAL - time.monotonic()
        if final or wait <= 0:
            if self._later is not None:
                self._later.cancel()
                self._later = None
            await self._send()
        elif self._later is None:
            self._later = asyncio.create_task(self._send_after(wait), name="sweep-publish")

    async def _send_after(self, wait: float) -> None:
        await asyncio.sleep(wait)
        self._later = None
        await self._send()

    async def _send(self) -> None:
        if self._status is None:
            return
        self._last = time.monotonic()
        try:
            summary = summary_of(self.spec(), self._status)
            await asyncio.wait_for(self.publish(summary), TIMEOUT)
            self.published += 1
        except Exception as exc:  # whatever went wrong, the sweep goes on
            log.info("sweep summary not published: %s: %s", type(exc).__name__, exc)

    async def close(self) -> None:
        if self._later is not None:
            self._later.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._later
