"""The prototype's riverapi snippet, unchanged, against a real ``streamml serve`` process; and
the riverapi auth handshake."""

from __future__ import annotations

import ast
import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from streamml.pycommand import streamml_command
from tests.fixtures.server import ServerProcess, running_server

pytestmark = pytest.mark.integration

# The prototype's snippets (notes/prototype.md), verbatim except for the server URL.
SETUP_SNIPPET = """
from river import datasets
from river import linear_model
from river import preprocessing

from riverapi.main import Client

# Connect to the server running here
cli = Client("http://localhost:8080")

# Upload several models to test for lammps - these are different kinds of regressions
regression_model = preprocessing.StandardScaler() | linear_model.LinearRegression(intercept_lr=0.1)

# https://www.geeksforgeeks.org/passive-aggressive-classifiers/
pa_regression = model = linear_model.PARegressor(C=0.01, mode=2, eps=0.1, learn_intercept=False)

# https://riverml.xyz/latest/api/linear-model/BayesianLinearRegression/
bayesian_regression = linear_model.BayesianLinearRegression()

for model in [regression_model, bayesian_regression, pa_regression]:
    model_name = cli.upload_model(model, "regression")
    print("Created model %s" % model_name)
"""

JOB_SNIPPET = """
from riverapi.main import Client

# Connect to the server running here
cli = Client("http://localhost:8080")

# I just made these up - one run would only have one time (Y) and one problem size (x)
lammps_y = [120, 150, 124, 155]
lammps_x = [
    {"x": 8, "y": 16, "z": 8},
    {"x": 8, "y": 8, "z": 16},
    {"x": 8, "y": 14, "z": 8},
    {"x": 8, "y": 9, "z": 17}
]

# This gets the named models
for model_name in cli.models()['models']:
    print(f"Found model {model_name}")
    for i in range(len(lammps_y)):
        y = lammps_y[i]
        x = lammps_x[i]
        print(f"  Using {x} to predict {y}")
        cli.learn(model_name, x=x, y=y)

# Here is how to do a prediction
for model_name in cli.models()['models']:
    print(f"Found model {model_name}")
    for i in range(len(lammps_y)):
        x = lammps_x[i]
        res = cli.predict(model_name, x=x)
        print(res)
"""

POLL_SNIPPET = """
from riverapi.main import Client

# Connect to the server running here
cli = Client("http://localhost:8080")

for model_name in cli.models()['models']:
    print(f"Getting state of {model_name}")
    model_json = cli.get_model_json(model_name)
    print(model_json)
    metrics = cli.metrics(model_name)
    stats = cli.stats(model_name)
    print(metrics)
    print(stats)
    # Saves to model-name>.pkl in pwd unless you provide a second arg, dest
    cli.download_model(model_name)

    # Delete the model to cleanup
    cli.delete_model(model_name)
"""

# What the prototype document prints for the three models (one list per model).
EXPECTED_PREDICTIONS = [
    [123.69271255948297, 148.851860786418, 119.5667010241425, 156.12276585012535],
    [171.0125077733422, 84.79484638965116, 151.73526597068874, 93.29488051934324],
    [74.5383644905866, 88.84723402168493, 76.53802672891392, 88.63618047474489],
]

DECLARATIVE = {
    "linear": [
        {"class": "preprocessing.StandardScaler"},
        {"class": "linear_model.LinearRegression", "params": {"intercept_lr": 0.1}},
    ],
    "bayesian": [{"class": "linear_model.BayesianLinearRegression"}],
    "passive-aggressive": [
        {
            "class": "linear_model.PARegressor",
            "params": {"C": 0.01, "mode": 2, "eps": 0.1, "learn_intercept": False},
        }
    ],
}


