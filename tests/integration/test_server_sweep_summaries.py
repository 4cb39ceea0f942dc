"""Sweep summaries on a real server: a round trip, refusals of malformed and oversized input
that store nothing, the bound on their number, durability, and a real sweep (local scheduler,
real ``lmp``) that publishes its progress and held-out evaluation while it runs."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.fixtures.server import ServerProcess, create_models, running_server

pytestmark = pytest.mark.integration


def summary(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "phase": "Running",
        "scheduler": "local",
        "target": "cpu_time",
        "trials": 30,
        "test_trials": 10,
        "succeeded": 12,
        "failed": 1,
        "running": 2,
        "pending": 26,
        "best_model": "linear",
        "held_out_r2": 0.91,
        "learning_curve": [
            {"model": "linear", "metric": "R2",
             "points": [{"trials": 1, "samples": 1, "value": None},
                        {"trials": 2, "samples": 2, "value": 0.5}]}
        ],
        "evaluation": [{"model": "linear", "n": 3, "mae": 0.1, "rmse": 0.2, "r2": 0.9}],
        "held_out": [{"id": 31, "target": 1.5, "predictions": {"linear": 1.4}}],
    }  # fmt: skip
    return {**base, **fields}


def put(server: ServerProcess, name: str, body: Any, **kwargs: Any) -> requests.Response:
    return requests.put(
        f"{server.url}/api/sweeps/{name}",
        headers=server.auth_header(),
        timeout=30,
        json=body,
        **kwargs,
    )


def sweeps(server: ServerProcess) -> list[dict[str, Any]]:
    r = requests.get(server.url + "/api/sweeps", headers=server.auth_header(), timeout=30)
    assert r.status_code == 200, r.text
    result: list[dict[str, Any]] = r.json()["sweeps"]
    return result


def test_a_summary_round_trip_is_durable(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running_server(data, token="t0ken") as server:
        assert put(server, "lj-size", summary()).status_code == 201
        assert put(server, "lj-size", summary(succeeded=13)).status_code == 200
        r = requests.get(
            server.url + "/api/sweeps/lj-size", headers=server.auth_header(), timeout=30
        )
        assert r.json()["summary"] == summary(succeeded=13, namespace=None)
        server.kill()  # an acknowledged PUT survives kill -9
    with running_server(data, token="t0ken") as server:
        (stored,) = sweeps(server)
        assert stored["name"] == "lj-size" and stored["summary"]["succeeded"] == 13
        r = requests.delete(
            server.url + "/api/sweeps/lj-size", headers=server.auth_header(), timeout=30
        )
        assert r.status_code == 200
        assert sweeps(server) == []


POINT = {"trials": 1, "samples": 1}
MALFORMED = [
    (summary(phase="Exploding"), "phase"),
    (summary(succeeded=-1), "succeeded"),
    (summary(extra="field"), "extra"),
    (summary(held_out_r2="high"), "held_out_r2"),
    (summary(best_model="Not A Model"), "best_model"),
    ({"phase": "Running", "learning_curve": [{"model": "m", "metric": "R2", "points": "x"}]},
     "points"),
    (summary(held_out=[{"id": 1, "target": 1.0, "predictions": {"BAD KEY": 1.0}}]), "predictions"),
    (summary(learning_curve=[{"model": "m", "metric": "R2", "points": [POINT] * 501}]), "points"),
    ([1, 2, 3], "should be an object"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "named"), MALFORMED)
def test_malformed_summaries_are_refused_naming_the_field(
    model_server: ServerProcess, body: Any, named: str
) -> None:
    r = put(model_server, "lj-size", body)
    assert r.status_code == 400, r.text
    assert named in r.json()["message"]
    assert sweeps(model_server) == []


def test_non_finite_oversized_and_misaddressed_summaries_are_refused(tmp_path: Path) -> None:
    with running_server(tmp_path / "data", "--sweep-bytes", "4096") as server:
        text = json.dumps(summary()).replace("0.91", "NaN")
        r = requests.put(
            server.url + "/api/sweeps/lj-size", data=text, timeout=30,
            headers={**server.auth_header(), "Content-Type": "application/json"},
        )  # fmt: skip
        assert r.status_code == 400 and "held_out_r2" in r.json()["message"]
        huge = summary(
            held_out=[
                {"id": i, "target": math.pi, "predictions": {"linear": 1.0}} for i in range(200)
            ]
        )
        r = put(server, "lj-size", huge)
        assert r.status_code == 413, r.text
        r = put(server, "Bad_Name", summary())
        assert r.status_code == 400 and "invalid sweep name" in r.json()["message"]
        r = requests.put(
            server.url + "/api/sweeps/lj-size", data="phase=Running", timeout=30,
            headers={**server.auth_header(), "Content-Type": "application/x-www-form-urlencoded"},
        )  # fmt: skip
        assert r.status_code == 415
        r = requests.put(server.url + "/api/sweeps/lj-size", json=summary(), timeout=30)
        assert r.status_code == 401
        assert sweeps(server) == []


def test_the_number_of_summaries_is_bounded(model_server: ServerProcess) -> None:
    from streamml.vocabulary.sweepsummary import MAX_SWEEPS

    for i in range(MAX_SWEEPS):
        assert put(model_server, f"sweep-{i}", summary()).status_code == 201
    r = put(model_server, "one-more", summary())
    assert r.status_code == 409 and "at most" in r.json()["message"]
    assert put(model_server, "sweep-0", summary(phase="Succeeded")).status_code == 200
    assert len(sweeps(model_server)) == MAX_SWEEPS


@pytest.mark.lammps
async def test_a_real_sweep_publishes_its_progress_and_held_out_evaluation(
    model_server: ServerProcess, tmp_path: Path, lammps_bin: str
) -> None:
    from tests.integration.test_sweep_cli import run_sweep, sweep_doc

    await create_models(model_server)
    done, state = run_sweep(tmp_path, sweep_doc(), model_server)
    assert done.returncode == 0, done.stderr
    assert state["phase"] == "Succeeded"
    (stored,) = sweeps(model_server)
    assert stored["name"] == "cli-sweep"
    published = stored["summary"]
    assert published["phase"] == "Succeeded"
    assert (published["trials"], published["test_trials"]) == (5, 2)
    assert published["succeeded"] == state["succeeded"] == 7
    assert published["scheduler"] == "local"
    assert {c["model"] for c in published["learning_curve"]} == {"linear", "mean"}
    assert [e["model"] for e in published["evaluation"]] == [
        e["model"] for e in state["evaluation"]
    ]
    assert len(published["held_out"]) == 2  # predicted against actual, per held-out run
    for run in published["held_out"]:
        assert set(run["predictions"]) == {"linear", "mean"}
    assert published["best_model"] == state["bestModel"]
