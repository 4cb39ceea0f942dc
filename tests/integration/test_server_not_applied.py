"""An error reply means "not applied", against real server processes: a really full file system
(a small tmpfs), real ``kill -9`` and restart, specs and samples that cannot be stored or learned.
What got a 2xx is there after the restart; what got an error is not, and its retry under the
same identifier is applied."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.fixtures.disk import fill, small_disk
from tests.fixtures.server import ServerProcess, running_server

pytestmark = pytest.mark.integration

LINEAR = [{"class": "preprocessing.StandardScaler"},
          {"class": "linear_model.LinearRegression", "params": {"intercept_lr": 0.1}}]  # fmt: skip
X = [{"x": 8, "y": 16, "z": 8}, {"x": 8, "y": 8, "z": 16}, {"x": 8, "y": 14, "z": 8},
     {"x": 8, "y": 9, "z": 17}]  # fmt: skip
Y = [120.0, 150.0, 124.0, 155.0]


def call(server: ServerProcess, method: str, path: str, **kwargs: Any) -> requests.Response:
    headers = {**server.auth_header(), **kwargs.pop("headers", {})}
    return requests.request(method, server.url + path, headers=headers, timeout=60, **kwargs)


def ok(response: requests.Response, status: int = 200) -> Any:
    assert response.status_code == status, (response.status_code, response.text)
    return response.json()


def create(server: ServerProcess, name: str, pipeline: list[dict[str, Any]] = LINEAR) -> None:
    ok(call(server, "POST", f"/api/model/regression/{name}/", json={"pipeline": pipeline}), 201)


def learn(server: ServerProcess, identifier: str, i: int, **extra: Any) -> requests.Response:
    body = {"features": X[i % 4], "ground_truth": Y[i % 4], "identifier": identifier, **extra}
    return call(server, "POST", "/api/learn/", json=body)


def batch(server: ServerProcess, ids: list[str]) -> requests.Response:
    samples = [{"features": X[i % 4], "ground_truth": Y[i % 4], "identifier": identifier}
               for i, identifier in enumerate(ids)]  # fmt: skip
    return call(server, "POST", "/api/learn/batch/", json={"samples": samples})


def observed(server: ServerProcess) -> dict[str, Any]:
    """Everything a client can see of the models' learned state."""
    names = ok(call(server, "GET", "/api/models/"))["models"]
    seen: dict[str, Any] = {"models": names}
    for name in names:
        seen[name] = (
            ok(call(server, "GET", f"/api/stats/?model={name}"))["learn"],
            ok(call(server, "GET", f"/api/metrics/?model={name}")),
            ok(call(server, "GET", f"/api/model/{name}/")),
        )
    return seen


def expect_503(response: requests.Response) -> None:
    assert response.status_code == 503, (response.status_code, response.text)
    message = response.json()["message"]
    assert "database or disk is full" in message, message


def test_disk_full_applies_nothing_and_the_retry_is_applied_and_survives_kill_9(
    tmp_path: Path,
) -> None:
    with small_disk(tmp_path / "disk") as disk:
        data = disk / "data"
        with running_server(data, log_dir=tmp_path, token="t0k3n") as server:
            create(server, "lin")
            create(server, "twin")
            for i in range(4):
                ok(learn(server, f"a-{i}", i), 201)  # fan-out: both models
            waiting = ok(
                call(server, "POST", "/api/predict/", json={"model": "lin", "features": X[1]})
            )
            before = observed(server)
            filler = fill(disk)

            # every kind of write is refused, naming the real cause
            expect_503(learn(server, "f-0", 0))
            expect_503(learn(server, "f-1", 1, model="lin"))
            expect_503(batch(server, ["f-2", "f-3", "f-4"]))
            label = {"model": "lin", "identifier": waiting["identifier"], "label": 150.0}
            expect_503(call(server, "POST", "/api/label/", json=label))
            expect_503(call(server, "POST", "/api/model/regression/ghost/",
                            json={"pipeline": LINEAR}))  # fmt: skip
            expect_503(call(server, "DELETE", "/api/model/", data={"model": "twin"}))
            # a resend is not "duplicate": the first attempt was not applied
            expect_503(learn(server, "f-0", 0))
            assert observed(server) == before
            prometheus = requests.get(server.url + "/metrics", timeout=30).text
            assert 'streamml_samples_learned_total{model="lin"} 4.0' in prometheus

            filler.unlink()
            # the retries under the same identifiers are applied now, the label too
            assert ok(learn(server, "f-0", 0), 201)["results"] == {
                "lin": {"learned": True, "duplicate": False},
                "twin": {"learned": True, "duplicate": False},
            }
            assert ok(learn(server, "f-1", 1, model="lin"), 201)["results"]["lin"]["learned"]
            results = ok(batch(server, ["f-2", "f-3", "f-4"]))["results"]
            assert results["lin"] == results["twin"] == {"learned": 3, "duplicates": 0}
            assert ok(call(server, "POST", "/api/label/", json=label))["learned"] is True
            create(server, "ghost")
            ok(call(server, "DELETE", "/api/model/", data={"model": "twin"}))
            acknowledged = observed(server)
            server.kill()

        with running_server(data, log_dir=tmp_path, token="t0k3n") as server:
            assert observed(server) == acknowledged
            assert acknowledged["lin"][0]["n_calls"] == 4 + 1 + 1 + 3 + 1
            for identifier in ("a-0", "f-0", "f-1"):
                assert ok(learn(server, identifier, 0, model="lin"))["results"]["lin"] == {
                    "learned": False,
                    "duplicate": True,
                }
            assert ok(batch(server, ["f-2", "f-3", "f-4"]))["results"]["lin"]["duplicates"] == 3


