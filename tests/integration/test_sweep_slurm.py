"""``streamml sweep`` on the real single-node Slurm: via sbatch/squeue and via slurmrestd."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.hpc import SlurmFixture
from tests.fixtures.server import ServerProcess, create_models, learn_calls
from tests.integration.test_sweep_cli import clean_env, sweep_cmd, sweep_doc

pytestmark = [pytest.mark.integration, pytest.mark.slurm, pytest.mark.lammps]


def run_on_slurm(
    tmp: Path, server: ServerProcess, slurm: SlurmFixture, scheduler: dict[str, Any]
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    file = tmp / "sweep.yaml"
    file.write_text(yaml.safe_dump(sweep_doc(trials=3, testTrials=1, scheduler=scheduler)))
    workdir = tmp / "wd"
    done = subprocess.run(
        sweep_cmd(file, server.url, workdir, server.username, server.token),
        capture_output=True, text=True, timeout=600, env={**clean_env(), **slurm.env},
    )  # fmt: skip
    return done, json.loads((workdir / "state.json").read_text())


async def check(done: subprocess.CompletedProcess[str], state: dict[str, Any], server: Any) -> None:
    assert done.returncode == 0, done.stderr
    assert state["phase"] == "Succeeded"
    assert (state["succeeded"], state["submitted"], state["failed"]) == (4, 4, 0)
    job_ids = [t["jobId"] for t in state["trials"]]
    assert all(j and j.isdigit() for j in job_ids), job_ids  # Slurm's own job ids
    assert len(set(job_ids)) == 4
    for model in ("linear", "mean"):
        assert await learn_calls(server, model) == 3
    assert {e["model"] for e in state["evaluation"]} == {"linear", "mean"}


async def test_sweep_on_slurm_cli(
    model_server: ServerProcess, slurm_cluster: SlurmFixture, tmp_path: Path, lammps_bin: str
) -> None:
    await create_models(model_server)
    scheduler = {"type": "slurm", "partition": slurm_cluster.partition}
    done, state = run_on_slurm(tmp_path, model_server, slurm_cluster, scheduler)
    await check(done, state, model_server)


async def test_sweep_on_slurm_rest(
    model_server: ServerProcess, slurm_cluster: SlurmFixture, tmp_path: Path, lammps_bin: str
) -> None:
    await create_models(model_server)
    token_file = tmp_path / "slurm.jwt"
    token_file.write_text(slurm_cluster.token)
    token_file.chmod(0o600)
    scheduler = {
        "type": "slurm-rest",
        "restUrl": slurm_cluster.rest_url,
        "restUser": "root",
        "tokenFile": str(token_file),
        "partition": slurm_cluster.partition,
    }
    done, state = run_on_slurm(tmp_path, model_server, slurm_cluster, scheduler)
    await check(done, state, model_server)
    assert slurm_cluster.token not in json.dumps(state)


@pytest.mark.parametrize("backend", ["slurm", "slurm-rest"])
async def test_sweep_with_data_files_on_slurm(
    model_server: ServerProcess,
    slurm_cluster: SlurmFixture,
    tmp_path: Path,
    lammps_bin: str,
    backend: str,
) -> None:
    """Each Slurm job runs in its own copy of the input directory (a data file, a potential):
    the old code gave it the script alone ("Cannot open file data.lj")."""
    from tests.integration.test_sweep_inputs import SMALL, data_input

    await create_models(model_server)
    scheduler: dict[str, Any] = {"type": backend, "partition": slurm_cluster.partition}
    if backend == "slurm-rest":
        token_file = tmp_path / "slurm.jwt"
        token_file.write_text(slurm_cluster.token)
        token_file.chmod(0o600)
        scheduler.update(restUrl=slurm_cluster.rest_url, restUser="root",
                         tokenFile=str(token_file))  # fmt: skip
    script = data_input(tmp_path)
    doc = sweep_doc(parameters=SMALL, trials=2, testTrials=0, scheduler=scheduler,
                    lammps={"inputFile": str(script), "vars": {"steps": "20"}})  # fmt: skip
    file = tmp_path / "sweep.yaml"
    file.write_text(yaml.safe_dump(doc))
    workdir = tmp_path / "wd"
    done = subprocess.run(
        sweep_cmd(file, model_server.url, workdir, model_server.username, model_server.token),
        capture_output=True, text=True, timeout=600, env={**clean_env(), **slurm_cluster.env},
    )  # fmt: skip
    state = json.loads((workdir / "state.json").read_text())
    assert done.returncode == 0, [t["reason"] for t in state["trials"]]
    assert state["phase"] == "Succeeded" and state["succeeded"] == 2
    assert all(t["jobId"].isdigit() for t in state["trials"])  # Slurm's own job ids
    assert await learn_calls(model_server, "linear") == 2
