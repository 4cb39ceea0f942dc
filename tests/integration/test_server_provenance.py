"""Provenance of learned samples against real server processes (and the real ``lmp``).

Every learn path (single, batch, several targets) keeps where its sample came from; the split by
origin (``GET /api/provenance/{model}?by=KEY``) is the same after a snapshot compacted the log
and after kill -9 (the log replayed); the learn log holds the provenance as a 6th element only
when one was given; hostile provenance is a 400 naming the field with nothing applied; the
read-only credential reads it; a sweep's trials arrive with sweep, trial, attempt, LAMMPS
version and host.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from streamml.client.api import ModelServerClient
from streamml.pycommand import streamml_command
from tests.fixtures.server import ServerProcess, create_models, running_server
from tests.fixtures.sweeps import sweep_doc

pytestmark = pytest.mark.integration

PIPELINE = [{"class": "linear_model.LinearRegression"}]
READER = ("viewer", "read-token-1")
READ_ARGS = ("--auth-read-user", READER[0], f"--auth-read-token={READER[1]}")


def call(server: ServerProcess, method: str, path: str, body: Any = None) -> Any:
    r = requests.request(
        method, server.url + path, json=body, headers=server.auth_header(), timeout=30
    )
    assert r.status_code in (200, 201), (path, r.status_code, r.text)
    return r.json()


def read_only(server: ServerProcess, path: str) -> requests.Response:
    return requests.get(server.url + path, auth=READER, timeout=30)


def create(server: ServerProcess, *names: str) -> None:
    for name in names:
        call(server, "POST", f"/api/model/regression/{name}/", {"pipeline": PIPELINE})


def split(server: ServerProcess, model: str, key: str) -> dict[str, tuple[int, int, int]]:
    """{value: (count, first, last)} as the read-only credential reads it."""
    r = read_only(server, f"/api/provenance/{model}?by={key}")
    assert r.status_code == 200, r.text
    return {v["value"]: (v["count"], v["first"], v["last"]) for v in r.json()["values"]}


def log_rows(data: Path, model: str) -> list[list[Any]]:
    """The model's records in the learn log (the file read beside the server)."""
    conn = sqlite3.connect(f"file:{data / 'streamml.sqlite3'}?mode=ro", uri=True)
    try:
        query = "SELECT body FROM learn_log WHERE name = ? ORDER BY seq"
        bodies = [row[0] for row in conn.execute(query, (model,))]
    finally:
        conn.close()
    return [record for body in bodies for record in json.loads(body)]


def learn_everywhere(server: ServerProcess) -> dict[str, dict[str, tuple[int, int, int]]]:
    """12 samples on model a (and 3 on b): single learns from host-1 and host-2, a batch from
    host-3, several targets from host-4, and 2 that say nothing; the expected split by host."""
    for i in range(6):
        host = f"host-{1 + i % 2}"
        origin = {"sweep": "eos", "trial": f"u/t{i:05d}", "attempt": "1", "host": host}
        body = {"model": "a", "features": {"x": float(i)}, "ground_truth": 2.0 * i,
                "identifier": f"s{i}", "provenance": origin}  # fmt: skip
        call(server, "POST", "/api/learn/", body)
    call(server, "POST", "/api/learn/", {"model": "a", "features": {"x": 9.0}, "ground_truth": 1})
    samples = [{"features": {"x": float(i)}, "ground_truth": float(i)} for i in range(3)]
    batch = {"model": "a", "samples": samples, "provenance": {"host": "host-3", "sweep": "eos"}}
    call(server, "POST", "/api/learn/batch/", batch)
    for i in range(2):
        targets = {"features": {"x": float(i)}, "identifier": f"mt{i}",
                   "targets": [{"name": "p", "models": ["a"], "ground_truth": 1.0 + i},
                               {"name": "e", "models": ["b"], "ground_truth": -1.0 - i}],
                   "provenance": {"host": "host-4", "lammps_version": "29 Aug 2024"}}  # fmt: skip
        call(server, "POST", "/api/learn/targets/", targets)
    call(server, "POST", "/api/learn/", {"model": "b", "features": {"x": 1.0}, "ground_truth": 0})
    return {
        "a": {
            "host-1": (3, 1, 5),
            "host-2": (3, 2, 6),
            "host-3": (3, 8, 10),  # sample 7 said nothing
            "host-4": (2, 11, 12),
        },
        "b": {"host-4": (2, 1, 2)},
    }


