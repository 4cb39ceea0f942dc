"""The sweep engine's state machine, with an in-memory scheduler used ONLY to inject failures a
real backend cannot produce on demand: a crash between recording and submitting, a reply lost
between submit and the status write, a job that fails on its first attempts. The real flow
(local backend, run-lammps, model server) is in tests/integration/test_sweep_*.py.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from streamml.errors import SchedulerError, SpecError
from streamml.sweep import jobs
from streamml.sweep.engine import SweepEngine
from streamml.sweep.sampling import plan
from streamml.sweep.schedulers.base import JobRequest, JobState, JobStatus
from streamml.sweep.state import FileStore
from streamml.vocabulary import conditions
from streamml.vocabulary.lammpssweep import LammpsSweepSpec
from streamml.vocabulary.sweepstatus import LammpsSweepStatus


class Crash(Exception):
    """Stands for the driver process dying at this point."""


class FakeScheduler:
    """Jobs finish on the poll after the one that saw them run; they write a result file."""

    name = "fake"

    def __init__(self, workdir: Path, fail: Callable[[JobRequest], str | None] | None = None):
        self.workdir = workdir
        self.fail = fail or (lambda job: None)
        self.jobs: dict[str, JobRequest] = {}
        self.reasons: dict[str, str | None] = {}
        self.polls: dict[str, int] = {}
        self.duration = 1  # polls a job spends running
        self.state: dict[str, JobState] = {}
        self.submissions: list[str] = []
        self.cancelled: list[str] = []
        self.crash_after_submit = False

    async def submit(self, job: JobRequest) -> str:
        job_id = f"{len(self.submissions) + 1}"
        self.jobs[job_id] = job
        self.reasons[job_id] = self.fail(job)
        self.state[job_id] = JobState.PENDING
        self.submissions.append(job.name)
        if self.crash_after_submit:
            self.crash_after_submit = False
            raise Crash("lost reply")
        return job_id

    async def poll(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        out = {}
        for job_id in job_ids:
            state = self.state.get(job_id, JobState.UNKNOWN)
            if state == JobState.PENDING and self.reasons[job_id]:  # fails at start
                self.state[job_id] = self._finish(self.jobs[job_id], self.reasons[job_id])
            elif state == JobState.PENDING:
                self.state[job_id] = JobState.RUNNING
            elif state == JobState.RUNNING:
                self.polls[job_id] = self.polls.get(job_id, 0) + 1
                if self.polls[job_id] >= self.duration:
                    self.state[job_id] = self._finish(self.jobs[job_id], None)
            out[job_id] = JobStatus(self.state.get(job_id, JobState.UNKNOWN), reason="x")
        return out

    def _finish(self, job: JobRequest, reason: str | None) -> JobState:
        args = list(job.command)
        variables = dict(v.split("=", 1) for v in _values(args, "--var"))
        doc: dict[str, Any] = {"trial": _values(args, "--trial-id")[0], "delivered": True}
        if reason:
            doc |= {"error": reason, "target": None}
        else:
            target = float(variables["nx"]) * float(variables["ny"])
            doc["target"] = target
            if "--test" in args:  # two "models": a perfect one and one off by 2
                doc["predictions"] = {"exact": target, "off": target + 2.0}
        path = Path(_values(args, "--result-file")[0])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc))
        return JobState.FAILED if reason else JobState.SUCCEEDED

    async def lookup(self, name: str) -> str | None:
        found = [i for i, j in self.jobs.items() if j.name == name]
        return found[-1] if found else None

    async def cancel(self, job_id: str) -> None:
        if job_id in self.state and not self.state[job_id].finished:
            self.state[job_id] = JobState.CANCELLED
            self.cancelled.append(job_id)

    async def close(self) -> None:
        pass


def _values(args: list[str], flag: str) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args) if a == flag]


class CrashingStore(FileStore):
    """A file store whose Nth save raises after (or instead of) writing."""

    def __init__(self, path: Path, crash_at: int | None = None) -> None:
        super().__init__(path)
        self.saves = 0
        self.crash_at = crash_at

    async def save(self, status: LammpsSweepStatus) -> None:
        self.saves += 1
        if self.saves == self.crash_at:
            raise Crash(f"crash at save {self.saves}")
        await super().save(status)


def _spec(**over: Any) -> LammpsSweepSpec:
    doc: dict[str, Any] = {
        "streamModelRef": {"name": "m"},
        "parameters": [
            {"name": "nx", "type": "int", "min": 1, "max": 6},
            {"name": "ny", "type": "int", "min": 1, "max": 6},
        ],
        "trials": 8,
        "testTrials": 3,
        "parallelism": 3,
        "maxFailures": 2,
        "sampling": {"seed": 11},
    }
    doc.update(over)
    return LammpsSweepSpec.model_validate(doc)


def _engine(
    tmp: Path, spec: LammpsSweepSpec, sched: FakeScheduler, store: FileStore
) -> SweepEngine:
    ctx = jobs.JobContext(server="http://127.0.0.1:9", workdir=tmp, identity="uid-1")
    return SweepEngine("demo", spec, sched, store, ctx)


def _name(trial: int, attempt: int) -> str:
    """The job name of the engine tests' sweep (``_engine``: "demo", identity uid-1)."""
    return jobs.job_name("demo", trial, attempt, "uid-1")


