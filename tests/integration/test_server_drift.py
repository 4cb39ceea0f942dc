"""Drift detection on a real server process fed over HTTP: a stream whose error jumps is reported
in ``GET /api/stats/``, survives kill -9 (snapshot + learn-log replay find the same detections),
a data dir from an earlier release opens with fresh watches, bad settings are a 400 naming the
field and create nothing."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.fixtures.server import ServerProcess, running_server

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
PIPELINE = [
    {"class": "preprocessing.StandardScaler"},
    {"class": "linear_model.LinearRegression", "params": {"intercept_lr": 0.1}},
]


def call(server: ServerProcess, method: str, path: str, **kwargs: Any) -> requests.Response:
    return requests.request(
        method, server.url + path, headers=server.auth_header(), timeout=30, **kwargs
    )


def create(server: ServerProcess, name: str, drift: Any = None) -> requests.Response:
    body: dict[str, Any] = {"pipeline": PIPELINE}
    if drift is not None:
        body["drift"] = drift
    return call(server, "POST", f"/api/model/regression/{name}/", json=body)


def samples(n: int, change: int, seed: int = 11) -> list[dict[str, Any]]:
    """y = 3x + noise; from ``change`` on, y is 60 higher (a new regime the model never saw)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        x = rng.uniform(1, 10)
        y = 3 * x + rng.gauss(0, 0.1) + (60.0 if i >= change else 0.0)
        out.append({"features": {"x": x}, "ground_truth": y, "identifier": f"s{i}"})
    return out


def learn(server: ServerProcess, model: str, batch: list[dict[str, Any]]) -> None:
    for body in batch:
        r = call(server, "POST", "/api/learn/", json={"model": model, **body})
        assert r.status_code in (200, 201), r.text


def drift_of(server: ServerProcess, model: str) -> dict[str, Any]:
    r = call(server, "GET", f"/api/stats/?model={model}")
    assert r.status_code == 200, r.text
    return dict(r.json()["drift"])


def test_a_jump_is_detected_and_survives_kill_9(tmp_path: Path) -> None:
    data = tmp_path / "data"
    stream = samples(220, change=120)
    # snapshots every 50 learns: the detection (after sample 120) lies in the log after one
    with running_server(data, "--snapshot-every", "50", token="t0k3n") as server:
        assert create(server, "lin", {"warmup": 16}).status_code == 201
        assert create(server, "off", {"enabled": False}).status_code == 201
        learn(server, "lin", stream[:100])
        quiet = drift_of(server, "lin")
        assert quiet["detections"] == 0 and quiet["armed"] and quiet["observed"] == 100
        learn(server, "lin", stream[100:])
        seen = drift_of(server, "lin")
        assert seen["detections"] >= 1
        last = seen["last"]
        assert 120 < last["sample"] <= 140  # within 20 samples of the change
        assert 110 <= last["changeAtSample"] <= 130
        assert last["magnitude"] > 5
        # the riverapi-facing metrics stay a dict of numbers
        metrics = call(server, "GET", "/api/metrics/?model=lin").json()
        assert all(isinstance(v, float | None) for v in metrics.values())
        assert "drift" not in call(server, "GET", "/api/stats/?model=off").json()
        server.kill()
    with running_server(data, "--snapshot-every", "50", token="t0k3n") as server:
        again = drift_of(server, "lin")
        assert again["detections"] == seen["detections"]
        assert again["observed"] == seen["observed"] == 220
        same = ("sample", "changeAtSample", "magnitude")
        assert [{k: d[k] for k in same} for d in again["history"]] == [
            {k: d[k] for k in same} for d in seen["history"]
        ]
        # a resent sample is a duplicate: it does not feed the watch twice
        learn(server, "lin", stream[-5:])
        assert drift_of(server, "lin")["observed"] == 220


def test_the_reset_policy_over_http_is_durable(tmp_path: Path) -> None:
    data = tmp_path / "data"
    stream = samples(200, change=100)
    probe = {"model": "lin", "features": {"x": 5.0}}
    with running_server(data, "--snapshot-every", "30", token="t0k3n") as server:
        assert create(server, "lin", {"warmup": 16, "policy": "reset"}).status_code == 201
        learn(server, "lin", stream)
        assert drift_of(server, "lin")["detections"] >= 1
        before = call(server, "POST", "/api/predict/", json=probe).json()["prediction"]
        server.kill()
    with running_server(data, token="t0k3n") as server:
        assert drift_of(server, "lin")["policy"] == "reset"
        after = call(server, "POST", "/api/predict/", json=probe).json()["prediction"]
        assert after == before  # the replay reset the model at the same sample


