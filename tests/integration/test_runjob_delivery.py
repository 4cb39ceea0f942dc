"""``streamml run-lammps`` against a real model server process and the real ``lmp``.

A training trial learns exactly once under its identifier; a held-out trial only predicts; a
server that is down while jobs finish gets the results later from the spool, nothing lost and
nothing learned twice; a LAMMPS failure exits non-zero with LAMMPS' own ERROR line.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from streamml.client.api import ModelServerClient
from streamml.pycommand import streamml_command
from tests.fixtures.server import (
    ServerProcess,
    create_models,
    free_port,
    learn_calls,
    running_server,
)

pytestmark = [pytest.mark.integration, pytest.mark.lammps]

SMALL = ["--var", "nx=4", "--var", "ny=4", "--var", "nz=5", "--var", "steps=20"]


def run_lammps(
    server_url: str,
    trial: str,
    *args: str,
    username: str | None,
    token: str | None,
    result_file: Path | None = None,
    extra_env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")}
    env.update(extra_env or {})
    if username is not None and token is not None:
        env.update(STREAMML_USERNAME=username, STREAMML_TOKEN=token)
    if result_file is not None:
        env["STREAMML_RESULT_FILE"] = str(result_file)
    command = [*streamml_command(), "run-lammps", "--server", server_url,
               "--trial-id", trial, *args]  # fmt: skip
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def read(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


@pytest.fixture
def server(tmp_path: Path, lammps_bin: str) -> Any:
    with running_server(tmp_path / "server") as server:
        yield server


async def test_train_then_test_trial(server: ServerProcess, tmp_path: Path) -> None:
    await create_models(server)
    result = tmp_path / "t1.json"
    proc = run_lammps(server.url, "sw-t1", *SMALL, username=server.username,
                      token=server.token, result_file=result)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = read(result)
    assert doc["delivered"] is True and doc["spooled"] is None and doc["error"] is None
    assert doc["features"] == {"nx": 4, "ny": 4, "nz": 5, "steps": 20}
    assert doc["metrics"]["atoms"] == 4 * 4 * 4 * 5
    assert doc["target"] == doc["metrics"]["loop_time"] > 0
    assert await learn_calls(server, "linear") == 1
    assert await learn_calls(server, "mean") == 1

    # --model narrows the learn to a subset
    proc = run_lammps(server.url, "sw-t1b", *SMALL, "--model", "linear",
                      username=server.username, token=server.token)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (await learn_calls(server, "linear"), await learn_calls(server, "mean")) == (2, 1)

    # a held-out trial predicts with every model and never learns
    test_result = tmp_path / "h1.json"
    proc = run_lammps(server.url, "sw-h1", *SMALL, "--test", "--features", "vars+atoms",
                      "--target", "timesteps_per_s", "--result-file", str(test_result),
                      username=server.username, token=server.token)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = read(test_result)
    assert doc["kind"] == "predict" and doc["delivered"] is True
    assert set(doc["predictions"]) == {"linear", "mean"}
    assert doc["predictions"]["mean"] == pytest.approx(read(result)["target"])
    assert doc["features"]["atoms"] == 320
    assert doc["target"] == doc["metrics"]["timesteps_per_s"]
    assert await learn_calls(server, "linear") == 2


async def test_server_down_spools_then_redelivers_exactly_once(
    server: ServerProcess, tmp_path: Path
) -> None:
    await create_models(server)
    creds = {"username": server.username, "token": server.token}
    spool = tmp_path / "spool"
    port, data_dir = server.port, server.data_dir
    assert server.stop() == 0  # the server goes away while jobs finish

    results = {trial: tmp_path / f"{trial}.json" for trial in ("sw-t2", "sw-t3", "sw-h2")}
    for trial, result in results.items():
        extra = ["--test"] if trial.startswith("sw-h") else []
        proc = run_lammps(server.url, trial, *SMALL, *extra, "--retries", "3", "--backoff", "0.05",
                          "--spool-dir", str(spool), result_file=result, **creds)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert "result spooled to" in proc.stderr
        doc = read(result)
        assert doc["delivered"] is False and doc["spooled"] is not None
        assert doc["metrics"]["atoms"] == 320  # the LAMMPS result itself is kept
    assert sorted(p.name for p in spool.glob("*.json")) == [
        "sw-h2.json",
        "sw-t2.json",
        "sw-t3.json",
    ]

    # no spool dir while the server is down: not delivered, not silently dropped -> exit 3
    proc = run_lammps(server.url, "sw-t4", *SMALL, "--retries", "1", **creds)
    assert proc.returncode == 3 and "NOT spooled" in proc.stderr

    with running_server(data_dir, port=port, token=server.token) as again:
        redeliver = [*streamml_command(), "run-lammps", "--deliver-spool",
                     str(spool), "--retries", "1"]  # fmt: skip
        env = {**os.environ, "STREAMML_USERNAME": str(again.username),
               "STREAMML_TOKEN": str(again.token)}  # fmt: skip
        proc = subprocess.run(redeliver, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout)
        assert sorted(report["delivered"]) == ["sw-h2", "sw-t2", "sw-t3"] and report["failed"] == {}
        assert list(spool.glob("*.json")) == []
        assert read(results["sw-t2"])["delivered"] is True
        assert set(read(results["sw-h2"])["predictions"]) == {"linear", "mean"}
        learned = await learn_calls(again, "linear")
        assert learned == 2  # sw-t2 and sw-t3, once each

        # delivering the same spool entries again must not learn them again
        for entry in (spool / "delivered").glob("sw-t*.json"):
            shutil.copy(entry, spool / entry.name)
        proc = subprocess.run(redeliver, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert await learn_calls(again, "linear") == learned
        async with ModelServerClient(again.url, username=again.username, token=again.token) as c:
            reply = await c.learn({"nx": 4}, 1.0, model="linear", identifier="sw-t2")
        assert reply.results["linear"].duplicate is True


async def test_lammps_failure_exits_nonzero_with_error_line(
    server: ServerProcess, tmp_path: Path
) -> None:
    await create_models(server)
    result = tmp_path / "bad.json"
    proc = run_lammps(server.url, "sw-bad", "--var", "nx=3.3", "--var", "ny=4", "--var", "nz=4",
                      "--var", "steps=50", username=server.username, token=server.token,
                      result_file=result)  # fmt: skip
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert "LAMMPS failed: LammpsError: Lost atoms: original" in last
    assert "ERROR: Lost atoms: original" in proc.stderr  # the full line: the job's own log
    doc = read(result)
    assert doc["error"].startswith("LammpsError: Lost atoms") and doc["delivered"] is False
    assert doc["reason"] == "LammpsError"
    assert await learn_calls(server, "linear") == 0  # nothing learned from a failed run

    bad_input = tmp_path / "bad.in"
    bad_input.write_text("units lj\nnot_a_command\n")
    proc = run_lammps(server.url, "sw-bad2", "--input", str(bad_input),
                      username=server.username, token=server.token)  # fmt: skip
    assert proc.returncode == 1 and "ERROR: Unknown command: not_a_command" in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--var", "nx"], "--var expects NAME=VALUE"),
        (["--var", "=4"], "--var expects NAME=VALUE"),
        (["--var", "nx=inf"], "not a finite number"),
        (["--target", "bogus"], "--target must be one of"),
        (["--input", "/nonexistent/in.lj"], "no such file"),
        (["--retries", "0"], "--retries must be >= 1"),
        (["--var", "bad name=1"], "invalid LAMMPS variable name"),
    ],
)
def test_bad_options_are_one_line_errors(lammps_bin: str, args: list[str], message: str) -> None:
    proc = run_lammps("http://127.0.0.1:9", "t", *args, username=None, token=None)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


async def test_wrong_credentials_are_not_retried_but_spooled(
    server: ServerProcess, tmp_path: Path
) -> None:
    await create_models(server)
    spool = tmp_path / "spool"
    proc = run_lammps(server.url, "sw-auth", *SMALL, "--spool-dir", str(spool),
                      username="intruder", token="wrong")  # fmt: skip
    assert proc.returncode == 3
    assert "not delivered" in proc.stderr and (spool / "sw-auth.json").exists()
    assert "retrying" not in proc.stderr  # a 401 does not heal by waiting
    assert await learn_calls(server, "linear") == 0


async def test_credentials_from_files(server: ServerProcess, tmp_path: Path) -> None:
    """The sweep engine hands jobs file paths (STREAMML_*_FILE), never the secrets."""
    await create_models(server)
    (tmp_path / "username").write_text(f"{server.username}\n")
    (tmp_path / "token").write_text(f"{server.token}\n")
    files = {"STREAMML_USERNAME_FILE": str(tmp_path / "username"),
             "STREAMML_TOKEN_FILE": str(tmp_path / "token")}  # fmt: skip
    proc = run_lammps(server.url, "sw-files", *SMALL, username=None, token=None,
                      extra_env=files)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert await learn_calls(server, "linear") == 1
    files["STREAMML_TOKEN_FILE"] = str(tmp_path / "missing")
    proc = run_lammps(server.url, "sw-nofile", *SMALL, username=None, token=None,
                      extra_env=files)  # fmt: skip
    assert proc.returncode == 2 and "credentials file: cannot read" in proc.stderr
    (tmp_path / "empty").write_text("\n")
    files["STREAMML_TOKEN_FILE"] = str(tmp_path / "empty")
    proc = run_lammps(server.url, "sw-empty", *SMALL, username=None, token=None,
                      extra_env=files)  # fmt: skip
    empty = f"credentials file: {tmp_path / 'empty'} is empty"
    assert proc.returncode == 2 and empty in proc.stderr
    assert await learn_calls(server, "linear") == 1  # neither failed job sent anything


async def test_trials_whose_ids_differ_only_in_escaped_characters_spool_apart(
    tmp_path: Path, lammps_bin: str
) -> None:
    """``exp/t1`` and ``exp:t1`` once shared the spool file ``exp_t1.json``: one result lost."""
    port = free_port()
    data_dir = tmp_path / "server"
    with running_server(data_dir, port=port) as server:
        await create_models(server)
        creds = {"username": server.username, "token": server.token}
    spool = tmp_path / "spool"
    trials = ("exp/t1", "exp:t1", "exp_t1")
    for trial in trials:  # the server is down: every result goes to the spool
        proc = run_lammps(f"http://127.0.0.1:{port}", trial, *SMALL, "--retries", "1",
                          "--spool-dir", str(spool), **creds)  # fmt: skip
        assert proc.returncode == 0 and "result spooled to" in proc.stderr, proc.stderr
    assert len(list(spool.glob("*.json"))) == 3
    with running_server(data_dir, port=port, token=server.token) as again:
        env = {**os.environ, "STREAMML_USERNAME": str(again.username),
               "STREAMML_TOKEN": str(again.token)}  # fmt: skip
        proc = subprocess.run(
            [*streamml_command(), "run-lammps", "--deliver-spool", str(spool), "--retries", "1"],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert sorted(json.loads(proc.stdout)["delivered"]) == sorted(trials)
        assert await learn_calls(again, "linear") == 3  # none lost
