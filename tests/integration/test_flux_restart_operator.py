"""The operator drives LammpsSweeps on a real Flux instance that is restarted mid-sweep (``flux
shutdown``, then ``flux start`` on the same statedir): nothing is submitted twice, nothing is
forgotten. Flux cancels the jobs running at its shutdown: their trials fail with Flux's reason and
are retried within ``maxFailures``. A sweep whose trials come due while Flux is down keeps them
``Submitting`` (no failure counted) and submits each once, under its name, when Flux is back.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamml.testbed import flux
from streamml.testbed.controlplane import ControlPlane
from tests.integration.test_sweep_cli import clean_env
from tests.integration.test_sweep_flux import flux_jobs
from tests.integration.test_sweep_operator import (
    STREAMMODEL,
    Operator,
    gated_input,
    running_operator,
    sweep,
)
from tests.integration.test_sweep_operator_flux import learns_now

pytestmark = [
    pytest.mark.integration,
    pytest.mark.controlplane,
    pytest.mark.lammps,
    pytest.mark.flux,
    pytest.mark.timeout(1800),  # two sweeps and a Flux restart on a shared 2-core machine
]


@pytest.fixture
def own_flux(flux_install: flux.FluxInstall) -> Iterator[Path]:
    """A Flux instance of this test's own (it is restarted): yields its state dir."""
    state = Path(tempfile.mkdtemp(prefix="streamml-flux-restart-"))
    flux.start(state, install=flux_install, detached=False)
    try:
        yield state
    finally:
        flux.stop(state)
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture
def operator(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory, lammps_bin: str
) -> Iterator[Operator]:
    with running_operator(control_plane, tmp_path_factory, "fluxrs") as op:
        yield op


def eventlog(instance: flux.FluxInstance, job_id: str) -> str:
    return subprocess.run(
        [str(instance.flux), "job", "eventlog", job_id], capture_output=True, text=True,
        check=True, timeout=120, env={**clean_env(), **instance.env()},
    ).stdout  # fmt: skip


def test_flux_restarted_mid_sweep_submits_nothing_twice_and_forgets_nothing(
    operator: Operator, own_flux: Path, flux_install: flux.FluxInstall
) -> None:
    op, instance = operator, flux.FluxInstance.load(own_flux)
    assert op.apply(STREAMMODEL).returncode == 0
    op.wait_for("the model server", lambda: learns_now(op) is not None)
    before = learns_now(op)
    assert before is not None
    lj, gate = gated_input(op.root, "rs")  # the runs wait for the gate: in flight at the restart
    scheduler = {"type": "flux", "fluxUri": instance.uri}
    # maxFailures leaves room for retries that a slow `flux shutdown` (30-40 s under load)
    # accepts and then cancels too: each is a real attempt, counted and checked below
    doc = sweep(
        "rs", trials=4, testTrials=1, parallelism=2, maxFailures=10, scheduler=scheduler,
        lammps={"input": lj, "vars": {"steps": "20"}},
    )  # fmt: skip
    assert op.apply(doc).returncode == 0, op.logs()

    def in_flight() -> bool:
        running = [t for t in op.status("rs").get("trials", []) if t["state"] == "Running"]
        return len(running) == 2 and len(flux_jobs(instance, "rs-")) == 2

    op.wait_for("two Flux jobs in flight", in_flight)
    in_flight_names = {t["jobName"] for t in op.status("rs")["trials"]}
    in_flight_ids = {t["jobId"] for t in op.status("rs")["trials"]}
    assert flux.stop(own_flux)  # `flux shutdown`: Flux cancels the jobs still running

    # a sweep whose trials come due while Flux is down: they wait, no failure is counted
    late = sweep("late", trials=2, testTrials=1, parallelism=2, scheduler=scheduler)
    assert op.apply(late).returncode == 0, op.logs()

    def waiting_for_flux() -> bool:
        status = op.status("late")
        return status.get("failed", 0) > 0 or (
            len(status.get("trials", [])) == 2
            and all(t["state"] == "Submitting" and t.get("reason") for t in status["trials"])
        )

    op.wait_for("the late sweep to wait for Flux", waiting_for_flux)
    down = op.status("late")
    assert down["failed"] == 0 and down["submitted"] == 0, down
    assert "flux" in down["trials"][0]["reason"].lower(), down["trials"][0]
    gate.touch()  # the retried runs may finish now
    instance = flux.start(own_flux, install=flux_install, detached=False)  # same statedir

    for name in ("rs", "late"):
        op.wait_for(f"{name} to finish", lambda n=name: op.status(n).get("phase") == "Succeeded")
    rs, late_status = op.status("rs"), op.status("late")
    # the two jobs running at the shutdown failed with Flux's reason and were retried (a retry
    # that Flux took during its own shutdown may have been cancelled too: within maxFailures)
    failed = [t for t in rs["trials"] if t["state"] == "Failed"]
    assert in_flight_names <= {t["jobName"] for t in failed}, rs["trials"]
    assert all(t["reason"] for t in failed), failed
    for job_id in in_flight_ids:  # Flux's own record of why: its shutdown cancelled them
        assert 'exception type="cancel"' in eventlog(instance, job_id)
    assert rs["succeeded"] == 5 and rs["failed"] == len(failed) >= 2
    assert rs["submitted"] == len(rs["trials"]) == 5 + len(failed)
    # one Flux job per trial attempt: nothing submitted twice, nothing forgotten
    names = flux_jobs(instance, "rs-")
    assert len(names) == len(set(names)) == rs["submitted"], names
    assert names == sorted(t["jobName"] for t in rs["trials"])
    late_names = flux_jobs(instance, "late-")
    assert len(late_names) == len(set(late_names)) == 3, late_names
    assert late_status["failed"] == 0 and late_status["succeeded"] == 3
    assert all(t["attempt"] == 1 for t in late_status["trials"])
    # each training run learned exactly once
    assert learns_now(op) == {model: n + 4 + 2 for model, n in before.items()}
    assert {e["model"] for e in rs["evaluation"]} == {"mean", "linear"}