async def _drive(engine: SweepEngine, limit: int = 200) -> None:
    for _ in range(limit):
        if await engine.tick():
            return
    raise AssertionError("the sweep did not finish")


async def test_sweep_completes_and_evaluates(tmp_path: Path) -> None:
    sched = FakeScheduler(tmp_path)
    spec = _spec()
    store = FileStore(tmp_path / "state.json")
    engine = _engine(tmp_path, spec, sched, store)
    in_flight = []
    for _ in range(200):
        done = await engine.tick()
        in_flight.append(sum(r.state in ("Pending", "Running") for r in engine.status.trials))
        if done:
            break
    status = await store.load()
    assert status is not None and status.phase == "Succeeded"
    assert max(in_flight) <= spec.parallelism
    assert status.succeeded == 11 and status.failed == 0 and status.submitted == 11
    assert status.progress == "11/11"
    assert sorted(Counter(sched.submissions).values()) == [1] * 11
    # held-out trials ran only after every training trial had finished
    names = sched.submissions
    first_test = min(i for i, n in enumerate(names) if int(n.split("-t")[1][:5]) >= 8)
    assert first_test == 8
    # evaluation from the predictions the jobs reported vs. their targets
    ev = {e.model: e for e in status.evaluation}
    assert ev["exact"].mae == 0 and ev["exact"].r2 == 1.0 and ev["exact"].n == 3
    assert ev["off"].mae == pytest.approx(2.0) and ev["off"].rmse == pytest.approx(2.0)
    targets = [r.target for r in status.test_results]
    mean = sum(targets) / 3
    sst = sum((t - mean) ** 2 for t in targets)
    assert ev["off"].r2 == pytest.approx(1 - 12.0 / sst)
    assert status.best_model == "exact" and status.held_out_r2 == 1.0
    # the test points are the plan's held-out points
    points = plan(spec)
    assert {r.id for r in status.test_results} == {8, 9, 10}
    for r in status.test_results:
        assert r.target == points[r.id]["nx"] * points[r.id]["ny"]  # type: ignore[operator]
    cond = {c.type: c for c in status.conditions}
    assert cond["Complete"].status == "True" and cond["Ready"].reason == "Succeeded"
    assert status.completion_time is not None and status.start_time is not None


async def test_failed_trials_are_retried_with_reason(tmp_path: Path) -> None:
    attempts: Counter[str] = Counter()

    def fail(job: JobRequest) -> str | None:
        trial = job.name.split("-a")[0]
        attempts[trial] += 1
        if trial.endswith("t00002") and attempts[trial] <= 2:
            return "ERROR: Lost atoms: original 32 current 30"
        return None

    sched = FakeScheduler(tmp_path, fail)
    store = FileStore(tmp_path / "s.json")
    engine = _engine(tmp_path, _spec(maxFailures=2), sched, store)
    await _drive(engine)
    status = engine.status
    assert status.phase == "Succeeded"
    assert status.failed == 2
    tries = [r for r in status.trials if r.id == 2]
    assert [r.attempt for r in tries] == [1, 2, 3]
    assert [r.state for r in tries] == ["Failed", "Failed", "Succeeded"]
    assert tries[0].reason == "ERROR: Lost atoms: original 32 current 30"
    assert [n for n in sched.submissions if "-t00002-" in n] == [
        _name(2, 1),
        _name(2, 2),
        _name(2, 3),
    ]