def run_snippet(server: ServerProcess, snippet: str, cwd: Path) -> str:
    env = dict(os.environ, RIVER_ML_USER=server.username or "", RIVER_ML_TOKEN=server.token or "")
    result = subprocess.run(
        [sys.executable, "-P", "-c", snippet.replace("http://localhost:8080", server.url)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def predictions_by_model(output: str) -> dict[str, list[float]]:
    found: dict[str, list[float]] = {}
    for line in output.splitlines():
        if line.startswith("{'model'"):
            reply = ast.literal_eval(line)
            found.setdefault(reply["model"], []).append(reply["prediction"])
            assert len(reply["identifier"]) == 36  # a fresh uuid per prediction
    return found


def assert_prototype_predictions(found: dict[str, list[float]]) -> None:
    assert len(found) == 3
    unmatched = [list(p) for p in EXPECTED_PREDICTIONS]
    for values in found.values():
        match = next(
            (
                e
                for e in unmatched
                if all(abs(a - b) < 1e-6 for a, b in zip(values, e, strict=True))
            ),
            None,
        )
        assert match is not None, f"unexpected predictions {values}"
        unmatched.remove(match)


def test_prototype_snippet_with_dill_uploads(tmp_path: Path) -> None:
    with running_server(tmp_path / "data", "--allow-pickle-upload") as server:
        setup = run_snippet(server, SETUP_SNIPPET, tmp_path)
        assert setup.count("Created model ") == 3
        job = run_snippet(server, JOB_SNIPPET, tmp_path)
        assert_prototype_predictions(predictions_by_model(job))
        poll = run_snippet(server, POLL_SNIPPET, tmp_path)
        sgd = "'optimizer': ['SGD', {'lr': ['Constant', {'learning_rate': 0.01}]}]"
        assert "'LinearRegression': {" + sgd in poll
        assert "'intercept_lr': ['Constant', {'learning_rate': 0.1}]" in poll
        assert "'mean_duration_human'" in poll and "'n_calls': 4" in poll
        lines = poll.splitlines()
        metrics = [ast.literal_eval(line) for line in lines if line.startswith("{'MAE'")]
        assert len(metrics) == 3
        for m in metrics:
            assert set(m) == {"MAE", "RMSE", "SMAPE", "R2"}
            assert 0 < m["MAE"] < 200
        assert len(list(tmp_path.glob("*.pkl"))) == 3
        assert requests.get(server.url + "/api/models/", headers=server.auth_header()).json() == {
            "models": []
        }


def test_prototype_snippet_with_declarative_models(tmp_path: Path) -> None:
    with running_server(tmp_path / "data") as server:
        for name, pipeline in DECLARATIVE.items():
            r = requests.post(
                f"{server.url}/api/model/regression/{name}/",
                json={"pipeline": pipeline},
                headers=server.auth_header(),
            )
            assert r.status_code == 201, r.text
            assert r.json() == {"name": name}
        job = run_snippet(server, JOB_SNIPPET, tmp_path)
        assert_prototype_predictions(predictions_by_model(job))


LABEL_SNIPPET = """
from riverapi.main import Client

cli = Client("http://localhost:8080")
for model_name in cli.models()['models']:
    res = cli.predict(model_name, x={"x": 8, "y": 9, "z": 17})
    print(cli.label(155, res["identifier"], model_name))
"""


def test_prototype_models_label_their_predictions(tmp_path: Path) -> None:
    # PARegressor predicts numpy.float64: its label was refused as "not a finite number"
    with running_server(tmp_path / "data", "--allow-pickle-upload") as server:
        run_snippet(server, SETUP_SNIPPET, tmp_path)
        run_snippet(server, JOB_SNIPPET, tmp_path)
        out = run_snippet(server, LABEL_SNIPPET, tmp_path)
        replies = [ast.literal_eval(line) for line in out.splitlines() if line.startswith("{")]
        assert len(replies) == 3 and all(reply["learned"] for reply in replies), out
        for reply in replies:
            stats = requests.get(
                f"{server.url}/api/stats/?model={reply['model']}", headers=server.auth_header()
            ).json()
            assert stats["learn"]["n_calls"] == 5


def test_pickle_upload_refused_by_default(model_server: ServerProcess, tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-P",
            "-c",
            SETUP_SNIPPET.replace("http://localhost:8080", model_server.url),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        env=dict(
            os.environ,
            RIVER_ML_USER=model_server.username or "",
            RIVER_ML_TOKEN=model_server.token or "",
        ),
    )
    assert out.returncode != 0
    assert "403" in out.stdout + out.stderr
    r = requests.post(
        model_server.url + "/api/model/regression/x/",
        data=b"\x80\x04junk",
        headers=model_server.auth_header(),
    )
    assert r.status_code == 403
    assert "--allow-pickle-upload" in r.json()["message"]


def test_pickle_upload_refused_without_auth(tmp_path: Path) -> None:
    with running_server(tmp_path / "d", "--allow-pickle-upload", username=None) as server:
        r = requests.post(server.url + "/api/model/regression/x/", data=b"\x80\x04junk")
        assert r.status_code == 403
        assert "--no-auth" in r.json()["message"]


def test_auth_handshake(model_server: ServerProcess) -> None:
    url = model_server.url
    r = requests.get(url + "/api/models/")
    assert r.status_code == 401
    assert r.json()["message"]
    header = r.headers["Www-Authenticate"]
    assert header == f'realm="{url}/api/auth/token",service="{url}"'
    # the realm URL exactly as riverapi follows it (no trailing slash)
    basic = model_server.auth_header()
    token_reply = requests.get(f"{url}/api/auth/token", headers=basic)
    assert token_reply.status_code == 200
    body = token_reply.json()
    assert set(body) == {"token", "expires_in", "issued_at"} and body["expires_in"] > 0
    bearer = {"Authorization": f"Bearer {body['token']}"}
    for _ in range(3):  # the bearer token is reused
        assert requests.get(url + "/api/models/", headers=bearer).status_code == 200
    # wrong credentials
    bad = base64.b64encode(f"{model_server.username}:wrong".encode()).decode()
    assert (
        requests.get(
            f"{url}/api/auth/token/", headers={"Authorization": f"Basic {bad}"}
        ).status_code
        == 401
    )
    assert (
        requests.get(url + "/api/models/", headers={"Authorization": f"Basic {bad}"}).status_code
        == 401
    )
    # a tampered or garbage token
    tampered = body["token"][:-2] + ("AA" if not body["token"].endswith("AA") else "BB")
    assert (
        requests.get(
            url + "/api/models/", headers={"Authorization": f"Bearer {tampered}"}
        ).status_code
        == 401
    )
    assert (
        requests.get(url + "/api/models/", headers={"Authorization": "Bearer x.y"}).status_code
        == 401
    )
    assert (
        requests.get(url + "/api/models/", headers={"Authorization": "Digest abc"}).status_code
        == 401
    )
    assert (
        requests.get(url + "/api/models/", headers={"Authorization": "Basic %%%"}).status_code
        == 401
    )


def test_token_from_another_process_needs_the_shared_secret(tmp_path: Path) -> None:
    """The signing secret is the data dir's own random one, not derived from the credentials:
    only processes given the same ``--auth-secret`` accept each other's tokens."""
    with (
        running_server(tmp_path / "a", token="shared-token") as a,
        running_server(tmp_path / "b", token="shared-token") as b,
    ):
        token = requests.get(a.url + "/api/auth/token/", headers=a.auth_header()).json()["token"]
        bearer = {"Authorization": f"Bearer {token}"}
        assert requests.get(a.url + "/api/models/", headers=bearer).status_code == 200
        assert requests.get(b.url + "/api/models/", headers=bearer).status_code == 401


def test_token_signed_with_explicit_shared_secret(tmp_path: Path) -> None:
    with (
        running_server(tmp_path / "a", "--auth-secret", "s" * 32, token="t1") as a,
        running_server(tmp_path / "b", "--auth-secret", "s" * 32, token="t2") as b,
    ):
        token = requests.get(a.url + "/api/auth/token/", headers=a.auth_header()).json()["token"]
        bearer = {"Authorization": f"Bearer {token}"}
        assert requests.get(b.url + "/api/models/", headers=bearer).status_code == 200


def test_refuses_to_start_without_credentials(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")}
    result = subprocess.run(
        [
            *streamml_command(),
            "serve",
            "--port",
            "0",
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode != 0
    assert "--no-auth" in result.stderr and "--auth-user" in result.stderr


def test_dill_only_model_survives_download_and_restart(tmp_path: Path) -> None:
    import dill
    from river import compose, linear_model

    model = (
        compose.FuncTransformer(lambda x: {"double": 2 * x["x"]}) | linear_model.LinearRegression()
    )
    # recurse: the lambda travels by value with only the globals it uses, as from a notebook; by
    # reference to this test module the server (rightly started with -P, so not from the
    # repository root) could not import it
    blob = dill.dumps(model, recurse=True)
    data = tmp_path / "data"
    with running_server(data, "--allow-pickle-upload", token="t") as server:
        h = server.auth_header()
        r = requests.post(server.url + "/api/model/regression/lam/", data=blob, headers=h)
        assert r.status_code == 201, r.text
        again = requests.post(server.url + "/api/model/regression/lam/", data=blob, headers=h)
        assert again.status_code == 409
        body = {"model": "lam", "features": {"x": 2.0}, "ground_truth": 4.0}
        assert requests.post(server.url + "/api/learn/", json=body, headers=h).status_code == 201
        download = requests.get(server.url + "/api/model/download/lam/", headers=h)
        assert download.status_code == 200
        assert dill.loads(download.content).predict_one({"x": 2.0}) != 0.0
        assert (
            requests.post(
                server.url + "/api/model/regression/bad/", data=b"not a pickle", headers=h
            ).status_code
            == 400
        )
        server.kill()
    with running_server(data, token="t") as server:  # restarted WITHOUT pickle upload
        stats = requests.get(server.url + "/api/stats/?model=lam", headers=server.auth_header())
        assert stats.json()["learn"]["n_calls"] == 1
