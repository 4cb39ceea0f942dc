"""Trials inside a real Apptainer image (LAMMPS SIF built locally from Debian packages)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamml.testbed import flux
from tests.fixtures.hpc import SlurmFixture
from tests.fixtures.server import ServerProcess, create_models, learn_calls
from tests.integration.test_sweep_cli import clean_env, sweep_cmd, sweep_doc
from tests.integration.test_sweep_flux import run_on_flux

pytestmark = [pytest.mark.integration, pytest.mark.apptainer, pytest.mark.lammps]


def run_sweep(
    tmp: Path, doc: dict[str, Any], server: ServerProcess, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    file = tmp / "sweep.yaml"
    file.write_text(yaml.safe_dump(doc))
    done = subprocess.run(
        sweep_cmd(file, server.url, tmp / "wd", server.username, server.token),
        capture_output=True, text=True, timeout=600, env={**clean_env(), **(env or {})},
    )  # fmt: skip
    return done, json.loads((tmp / "wd" / "state.json").read_text())


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def check_in_image(state: dict[str, Any], sif: Path, runs: int) -> None:
    assert state["phase"] == "Succeeded", state["conditions"]
    assert state["succeeded"] == runs and state["failed"] == 0
    digest = sha256(sif)
    assert [t["imageDigest"] for t in state["trials"]] == [digest] * runs
    assert state["imageDigests"] == [digest]
    changed = next(c for c in state["conditions"] if c["type"] == "ImageChanged")
    assert changed["status"] == "False"


@pytest.mark.flux
async def test_sweep_in_the_container_on_flux(
    model_server: ServerProcess,
    flux_instance: flux.FluxInstance,
    lammps_sif: Path,
    tmp_path: Path,
    lammps_bin: str,
) -> None:
    await create_models(model_server)
    box = {"image": str(lammps_sif)}
    done, state = run_on_flux(
        tmp_path, model_server, flux_instance, trials=2, testTrials=1,
        lammps={"vars": {"steps": "20"}, "container": box},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    check_in_image(state, lammps_sif, 3)
    assert await learn_calls(model_server, "linear") == 2
    [per_image] = state["evaluationByImage"]
    assert per_image["imageDigest"] == sha256(lammps_sif)
    assert {e["model"] for e in per_image["evaluation"]} == {"linear", "mean"}
    assert all(p["imageDigest"] == sha256(lammps_sif) for p in state["learningCurve"][0]["points"])


@pytest.mark.flux
async def test_two_mpi_ranks_under_flux_in_the_container(
    model_server: ServerProcess,
    flux_instance: flux.FluxInstance,
    lammps_sif: Path,
    tmp_path: Path,
    lammps_bin: str,
) -> None:
    await create_models(model_server)
    done, state = run_on_flux(
        tmp_path, model_server, flux_instance, trials=1, testTrials=0,
        lammps={"vars": {"steps": "20"}, "mpiProcs": 2, "container": {"image": str(lammps_sif)}},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    check_in_image(state, lammps_sif, 1)
    log = next((tmp_path / "wd").glob("trials/*/lammps.log")).read_text()
    assert " 2 MPI tasks" in log, log[-800:]


@pytest.mark.slurm
async def test_sweep_in_the_container_on_slurm(
    model_server: ServerProcess,
    slurm_cluster: SlurmFixture,
    lammps_sif: Path,
    tmp_path: Path,
    lammps_bin: str,
) -> None:
    await create_models(model_server)
    doc = sweep_doc(
        trials=2, testTrials=0, scheduler={"type": "slurm", "partition": slurm_cluster.partition},
        lammps={"vars": {"steps": "20"}, "container": {"image": str(lammps_sif)}},
    )  # fmt: skip
    done, state = run_sweep(tmp_path, doc, model_server, env=dict(slurm_cluster.env))
    assert done.returncode == 0, done.stderr
    check_in_image(state, lammps_sif, 2)


@pytest.mark.slurm
async def test_sweep_in_the_container_on_slurm_rest(
    model_server: ServerProcess,
    slurm_cluster: SlurmFixture,
    lammps_sif: Path,
    tmp_path: Path,
    lammps_bin: str,
) -> None:
    """Through real slurmrestd: a REST job gets only the environment the request carries."""
    await create_models(model_server)
    token_file = tmp_path / "slurm.jwt"
    token_file.write_text(slurm_cluster.token)
    token_file.chmod(0o600)
    scheduler = {"type": "slurm-rest", "restUrl": slurm_cluster.rest_url, "restUser": "root",
                 "tokenFile": str(token_file), "partition": slurm_cluster.partition}  # fmt: skip
    doc = sweep_doc(
        trials=2, testTrials=1, scheduler=scheduler,
        lammps={"vars": {"steps": "20"}, "container": {"image": str(lammps_sif)}},
    )  # fmt: skip
    done, state = run_sweep(tmp_path, doc, model_server)
    assert done.returncode == 0, done.stderr[-3000:]
    check_in_image(state, lammps_sif, 3)
    assert all(t["jobId"].isdigit() for t in state["trials"])  # Slurm's ids, from slurmrestd
    (per_image,) = state["evaluationByImage"]
    assert per_image["imageDigest"] == sha256(lammps_sif)
    for model in ("linear", "mean"):
        assert await learn_calls(model_server, model) == 2
    assert slurm_cluster.token not in json.dumps(state)


def broken_image_sweep(
    tmp_path: Path, server: ServerProcess, image: Path, env: dict[str, str] | None = None,
    runtime: str = "apptainer",
) -> tuple[Any, dict[str, Any]]:  # fmt: skip
    doc = sweep_doc(
        trials=3, testTrials=0, maxFailures=3,
        lammps={"vars": {"steps": "20"}, "container": {"image": str(image), "runtime": runtime}},
    )  # fmt: skip
    return run_sweep(tmp_path, doc, server, env=env)


def check_fatal(done: Any, state: dict[str, Any], code: str) -> None:
    assert done.returncode == 1
    assert state["phase"] == "Failed"
    ready = next(c for c in state["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == code, ready
    # every trial would fail alike: no retries (maxFailures 3 is not used up)
    assert state["retryQueue"] == [] and all(t["attempt"] == 1 for t in state["trials"])
    assert state["submitted"] <= 2  # the runs already in flight when the first one failed


async def test_missing_image_fails_the_sweep_without_retrying(
    model_server: ServerProcess, apptainer_bin: Path, tmp_path: Path, lammps_bin: str
) -> None:
    done, state = broken_image_sweep(tmp_path, model_server, tmp_path / "no-such.sif")
    check_fatal(done, state, "ContainerImageMissing")
    # the first run to fail says why (a run still in flight then is cancelled)
    assert any("no-such.sif does not exist" in (t["reason"] or "") for t in state["trials"])


async def test_corrupt_image_fails_the_sweep_without_retrying(
    model_server: ServerProcess, lammps_sif: Path, tmp_path: Path, lammps_bin: str
) -> None:
    corrupt = tmp_path / "corrupt.sif"
    with lammps_sif.open("rb") as src, corrupt.open("wb") as dst:
        dst.write(b"\0" * 64)  # a clobbered header over the start of a real image
        src.seek(64)
        dst.write(src.read(1 << 20))
    done, state = broken_image_sweep(tmp_path, model_server, corrupt)
    check_fatal(done, state, "ContainerImageInvalid")


async def test_runtime_not_installed_is_a_clear_condition(
    model_server: ServerProcess, tmp_path: Path, lammps_bin: str
) -> None:
    # a host without Apptainer: nothing on PATH, no project build in this (empty) cache
    dirs = ("/usr/bin", "/bin")
    bare_path = os.pathsep.join(p for p in dirs if not shutil.which("singularity", path=p))
    env = {"PATH": bare_path, "STREAMML_CACHE_DIR": str(tmp_path / "empty-cache")}
    image = tmp_path / "lammps.sif"  # never opened: the runtime is looked for first
    done, state = broken_image_sweep(tmp_path, model_server, image, env, runtime="singularity")
    check_fatal(done, state, "ContainerRuntimeMissing")
    assert any("'singularity' is not installed" in (t["reason"] or "") for t in state["trials"])
