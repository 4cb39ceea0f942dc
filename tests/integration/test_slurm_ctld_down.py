"""Both Slurm backends against a real cluster whose slurmctld is down (stopped by the test):
a submit or a lookup says "unavailable" (the engine waits and looks the job up by name, no
failure counted), never "refused", and a refusal by a live slurmctld stays a refusal."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamml import procs
from streamml.errors import SchedulerError, SchedulerUnavailable
from streamml.sweep.schedulers import JobRequest
from streamml.sweep.schedulers.slurm_cli import SlurmCliScheduler, controller_down
from streamml.sweep.schedulers.slurm_rest import SlurmRestScheduler
from streamml.testbed import hpc

pytestmark = [pytest.mark.integration, pytest.mark.slurm, pytest.mark.timeout(600)]


@pytest.fixture
def own_cluster() -> Iterator[hpc.SlurmCluster]:
    """A Slurm cluster of this test's own (its slurmctld is stopped)."""
    state = Path(tempfile.mkdtemp(prefix="streamml-slurm-down-"))
    state.chmod(0o755)
    try:
        yield hpc.start(state, rest=True)
    finally:
        hpc.stop(state)
        shutil.rmtree(state, ignore_errors=True)


async def test_submit_and_lookup_while_slurmctld_is_down(
    own_cluster: hpc.SlurmCluster, tmp_path: Path
) -> None:
    cli = SlurmCliScheduler(env=own_cluster.env(), partition=own_cluster.partition)
    assert own_cluster.rest_url is not None
    rest = SlurmRestScheduler(own_cluster.rest_url, user="root", token=own_cluster.token())
    job = JobRequest(name="while-down", command=["true"], workdir=tmp_path)
    try:
        # alive: a bad partition is a refusal, from both
        bad = SlurmCliScheduler(env=own_cluster.env(), partition="nope")
        with pytest.raises(SchedulerError) as refused:
            await bad.submit(job)
        assert not isinstance(refused.value, SchedulerUnavailable), refused.value
        ctld = own_cluster.pids["slurmctld"]
        info = procs.read_proc(ctld)
        assert info is not None
        os.kill(ctld, signal.SIGTERM)  # our own cluster's daemon, by its PID
        deadline = time.monotonic() + 30
        while procs.running(ctld, info.start_ticks) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not procs.running(ctld, info.start_ticks)
        for scheduler in (cli, rest):
            with pytest.raises(SchedulerUnavailable) as down:
                await scheduler.submit(job)
            assert controller_down(str(down.value)), down.value
            with pytest.raises(SchedulerUnavailable):
                await scheduler.lookup("while-down")
    finally:
        await rest.close()
