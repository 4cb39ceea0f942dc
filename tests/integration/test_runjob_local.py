"""The ``local`` backend: real run-lammps jobs in a bounded pool that survives a restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from streamml.errors import SchedulerError, SpecError, UnknownComponentError
from streamml.sweep.schedulers import JobRequest, JobState, make_scheduler
from streamml.sweep.schedulers.local import LocalScheduler
from tests.fixtures.server import ServerProcess
from tests.integration import scheduler_cases as cases

pytestmark = [pytest.mark.integration]


@pytest.fixture
def server(model_server: ServerProcess) -> ServerProcess:
    return model_server


@pytest.mark.lammps
async def test_lammps_trial_learns(server: ServerProcess, tmp_path: Path, lammps_bin: str) -> None:
    scheduler = make_scheduler("local", {"root": str(tmp_path / "jobs"), "maxParallel": 2})
    await cases.case_lammps_trial_learns(scheduler, server, tmp_path)
    await cases.case_lammps_failure_reason(scheduler, server, tmp_path)
    await scheduler.close()


async def test_cancel_and_unknown_ids(tmp_path: Path) -> None:
    scheduler = LocalScheduler(tmp_path / "jobs", max_parallel=1)
    await cases.case_cancel(scheduler, tmp_path)
    await cases.case_unknown_ids(scheduler)


async def test_bounded_pool_and_restart(tmp_path: Path) -> None:
    """At most max_parallel jobs run; a new scheduler on the same root finishes the queue."""
    first = LocalScheduler(tmp_path / "jobs", max_parallel=1)
    marker = tmp_path / "ran"
    ids = [
        await first.submit(
            JobRequest(name=f"q{i}", command=["sh", "-c", f"sleep 0.3; echo {i} >> {marker}"])
        )
        for i in range(3)
    ]
    states = await first.poll(ids)
    assert [s.state for s in states.values()].count(JobState.RUNNING) == 1
    assert [s.state for s in states.values()].count(JobState.PENDING) == 2
    del first  # the driver "restarts": a new process would see only the directory

    second = LocalScheduler(tmp_path / "jobs", max_parallel=1)
    assert await second.lookup("q1") == ids[1]
    while True:
        states = await second.poll(ids)
        running = [s.state for s in states.values()].count(JobState.RUNNING)
        assert running <= 1
        if all(s.state.finished for s in states.values()):
            break
        await asyncio.sleep(0.05)
    assert {s.state for s in states.values()} == {JobState.SUCCEEDED}
    assert marker.read_text().split() == ["0", "1", "2"]  # each ran once, in submission order


async def test_failure_reason_time_limit_and_env(tmp_path: Path) -> None:
    scheduler = LocalScheduler(tmp_path / "jobs", max_parallel=2)
    failing = await scheduler.submit(
        JobRequest(
            name="f",
            command=["sh", "-c", 'echo "boom: $WHY" >&2; exit 7'],
            env={"WHY": "a b; $(x)"},
        )
    )
    slow = await scheduler.submit(JobRequest(name="s", command=["sleep", "30"], time_limit_s=1))
    status, _ = await cases.wait_finished(scheduler, failing)
    assert status.state is JobState.FAILED and status.exit_code == 7
    assert status.reason == "NonZeroExitCode 7: boom: a b; $(x)"
    status, _ = await cases.wait_finished(scheduler, slow)
    assert status.state is JobState.FAILED and status.reason == "TimeLimit"
    with pytest.raises(SchedulerError, match="empty command"):
        await scheduler.submit(JobRequest(name="e", command=[]))


def test_factory_rejects_unknown_kinds_and_bad_settings(tmp_path: Path) -> None:
    with pytest.raises(UnknownComponentError, match="unknown scheduler 'pbs'"):
        make_scheduler("pbs", {})
    with pytest.raises(SpecError, match="maxParallel"):
        make_scheduler("local", {"root": str(tmp_path), "maxParallel": 0})
    with pytest.raises(SpecError, match="maxParallel"):
        make_scheduler("local", {"root": str(tmp_path), "maxParallel": "2"})
    with pytest.raises(SpecError, match="needs 'url'"):
        make_scheduler("slurm-rest", {"token": "x"})
    with pytest.raises(SpecError, match="'token' or 'tokenFile'"):
        make_scheduler("slurm-rest", {"url": "http://127.0.0.1:1"})
    with pytest.raises(SpecError, match="tokenFile: cannot read"):
        make_scheduler("slurm-rest", {"url": "http://127.0.0.1:1", "tokenFile": "/nonexistent"})
    with pytest.raises(SpecError, match="'env' must map strings"):
        make_scheduler("slurm", {"env": {"A": 1}})
    with pytest.raises(SpecError, match="'sbatchArgs' must be a list"):
        make_scheduler("slurm", {"sbatchArgs": "--exclusive"})
