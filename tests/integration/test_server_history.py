"""The dashboard's metrics history on a real server: bounded under a long stream, durable across
kill -9, hostile query parameters refused, and a data dir of an earlier release opens with it."""

from __future__ import annotations

import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.fixtures.server import ServerProcess, create_models, running_server

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
#: a fast sampler and a small ring, so a test sees the bound after a few dozen rounds
FAST = ("--history-interval-seconds", "0.05", "--history-points", "10")


def get(server: ServerProcess, path: str, status: int = 200) -> Any:
    r = requests.get(server.url + path, headers=server.auth_header(), timeout=30)
    assert r.status_code == status, (path, r.status_code, r.text)
    return r.json()


def learn(server: ServerProcess, model: str, n: int, start: int = 0) -> None:
    samples = [
        {"features": {"x": float(i)}, "ground_truth": 2.0 * i + 1} for i in range(start, start + n)
    ]
    r = requests.post(
        server.url + "/api/learn/batch/",
        json={"model": model, "samples": samples},
        headers=server.auth_header(),
        timeout=30,
    )
    assert r.status_code == 200, r.text


def wait_for_seq(server: ServerProcess, model: str, seq: int) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        reply: dict[str, Any] = get(server, f"/api/history/{model}")
        if reply["last_seq"] >= seq:
            return reply
        time.sleep(0.05)
    raise AssertionError(f"history of {model} never reached seq {seq}")


def stored_rows(data_dir: Path) -> dict[str, int]:
    conn = sqlite3.connect(data_dir / "dashboard.sqlite3")
    try:
        return dict(conn.execute("SELECT name, count(*) FROM history GROUP BY name").fetchall())
    finally:
        conn.close()


async def test_the_history_stays_bounded_under_a_long_stream(tmp_path: Path) -> None:
    with running_server(tmp_path / "data", *FAST) as server:
        await create_models(server)
        learned = 0
        reply: dict[str, Any] = {}
        for round_ in range(1, 31):  # 30 rounds of learns, each waited for as a new point
            learn(server, "linear", 5, start=learned)
            learned += 5
            reply = wait_for_seq(server, "linear", round_)
        points = reply["points"]
        assert reply["max_points"] == 10
        assert len(points) == 10  # 30 points were taken; the ring keeps the newest 10
        assert [p["seq"] for p in points] == list(
            range(reply["last_seq"] - 9, reply["last_seq"] + 1)
        )
        assert points[-1]["samples"] == learned
        assert set(points[-1]) >= {"seq", "time", "samples", "MAE", "RMSE", "R2"}
        # the model that never learned has no point; the file holds no more than the ring
        assert get(server, "/api/history/mean")["points"] == []
        rows = stored_rows(server.data_dir)
    assert rows == {"linear": 10}


async def test_the_history_survives_kill_9_and_goes_on(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running_server(data, "--history-interval-seconds", "0.05", token="t0ken-1") as server:
        await create_models(server)
        for round_ in range(1, 6):
            learn(server, "linear", 3, start=3 * round_)
            wait_for_seq(server, "linear", round_)
        before = get(server, "/api/history/linear")["points"]
        server.kill()  # SIGKILL: no flush, no final round
    assert len(before) == 5
    with running_server(data, "--history-interval-seconds", "0.05", token="t0ken-1") as server:
        after = get(server, "/api/history/linear")
        assert after["points"] == before  # every point acknowledged before the kill
        learn(server, "linear", 3, start=100)
        grown = wait_for_seq(server, "linear", 6)
        assert grown["points"][-1]["samples"] == 18
        assert get(server, "/api/history/linear?since=5")["points"] == grown["points"][5:]


HOSTILE = [
    ("since=-1", "since"),
    ("since=abc", "since"),
    ("since=1e9", "since"),
    ("since=99999999999999999999", "since"),
    ("since=%EF%BC%91", "since"),  # a full-width digit: isdigit() but not ASCII
    ("since=1&since=2", "since"),
    ("limit=0", "limit"),
    ("limit=1001", "limit"),
    ("limit=", "limit"),
    ("limit=+5", "limit"),
    ("bogus=1", "bogus"),
    ("x" * 300 + "=1", "x" * 40),
]


@pytest.mark.parametrize(("query", "named"), HOSTILE)
def test_hostile_history_parameters_get_a_clear_400(
    model_server: ServerProcess, query: str, named: str
) -> None:
    r = requests.get(
        f"{model_server.url}/api/history/anything?{query}",
        headers=model_server.auth_header(),
        timeout=30,
    )
    assert r.status_code == 400, r.text
    assert repr(named) in r.json()["message"]


def test_history_of_a_bad_or_unknown_model_name(model_server: ServerProcess) -> None:
    r = requests.get(
        model_server.url + "/api/history/Not_A_Name", headers=model_server.auth_header(), timeout=30
    )
    assert r.status_code == 400 and "invalid model name" in r.json()["message"]
    r = requests.get(
        model_server.url + "/api/history/nobody", headers=model_server.auth_header(), timeout=30
    )
    assert r.status_code == 404


def test_a_data_dir_of_an_earlier_release_opens_with_a_history(tmp_path: Path) -> None:
    fixture = FIXTURES / "datadir-0d095a3"
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    for kept in fixture.iterdir():
        if kept.name != "expected.json":
            shutil.copyfile(kept, data / kept.name)
    (data / "jwt-secret").chmod(0o600)
    assert not (data / "dashboard.sqlite3").exists()
    with running_server(data, "--history-interval-seconds", "0.05", token="fixture") as server:
        overview = get(server, "/api/dashboard/models")
        by_name = {m["name"]: m for m in overview["models"]}
        assert len(by_name) == 10
        assert by_name["linear"]["flavor"] == "regression"
        assert by_name["linear"]["spec"]["pipeline"]  # the stored declarative spec
        learned = by_name["linear"]["samples"]
        # a model that learned before this release gets its first point at start-up's first round
        first = wait_for_seq(server, "linear", 1)["points"][0]
        assert first["samples"] == learned
        body = {"model": "linear", "features": {"nx": 3, "ny": 4, "nz": 5}, "ground_truth": 0.5}
        r = requests.post(
            server.url + "/api/learn/", json=body, headers=server.auth_header(), timeout=30
        )
        assert r.status_code == 201, r.text
        assert wait_for_seq(server, "linear", 2)["points"][-1]["samples"] == learned + 1
    with running_server(data, token="fixture") as server:  # and it opens again with it
        assert get(server, "/api/history/linear")["last_seq"] == 2
        assert len(get(server, "/api/models/")["models"]) == 10


async def test_a_deleted_model_loses_its_history_and_a_new_one_starts_afresh(
    tmp_path: Path,
) -> None:
    with running_server(tmp_path / "data", *FAST) as server:
        await create_models(server)
        learn(server, "linear", 4)
        wait_for_seq(server, "linear", 1)
        r = requests.delete(
            server.url + "/api/model/",
            data={"model": "linear"},
            headers=server.auth_header(),
            timeout=30,
        )
        assert r.status_code == 200, r.text
        await create_models(
            server, [{"name": "linear", "pipeline": [{"class": "linear_model.LinearRegression"}]}]
        )
        learn(server, "linear", 2)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            points = get(server, "/api/history/linear")["points"]
            if points and points[-1]["samples"] == 2:
                break
            time.sleep(0.05)
        assert [p["samples"] for p in points] == [2]
        assert points[0]["seq"] == 1