async def test_every_attempt_records_when_it_was_submitted_and_when_it_ended(
    tmp_path: Path,
) -> None:
    def fail(job: JobRequest) -> str | None:
        return "ERROR: Lost atoms" if job.name == _name(1, 1) else None

    store = FileStore(tmp_path / "s.json")
    engine = _engine(tmp_path, _spec(maxFailures=1), FakeScheduler(tmp_path, fail), store)
    before = datetime.now(UTC).replace(microsecond=0)  # the stamps keep milliseconds
    await _drive(engine)
    after = datetime.now(UTC)
    status = await store.load()
    assert status is not None and len(status.trials) == 12  # 11 trials, one of them twice
    for record in status.trials:
        assert record.submitted_at is not None and record.finished_at is not None, record
        submitted = datetime.fromisoformat(record.submitted_at)
        finished = datetime.fromisoformat(record.finished_at)
        assert before <= submitted <= finished <= after
        assert record.submitted_at.endswith("Z") and "." in record.submitted_at
    retried = [r for r in status.trials if r.id == 1]
    assert [r.state for r in retried] == ["Failed", "Succeeded"]
    assert retried[0].finished_at <= retried[1].submitted_at  # type: ignore[operator]


async def test_too_many_failures_fail_the_sweep_and_cancel(tmp_path: Path) -> None:
    sched = FakeScheduler(tmp_path, lambda j: "ERROR: bad input" if "-t00000-" in j.name else None)
    sched.duration = 5
    spec = _spec(maxFailures=1, parallelism=4)
    engine = _engine(tmp_path, spec, sched, FileStore(tmp_path / "s"))
    await _drive(engine)
    status = engine.status
    assert status.phase == "Failed"
    assert status.failed == 2
    ready = conditions.find(status.conditions, "Ready")
    assert ready is not None and ready.reason == "TooManyFailures"
    assert "ERROR: bad input" in ready.message
    assert all(r.state not in ("Pending", "Running", "Submitting") for r in status.trials)
    assert sorted(sched.cancelled) == ["2", "3", "4"]  # the runs still in flight
    assert status.succeeded == 0 and status.progress == "0/11"
    assert await engine.tick() is True  # a finished sweep stays finished


async def test_submit_refused_counts_as_failure(tmp_path: Path) -> None:
    sched = FakeScheduler(tmp_path)
    calls = 0
    real_submit = sched.submit

    async def refuse_first(job: JobRequest) -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise SchedulerError("sbatch: error: invalid partition specified: nope")
        return await real_submit(job)

    sched.submit = refuse_first  # type: ignore[method-assign]
    engine = _engine(tmp_path, _spec(), sched, FileStore(tmp_path / "s"))
    await _drive(engine)
    assert engine.status.phase == "Succeeded" and engine.status.failed == 1
    refused = engine.status.trials[0]
    assert refused.state == "Failed" and "invalid partition" in (refused.reason or "")


@pytest.mark.parametrize("crash_at", range(1, 31))  # a full run saves 31 times
async def test_crash_anywhere_never_submits_twice_nor_forgets(
    tmp_path: Path, crash_at: int
) -> None:
    """Kill the driver at save N, restart it on the same state: each job submitted once."""
    sched = FakeScheduler(tmp_path)
    spec = _spec()
    store = CrashingStore(tmp_path / "s.json", crash_at=crash_at)
    with pytest.raises(Crash):
        await _drive(_engine(tmp_path, spec, sched, store))
    restarted = _engine(tmp_path, spec, sched, FileStore(tmp_path / "s.json"))
    await _drive(restarted)
    assert restarted.status.phase == "Succeeded"
    counts = Counter(sched.submissions)
    assert set(counts.values()) == {1}, counts
    assert len(counts) == 11
    assert restarted.status.submitted == 11