def test_the_fork_policy_over_http_compares_the_old_model_and_is_durable(tmp_path: Path) -> None:
    """Policy fork: after the jump the served model starts afresh on the new regime, the old
    one is kept frozen, and the stats reply scores both on the samples since; a kill -9 and the
    log's replay give the same fork, the same numbers and the same predictions."""
    data = tmp_path / "data"
    stream = samples(200, change=100)
    probe = {"model": "lin", "features": {"x": 5.0}}
    with running_server(data, "--snapshot-every", "30", token="t0k3n") as server:
        assert create(server, "lin", {"warmup": 16, "policy": "fork"}).status_code == 201
        learn(server, "lin", stream[:100])
        assert "fork" not in call(server, "GET", "/api/stats/?model=lin").json()
        learn(server, "lin", stream[100:])
        stats = call(server, "GET", "/api/stats/?model=lin").json()
        assert stats["drift"]["policy"] == "fork" and stats["drift"]["detections"] >= 1
        fork = stats["fork"]
        assert fork["sinceSample"] == stats["drift"]["last"]["sample"] > 100
        assert fork["samples"] == 200 - fork["sinceSample"]
        # on the new regime (y 60 higher) the frozen old model is far off, the fresh one learns it
        assert fork["before"]["MAE"] > 20 > fork["fresh"]["MAE"]
        served = call(server, "POST", "/api/predict/", json=probe).json()["prediction"]
        server.kill()
    with running_server(data, token="t0k3n") as server:
        again = call(server, "GET", "/api/stats/?model=lin").json()
        assert again["fork"] == fork
        assert call(server, "POST", "/api/predict/", json=probe).json()["prediction"] == served


#: hostile or invalid settings, and the field the 400 must name
BAD_SETTINGS: list[tuple[Any, str]] = [
    ({"warmup": "ten"}, "drift.warmup"),
    ({"warmup": 1}, "drift.warmup"),
    ({"threshold": -3}, "drift.threshold"),
    ({"threshold": 1e300}, "drift.threshold"),
    ({"delta": "0.5"}, "drift.delta"),
    ({"policy": "split"}, "drift.policy"),
    ({"enabled": 1}, "drift.enabled"),
    ({"sensitivity": 3}, "drift.sensitivity"),
    ("on", "drift"),
    ([1, 2], "drift"),
]


def test_bad_drift_settings_are_a_400_naming_the_field(model_server: ServerProcess) -> None:
    for drift, field in BAD_SETTINGS:
        r = create(model_server, "m", drift)
        assert r.status_code == 400, (drift, r.text)
        assert field in r.json()["message"], (drift, r.text)
    assert call(model_server, "GET", "/api/models/").json()["models"] == []  # nothing created


def test_good_drift_settings_are_taken_as_given(model_server: ServerProcess) -> None:
    settings = {"warmup": 30, "threshold": 40, "delta": 0.25, "policy": "reset"}
    assert create(model_server, "m", settings).status_code == 201
    drift = drift_of(model_server, "m")
    assert {k: drift[k] for k in settings} == settings
    assert drift["detections"] == 0 and not drift["armed"]


def test_a_data_dir_of_an_earlier_release_opens_with_fresh_watches(tmp_path: Path) -> None:
    data = tmp_path / "old"
    data.mkdir(mode=0o700)
    fixture = FIXTURES / "datadir-0d095a3"
    for kept in sorted(fixture.iterdir()):
        if kept.name != "expected.json":
            shutil.copyfile(kept, data / kept.name)
    (data / "jwt-secret").chmod(0o600)
    expected = json.loads((fixture / "expected.json").read_text())["models"]
    with running_server(data, token="fixture") as server:
        watched = 0
        for name, want in expected.items():
            stats = call(server, "GET", f"/api/stats/?model={name}").json()
            assert stats["learn"]["n_calls"] == want["learns"], name  # what it learned is there
            if name in ("kmeans", "scaler"):  # a clusterer, a custom model: nothing is scored
                assert "drift" not in stats, name
                continue
            drift = stats["drift"]  # a fresh watch (it saw only what the log replayed)
            assert drift["detections"] == 0 and drift["observed"] <= want["learns"], name
            watched += 1
        assert watched == len(expected) - 2
