"""Predicted time limits (``resources.predictedTimeLimit``): the limit rule and censoring.

Each job of a sweep with a predicted limit asks the wall-time model for its run's wall time
before it is submitted. Once the sweep has scored the model on ``after`` runs, the job's
scheduler limit is the upper bound of that prediction (:func:`bound`: conformal, the prediction
times the q-quantile of the observed actual/predicted ratios; or ``factor`` x the prediction)
plus the job program's own :data:`GRACE_S`, clamped to ``[minSeconds, maxSeconds]``; before
that the user's ``timeLimitSeconds``. A job killed at its limit (:func:`killed`) is censored:
its runtime is only known to exceed the limit, so it is never a sample (the job did not
learn: LAMMPS was stopped before it reported) and its ratio counts above every observed one;
it is resubmitted with twice its limit (at most ``maxSeconds``) and counted. One killed at
``maxSeconds`` already is an ordinary failure.

Pure functions on the status and the spec, plus :func:`plan`, which awaits the prediction.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from streamml.errors import StreamMLError
from streamml.sweep.sampling import Point, as_vars
from streamml.sweep.schedulers.base import JobStatus
from streamml.vocabulary.jobresult import JobResult, finite
from streamml.vocabulary.lammpssweep import LammpsSweepSpec
from streamml.vocabulary.sweepstatus import LammpsSweepStatus, TrialRecord
from streamml.vocabulary.timelimit import (
    MAX_LIMIT_SAMPLES,
    WALL_METRIC,
    LimitSample,
    PredictedTimeLimit,
    TimeLimitStatus,
)

log = logging.getLogger(__name__)

#: Predict(model, features) -> the model's prediction (None: no usable answer)
Predict = Callable[[str, Mapping[str, Any]], Awaitable[float | None]]

#: seconds of the job program around LAMMPS (writing and delivering its result): LAMMPS' own
#: timeout is the scheduler limit minus this, so LAMMPS stops first and the job says so
GRACE_S = 2
#: the user's limit is LAMMPS' timeout; the scheduler gets this much more (jobs.build_job)
USER_GRACE_S = 60
#: the newest ratios the bound is taken from (early predictions of a young model are poor)
RATIO_WINDOW = 40
#: a scheduler's words for a job it stopped at its limit (local, Flux/Slurm, Kubernetes) and
#: the job program's, for LAMMPS stopped at its timeout
KILL_REASONS = ("TimeLimit", "TIMEOUT", "DeadlineExceeded")
JOB_TIMEOUT = "LammpsTimeout"


@dataclass(frozen=True)
class Limit:
    """The limit of one job: ``seconds`` None = the user's limit from the spec (as always)."""

    seconds: int | None = None
    predicted_wall: float | None = None


def features(spec: LammpsSweepSpec, point: Point) -> dict[str, int | float | str]:
    """The features the job will report (its ``-var`` values, numbers where they are)."""
    out: dict[str, int | float | str] = {}
    for name, value in {**spec.lammps.vars, **as_vars(point)}.items():
        out[name] = _number(value)
    return out


def _number(value: str) -> int | float | str:
    for convert in (int, float):
        try:
            number = convert(value)
        except ValueError:
            continue
        return number if math.isfinite(number) else value
    return value


def conformal_factor(ratios: Sequence[float], censored: int, quantile: float) -> float | None:
    """The ``quantile`` upper bound of the ratio actual/predicted: the ceil((n+1)q)-th smallest
    of the n scored runs (censored ones above all), None when n is too small for it.

    >>> conformal_factor([1.0, 1.2, 1.1, 0.9], 0, 0.75)
    1.2
    >>> conformal_factor([1.0, 1.2, 1.1, 0.9], 1, 0.75) is None  # the censored one
    True
    """
    n = len(ratios) + censored
    k = math.ceil((n + 1) * quantile)
    ordered = sorted(ratios)
    if n == 0 or k > n or k > len(ordered):
        return None
    return ordered[max(k, 1) - 1]


def bound(prediction: float | None, rule: PredictedTimeLimit, tl: TimeLimitStatus) -> float | None:
    """The upper bound of a run's wall time from its prediction, or None (the user's limit)."""
    if prediction is None or not prediction > 0:
        return None
    ratios = tl.ratios[-RATIO_WINDOW:]
    censored = tl.censored_ratios[-RATIO_WINDOW:]
    if len(ratios) + len(censored) < rule.after:
        return None
    if rule.factor is not None:
        return rule.factor * prediction
    assert rule.quantile is not None
    factor = conformal_factor(ratios, len(censored), rule.quantile)
    return None if factor is None else prediction * factor


def scheduler_limit(bound_s: float, rule: PredictedTimeLimit) -> int:
    """The scheduler limit of a bound: whole seconds, the job's grace added, clamped."""
    return min(max(math.ceil(bound_s) + GRACE_S, rule.min_seconds), rule.max_seconds)


def user_limit(spec: LammpsSweepSpec) -> int | None:
    """The scheduler limit the user's ``timeLimitSeconds`` gives a job (jobs.build_job)."""
    limit = spec.resources.time_limit_seconds
    return limit + USER_GRACE_S if limit else None


def requested(spec: LammpsSweepSpec, record: TrialRecord) -> int | None:
    return record.time_limit_seconds or user_limit(spec)


