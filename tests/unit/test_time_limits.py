"""Predicted time limits: the limit rule, censoring, and the spec's checks (no server: the
engine's predictions come from a function; the real flow is tests/integration/
test_sweep_time_limits.py)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from streamml.errors import SpecError
from streamml.sweep import jobs, timelimits
from streamml.sweep.engine import SweepEngine
from streamml.sweep.sampling import plan
from streamml.sweep.schedulers.base import JobRequest, JobState, JobStatus
from streamml.sweep.spec import validate
from streamml.sweep.state import FileStore
from streamml.vocabulary.jobresult import JobResult
from streamml.vocabulary.lammpssweep import LammpsSweepSpec
from streamml.vocabulary.sweepstatus import LammpsSweepStatus, TrialRecord
from streamml.vocabulary.timelimit import PredictedTimeLimit, TimeLimitStatus
from tests.unit.test_sweep_engine import FakeScheduler, _values

TARGETS = [
    {"name": "loop", "metric": "loop_time", "models": ["loop-lin"]},
    {"name": "wall", "metric": "job_wall_time", "models": ["wall-lin"]},
]


def _spec(limit: dict[str, Any] | None = None, **over: Any) -> LammpsSweepSpec:
    doc: dict[str, Any] = {
        "streamModelRef": {"name": "m"},
        "parameters": [{"name": "nx", "type": "int", "min": 1, "max": 6}],
        "trials": 6,
        "parallelism": 1,
        "maxFailures": 0,
        "targets": TARGETS,
        "resources": {
            "timeLimitSeconds": 100,
            "predictedTimeLimit": limit
            or {"fromModel": "wall-lin", "quantile": 0.5, "minSeconds": 3, "maxSeconds": 40,
                "after": 2},
        },
    }  # fmt: skip
    doc.update(over)
    return LammpsSweepSpec.model_validate(doc)


def _rule(**over: Any) -> PredictedTimeLimit:
    return PredictedTimeLimit.model_validate({"fromModel": "w", "quantile": 0.9, **over})


# -- the limit rule ----------------------------------------------------------------------------


def test_conformal_factor_is_the_finite_sample_quantile_of_the_ratios() -> None:
    ratios = [1.0 + i / 100 for i in range(19)]  # 1.00 .. 1.18
    # n=19, q=0.9: the ceil(20 * 0.9) = 18th smallest
    assert timelimits.conformal_factor(ratios, 0, 0.9) == pytest.approx(1.17)
    # too few runs for the quantile: no bound (the user's limit stays)
    assert timelimits.conformal_factor(ratios[:5], 0, 0.9) is None
    # a censored run counts above every ratio: n=20, the 19th smallest; with two, the 20th of
    # 21 is a censored one (its ratio is unknown: no bound)
    assert timelimits.conformal_factor(ratios, 1, 0.9) == pytest.approx(1.18)
    assert timelimits.conformal_factor(ratios, 2, 0.9) is None


def test_bound_waits_for_after_runs_then_scales_the_prediction() -> None:
    tl = TimeLimitStatus(ratios=[0.9, 1.1, 1.3])
    assert timelimits.bound(10.0, _rule(quantile=0.5, after=4), tl) is None  # 3 runs < after
    assert timelimits.bound(10.0, _rule(quantile=0.5, after=3), tl) == pytest.approx(11.0)
    assert timelimits.bound(10.0, _rule(quantile=None, factor=2.0, after=3), tl) == 20.0
    # no usable prediction (a young model's zero, a negative one): the user's limit
    assert timelimits.bound(0.0, _rule(after=1), tl) is None
    assert timelimits.bound(-3.0, _rule(after=1), tl) is None


def test_scheduler_limit_adds_the_grace_and_clamps() -> None:
    rule = _rule(minSeconds=5, maxSeconds=30)
    assert timelimits.scheduler_limit(10.2, rule) == 11 + timelimits.GRACE_S
    assert timelimits.scheduler_limit(0.5, rule) == 5
    assert timelimits.scheduler_limit(500.0, rule) == 30


def test_a_killed_limit_grows_twofold_up_to_max() -> None:
    rule = _rule(maxSeconds=30)
    assert timelimits.grown(10, rule) == 20
    assert timelimits.grown(20, rule) == 30
    assert timelimits.grown(30, rule) is None


@pytest.mark.parametrize(
    ("reason", "result_reason", "killed"),
    [
        ("TimeLimit", None, True),  # local
        ("TIMEOUT", None, True),  # Flux, Slurm
        ("DeadlineExceeded: Error", None, True),  # a Job past activeDeadlineSeconds
        ("NonZeroExitCode 1: x", "LammpsTimeout", True),  # LAMMPS stopped by the job
        ("NonZeroExitCode 1: x", "LammpsError", False),
        (None, None, False),
    ],
)
def test_killed_reads_the_scheduler_and_the_job(
    reason: str | None, result_reason: str | None, killed: bool
) -> None:
    result = JobResult(reason=result_reason) if result_reason else None
    assert timelimits.killed(result, JobStatus(JobState.FAILED, reason=reason)) is killed


# -- censoring and observing -------------------------------------------------------------------


def test_a_censored_run_is_counted_and_requeued_never_a_ratio() -> None:
    spec, status = _spec(), LammpsSweepStatus()
    record = TrialRecord(id=3, role="train", attempt=1, job_name="j", state="Running",
                         time_limit_seconds=12, predicted_wall_seconds=6.0)  # fmt: skip
    killed = JobStatus(JobState.FAILED, reason="TimeLimit")
    assert timelimits.censor(spec, status, record, None, killed)
    assert record.censored and record.state == "Failed" and "12 s" in (record.reason or "")
    assert status.retry_queue == [3] and status.attempts == {"3": 1}
    tl = status.time_limits
    assert tl is not None and tl.killed == tl.killed_predicted == tl.resubmitted == 1
    assert tl.ratios == [] and tl.censored_ratios == [2.0]  # a lower bound, kept apart
    assert tl.underestimation_rate == 1.0 and status.failed == 0
    # an ordinary failure is not censored
    other = TrialRecord(id=4, role="train", attempt=1, job_name="k", time_limit_seconds=12)
    failed = JobStatus(JobState.FAILED, reason="NonZeroExitCode 1: x")
    assert not timelimits.censor(spec, status, other, JobResult(reason="LammpsError"), failed)
    # a kill at maxSeconds cannot grow: an ordinary failure
    top = TrialRecord(id=5, role="train", attempt=2, job_name="l", time_limit_seconds=40)
    assert not timelimits.censor(spec, status, top, None, killed)


def test_a_sweep_without_a_predicted_limit_keeps_its_failures() -> None:
    spec = LammpsSweepSpec.model_validate(
        {"streamModelRef": {"name": "m"}, "trials": 1, "resources": {"timeLimitSeconds": 5},
         "parameters": [{"name": "nx", "type": "int", "min": 1, "max": 6}]}
    )  # fmt: skip
    record = TrialRecord(id=0, role="train", attempt=1, job_name="j")
    killed = JobStatus(JobState.FAILED, reason="TimeLimit")
    assert not timelimits.censor(spec, LammpsSweepStatus(), record, None, killed)


def test_observe_scores_the_prediction_and_the_limit_once() -> None:
    spec, status = _spec(), LammpsSweepStatus()
    record = TrialRecord(id=1, role="train", attempt=1, job_name="j",
                         time_limit_seconds=15, predicted_wall_seconds=4.0)  # fmt: skip
    result = JobResult(metrics={"job_wall_time": 5.0, "loop_time": 4.1})
    timelimits.observe(spec, status, record, result)
    timelimits.observe(spec, status, record, result)  # a spooled result taken in again
    tl = status.time_limits
    assert tl is not None and tl.ratios == [1.25] and len(tl.samples) == 1
    assert tl.median_requested_over_actual == 3.0 and tl.predicted_jobs == 1
    assert tl.underestimation_rate == 0.0 and record.wall_seconds == 5.0
    # a run under the user's limit (100 s + the scheduler's minute) is scored apart
    user = TrialRecord(id=2, role="train", attempt=1, job_name="k", predicted_wall_seconds=8.0)
    timelimits.observe(spec, status, user, JobResult(metrics={"job_wall_time": 8.0}))
    assert tl.ratios == [1.25, 1.0] and tl.median_requested_over_actual_user == 20.0


async def test_plan_predicts_then_grows_a_censored_trial() -> None:
    spec, status = _spec(), LammpsSweepStatus()
    asked: list[Mapping[str, Any]] = []

    async def predict(model: str, x: Mapping[str, Any]) -> float | None:
        assert model == "wall-lin"
        asked.append(x)
        return 2.0 * x["nx"]

    point = plan(spec)[0]
    first = await timelimits.plan(spec, status, predict, 0, point)
    assert first.seconds is None and first.predicted_wall == 2.0 * point["nx"]  # after: 2
    assert asked == [{"nx": point["nx"]}]
    status.time_limits = TimeLimitStatus(ratios=[1.0, 1.5])
    second = await timelimits.plan(spec, status, predict, 0, point)
    rule = spec.resources.predicted_time_limit
    assert rule is not None
    expected = timelimits.scheduler_limit(2.0 * float(point["nx"]) * 1.5, rule)
    assert second.seconds == expected and status.time_limits.mode == "predicted"
    status.trials.append(TrialRecord(id=0, role="train", attempt=1, job_name="j",
                                     time_limit_seconds=expected, censored=True))  # fmt: skip
    third = await timelimits.plan(spec, status, predict, 0, point)
    assert third.seconds == min(2 * expected, 40)


# -- the engine --------------------------------------------------------------------------------


class LimitScheduler(FakeScheduler):
    """A job whose scheduler limit is below its runtime (nx x 3 s) is killed at its limit."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir, fail=self._over)
        self.limits: dict[str, int | None] = {}

    def _over(self, job: JobRequest) -> str | None:
        self.limits[job.name] = job.time_limit_s
        nx = int(next(v for v in _values(list(job.command), "--var") if v.startswith("nx="))[3:])
        limit = job.time_limit_s
        return "TimeLimit" if limit is not None and limit < 3 * nx else None

    def _finish(self, job: JobRequest, reason: str | None) -> JobState:
        args = list(job.command)
        nx = int(next(v for v in _values(args, "--var") if v.startswith("nx="))[3:])
        wall = 3.0 * nx
        doc: dict[str, Any] = {"trial": _values(args, "--trial-id")[0], "delivered": not reason}
        if reason:  # LAMMPS stopped at its timeout: no target, nothing learned
            doc |= {"error": "LammpsTimeout: LAMMPS did not finish", "reason": "LammpsTimeout"}
        else:
            doc |= {"target": wall, "targets": {"loop": wall - 1, "wall": wall},
                    "metrics": {"job_wall_time": wall}}  # fmt: skip
        Path(_values(args, "--result-file")[0]).parent.mkdir(parents=True, exist_ok=True)
        Path(_values(args, "--result-file")[0]).write_text(json.dumps(doc))
        return JobState.FAILED if reason else JobState.SUCCEEDED

    async def poll(self, job_ids: Any) -> dict[str, JobStatus]:
        out = await super().poll(job_ids)
        return {
            i: JobStatus(s.state, reason=self.reasons.get(i) if s.state.finished else None)
            for i, s in out.items()
        }


