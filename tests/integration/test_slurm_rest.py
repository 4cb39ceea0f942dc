"""The ``slurm-rest`` backend: slurmrestd (OpenAPI v0.0.38) with a JWT, on the real cluster."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from streamml.errors import AuthError, SchedulerError
from streamml.sweep.schedulers import JobRequest, JobState, make_scheduler
from streamml.sweep.schedulers.slurm_rest import SlurmRestScheduler
from tests.fixtures.hpc import SlurmFixture
from tests.fixtures.server import ServerProcess
from tests.integration import scheduler_cases as cases

pytestmark = [pytest.mark.integration, pytest.mark.slurm]


@pytest.fixture
def server(model_server: ServerProcess) -> ServerProcess:
    return model_server


@pytest.fixture
async def scheduler(
    slurm_cluster: SlurmFixture, tmp_path: Path
) -> AsyncIterator[SlurmRestScheduler]:
    token_file = tmp_path / "jwt"
    token_file.write_text(slurm_cluster.token + "\n")
    made = make_scheduler(
        "slurm-rest",
        {"url": slurm_cluster.rest_url, "user": "root", "tokenFile": str(token_file)},
    )
    assert isinstance(made, SlurmRestScheduler)
    yield made
    await made.close()


@pytest.mark.lammps
async def test_lammps_trial_learns_and_failure_reason(
    scheduler: SlurmRestScheduler, server: ServerProcess, tmp_path: Path, lammps_bin: str
) -> None:
    await cases.case_lammps_trial_learns(scheduler, server, tmp_path)
    await cases.case_lammps_failure_reason(scheduler, server, tmp_path)


async def test_cancel_and_unknown_ids(scheduler: SlurmRestScheduler, tmp_path: Path) -> None:
    await cases.case_cancel(scheduler, tmp_path)
    await cases.case_unknown_ids(scheduler)


async def test_bad_token_and_bad_partition(slurm_cluster: SlurmFixture, tmp_path: Path) -> None:
    forged = slurm_cluster.token[:-4] + "AAAA"
    bad = SlurmRestScheduler(slurm_cluster.rest_url, user="root", token=forged)
    try:
        with pytest.raises((AuthError, SchedulerError)):
            await bad.submit(JobRequest(name="x", command=["true"], workdir=tmp_path))
    finally:
        await bad.close()
    wrong = SlurmRestScheduler(
        slurm_cluster.rest_url, user="root", token=slurm_cluster.token, partition="nope"
    )
    try:
        with pytest.raises(SchedulerError, match="refused job 'x'"):
            await wrong.submit(JobRequest(name="x", command=["true"], workdir=tmp_path))
    finally:
        await wrong.close()


async def test_unreachable_server(tmp_path: Path) -> None:
    from streamml.procs import free_port

    gone = SlurmRestScheduler(f"http://127.0.0.1:{free_port()}", user="root", token="t")
    try:
        with pytest.raises(SchedulerError, match="unreachable"):
            await gone.poll(["1"])
    finally:
        await gone.close()
    assert JobState.UNKNOWN.finished
