"""Cases every scheduler backend must pass, run by each backend's test module.

Each case drives a real backend with a real job: ``streamml run-lammps`` (real lmp) teaching a
real model server, a LAMMPS failure whose ERROR line must come back as the scheduler's reason,
a long job that is cancelled, and lookup by name.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

from streamml.client.api import ModelServerClient
from streamml.pycommand import streamml_command
from streamml.sweep.schedulers import JobRequest, JobState, JobStatus, Scheduler
from streamml.vocabulary.modelspec import ModelSpec
from tests.fixtures.server import ServerProcess

LINEAR = {"name": "linear", "pipeline": [{"class": "preprocessing.StandardScaler"},
                                         {"class": "linear_model.LinearRegression"}]}  # fmt: skip


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


async def wait_finished(
    scheduler: Scheduler, job_id: str, timeout_s: float = 180.0
) -> tuple[JobStatus, list[JobState]]:
    """Poll until the job finishes; also return the states seen on the way."""
    seen: list[JobState] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        status = (await scheduler.poll([job_id]))[job_id]
        if not seen or seen[-1] is not status.state:
            seen.append(status.state)
        if status.state.finished:
            return status, seen
        await asyncio.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish within {timeout_s} s; states {seen}")


def run_lammps_job(
    name: str, server: ServerProcess, workdir: Path, *variables: str, test: bool = False
) -> JobRequest:
    command = [*streamml_command(), "run-lammps", "--server", server.url,
               "--trial-id", name, "--result-file", str(workdir / f"{name}.json"),
               "--spool-dir", str(workdir / "spool")]  # fmt: skip
    for variable in variables:
        command += ["--var", variable]
    if test:
        command.append("--test")
    return JobRequest(
        name=name,
        command=command,
        env={"STREAMML_USERNAME": str(server.username), "STREAMML_TOKEN": str(server.token)},
        workdir=workdir,
        time_limit_s=600,
    )


async def ensure_linear(server: ServerProcess) -> None:
    async with ModelServerClient(server.url, username=server.username, token=server.token) as c:
        await c.ensure_model(ModelSpec.model_validate(LINEAR))


async def case_lammps_trial_learns(
    scheduler: Scheduler, server: ServerProcess, workdir: Path
) -> None:
    async with ModelServerClient(server.url, username=server.username, token=server.token) as c:
        await c.ensure_model(ModelSpec.model_validate(LINEAR))
        before = (await c.stats("linear")).learn.n_calls
        name = unique("t")
        job_id = await scheduler.submit(
            run_lammps_job(name, server, workdir, "nx=4", "ny=4", "nz=4", "steps=20")
        )
        status, seen = await wait_finished(scheduler, job_id)
        assert status.state is JobState.SUCCEEDED, (status, seen)
        assert status.exit_code == 0
        document = json.loads((workdir / f"{name}.json").read_text())
        assert document["delivered"] is True and document["metrics"]["atoms"] == 256
        assert (await c.stats("linear")).learn.n_calls == before + 1
        assert await scheduler.lookup(name) == job_id


async def case_lammps_failure_reason(
    scheduler: Scheduler, server: ServerProcess, workdir: Path
) -> None:
    job_id = await scheduler.submit(
        run_lammps_job(unique("bad"), server, workdir, "nx=3.3", "ny=4", "nz=4", "steps=50")
    )
    status, _ = await wait_finished(scheduler, job_id)
    assert status.state is JobState.FAILED
    assert status.exit_code == 1
    assert status.reason is not None and "LammpsError: Lost atoms" in status.reason, status.reason


async def case_cancel(scheduler: Scheduler, workdir: Path) -> None:
    name = unique("sleepy")
    job_id = await scheduler.submit(
        JobRequest(name=name, command=["sleep", "300"], workdir=workdir)
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while (await scheduler.poll([job_id]))[job_id].state is not JobState.RUNNING:
        assert loop.time() < deadline, "the job never started"
        await asyncio.sleep(0.2)
    await scheduler.cancel(job_id)
    status, _ = await wait_finished(scheduler, job_id, timeout_s=60)
    assert status.state is JobState.CANCELLED
    await scheduler.cancel(job_id)  # cancelling a finished job is not an error


async def case_unknown_ids(scheduler: Scheduler) -> None:
    statuses = await scheduler.poll(["99999999", "not-a-job", "../etc"])
    assert {s.state for s in statuses.values()} == {JobState.UNKNOWN}
    await scheduler.cancel("99999999")
    assert await scheduler.lookup(unique("never-submitted")) is None