def test_the_split_by_origin_survives_a_snapshot_and_kill_9(tmp_path: Path) -> None:
    data = tmp_path / "data"
    snapshots = ("--snapshot-every", "5", "--snapshot-interval-seconds", "3600")
    with running_server(data, *READ_ARGS, *snapshots) as server:
        create(server, "a", "b")
        expected = learn_everywhere(server)
        for model, want in expected.items():
            assert split(server, model, "host") == want
        summary = read_only(server, "/api/provenance/a").json()
        assert summary["samples"] == 12 and summary["samples_with_provenance"] == 11
        assert summary["keys"]["host"] == 4 and summary["keys"]["trial"] == 6
        assert split(server, "a", "sweep") == {"eos": (9, 1, 10)}
        deadline = time.monotonic() + 60  # a snapshot of a compacts the log (every 5 learns)
        while log_rows(data, "a"):
            assert time.monotonic() < deadline, "no snapshot compacted the learn log"
            time.sleep(0.2)
        # one more learn of each kind after the snapshot: only the log holds it now
        body = {"model": "a", "features": {"x": 5.0}, "ground_truth": 5.0, "identifier": "late",
                "provenance": {"host": "host-5"}}  # fmt: skip
        call(server, "POST", "/api/learn/", body)
        call(
            server, "POST", "/api/learn/", {"model": "a", "features": {"x": 6.0}, "ground_truth": 6}
        )
        rows = log_rows(data, "a")
        assert len(rows) == 2 and rows[0][5] == {"host": "host-5"} and len(rows[0]) == 6
        assert len(rows[1]) == 5  # no provenance: the row an earlier release wrote
        before = {m: call(server, "GET", f"/api/provenance/{m}?by=host") for m in ("a", "b")}
        stats = call(server, "GET", "/api/stats/?model=a")["learn"]
        server.kill()  # SIGKILL: no final snapshot; the log after the last one is replayed
    with running_server(data, *READ_ARGS) as server:
        for model in ("a", "b"):
            assert call(server, "GET", f"/api/provenance/{model}?by=host") == before[model]
        assert split(server, "a", "host")["host-5"] == (1, 13, 13)
        assert call(server, "GET", "/api/stats/?model=a")["learn"] == stats
        # a resent trial is a duplicate: its provenance is not counted twice
        body = {"model": "a", "features": {"x": 5.0}, "ground_truth": 5.0, "identifier": "late",
                "provenance": {"host": "host-6"}}  # fmt: skip
        assert call(server, "POST", "/api/learn/", body)["results"]["a"]["duplicate"] is True
        assert "host-6" not in split(server, "a", "host")


BAD_PROVENANCE: list[Any] = [
    "host-1",
    ["host", "a"],
    {"host": 7},
    {"host": ""},
    {"host": "h" * 201},
    {"host": "a\nb"},
    {"host": "\u001b[31mred"},
    {"host": {"name": "a"}},
    {"Host": "a"},
    {"k" * 33: "a"},
    {f"extra{i}": "v" for i in range(5)},
]


def test_hostile_provenance_is_a_400_naming_it_and_nothing_is_applied(tmp_path: Path) -> None:
    with running_server(tmp_path / "data", *READ_ARGS) as server:
        create(server, "a", "b")
        bodies = {
            "/api/learn/": lambda p: {"model": "a", "features": {"x": 1.0}, "ground_truth": 1.0,
                                      "identifier": "t1", "provenance": p},
            "/api/learn/batch/": lambda p: {"model": "a", "provenance": p, "samples": [
                {"features": {"x": 1.0}, "ground_truth": 1.0, "identifier": "t1"}]},
            "/api/learn/targets/": lambda p: {"features": {"x": 1.0}, "identifier": "t1",
                "targets": [{"name": "p", "models": ["a"], "ground_truth": 1.0}],
                "provenance": p},
        }  # fmt: skip
        refused = 0
        for path, body in bodies.items():
            for bad in BAD_PROVENANCE:
                r = requests.post(server.url + path, json=body(bad), headers=server.auth_header())
                assert r.status_code == 400, (path, bad, r.text)
                assert "provenance" in r.json()["message"], (path, bad, r.text)
                refused += 1
        assert refused == 3 * len(BAD_PROVENANCE)
        assert call(server, "GET", "/api/stats/?model=a")["learn"]["n_calls"] == 0
        assert read_only(server, "/api/provenance/a").json()["samples_with_provenance"] == 0
        # nothing was applied: the identifier is still free, the corrected request learns
        good = bodies["/api/learn/"]({"host": "node-1"})
        assert call(server, "POST", "/api/learn/", good)["results"]["a"]["learned"] is True
        assert split(server, "a", "host") == {"node-1": (1, 1, 1)}
        # the query is checked too, and writes stay refused to the read-only credential
        for query, field in (("?by=Host", "by"), ("?by=host&limit=0", "limit"),
                             ("?by=host&limit=x", "limit"), ("?limit=1001", "limit"),
                             ("?by=host&limit=000000010000", "limit")):  # fmt: skip
            r = read_only(server, f"/api/provenance/a{query}")
            assert r.status_code == 400 and field in r.json()["message"], (query, r.text)
        assert read_only(server, "/api/provenance/nope").status_code == 404
        r = requests.post(server.url + "/api/learn/", json=good, auth=READER, timeout=30)
        assert r.status_code == 403, r.text


