"""A data dir written by an earlier release still opens: every model, every learn, and it learns on.

Both were written by ``tests/fixtures/make_datadir.py``; ``expected.json`` is what that server
answered before it stopped:

- ``tests/fixtures/datadir-1065fd7/``, by the model server of commit 1065fd7: nine models of four
  flavors, six restored from snapshots and three from a snapshot plus 30 learn-log records each
  (the server was killed with SIGKILL); the database file only.
- ``tests/fixtures/datadir-0d095a3/``, by the server of commit 0d095a3 (``main`` when issue 14
  was worked), stopped cleanly (SIGTERM: final snapshots, an empty learn log): ten models of all
  five flavors, and the whole data dir as it was left (its signing secret, its lock file).
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

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
RELEASES = ("1065fd7", "0d095a3")


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


@pytest.mark.parametrize("release", RELEASES)
def test_a_data_dir_of_an_earlier_release_opens_with_every_model_and_learns(
    tmp_path: Path, release: str
) -> None:
    fixture = FIXTURES / f"datadir-{release}"
    expected = json.loads((fixture / "expected.json").read_text())
    assert expected["commit"] == release
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    for kept in sorted(fixture.iterdir()):
        if kept.name != "expected.json":
            shutil.copyfile(kept, data / kept.name)
    secret = data / "jwt-secret"
    kept_secret = secret.read_bytes() if secret.exists() else None
    if kept_secret is not None:
        secret.chmod(0o600)  # git keeps no file modes but the executable bit
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
            if "probe" not in want:
                continue  # a custom model need not predict
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
        # none of its samples said where they came from (its log rows have 5 elements)
        origins = call(server, "GET", "/api/provenance/linear")
        assert origins["samples"] == expected["models"]["linear"]["learns"]
        assert origins["samples_with_provenance"] == 0 and origins["keys"] == {}
        # and it learns on, durably (a sample with its provenance, too)
        for name in ("linear", "logistic", "kmeans"):
            truth = {"linear": 0.5, "logistic": True, "kmeans": None}[name]
            body = {"model": name, "features": {"nx": 3, "ny": 4, "nz": 5}, "ground_truth": truth}
            if name == "linear":
                body["provenance"] = {"host": "compat-host"}
            call(server, "POST", "/api/learn/", body)
    if kept_secret is not None:  # the kept signing secret was used, not replaced
        assert secret.read_bytes() == kept_secret
    with running_server(data, token="fixture") as server:
        for name in ("linear", "logistic", "kmeans"):
            stats = call(server, "GET", f"/api/stats/?model={name}")
            assert stats["learn"]["n_calls"] == expected["models"][name]["learns"] + 1, name
        index = expected["models"]["linear"]["learns"] + 1
        by_host = call(server, "GET", "/api/provenance/linear?by=host")["values"]
        assert by_host == [{"value": "compat-host", "count": 1, "first": index, "last": index}]
