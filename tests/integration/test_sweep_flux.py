"""``streamml sweep`` on a real Flux instance, with real ``lmp`` and a real model server."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamml.testbed import flux
from tests.fixtures.server import ServerProcess, create_models, learn_calls
from tests.integration.test_sweep_cli import clean_env, sweep_cmd, sweep_doc

pytestmark = [pytest.mark.integration, pytest.mark.flux, pytest.mark.lammps]


def flux_env(instance: flux.FluxInstance) -> dict[str, str]:
    return {**clean_env(), "STREAMML_FLUX": str(instance.flux)}


def run_on_flux(
    tmp: Path, server: ServerProcess, instance: flux.FluxInstance, **spec: Any
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    file = tmp / "sweep.yaml"
    spec.setdefault("scheduler", {"type": "flux", "fluxUri": instance.uri})
    file.write_text(yaml.safe_dump(sweep_doc(**spec)))
    workdir = tmp / "wd"
    done = subprocess.run(
        sweep_cmd(file, server.url, workdir, server.username, server.token),
        capture_output=True, text=True, timeout=600, env=flux_env(instance),
    )  # fmt: skip
    return done, json.loads((workdir / "state.json").read_text())


def flux_jobs(instance: flux.FluxInstance, prefix: str) -> list[str]:
    """Names of every job this instance ever ran whose name starts with ``prefix``."""
    out = subprocess.run(
        [str(instance.flux), "jobs", "-a", "-n", "-o", "{name}"],
        capture_output=True, text=True, check=True, env={**clean_env(), **instance.env()},
    ).stdout  # fmt: skip
    return sorted(n for n in out.split() if n.startswith(prefix))


async def test_sweep_on_flux_learns_every_run_once(
    model_server: ServerProcess, flux_instance: flux.FluxInstance, tmp_path: Path, lammps_bin: str
) -> None:
    await create_models(model_server)
    done, state = run_on_flux(tmp_path, model_server, flux_instance, trials=3, testTrials=1)
    assert done.returncode == 0, done.stderr
    assert state["phase"] == "Succeeded"
    assert (state["succeeded"], state["submitted"], state["failed"]) == (4, 4, 0)
    job_ids = [t["jobId"] for t in state["trials"]]
    assert all(j and j.startswith("f") for j in job_ids) and len(set(job_ids)) == 4  # Flux's ids
    for model in ("linear", "mean"):
        assert await learn_calls(model_server, model) == 3
    assert {e["model"] for e in state["evaluation"]} == {"linear", "mean"}
    assert all(e["n"] == 1 for e in state["evaluation"])


async def test_engine_killed_mid_sweep_resumes_without_resubmitting(
    model_server: ServerProcess, flux_instance: flux.FluxInstance, tmp_path: Path, lammps_bin: str
) -> None:
    await create_models(model_server)
    scheduler = {"type": "flux", "fluxUri": flux_instance.uri}
    doc = sweep_doc(trials=4, testTrials=0, scheduler=scheduler, lammps={"vars": {"steps": "2000"}})
    doc["metadata"]["name"] = "flux-kill"
    file = tmp_path / "sweep.yaml"
    file.write_text(yaml.safe_dump(doc))
    workdir = tmp_path / "wd"
    cmd = sweep_cmd(file, model_server.url, workdir, model_server.username, model_server.token)
    env = flux_env(flux_instance)
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(flux_jobs(flux_instance, "flux-kill-")) < 2:
            time.sleep(0.2)
        assert len(flux_jobs(flux_instance, "flux-kill-")) >= 2, "no runs were submitted"
    finally:
        first.kill()  # SIGKILL: no clean-up; the Flux jobs keep running
        first.wait()
    state = json.loads((workdir / "state.json").read_text())
    assert state["phase"] == "Running" and state["succeeded"] < 4
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr
    names = flux_jobs(flux_instance, "flux-kill-")
    assert len(names) == len(set(names)) == 4, names  # the runs in flight were adopted
    state = json.loads((workdir / "state.json").read_text())
    assert state["submitted"] == 4 and state["succeeded"] == 4
    for model in ("linear", "mean"):
        assert await learn_calls(model_server, model) == 4


async def test_mpi_trial_runs_two_ranks_under_flux(
    model_server: ServerProcess, flux_instance: flux.FluxInstance, tmp_path: Path, lammps_bin: str
) -> None:
    await create_models(model_server)
    done, state = run_on_flux(
        tmp_path, model_server, flux_instance, trials=1, testTrials=0,
        lammps={"vars": {"steps": "20"}, "mpiProcs": 2},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert state["succeeded"] == 1
    log = next((tmp_path / "wd").glob("trials/*/lammps.log")).read_text()
    assert "MPI tasks" in log and " 2 MPI tasks" in log, log[-500:]