async def test_the_engine_resubmits_a_censored_trial_with_a_larger_limit(tmp_path: Path) -> None:
    spec = _spec(
        {"fromModel": "wall-lin", "factor": 1.0, "minSeconds": 1, "maxSeconds": 40, "after": 1}
    )

    async def predict(model: str, x: Mapping[str, Any]) -> float | None:
        return 1.0 * x["nx"]  # three times too small: the first predicted limits are killed

    sched = LimitScheduler(tmp_path)
    ctx = jobs.JobContext(server="http://127.0.0.1:9", workdir=tmp_path, identity="uid-1")
    engine = SweepEngine("t", spec, sched, FileStore(tmp_path / "s.json"), ctx, wall_time=predict)
    for _ in range(200):
        if await engine.tick():
            break
    status = engine.status
    assert status.phase == "Succeeded" and status.failed == 0  # kills are no failures
    tl = status.time_limits
    assert tl is not None and tl.killed >= 1 and tl.resubmitted == tl.killed
    censored = [r for r in status.trials if r.censored]
    assert censored and all(r.target is None for r in censored)  # never a sample
    for record in censored:  # its next attempt ran with a larger limit
        after = next(r for r in status.trials if r.id == record.id and r.attempt > record.attempt)
        assert (after.time_limit_seconds or 0) > (record.time_limit_seconds or 0)
        assert sched.limits[after.job_name] == after.time_limit_seconds
    first = sched.jobs["1"]  # nothing scored yet: the user's limit, as ever
    assert first.time_limit_s == 160 and _values(list(first.command), "--timeout") == ["100"]
    job = next(sched.jobs[i] for i in sorted(sched.jobs, key=int)[1:])
    timeout = _values(list(job.command), "--timeout")  # LAMMPS stops first, the job reports
    assert job.time_limit_s is not None and timeout == [str(job.time_limit_s - 2)]


