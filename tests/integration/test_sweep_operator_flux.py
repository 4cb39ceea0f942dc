"""The operator (local runtime, outside any Pod network) drives a LammpsSweep on a real Flux
instance: with the trials inside the real LAMMPS SIF (the models learn, evaluation in status),
and SIGKILLed mid-sweep while Flux jobs are in flight (no job submitted twice, none forgotten)."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamml.testbed import flux
from streamml.testbed.controlplane import ControlPlane
from tests.integration.test_sweep_flux import flux_jobs
from tests.integration.test_sweep_operator import (
    STREAMMODEL,
    Operator,
    gated_input,
    running_operator,
    server_learns,
    sweep,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.controlplane,
    pytest.mark.lammps,
    pytest.mark.flux,
]


@pytest.fixture(scope="module")
def operator(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory, lammps_bin: str
) -> Iterator[Operator]:
    with running_operator(control_plane, tmp_path_factory, "flux") as op:
        yield op


@pytest.mark.apptainer
def test_operator_runs_a_containerised_sweep_on_flux(
    operator: Operator, flux_instance: flux.FluxInstance, lammps_sif: Path
) -> None:
    op = operator
    assert op.apply(STREAMMODEL).returncode == 0
    doc = sweep(
        "lj-flux", trials=3, testTrials=1,
        scheduler={"type": "flux", "fluxUri": flux_instance.uri},
        lammps={"vars": {"steps": "20"}, "container": {"image": str(lammps_sif)}},
    )  # fmt: skip
    assert op.apply(doc).returncode == 0, op.logs()
    op.wait_for("the sweep to finish", lambda: op.status("lj-flux").get("phase") == "Succeeded")
    status = op.status("lj-flux")
    assert status["submitted"] == 4 and status["succeeded"] == 4 and status["failed"] == 0
    assert all(t["jobId"].startswith("f") and t["imageDigest"] for t in status["trials"])
    for model in ("mean", "linear"):
        assert server_learns(op, model) == 3
    assert {e["model"] for e in status["evaluation"]} == {"mean", "linear"}
    assert len(status["evaluationByImage"]) == 1


def learns_now(op: Operator) -> dict[str, int] | None:
    """Learns counted per model of the shared StreamModel, None while its server is not up."""
    try:
        return {model: server_learns(op, model) for model in ("mean", "linear")}
    except Exception:
        return None


def test_operator_killed_mid_sweep_on_flux_submits_nothing_twice(
    operator: Operator, flux_instance: flux.FluxInstance
) -> None:
    op = operator
    name = "opkill"  # a prefix no other test's Flux jobs share (the instance is per session)
    assert op.apply(STREAMMODEL).returncode == 0
    op.wait_for("the model server", lambda: learns_now(op) is not None)
    before = learns_now(op)  # the StreamModel is shared with this module's other test
    assert before is not None
    lj, gate = gated_input(op.root, name)  # runs wait for the gate: in flight when killed
    doc = sweep(
        name, trials=4, testTrials=1, parallelism=2,
        scheduler={"type": "flux", "fluxUri": flux_instance.uri},
        lammps={"input": lj, "vars": {"steps": "20"}},
    )  # fmt: skip
    assert op.apply(doc).returncode == 0, op.logs()

    def in_flight() -> bool:
        running = [t for t in op.status(name).get("trials", []) if t["state"] == "Running"]
        return len(running) == 2 and len(flux_jobs(flux_instance, f"{name}-")) == 2

    op.wait_for("two Flux jobs in flight", in_flight)
    op.kill()  # SIGKILL: no clean-up; the Flux jobs keep running
    mid = op.status(name)
    assert mid["phase"] == "Running" and mid["succeeded"] == 0 and mid["submitted"] == 2
    in_flight_ids = {t["jobId"] for t in mid["trials"]}
    gate.touch()  # the runs in flight finish while the operator is down (or as it comes back)
    op.start()
    op.wait_for("the sweep to finish", lambda: op.status(name).get("phase") == "Succeeded")

    status = op.status(name)
    names = flux_jobs(flux_instance, f"{name}-")
    # one Flux job per trial: nothing submitted twice, nothing forgotten
    assert len(names) == len(set(names)) == 5, names
    assert names == sorted(t["jobName"] for t in status["trials"])
    assert status["submitted"] == 5 and status["succeeded"] == 5 and status["failed"] == 0
    assert in_flight_ids <= {t["jobId"] for t in status["trials"]}  # adopted, not resubmitted
    assert len({t["jobId"] for t in status["trials"]}) == 5
    # each training run learned exactly once
    assert learns_now(op) == {model: n + 4 for model, n in before.items()}
    assert {e["model"] for e in status["evaluation"]} == {"mean", "linear"}


def hanging_flux(root: Path, flux_bin: Path) -> tuple[Path, Path]:
    """A ``flux`` whose FIRST ``submit`` really submits, then never replies (it writes its PID to
    the returned marker and sleeps): the operator is killed after Flux has the job but before
    the operator learnt its id. The only fake here: the real CLI cannot be stopped at that point."""
    marker, once = root / "hung-submit.pid", root / "hung-submit.once"
    wrapper = root / "flux"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = submit ] && mkdir {once} 2>/dev/null; then\n'
        f'  {flux_bin} "$@" || exit $?\n'
        f"  echo $$ > {marker}.tmp && mv {marker}.tmp {marker}\n"
        "  exec sleep 600\n"
        "fi\n"
        f'exec {flux_bin} "$@"\n'
    )
    wrapper.chmod(0o755)
    return wrapper, marker


def test_operator_killed_between_flux_submit_and_its_reply_adopts_the_job(
    operator: Operator, flux_instance: flux.FluxInstance
) -> None:
    op = operator
    name = "ophung"
    assert op.apply(STREAMMODEL).returncode == 0
    op.wait_for("the model server", lambda: learns_now(op) is not None)
    before = learns_now(op)
    assert before is not None
    wrapper, marker = hanging_flux(op.root, flux_instance.flux)
    op.stop()
    op.process.env["STREAMML_FLUX"] = str(wrapper)
    op.start()
    try:
        doc = sweep(
            name, trials=3, testTrials=1, parallelism=2,
            scheduler={"type": "flux", "fluxUri": flux_instance.uri},
            lammps={"vars": {"steps": "20"}},
        )  # fmt: skip
        assert op.apply(doc).returncode == 0, op.logs()
        op.wait_for("a submit that Flux took but never answered", marker.exists)
        assert len(flux_jobs(flux_instance, f"{name}-")) == 1
        op.kill()  # SIGKILL while the submit call is still out
    finally:
        if marker.exists():  # the hung `flux submit` wrapper we started: end it by its PID
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(marker.read_text()), signal.SIGKILL)
        op.process.env.pop("STREAMML_FLUX", None)
    op.start()
    op.wait_for("the sweep to finish", lambda: op.status(name).get("phase") == "Succeeded")
    status = op.status(name)
    names = flux_jobs(flux_instance, f"{name}-")
    # the job Flux had took its trial (found again by name), nothing submitted twice
    assert len(names) == len(set(names)) == 4, names
    assert status["submitted"] == 4 and status["succeeded"] == 4 and status["failed"] == 0
    assert learns_now(op) == {model: n + 3 for model, n in before.items()}