def grown(previous: int, rule: PredictedTimeLimit) -> int | None:
    """The limit of a resubmission after a kill at ``previous``: twice it, at most maxSeconds
    (None: it cannot grow)."""
    larger = min(previous * 2, rule.max_seconds)
    return larger if larger > previous else None


def killed(result: JobResult | None, status: JobStatus) -> bool:
    """Stopped at its time limit: by LAMMPS' timeout in the job, or by the scheduler."""
    if result is not None and result.reason == JOB_TIMEOUT:
        return True
    reason = status.reason or ""
    return any(reason.startswith(word) for word in KILL_REASONS)


async def plan(
    spec: LammpsSweepSpec,
    status: LammpsSweepStatus,
    predict: Predict | None,
    trial: int,
    point: Point,
) -> Limit:
    """The limit of the next attempt of ``trial``: predicted, grown after a kill, or the user's."""
    rule = spec.resources.predicted_time_limit
    if rule is None:
        return Limit()
    tl = status.time_limits = status.time_limits or TimeLimitStatus()
    prediction = await _ask(predict, rule.from_model, features(spec, point))
    upper = bound(prediction, rule, tl)
    seconds = None if upper is None else scheduler_limit(upper, rule)
    tl.mode = "user" if seconds is None else "predicted"
    last = next((r for r in reversed(status.trials) if r.id == trial), None)
    if last is not None and last.censored:  # resubmitted: a larger limit than it was killed at
        before = requested(spec, last)
        larger = grown(before, rule) if before else None
        if larger is not None:
            seconds = max(seconds or 0, larger)
    return Limit(seconds=seconds, predicted_wall=prediction)


async def _ask(predict: Predict | None, model: str, x: Mapping[str, Any]) -> float | None:
    if predict is None:
        return None
    try:
        return finite(await predict(model, x))
    except StreamMLError as exc:  # no prediction: this job runs under the user's limit
        log.info("time limit: no prediction from %s: %s", model, exc)
        return None


def censor(
    spec: LammpsSweepSpec,
    status: LammpsSweepStatus,
    record: TrialRecord,
    result: JobResult | None,
    job: JobStatus,
) -> bool:
    """Take in a job killed at its limit: True when it is censored (resubmitted, not a
    failure); False for any other end, and for a kill at a limit that cannot grow."""
    rule = spec.resources.predicted_time_limit
    if rule is None or not killed(result, job):
        return False
    limit = requested(spec, record)
    larger = grown(limit, rule) if limit else None
    if limit is None or larger is None:
        return False
    tl = status.time_limits = status.time_limits or TimeLimitStatus()
    tl.killed += 1
    if record.time_limit_seconds is not None:
        tl.killed_predicted += 1
    if record.predicted_wall_seconds:
        tl.censored_ratios.append(round(limit / record.predicted_wall_seconds, 4))
        del tl.censored_ratios[:-MAX_LIMIT_SAMPLES]
    tl.resubmitted += 1
    record.state, record.censored = "Failed", True
    record.reason = (
        f"TimeLimit: killed at its limit of {limit} s (runtime > {limit} s: censored, not "
        f"learned); resubmitted with a limit of at least {larger} s"
    )
    status.retry_queue.append(record.id)
    status.attempts[str(record.id)] = record.attempt
    _summarize(tl)
    log.warning("sweep: %s killed at its limit of %d s (censored)", record.job_name, limit)
    return True


def observe(
    spec: LammpsSweepSpec, status: LammpsSweepStatus, record: TrialRecord, result: JobResult
) -> None:
    """Take in a completed job's wall time: a ratio to score the model, a limit sample."""
    limit = requested(spec, record)
    wall = finite(result.metrics.get(WALL_METRIC))
    if record.wall_seconds is not None or wall is None or wall <= 0:
        return  # seen already (a spooled result delivered later), or not measured
    if spec.resources.predicted_time_limit is None and limit is None:
        return
    record.wall_seconds = round(wall, 3)
    tl = status.time_limits = status.time_limits or TimeLimitStatus()
    if record.predicted_wall_seconds and record.predicted_wall_seconds > 0:
        tl.ratios.append(round(wall / record.predicted_wall_seconds, 4))
        del tl.ratios[:-MAX_LIMIT_SAMPLES]
    if limit is not None:
        predicted = record.time_limit_seconds is not None
        tl.samples.append(LimitSample(requested=limit, actual=round(wall, 3), predicted=predicted))
        del tl.samples[:-MAX_LIMIT_SAMPLES]
    _summarize(tl)


def _summarize(tl: TimeLimitStatus) -> None:
    predicted = [s.requested / s.actual for s in tl.samples if s.predicted]
    user = [s.requested / s.actual for s in tl.samples if not s.predicted]
    tl.predicted_jobs = len(predicted) + tl.killed_predicted
    tl.user_jobs = len(user) + tl.killed - tl.killed_predicted
    tl.underestimation_rate = (
        round(tl.killed_predicted / tl.predicted_jobs, 4) if tl.predicted_jobs else None
    )
    tl.median_requested_over_actual = round(statistics.median(predicted), 3) if predicted else None
    tl.median_requested_over_actual_user = round(statistics.median(user), 3) if user else None