async def test_lost_reply_between_submit_and_status_write(tmp_path: Path) -> None:
    """The scheduler took the job but the driver died before saving its id: adopt, not resubmit."""
    sched = FakeScheduler(tmp_path)
    sched.crash_after_submit = True
    spec = _spec()
    with pytest.raises(Crash):
        await _drive(_engine(tmp_path, spec, sched, FileStore(tmp_path / "s.json")))
    saved = await FileStore(tmp_path / "s.json").load()
    assert saved is not None
    assert [(r.state, r.job_id) for r in saved.trials] == [("Submitting", None)]
    restarted = _engine(tmp_path, spec, sched, FileStore(tmp_path / "s.json"))
    await restarted.load()
    assert restarted.status.trials[0].job_id == "1"  # found by name
    await _drive(restarted)
    assert sorted(Counter(sched.submissions).values()) == [1] * 11


async def test_crash_before_submit_submits_on_restart(tmp_path: Path) -> None:
    sched = FakeScheduler(tmp_path)
    spec = _spec()

    async def die(job: JobRequest) -> str:
        raise Crash("died before the submit")

    real = sched.submit
    sched.submit = die  # type: ignore[method-assign]
    with pytest.raises(Crash):
        await _drive(_engine(tmp_path, spec, sched, FileStore(tmp_path / "s.json")))
    sched.submit = real  # type: ignore[method-assign]
    restarted = _engine(tmp_path, spec, sched, FileStore(tmp_path / "s.json"))
    await _drive(restarted)
    assert sched.submissions[0] == _name(0, 1)
    assert sorted(Counter(sched.submissions).values()) == [1] * 11


async def test_suspend_cancels_and_resume_finishes(tmp_path: Path) -> None:
    sched = FakeScheduler(tmp_path)
    spec = _spec()
    engine = _engine(tmp_path, spec, sched, FileStore(tmp_path / "s.json"))
    await engine.tick()
    assert engine.status.submitted == 3
    engine.update_spec(_spec(suspend=True))
    await engine.tick()
    assert engine.status.phase == "Suspended"
    assert len(sched.cancelled) == 3
    assert engine.status.failed == 0
    before = len(sched.submissions)
    await engine.tick()
    assert len(sched.submissions) == before  # nothing submitted while suspended
    engine.update_spec(_spec(suspend=False))
    await _drive(engine)
    assert engine.status.phase == "Succeeded" and engine.status.succeeded == 11
    assert {n for n in sched.submissions if n.endswith("-a2")} == {
        _name(0, 2),
        _name(1, 2),
        _name(2, 2),
    }


async def test_cancel_all_cancels_in_flight(tmp_path: Path) -> None:
    sched = FakeScheduler(tmp_path)
    engine = _engine(tmp_path, _spec(), sched, FileStore(tmp_path / "s.json"))
    await engine.tick()
    assert await engine.cancel_all("deleted") == 3
    assert sorted(sched.cancelled) == ["1", "2", "3"]
    assert {r.state for r in engine.status.trials} == {"Cancelled"}


async def test_space_edited_after_start_is_a_spec_error(tmp_path: Path) -> None:
    sched = FakeScheduler(tmp_path)
    store = FileStore(tmp_path / "s.json")
    engine = _engine(tmp_path, _spec(), sched, store)
    await engine.tick()
    with pytest.raises(SpecError) as info:
        engine.update_spec(_spec(trials=9))
    assert info.value.field == "parameters"
    engine.update_spec(_spec(parallelism=1, maxFailures=5))  # allowed
    with pytest.raises(SpecError):
        await _engine(tmp_path, _spec(sampling={"seed": 12}), sched, store).load()


