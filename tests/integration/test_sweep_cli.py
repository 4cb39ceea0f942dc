"""``streamml sweep`` end to end: real model server, real ``lmp``, the real local scheduler."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamml.pycommand import streamml_command
from tests.fixtures.server import (
    ServerProcess,
    create_models,
    free_port,
    learn_calls,
    running_server,
)
from tests.fixtures.sweeps import sweep_doc as fixture_sweep

pytestmark = [pytest.mark.integration, pytest.mark.lammps]


def sweep_doc(**spec: Any) -> dict[str, Any]:
    return fixture_sweep("cli-sweep", "unused-by-the-cli", **spec)


def sweep_cmd(
    file: Path, server: str, workdir: Path, username: str | None, token: str | None
) -> list[str]:
    cmd = [*streamml_command(), "sweep", str(file), "--server", server,
           "--workdir", str(workdir), "--no-progress", "--interval", "0.3"]  # fmt: skip
    if username:
        token_file = workdir.parent / "token"
        token_file.write_text(token or "")
        cmd += ["--username", username, "--token-file", str(token_file)]
    return cmd


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")}


def run_sweep(
    tmp: Path, doc: dict[str, Any], server: ServerProcess
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    file = tmp / "sweep.yaml"
    file.write_text(yaml.safe_dump(doc))
    workdir = tmp / "wd"
    done = subprocess.run(
        sweep_cmd(file, server.url, workdir, server.username, server.token),
        capture_output=True,
        text=True,
        timeout=600,
        env=clean_env(),
    )
    state = json.loads((workdir / "state.json").read_text())
    return done, state


def job_dirs(workdir: Path) -> list[str]:
    return sorted(json.loads(p.read_text())["name"] for p in workdir.glob("jobs/*/job.json"))


async def test_small_sweep_on_local_learns_every_run_once(
    model_server: ServerProcess, tmp_path: Path, lammps_bin: str
) -> None:
    await create_models(model_server)
    done, state = run_sweep(tmp_path, sweep_doc(), model_server)
    assert done.returncode == 0, done.stderr
    assert state["phase"] == "Succeeded"
    assert (state["succeeded"], state["failed"], state["submitted"]) == (7, 0, 7)
    assert state["progress"] == "7/7"
    # every training run learned exactly once by every model; held-out runs never learned
    for model in ("linear", "mean"):
        assert await learn_calls(model_server, model) == 5
    evaluation = {e["model"]: e for e in state["evaluation"]}
    assert set(evaluation) == {"linear", "mean"}
    for e in evaluation.values():
        assert e["n"] == 2 and e["MAE"] >= 0 and e["RMSE"] >= e["MAE"]
    tests = state["testResults"]
    assert len(tests) == 2 and all(t["target"] > 0 for t in tests)
    assert all(set(t["predictions"]) == {"linear", "mean"} for t in tests)
    curves = {c["model"]: c for c in state["learningCurve"]}
    assert set(curves) == {"linear", "mean"}
    assert curves["mean"]["points"][-1]["trials"] == 5
    assert curves["mean"]["points"][-1]["samples"] == 5
    assert "held-out evaluation (2 runs)" in done.stdout
    assert "learning curve" in done.stdout
    # the jobs ran the LAMMPS sizes of the plan, and the state file shows them
    params = [t["params"] for t in state["trials"]]
    assert all(4 <= int(p["nx"]) <= 6 and 4 <= int(p["nz"]) <= 5 for p in params)
    # the credentials reached the jobs as 0600 files, never on a command line
    names = job_dirs(tmp_path / "wd")
    assert len(names) == 7 and len(set(names)) == 7
    for spec_file in (tmp_path / "wd").glob("jobs/*/job.json"):
        assert model_server.token not in spec_file.read_text()
    token_file = tmp_path / "wd" / "credentials" / "token"
    assert token_file.stat().st_mode & 0o777 == 0o600

    # the same command again resumes a finished sweep: nothing is submitted twice
    again = subprocess.run(
        sweep_cmd(tmp_path / "sweep.yaml", model_server.url, tmp_path / "wd",
                  model_server.username, model_server.token),
        capture_output=True, text=True, timeout=120, env=clean_env(),
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert job_dirs(tmp_path / "wd") == names
    assert await learn_calls(model_server, "linear") == 5


async def test_lammps_failure_is_recorded_and_retried_up_to_max_failures(
    model_server: ServerProcess, tmp_path: Path, lammps_bin: str
) -> None:
    await create_models(model_server)
    broken = "units lj\nlattice fcc 0.8442\nno_such_command ${nx}\n"
    doc = sweep_doc(trials=1, testTrials=0, maxFailures=2, lammps={"input": broken})
    done, state = run_sweep(tmp_path, doc, model_server)
    assert done.returncode == 1
    assert state["phase"] == "Failed"
    assert state["failed"] == 3 and state["submitted"] == 3
    attempts = [(t["attempt"], t["state"]) for t in state["trials"]]
    assert attempts == [(1, "Failed"), (2, "Failed"), (3, "Failed")]
    # a fixed code and LAMMPS' words, without the echo of the input line
    assert all(t["reason"] == "LammpsError: Unknown command" for t in state["trials"]), state
    assert "no_such_command" not in json.dumps(state)
    ready = next(c for c in state["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "TooManyFailures" and "LammpsError" in ready["message"]
    assert len(job_dirs(tmp_path / "wd")) == 3
    assert await learn_calls(model_server, "linear") == 0
    assert re.search(r"failed cli-sweep-[0-9a-f]{6}-t00000-a3", done.stdout), done.stdout


async def test_server_down_while_jobs_finish_spools_then_delivers_once(
    tmp_path: Path, lammps_bin: str
) -> None:
    port = free_port()
    data = tmp_path / "server-data"
    with running_server(data, port=port) as server:
        await create_models(server)
        username, token = server.username, server.token
    file = tmp_path / "sweep.yaml"
    file.write_text(yaml.safe_dump(sweep_doc(trials=3, testTrials=1)))
    workdir = tmp_path / "wd"
    sweep = subprocess.Popen(
        sweep_cmd(file, f"http://127.0.0.1:{port}", workdir, username, token),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env(),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        spooled: list[str] = []
        while time.monotonic() < deadline and len(spooled) < 2:
            time.sleep(0.5)
            try:
                state = json.loads((workdir / "state.json").read_text())
            except (OSError, ValueError):
                continue
            spooled = [t["jobName"] for t in state["trials"] if t["state"] == "Spooled"]
            assert sweep.poll() is None, sweep.communicate()
        assert len(spooled) >= 2, "the runs never spooled their results"
        assert state["succeeded"] == 0
        with running_server(data, port=port, username=username, token=token) as server:
            _, err = sweep.communicate(timeout=300)
            assert sweep.returncode == 0, err
            state = json.loads((workdir / "state.json").read_text())
            assert state["phase"] == "Succeeded" and state["succeeded"] == 4
            for model in ("linear", "mean"):
                assert await learn_calls(server, model) == 3  # nothing lost, nothing twice
            assert all(len(t["predictions"]) == 2 for t in state["testResults"])
    finally:
        if sweep.poll() is None:
            sweep.kill()
            sweep.wait()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"parameters": []}, "spec.parameters"),
        ({"parameters": [{"name": "nx", "type": "int", "min": 9, "max": 3}]}, "min 9.0 > max"),
        ({"trials": -1}, "spec.trials"),
        ({"testTrials": -2}, "spec.testTrials"),
        ({"scheduler": {"type": "pbs"}}, "spec.scheduler.type"),
        ({"trials": 40, "sampling": {"method": "grid"}}, "the grid has 18 points"),
        (
            {"parameters": [{"name": "nx", "type": "int", "min": 1, "max": 2}], "testTrials": 2},
            "only 2 distinct points",
        ),
    ],
)
def test_invalid_sweep_files_are_one_line_errors(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text(yaml.safe_dump(sweep_doc(**change)))
    done = subprocess.run(
        sweep_cmd(file, "http://127.0.0.1:9", tmp_path / "wd", None, None),
        capture_output=True, text=True, timeout=60, env=clean_env(),
    )  # fmt: skip
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "wd" / "jobs").exists()  # nothing was submitted


@pytest.mark.parametrize(
    "content",
    ["{unclosed: [", "- just\n- a list\n", "kind: StreamModel\nspec: {}\n", "x" * 1_100_000],
)
def test_malformed_and_oversized_files(tmp_path: Path, content: str) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text(content)
    done = subprocess.run(
        sweep_cmd(file, "http://127.0.0.1:9", tmp_path / "wd", None, None),
        capture_output=True, text=True, timeout=60, env=clean_env(),
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.startswith("streamml sweep: error:")
    assert "Traceback" not in done.stderr


async def test_cli_killed_mid_sweep_resumes_without_resubmitting(
    model_server: ServerProcess, tmp_path: Path, lammps_bin: str
) -> None:
    await create_models(model_server)
    file = tmp_path / "sweep.yaml"
    doc = sweep_doc(trials=4, testTrials=0, lammps={"vars": {"steps": "2000"}})
    file.write_text(yaml.safe_dump(doc))
    workdir = tmp_path / "wd"
    cmd = sweep_cmd(file, model_server.url, workdir, model_server.username, model_server.token)
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env())
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(job_dirs(workdir)) < 2:
            time.sleep(0.2)
        assert len(job_dirs(workdir)) >= 2, "no runs were submitted"
    finally:
        first.kill()  # SIGKILL: a crash, no clean-up; the jobs keep running (detached)
        first.wait()
    state = json.loads((workdir / "state.json").read_text())
    assert state["phase"] == "Running" and state["succeeded"] < 4
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=clean_env())
    assert done.returncode == 0, done.stderr
    names = job_dirs(workdir)
    assert len(names) == len(set(names)) == 4  # the two runs in flight were adopted
    state = json.loads((workdir / "state.json").read_text())
    assert state["submitted"] == 4 and state["succeeded"] == 4
    for model in ("linear", "mean"):
        assert await learn_calls(model_server, model) == 4