def test_spec_that_cannot_be_stored_is_refused_and_never_served(tmp_path: Path) -> None:
    huge = [{"class": "neighbors.KNNRegressor", "params": {"n_neighbors": 2**70}}]
    with running_server(tmp_path / "data", token="t") as server:
        r = call(server, "POST", "/api/model/regression/ghost/", json={"pipeline": huge})
        assert r.status_code == 400, r.text
        assert "n_neighbors" in r.json()["message"] and "64-bit" in r.json()["message"]
        assert ok(call(server, "GET", "/api/models/"))["models"] == []
        r = learn(server, "g-1", 0, model="ghost")
        assert r.status_code == 404, r.text
        create(server, "ghost", [{"class": "neighbors.KNNRegressor"}])  # the name is free
        server.kill()
    with running_server(tmp_path / "data", token="t") as server:
        assert ok(call(server, "GET", "/api/models/"))["models"] == ["ghost"]


def test_a_flavor_must_be_learnable_at_creation_so_fan_out_batches_never_fail(
    tmp_path: Path,
) -> None:
    import dill
    from river import stats

    with running_server(tmp_path / "data", "--allow-pickle-upload", token="t") as server:
        create(server, "lin")
        r = call(server, "POST", "/api/model/custom/mean/",
                 json={"pipeline": [{"class": "stats.Mean"}]})  # fmt: skip
        assert r.status_code == 400, r.text
        assert "learn_one" in r.json()["message"]
        r = call(server, "POST", "/api/model/custom/pickled-mean/", data=dill.dumps(stats.Mean()),
                 headers={"Content-Type": "application/octet-stream"})  # fmt: skip
        assert r.status_code == 400, r.text
        assert ok(call(server, "GET", "/api/models/"))["models"] == ["lin"]
        assert ok(batch(server, ["b-0", "b-1"]))["results"] == {
            "lin": {"learned": 2, "duplicates": 0}
        }
        # a custom model that can learn is still accepted and learned by the fan-out
        create_custom = call(
            server,
            "POST",
            "/api/model/custom/counter/",
            json={"pipeline": [{"class": "linear_model.LinearRegression"}]},
        )
        assert create_custom.status_code == 201, create_custom.text
        results = ok(batch(server, ["b-2"]))["results"]
        assert results["counter"] == results["lin"] == {"learned": 1, "duplicates": 0}


def test_a_refused_label_or_learn_leaves_the_prediction_for_the_corrected_retry(
    model_server: ServerProcess,
) -> None:
    server = model_server
    create(server, "lin")

    def predict() -> str:
        body = {"model": "lin", "features": X[0]}
        return str(ok(call(server, "POST", "/api/predict/", json=body))["identifier"])

    def label(identifier: str, value: Any) -> requests.Response:
        body = {"model": "lin", "identifier": identifier, "label": value}
        return call(server, "POST", "/api/label/", json=body)

    first = predict()
    r = label(first, "not a number")
    assert r.status_code == 400 and "ground_truth" in r.json()["message"], r.text
    assert ok(label(first, 120.0))["learned"] is True

    second = predict()
    r = learn(server, second, 0, model="lin", ground_truth="not a number")
    assert r.status_code == 400, r.text
    assert ok(label(second, 120.0))["learned"] is True

    third = predict()
    samples = [{"features": X[0], "ground_truth": "not a number", "identifier": third},
               {"features": X[1], "ground_truth": Y[1]}]  # fmt: skip
    results = ok(call(server, "POST", "/api/learn/batch/",
                      json={"model": "lin", "samples": samples}))["results"]  # fmt: skip
    assert results["lin"]["learned"] == 1 and results["lin"]["rejected"][0]["index"] == 0
    assert ok(label(third, 120.0))["learned"] is True
    assert ok(call(server, "GET", "/api/stats/?model=lin"))["learn"]["n_calls"] == 4