async def test_a_spec_handed_over_every_tick_is_planned_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The operator passes the spec on every tick; planning a 10,000-trial space each time
    would keep it busy. Only an edit of the space plans again (and is refused)."""
    from streamml.sweep import engine as sweep_module

    engine = _engine(tmp_path, _spec(), FakeScheduler(tmp_path), FileStore(tmp_path / "s.json"))
    await engine.tick()
    calls: list[int] = []
    real = sweep_module.plan
    monkeypatch.setattr(sweep_module, "plan", lambda spec: calls.append(1) or real(spec))
    for parallelism in (1, 2, 3, 1, 2):
        engine.update_spec(_spec(parallelism=parallelism))
    assert calls == []
    with pytest.raises(SpecError):
        engine.update_spec(_spec(trials=9))
    assert calls == [1]


async def test_spooled_results_wait_for_delivery(tmp_path: Path) -> None:
    sched = FakeScheduler(tmp_path)
    finish = sched._finish

    def spooling_finish(job: JobRequest, reason: str | None) -> JobState:
        state = finish(job, reason)
        path = Path(_values(list(job.command), "--result-file")[0])
        doc = json.loads(path.read_text())
        doc |= {"delivered": False, "spooled": "x", "error": "connection refused"}
        path.write_text(json.dumps(doc))
        return state

    sched._finish = spooling_finish  # type: ignore[method-assign]
    server_up = False

    async def redeliver() -> None:
        if not server_up:
            raise SchedulerError("still down")
        for path in tmp_path.glob("trials/*/result.json"):
            doc = json.loads(path.read_text())
            path.write_text(json.dumps(doc | {"delivered": True}))

    ctx = jobs.JobContext(server="http://127.0.0.1:9", workdir=tmp_path, identity="u")
    engine = SweepEngine(
        "demo",
        _spec(trials=3, testTrials=0),
        sched,
        FileStore(tmp_path / "s"),
        ctx,
        redeliver=redeliver,
    )
    for _ in range(10):
        assert not await engine.tick()
    assert {r.state for r in engine.status.trials} == {"Spooled"}
    assert engine.status.succeeded == 0
    server_up = True
    await _drive(engine)
    assert engine.status.succeeded == 3 and len(sched.submissions) == 3


def test_file_store_rejects_garbage(tmp_path: Path) -> None:
    import asyncio

    path = tmp_path / "state.json"
    path.write_text("{not json")
    with pytest.raises(SpecError):
        asyncio.run(FileStore(path).load())


def test_job_request_carries_no_secret(tmp_path: Path) -> None:
    ctx = jobs.JobContext(
        server="http://127.0.0.1:1",
        workdir=tmp_path,
        identity="u",
        env={"STREAMML_TOKEN_FILE": str(tmp_path / "t")},
        models=["a", "b"],
    )
    spec = _spec(lammps={"vars": {"steps": "20"}, "mpiProcs": 2})
    point = {"nx": 3, "ny": 4}
    req = jobs.build_job(spec, ctx, trial=9, attempt=2, point=point, test=True, sweep="S_x")
    assert req.name.startswith("s-x-") and req.name.endswith("-t00009-a2")
    args = list(req.command)
    assert _values(args, "--var") == ["steps=20", "nx=3", "ny=4"]
    assert _values(args, "--model") == ["a", "b"] and "--test" in args
    assert _values(args, "--mpirun") == ["2"] and req.cpus == 2
    assert _values(args, "--trial-id") == ["u/t00009"]
    assert req.env["STREAMML_TOKEN_FILE"].endswith("/t")
    long = jobs.job_name("x" * 200, 1, 99, "u")
    assert len(long) <= 63 and long == jobs.job_name("x" * 200, 1, 99, "u")
    # two sweeps of one name (two namespaces: two uids) never share a job name
    assert jobs.job_name("S_x", 9, 2, "uid-a") != jobs.job_name("S_x", 9, 2, "uid-b")


def test_curve_is_bounded_and_keeps_newest() -> None:
    from streamml.vocabulary.sweepstatus import MAX_CURVE_POINTS, CurvePoint

    points: list[CurvePoint] = []
    for i in range(1, 1000):
        jobs.add_point(points, CurvePoint(trials=i, samples=i, value=1 / i))
    assert len(points) <= MAX_CURVE_POINTS
    assert points[-1].trials == 999
    assert [p.trials for p in points] == sorted(p.trials for p in points)


def test_evaluate_handles_constant_targets() -> None:
    from streamml.vocabulary.sweepstatus import HeldOutResult

    ev = jobs.evaluate([HeldOutResult(id=i, target=1.0, predictions={"m": 2.0}) for i in range(3)])
    assert ev[0].r2 is None and ev[0].mae == 1.0 and math.isclose(ev[0].rmse or 0, 1.0)
