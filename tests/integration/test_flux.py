"""The flux scheduler against a real Flux instance (built from the vendor archive, cached)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from streamml.errors import SchedulerError, SchedulerUnavailable, SpecError
from streamml.sweep.schedulers import JobRequest, JobState, make_scheduler
from streamml.sweep.schedulers.flux import (
    REASON_TIMEOUT,
    REASON_UNSATISFIABLE,
    FluxScheduler,
)
from streamml.testbed import flux
from tests.fixtures.server import ServerProcess
from tests.integration import scheduler_cases as cases

pytestmark = [pytest.mark.integration, pytest.mark.flux, pytest.mark.lammps]


@pytest.fixture
def scheduler(flux_instance: flux.FluxInstance) -> FluxScheduler:
    made = make_scheduler("flux", {"uri": flux_instance.uri, "flux": str(flux_instance.flux)})
    assert isinstance(made, FluxScheduler)
    return made


async def test_lammps_trial_learns_and_failure_reason(
    scheduler: FluxScheduler, model_server: ServerProcess, tmp_path: Path, lammps_bin: str
) -> None:
    await cases.case_lammps_trial_learns(scheduler, model_server, tmp_path)
    await cases.case_lammps_failure_reason(scheduler, model_server, tmp_path)


async def test_cancel_and_unknown_ids(scheduler: FluxScheduler, tmp_path: Path) -> None:
    await cases.case_cancel(scheduler, tmp_path)
    await cases.case_unknown_ids(scheduler)


async def test_time_limit_gives_timeout(scheduler: FluxScheduler, tmp_path: Path) -> None:
    job = JobRequest(name=cases.unique("slow"), command=["sleep", "60"], time_limit_s=1)
    status, _ = await cases.wait_finished(scheduler, await scheduler.submit(job), timeout_s=60)
    assert status.state is JobState.FAILED
    assert status.reason == REASON_TIMEOUT


async def test_unsatisfiable_request_fails_with_reason(
    scheduler: FluxScheduler, tmp_path: Path
) -> None:
    # accepted by submit, then refused by the scheduler with an `alloc` exception
    job = JobRequest(name=cases.unique("huge"), command=["true"], cpus=4096)
    status, _ = await cases.wait_finished(scheduler, await scheduler.submit(job), timeout_s=60)
    assert status.state is JobState.FAILED
    assert status.reason is not None and status.reason.startswith(REASON_UNSATISFIABLE)


async def test_exit_code_and_lookup_from_a_new_client(
    scheduler: FluxScheduler, flux_instance: flux.FluxInstance, tmp_path: Path
) -> None:
    name = cases.unique("exit3")
    job = JobRequest(name=name, command=["sh", "-c", "echo last words; exit 3"], workdir=tmp_path)
    job_id = await scheduler.submit(job)
    status, _ = await cases.wait_finished(scheduler, job_id)
    assert status.state is JobState.FAILED and status.exit_code == 3
    assert status.reason == "NonZeroExitCode (exit 3): last words"
    # a restarted driver (a new client) finds the job by its name: no second submission
    again = make_scheduler("flux", {"uri": flux_instance.uri, "flux": str(flux_instance.flux)})
    assert await again.lookup(name) == job_id


async def test_instance_restart_keeps_history(
    flux_install: flux.FluxInstall, tmp_path: Path
) -> None:
    state = tmp_path / "flux"
    instance = flux.start(state, install=flux_install, detached=False)
    try:
        sched = FluxScheduler(uri=instance.uri, flux=str(instance.flux))
        done_id = await sched.submit(JobRequest(name="before", command=["true"]))
        await cases.wait_finished(sched, done_id)
        running_id = await sched.submit(JobRequest(name="running", command=["sleep", "300"]))
        while (await sched.poll([running_id]))[running_id].state is not JobState.RUNNING:
            await asyncio.sleep(0.2)
        assert flux.stop(state)
        assert not instance.broker.alive()
        with pytest.raises(SchedulerError):  # an instance that is down: poll later, lose nothing
            await sched.poll([done_id, running_id])
        # a submit or lookup that cannot reach Flux says so (the engine waits, counts no failure)
        with pytest.raises(SchedulerUnavailable):
            await sched.submit(JobRequest(name="while-down", command=["true"]))
        with pytest.raises(SchedulerUnavailable):
            await sched.lookup("while-down")
        instance = flux.start(state, install=flux_install, detached=False)
        sched = FluxScheduler(uri=instance.uri, flux=str(instance.flux))
        after = await sched.poll([done_id, running_id])
        assert after[done_id].state is JobState.SUCCEEDED  # the statedir kept the history
        # the job running at shutdown ended with the instance: finished, with Flux's reason
        assert after[running_id].state.finished and after[running_id].reason
        assert await sched.lookup("before") == done_id
    finally:
        flux.stop(state)


async def test_submits_during_shutdown_are_unavailable_not_refused(
    flux_install: flux.FluxInstall, tmp_path: Path
) -> None:
    # `flux shutdown` unloads job-ingest before it closes the socket: a submit in that window
    # gets ENOSYS ("No service matching job-ingest.submit"). Counted as a refusal, it failed a
    # trial of a sweep whose Flux merely restarted (a CI run of stop 9); it must say "later".
    state = tmp_path / "flux"
    instance = flux.start(state, install=flux_install, detached=False)
    sched = FluxScheduler(uri=instance.uri, flux=str(instance.flux))
    outcomes: list[str] = []
    refused: list[str] = []
    stopping = asyncio.get_running_loop().run_in_executor(None, flux.stop, state)

    async def submitter(lane: int) -> None:
        n = 0
        while not stopping.done() or n < 3:
            n += 1
            try:
                await sched.submit(JobRequest(name=f"s{lane}-{n}", command=["sleep", "60"]))
                outcomes.append("accepted")
            except SchedulerUnavailable:
                outcomes.append("unavailable")
            except SchedulerError as exc:
                refused.append(str(exc))

    try:
        await asyncio.gather(*(submitter(lane) for lane in range(3)))
        assert await stopping
    finally:
        flux.stop(state)
    assert not refused, refused  # no submit made while Flux went down was taken for a refusal
    assert "unavailable" in outcomes, outcomes  # the down instance was reached, and said so


def test_flux_scheduler_needs_a_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLUX_URI", raising=False)
    with pytest.raises(SpecError) as err:
        make_scheduler("flux", {})
    assert err.value.field == "uri"


async def test_two_brokers_run_a_two_node_job(
    flux_install: flux.FluxInstall, tmp_path: Path
) -> None:
    # the prototype's -N shape on one host: two brokers, an allocation spread over both
    state = tmp_path / "flux2"
    instance = flux.start(state, size=2, install=flux_install, detached=False)
    try:
        sched = FluxScheduler(uri=instance.uri, flux=str(instance.flux))
        script = '"$STREAMML_FLUX" run -N2 -n2 hostname > ranks.txt'
        job = JobRequest(
            name="two-nodes", command=["sh", "-c", script], tasks=2, nodes=2, workdir=tmp_path
        )
        status, _ = await cases.wait_finished(sched, await sched.submit(job), timeout_s=120)
        assert status.state is JobState.SUCCEEDED, status
        assert len((tmp_path / "ranks.txt").read_text().split()) == 2
    finally:
        flux.stop(state)