# -- the spec ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "message"),
    [
        ({"fromModel": "nope", "quantile": 0.9},
         "spec.resources.predictedTimeLimit.fromModel: model 'nope' is not a model of"),
        ({"fromModel": "loop-lin", "quantile": 0.9},
         "spec.resources.predictedTimeLimit.fromModel: model 'loop-lin' learns target 'loop'"),
        ({"fromModel": "wall-lin", "quantile": 1.0},
         "spec.resources.predictedTimeLimit.quantile: Input should be less than 1"),
        ({"fromModel": "wall-lin", "quantile": 0.0},
         "spec.resources.predictedTimeLimit.quantile: Input should be greater than 0"),
        ({"fromModel": "wall-lin", "factor": 0.5},
         "spec.resources.predictedTimeLimit.factor: Input should be greater than or equal to 1"),
        ({"fromModel": "wall-lin", "quantile": 0.9, "factor": 2},
         "spec.resources.predictedTimeLimit: Value error, give exactly one of quantile or factor"),
        ({"fromModel": "wall-lin", "quantile": 0.9, "minSeconds": 9, "maxSeconds": 8},
         "spec.resources.predictedTimeLimit: Value error, minSeconds: 9 is larger than "
         "maxSeconds 8"),
    ],
)  # fmt: skip
def test_bad_predicted_limits_name_their_field(limit: dict[str, Any], message: str) -> None:
    raw = _spec().model_dump(by_alias=True, exclude_none=True)
    raw["resources"]["predictedTimeLimit"] = limit
    with pytest.raises(SpecError) as err:
        validate(raw)
    assert str(err.value).startswith(message), str(err.value)
    assert (err.value.field or "").startswith("resources.predictedTimeLimit")


def test_a_predicted_limit_needs_the_features_known_before_the_run() -> None:
    with pytest.raises(ValidationError, match=r"lammps\.features"):
        _spec(lammps={"features": "vars+atoms"})


def test_existing_specs_keep_their_limits(tmp_path: Path) -> None:
    spec = LammpsSweepSpec.model_validate(
        {"streamModelRef": {"name": "m"}, "trials": 1, "resources": {"timeLimitSeconds": 30},
         "parameters": [{"name": "nx", "type": "int", "min": 1, "max": 6}]}
    )  # fmt: skip
    ctx = jobs.JobContext(server="http://127.0.0.1:9", workdir=tmp_path, identity="u")
    job = jobs.build_job(spec, ctx, trial=0, attempt=1, point={"nx": 2}, test=False, sweep="s")
    assert job.time_limit_s == 90 and _values(list(job.command), "--timeout") == ["30"]
