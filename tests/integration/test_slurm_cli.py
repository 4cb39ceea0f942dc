"""The ``slurm`` backend (sbatch/squeue/scontrol/scancel) on the real single-node cluster."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from streamml.errors import SchedulerError
from streamml.sweep.schedulers import JobRequest, JobState, make_scheduler
from streamml.sweep.schedulers.slurm_cli import SlurmCliScheduler
from tests.fixtures.hpc import SlurmFixture
from tests.fixtures.server import ServerProcess
from tests.integration import scheduler_cases as cases

pytestmark = [pytest.mark.integration, pytest.mark.slurm]


@pytest.fixture
def server(model_server: ServerProcess) -> ServerProcess:
    return model_server


@pytest.fixture
def scheduler(slurm_cluster: SlurmFixture) -> SlurmCliScheduler:
    made = make_scheduler("slurm", {"env": slurm_cluster.env, "partition": "debug"})
    assert isinstance(made, SlurmCliScheduler)
    return made


@pytest.mark.lammps
async def test_lammps_trial_learns_and_failure_reason(
    scheduler: SlurmCliScheduler, server: ServerProcess, tmp_path: Path, lammps_bin: str
) -> None:
    await cases.case_lammps_trial_learns(scheduler, server, tmp_path)
    await cases.case_lammps_failure_reason(scheduler, server, tmp_path)


@pytest.mark.lammps
async def test_mpi_trial_under_srun(
    scheduler: SlurmCliScheduler, server: ServerProcess, tmp_path: Path, lammps_bin: str
) -> None:
    """cpus=2 -> two Slurm tasks; run-lammps --srun starts 2 MPI ranks through PMIx."""
    await cases.ensure_linear(server)
    name = cases.unique("mpi")
    job = cases.run_lammps_job(name, server, tmp_path, "nx=4", "ny=4", "nz=4", "steps=20")
    job = dataclasses.replace(job, command=[*job.command, "--srun"], cpus=2)
    job_id = await scheduler.submit(job)
    status, _ = await cases.wait_finished(scheduler, job_id)
    assert status.state is JobState.SUCCEEDED, status
    metrics = json.loads((tmp_path / f"{name}.json").read_text())["metrics"]
    assert metrics["procs"] == 2 and metrics["mpi_tasks"] == 2 and metrics["atoms"] == 256


async def test_cancel_and_unknown_ids(scheduler: SlurmCliScheduler, tmp_path: Path) -> None:
    await cases.case_cancel(scheduler, tmp_path)
    await cases.case_unknown_ids(scheduler)


async def test_environment_is_quoted(scheduler: SlurmCliScheduler, tmp_path: Path) -> None:
    hostile = "a,b c; $(touch pwned) 'q' \"d\""
    job_id = await scheduler.submit(
        JobRequest(
            name=cases.unique("env"),
            command=["sh", "-c", f'printf %s "$HOSTILE" > {tmp_path}/env.txt'],
            env={"HOSTILE": hostile},
            workdir=tmp_path,
        )
    )
    status, _ = await cases.wait_finished(scheduler, job_id)
    assert status.state is JobState.SUCCEEDED
    assert (tmp_path / "env.txt").read_text() == hostile
    assert not (tmp_path / "pwned").exists()


async def test_refusals_carry_slurm_reason(slurm_cluster: SlurmFixture, tmp_path: Path) -> None:
    bad = SlurmCliScheduler(env=slurm_cluster.env, partition="no-such-partition")
    with pytest.raises(SchedulerError, match="invalid partition"):
        await bad.submit(JobRequest(name="x", command=["true"], workdir=tmp_path))
    good = SlurmCliScheduler(env=slurm_cluster.env)
    with pytest.raises(SchedulerError, match="invalid environment variable name"):
        await good.submit(JobRequest(name="x", command=["true"], env={"A B": "1"}))
    with pytest.raises(SchedulerError, match="empty command"):
        await good.submit(JobRequest(name="x", command=[]))


async def test_killed_by_signal(scheduler: SlurmCliScheduler, tmp_path: Path) -> None:
    """A job killed by a signal reports 128+N and Slurm's ExitCode in the reason."""
    killed = await scheduler.submit(
        JobRequest(name=cases.unique("kill"), command=["sh", "-c", "kill -9 $$"], workdir=tmp_path)
    )
    status, _ = await cases.wait_finished(scheduler, killed)
    assert status.state is JobState.FAILED and status.exit_code == 137, status
    assert status.reason is not None and "exit 0:9" in status.reason