def test_huge_finite_numbers_are_refused_and_the_model_stays_finite(
    model_server: ServerProcess,
) -> None:
    server = model_server
    create(server, "lin", [{"class": "linear_model.LinearRegression"}])
    for field, body in [
        ("feature 'x'", {"features": {"x": 1e308}, "ground_truth": 1.0}),
        ("ground_truth", {"features": {"x": 1.0}, "ground_truth": -1e308}),
        ("prediction", {"features": {"x": 1.0}, "ground_truth": 1.0, "prediction": 1e308}),
    ]:
        r = call(server, "POST", "/api/learn/", json={"model": "lin", **body})
        assert r.status_code == 400, r.text
        assert field in r.json()["message"] and "too large" in r.json()["message"], r.text
    r = call(
        server,
        "POST",
        "/api/learn/batch/",
        json={"model": "lin", "samples": [{"features": {"x": 1e308}, "ground_truth": 1.0}]},
    )
    assert r.status_code == 400 and "samples[0]" in r.json()["message"], r.text
    assert ok(call(server, "GET", "/api/stats/?model=lin"))["learn"]["n_calls"] == 0
    predicted = ok(
        call(server, "POST", "/api/predict/", json={"model": "lin", "features": {"x": 2.0}})
    )
    assert isinstance(predicted["prediction"], float)
    label = {"model": "lin", "identifier": predicted["identifier"], "label": 3.0}
    assert ok(call(server, "POST", "/api/label/", json=label))["learned"] is True


def test_delete_with_a_form_body_that_is_not_utf8_is_a_400(model_server: ServerProcess) -> None:
    create(model_server, "lin")
    r = call(model_server, "DELETE", "/api/model/", data=b"model=\xff\xfe",
             headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert r.status_code == 400, r.text
    assert "UTF-8" in r.json()["message"]
    assert ok(call(model_server, "GET", "/api/models/"))["models"] == ["lin"]


def allow_listed_regressors() -> list[str]:
    from river import base

    from streamml.modelserver.components import river_class
    from streamml.vocabulary.modelspec import ALLOWED_COMPONENTS

    return sorted(n for n in ALLOWED_COMPONENTS if issubclass(river_class(n), base.Regressor))


def test_every_allow_listed_regressor_labels_and_joins_its_own_predictions(
    model_server: ServerProcess,
) -> None:
    server = model_server
    regressors = allow_listed_regressors()
    assert len(regressors) >= 8
    params = {  # the ones whose constructor needs an argument
        "dummy.StatisticRegressor": {"statistic": {"class": "stats.Mean"}},
        "preprocessing.TargetStandardScaler": {"regressor": {"class": "linear_model.PARegressor"}},
    }
    for dotted in regressors:
        name = dotted.replace(".", "-").replace("_", "-").lower()
        create(server, name, [{"class": dotted, "params": params.get(dotted, {})}])
        for i in range(4):
            ok(learn(server, f"{name}-{i}", i, model=name), 201)
        predicted = ok(call(server, "POST", "/api/predict/", json={"model": name,
                                                                   "features": X[3]}))  # fmt: skip
        assert type(predicted["prediction"]) is float, (dotted, predicted)
        label = {"model": name, "identifier": predicted["identifier"], "label": Y[3]}
        assert ok(call(server, "POST", "/api/label/", json=label))["learned"] is True, dotted
        # learning under a predicted identifier joins that prediction the same way
        body = {"model": name, "features": X[2], "identifier": f"{name}-joined"}
        ok(call(server, "POST", "/api/predict/", json=body))
        reply = ok(learn(server, f"{name}-joined", 2, model=name), 201)
        assert reply["results"][name]["learned"] is True, dotted
        stats = ok(call(server, "GET", f"/api/stats/?model={name}"))
        assert stats["learn"]["n_calls"] == 6, dotted


@pytest.mark.lammps
async def test_run_lammps_spools_a_trial_the_full_server_refused(
    tmp_path: Path, lammps_bin: str
) -> None:
    from streamml.pycommand import streamml_command
    from tests.fixtures.server import create_models, learn_calls
    from tests.integration.test_runjob_delivery import SMALL, read, run_lammps

    spool, result = tmp_path / "spool", tmp_path / "sw-full.json"
    with small_disk(tmp_path / "disk") as disk:
        data = disk / "data"
        with running_server(data, log_dir=tmp_path, token="t0k3n") as server:
            await create_models(server)
            filler = fill(disk)
            proc = run_lammps(server.url, "sw-full", *SMALL, "--retries", "3", "--backoff",
                              "0.05", "--spool-dir", str(spool), result_file=result,
                              username=server.username, token=server.token)  # fmt: skip
            assert proc.returncode == 0, proc.stderr
            assert "result spooled to" in proc.stderr, proc.stderr
            doc = read(result)
            assert doc["delivered"] is False and doc["spooled"] is not None, doc
            assert "database or disk is full" in doc["error"]
            assert (await learn_calls(server, "linear"), await learn_calls(server, "mean")) == (
                0,
                0,
            )
            filler.unlink()
            redeliver = [*streamml_command(), "run-lammps", "--deliver-spool", str(spool),
                         "--retries", "1"]  # fmt: skip
            env = {**os.environ, "STREAMML_USERNAME": "scientist", "STREAMML_TOKEN": "t0k3n"}
            done = subprocess.run(redeliver, env=env, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
            assert json.loads(done.stdout)["delivered"] == ["sw-full"]
            assert read(result)["delivered"] is True
            server.kill()
        with running_server(data, log_dir=tmp_path, token="t0k3n") as server:
            assert (await learn_calls(server, "linear"), await learn_calls(server, "mean")) == (
                1,
                1,
            )