@pytest.mark.lammps
async def test_a_sweeps_trials_arrive_with_their_origin(tmp_path: Path, lammps_bin: str) -> None:
    """``streamml sweep`` on the local scheduler with the real ``lmp``: every training trial's
    sample says its sweep, trial, attempt, LAMMPS version (the log's first line) and host."""
    with running_server(tmp_path / "server") as server:
        await create_models(server)
        doc = sweep_doc("prov-sweep", "unused-by-the-cli", trials=3, testTrials=1)
        sweep_file = tmp_path / "sweep.yaml"
        sweep_file.write_text(yaml.safe_dump(doc))
        token_file = tmp_path / "token"
        token_file.write_text(server.token or "")
        workdir = tmp_path / "wd"
        command = [*streamml_command(), "sweep", str(sweep_file), "--server", server.url,
                   "--workdir", str(workdir), "--no-progress", "--interval", "0.3",
                   "--username", str(server.username), "--token-file", str(token_file)]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")}
        done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
        assert done.returncode == 0, done.stderr
        logs = sorted(workdir.glob("trials/*/lammps.log"))
        assert len(logs) == 4  # 3 training trials and 1 held-out
        first_lines = {path.read_text().splitlines()[0] for path in logs}
        assert len(first_lines) == 1
        (line,) = first_lines
        assert line.startswith("LAMMPS (") and line.endswith(")")
        async with ModelServerClient(server.url, username=server.username, token=server.token) as c:
            reply = {key: await c.provenance("linear", by=key) for key in
                     ("sweep", "attempt", "lammps_version", "host", "trial")}  # fmt: skip
        counts = {key: {v.value: v.count for v in r.values} for key, r in reply.items()}
        assert counts["sweep"] == {"prov-sweep": 3}
        assert counts["attempt"] == {"1": 3}
        assert counts["lammps_version"] == {line[len("LAMMPS (") : -1]: 3}
        assert counts["host"] == {socket.gethostname(): 3}
        state = json.loads((workdir / "state.json").read_text())
        trials = sorted(counts["trial"])
        assert len(trials) == 3 and all(t.startswith(state["identity"] + "/t") for t in trials)
        assert sorted(v.first for v in reply["trial"].values) == [1, 2, 3]


@pytest.mark.lammps
async def test_a_spooled_trial_keeps_its_origin_until_it_is_delivered(
    tmp_path: Path, lammps_bin: str
) -> None:
    """``run-lammps --sweep --attempt`` while the server is down: the spooled request keeps the
    provenance, and the redelivery learns it (once)."""
    with running_server(tmp_path / "server") as server:
        await create_models(server)
        port, data_dir, token = server.port, server.data_dir, server.token
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")}
    env.update(STREAMML_USERNAME=str(server.username), STREAMML_TOKEN=str(token))
    spool, log = tmp_path / "spool", tmp_path / "lammps.log"
    command = [*streamml_command(), "run-lammps", "--server", server.url, "--trial-id",
               "manual/t00007", "--sweep", "manual", "--attempt", "2", "--var", "nx=4",
               "--var", "ny=4", "--var", "nz=4", "--var", "steps=20", "--retries", "1",
               "--spool-dir", str(spool), "--log-file", str(log)]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "result spooled to" in done.stderr, done.stderr
    (entry,) = spool.glob("*.json")
    version = log.read_text().splitlines()[0][len("LAMMPS (") : -1]
    want = {"sweep": "manual", "trial": "manual/t00007", "attempt": "2",
            "lammps_version": version, "host": socket.gethostname()}  # fmt: skip
    assert json.loads(entry.read_text())["provenance"] == want
    with running_server(data_dir, port=port, token=token) as again:
        redeliver = [*streamml_command(), "run-lammps", "--deliver-spool", str(spool)]
        for _ in range(2):  # the second delivery is a duplicate: nothing counted twice
            done = subprocess.run(redeliver, env=env, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
            for delivered in (spool / "delivered").glob("*.json"):
                shutil.copy(delivered, spool / delivered.name)
        async with ModelServerClient(again.url, username=again.username, token=token) as c:
            for key, value in want.items():
                reply = await c.provenance("linear", by=key)
                assert [(v.value, v.count) for v in reply.values] == [(value, 1)], key
