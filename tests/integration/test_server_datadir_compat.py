"""A data dir written by an earlier release still opens: every model, every learn, and it learns on.

``tests/fixtures/datadir-1065fd7/`` was written by the model server of commit 1065fd7 (see
``tests/fixtures/make_datadir.py``): nine models of four flavors, six restored from snapshots and
three from a snapshot plus 30 learn-log records each (the server was killed with SIGKILL).
``expected.json`` is what that server answered before it was killed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.fixtures.server import ServerProcess, running_server

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "datadir-1065fd7"


def call(server: ServerProcess, method: str, path: str, body: Any = None) -> Any:
    r = requests.request(
        method, server.url + path, json=body, headers=server.auth_header(), timeout=30
    )
    assert r.status_code in (200, 201), (path, r.status_code, r.text)
    return r.json()


def unordered(model_json: dict[str, Any]) -> dict[str, Any]:
    """compose.Select holds its keys in a set: its JSON lists them in hash order (per process)."""
    select = model_json.get("Select", {}).get("_POSITIONAL_ARGS")
    if select is None:
        return model_json
    return {**model_json, "Select": {"_POSITIONAL_ARGS": sorted(select)}}


def test_a_data_dir_of_release_1065fd7_opens_with_every_model_and_learns(tmp_path: Path) -> None:
    expected = json.loads((FIXTURE / "expected.json").read_text())
    data = tmp_path / "data"
    data.mkdir()
    shutil.copyfile(FIXTURE / "streamml.sqlite3", data / "streamml.sqlite3")
    with running_server(data, token="fixture") as server:
        served = call(server, "GET", "/api/models/")["models"]
        assert sorted(served) == sorted(expected["models"])
        for name, want in expected["models"].items():
            stats = call(server, "GET", f"/api/stats/?model={name}")
            assert stats["learn"]["n_calls"] == want["learns"], name
            assert call(server, "GET", f"/api/metrics/?model={name}") == pytest.approx(
                want["metrics"], rel=1e-12
            ), name
            model_json = call(server, "GET", f"/api/model/{name}/")
            assert unordered(model_json) == unordered(want["model_json"]), name
            probe = {"model": name, "features": expected["probe"]}
            prediction = call(server, "POST", "/api/predict/", probe)["prediction"]
            if isinstance(want["probe"], float):
                assert prediction == pytest.approx(want["probe"], rel=1e-12), name
            else:
                assert prediction == want["probe"], name
        # the identifiers it had learned are still remembered: a resend is a duplicate
        resend = {"model": "linear", "features": {"nx": 2, "ny": 2, "nz": 2}, "ground_truth": 0.1}
        again = call(server, "POST", "/api/learn/", {**resend, "identifier": "run-3"})
        assert again["results"]["linear"] == {"learned": False, "duplicate": True}
        # and it learns on, durably
        for name in ("linear", "logistic", "kmeans"):
            truth = {"linear": 0.5, "logistic": True, "kmeans": None}[name]
            body = {"model": name, "features": {"nx": 3, "ny": 4, "nz": 5}, "ground_truth": truth}
            call(server, "POST", "/api/learn/", body)
    with running_server(data, token="fixture") as server:
        for name in ("linear", "logistic", "kmeans"):
            stats = call(server, "GET", f"/api/stats/?model={name}")
            assert stats["learn"]["n_calls"] == expected["models"][name]["learns"] + 1, name
