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
