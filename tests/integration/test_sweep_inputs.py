"""``streamml sweep`` with real inputs: a script that reads a data file and includes a potential
file, an absolute ``lammps.command``, and input paths that must not leak a secret's first line
into the sweep's status. Real model server, real ``lmp``, the real local scheduler."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.server import ServerProcess, create_models, learn_calls
from tests.integration.test_sweep_cli import clean_env, sweep_cmd, sweep_doc

pytestmark = [pytest.mark.integration, pytest.mark.lammps]

LJ_DATA = Path(__file__).resolve().parents[1] / "fixtures" / "lj_data"
SECRET = "hunter2-7c2d-not-a-real-token"
#: replicas of the 32-atom data file: 32 to 128 atoms, 20 steps
SMALL = [{"name": n, "type": "int", "min": 1, "max": 2} for n in ("nx", "ny", "nz")]


def data_input(root: Path) -> Path:
    """A copy of the LJ input that reads ``data.lj`` and includes ``pair.lj`` beside it."""
    target = root / "inputs"
    shutil.copytree(LJ_DATA, target)
    return target / "in.lj-data"


def sweep(
    tmp: Path, server: ServerProcess | None, doc: dict[str, Any], *extra: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any] | None]:
    file = tmp / "sweep.yaml"
    file.write_text(yaml.safe_dump(doc))
    workdir = tmp / "wd"
    url = server.url if server else "http://127.0.0.1:9"
    cmd = sweep_cmd(file, url, workdir, server.username if server else None,
                    server.token if server else None)  # fmt: skip
    done = subprocess.run([*cmd, *extra], capture_output=True, text=True, timeout=600,
                          env=clean_env())  # fmt: skip
    state_file = workdir / "state.json"
    return done, json.loads(state_file.read_text()) if state_file.exists() else None


async def test_input_with_a_data_file_and_a_potential_runs_every_trial(
    model_server: ServerProcess, tmp_path: Path, lammps_bin: str
) -> None:
    """The old code gave each trial the script alone: "Cannot open file data.lj"."""
    await create_models(model_server)
    script = data_input(tmp_path)
    doc = sweep_doc(parameters=SMALL, trials=3, testTrials=1, maxFailures=0,
                    lammps={"inputFile": str(script), "vars": {"steps": "20"}})  # fmt: skip
    done, state = sweep(tmp_path, model_server, doc)
    assert state is not None, done.stderr
    assert done.returncode == 0, [t["reason"] for t in state["trials"]]
    assert state["phase"] == "Succeeded" and state["failed"] == 0
    for model in ("linear", "mean"):
        assert await learn_calls(model_server, model) == 3
    # every trial ran in its own copy of the input directory, beside its result
    for trial in state["trials"]:
        run = tmp_path / "wd" / "trials" / trial["jobName"] / "run"
        assert (run / "data.lj").read_bytes() == (LJ_DATA / "data.lj").read_bytes()
        assert (run / "pair.lj").is_file()
        result = json.loads((run.parent / "result.json").read_text())
        p = {k: int(v) for k, v in trial["params"].items()}
        assert result["metrics"]["atoms"] == 32 * p["nx"] * p["ny"] * p["nz"]
    assert not list((tmp_path / "inputs").glob("log.*"))  # nothing written beside the source


async def test_absolute_lammps_command(
    model_server: ServerProcess, tmp_path: Path, lammps_bin: str
) -> None:
    """HPC sites install LAMMPS under a prefix: ``/opt/.../bin/lmp`` was refused by the schema."""
    await create_models(model_server)
    absolute = str(Path(shutil.which(lammps_bin) or lammps_bin).resolve())
    assert absolute.startswith("/")
    doc = sweep_doc(trials=2, testTrials=0, lammps={"command": absolute, "vars": {"steps": "20"}})
    done, state = sweep(tmp_path, model_server, doc)
    assert done.returncode == 0, done.stderr
    assert state is not None and state["phase"] == "Succeeded"
    for spec_file in (tmp_path / "wd").glob("jobs/*/job.json"):
        command = json.loads(spec_file.read_text())["command"]
        assert command[command.index("--lmp") + 1] == absolute


def test_an_input_file_outside_the_roots_is_refused(tmp_path: Path) -> None:
    """The old code ran LAMMPS on any readable file and copied its ERROR line, which quotes the
    file's first line, into the status."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "token").write_text(f"{SECRET}\n")
    here = tmp_path / "sweep"
    here.mkdir()
    doc = sweep_doc(lammps={"inputFile": str(secrets / "token")})
    done, state = sweep(here, None, doc)
    assert done.returncode == 2, done.stderr
    assert "spec.lammps.inputFile" in done.stderr or "lammps.inputFile" in done.stderr
    assert "outside the allowed input roots" in done.stderr and "--input-root" in done.stderr
    assert SECRET not in done.stderr + done.stdout
    assert state is None and not list(here.glob("wd/jobs/*"))  # nothing was submitted


async def test_a_secret_read_by_the_input_never_reaches_the_status(
    model_server: ServerProcess, tmp_path: Path, lammps_bin: str
) -> None:
    """An allowed input (``--input-root``) that makes LAMMPS read a secret: the trial fails with
    a fixed code and LAMMPS' words without the echo; the full text is in the job's own log."""
    await create_models(model_server)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "token").write_text(f"{SECRET}\nsecond line\n")
    here = tmp_path / "sweep"
    here.mkdir()
    for lammps_spec in (
        {"inputFile": str(secrets / "token")},  # the secret as the script (a root allows it)
        {"input": f"include {secrets / 'token'}\n"},  # the script reads it itself
    ):
        shutil.rmtree(here / "wd", ignore_errors=True)
        doc = sweep_doc(trials=1, testTrials=0, maxFailures=0, lammps=lammps_spec)
        done, state = sweep(here, model_server, doc, "--input-root", str(secrets))
        assert done.returncode == 1 and state is not None, done.stderr
        assert state["phase"] == "Failed"
        assert [t["reason"] for t in state["trials"]] == ["LammpsError: Unknown command"]
        assert SECRET not in json.dumps(state) and SECRET not in done.stdout + done.stderr
        logs = "".join(p.read_text() for p in (here / "wd").glob("jobs/*/output"))
        assert f"Unknown command: {SECRET}" in logs  # the job's own log keeps the full text
    assert await learn_calls(model_server, "linear") == 0
