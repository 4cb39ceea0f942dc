"""Steering: the engine's side of an adaptive sweep (choose, record, replay).

The engine asks :meth:`Steering.choose_ahead` for the points of the training runs it is about to
start; the choices go into the status (``chosen``: a pool index per run, ``decisions``: the
newest with their scores) and the engine SAVES them before it creates and submits those runs.
A restarted driver loads the status and :meth:`Steering.point` replays every recorded choice:
a choice is made once, and a run is never chosen twice (the pool is drawn without replacement).

The first choice waits for the warm-up: every warm-up run finished (learned or failed for good).
With ``stopWhen`` the held-out runs go first (:mod:`streamml.sweep.stopping`): the steering counts
training runs, not plan positions, and chooses nothing once the target held.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from streamml.errors import SpecError, StreamMLError
from streamml.sweep import acquisition, stopping
from streamml.sweep.acquisition import Forecast
from streamml.sweep.design import AdaptiveDesign, adaptive_design
from streamml.sweep.sampling import Point, as_vars
from streamml.vocabulary.lammpssweep import LammpsSweepSpec, resolved_targets
from streamml.vocabulary.sweepstatus import MAX_DECISION_NOTES, Decision, LammpsSweepStatus

log = logging.getLogger(__name__)

#: (models, the candidates' features) -> each model's forecast; None: every model on the server.
#: Models the server does not serve are left out of the answer.
Predictor = Callable[[Sequence[str] | None, list[dict[str, Any]]], Awaitable[dict[str, Forecast]]]
#: trial states whose runs still count as in flight for the diversity rule
_BUSY = ("Submitting", "Pending", "Running")
#: trial states after which a warm-up run is in (its result learned, or it will not be retried)
_DONE = ("Succeeded", "Failed", "Cancelled", "Lost")


def feature(value: int | float | str) -> int | float | str:
    """A point's value as the job program sends it (``-var`` text read back as a number)."""
    text = repr(value) if isinstance(value, float) else str(value)
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            continue
    return text


class Steering:
    """Chooses an adaptive sweep's training points; None for every other method (:meth:`of`)."""

    def __init__(
        self, spec: LammpsSweepSpec, design: AdaptiveDesign, predict: Predictor | None
    ) -> None:
        self.spec = spec
        self.design = design
        self.predict = predict
        self.warmup = len(design.warmup)
        self.coords = acquisition.coordinates(design.pool, spec.parameters)
        first = resolved_targets(spec)[0]
        #: the models whose uncertainty counts: the first target's (None: all the server has)
        self.models = list(first.models) if first.models else spec.models

    @classmethod
    def of(cls, spec: LammpsSweepSpec, predict: Predictor | None) -> Steering | None:
        if spec.sampling.method != "adaptive":
            return None
        return cls(spec, adaptive_design(spec), predict)

    def chosen(self, trial: int, status: LammpsSweepStatus) -> bool:
        """Whether the trial's point is known (warm-up, test, or a recorded choice)."""
        step = trial - self.warmup
        return not 0 <= step < self.design.to_choose or step < len(status.chosen)

    def point(self, trial: int, status: LammpsSweepStatus, plan: Sequence[Point]) -> Point:
        step = trial - self.warmup
        if 0 <= step < self.design.to_choose:
            if step >= len(status.chosen):
                raise StreamMLError(f"trial {trial}: its point has not been chosen yet")
            return self.design.pool[status.chosen[step]]
        return plan[trial]

    def _warmed_up(self, status: LammpsSweepStatus) -> bool:
        if stopping.training_cursor(status, self.spec) < self.warmup:
            return False
        if any(i < self.warmup for i in status.retry_queue):
            return False
        warm = [r for r in status.trials if r.id < self.warmup and r.role == "train"]
        return all(r.state in _DONE for r in warm)

    async def choose_ahead(self, status: LammpsSweepStatus, slots: int) -> bool:
        """Choose the points of the next ``slots`` new training runs not chosen yet; True when
        it recorded choices in ``status`` (the caller saves them before submitting)."""
        cursor = stopping.training_cursor(status, self.spec)
        start = max(cursor, self.warmup + len(status.chosen))
        end = min(cursor + slots, self.spec.trials)
        k = end - start
        if k <= 0 or self.predict is None or stopping.stopped(status):
            return False  # nothing to choose, nothing to choose with, or the target held
        if not self._warmed_up(status):
            return False
        try:
            picks, notes = await self._decide(status, k)
        except SpecError:
            raise
        except StreamMLError as exc:  # the server is away: choose on a later tick
            log.info("adaptive sweep: no forecast yet: %s", exc)
            return False
        status.chosen.extend(picks)
        status.decisions.extend(notes)
        del status.decisions[:-MAX_DECISION_NOTES]
        return True

    async def _decide(self, status: LammpsSweepStatus, k: int) -> tuple[list[int], list[Decision]]:
        assert self.predict is not None
        taken = set(status.chosen)
        left = [i for i in range(len(self.design.pool)) if i not in taken]
        features = [{n: feature(v) for n, v in self.design.pool[i].items()} for i in left]
        forecasts = await self.predict(self.models, features)
        cost = self.design.cost_model
        if cost is not None and cost not in forecasts:
            forecasts |= await self.predict([cost], features)
            if cost not in forecasts:
                raise SpecError(
                    f"sampling.costModel: {cost!r} is not among the sweep's models",
                    field="sampling.costModel",
                )
        coords = [self.coords[i] for i in left]
        run, busy = self._run_and_busy(status)
        uncertain_models = {m: f for m, f in forecasts.items() if self._counts(m)}
        uncertain, basis = acquisition.uncertainty(uncertain_models, coords, run)
        per_cost = None
        if self.design.acquisition == "uncertaintyPerCost" and cost is not None:
            per_cost = acquisition.costs(forecasts.get(cost), len(left))
        score = acquisition.scores(uncertain, per_cost)
        picked = acquisition.pick(score, coords, k, busy)
        learned = sum(r.role == "train" and r.state == "Succeeded" for r in status.trials)
        first = self.warmup + len(status.chosen)
        notes = [
            Decision(
                trial=first + n,
                candidate=left[j],
                score=score[j],
                uncertainty=uncertain[j],
                cost=per_cost[j] if per_cost else None,
                basis=basis,
                learned=learned,
            )
            for n, j in enumerate(picked)
        ]
        for note in notes:
            log.info(
                "adaptive sweep: trial %d <- candidate %d %s (%s %.4g)",
                note.trial,
                note.candidate,
                as_vars(self.design.pool[note.candidate]),
                basis,
                note.score,
            )
        return [left[j] for j in picked], notes

    def _counts(self, model: str) -> bool:
        return self.models is None or model in self.models

    def _run_and_busy(
        self, status: LammpsSweepStatus
    ) -> tuple[list[acquisition.Coordinates], list[acquisition.Coordinates]]:
        """The points run so far (warm-up and chosen), and those of the runs in flight."""
        params = self.spec.parameters
        chosen = [self.design.pool[i] for i in status.chosen]
        run = acquisition.coordinates([*self.design.warmup, *chosen], params)
        busy_ids = {
            r.id
            for r in status.trials
            if r.role == "train" and r.state in _BUSY and self.warmup <= r.id < self.spec.trials
        }
        busy = [self.design.pool[status.chosen[t - self.warmup]] for t in sorted(busy_ids)]
        return run, acquisition.coordinates(busy, params)
