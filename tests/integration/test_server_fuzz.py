"""Fuzz the live server from its own OpenAPI document: no input may produce a 5xx, and every
status it answers with is one the document lists for that operation."""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import status_code_conformance

from streamml.pycommand import streamml_command
from tests.fixtures.server import ServerProcess, free_port, running_server
from tests.fixtures.server import _wait_ready as wait_ready

pytestmark = pytest.mark.integration

EXAMPLES_PER_OPERATION = 40
#: endless responses once authenticated
STREAMS = {"/api/stream/events/", "/api/stream/metrics/", "/api/stream/dashboard/"}


def fuzz(
    server: ServerProcess, auth: dict[str, str], examples: int, skip: set[str]
) -> tuple[int, list[str]]:
    """(operations fuzzed, failures): 5xx answers, and statuses the document does not list."""
    schema = schemathesis.openapi.from_url(server.url + "/api/openapi.json")
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path in skip:
            continue
        operations += 1

        @hypothesis.given(case=operation.as_strategy())
        @hypothesis.settings(
            max_examples=examples,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
            phases=[hypothesis.Phase.generate],
        )
        def run(case: Any) -> None:
            response = case.call(base_url=server.url, headers=auth, timeout=30)
            where = f"{case.method} {case.formatted_path}: {response.status_code}"
            if response.status_code >= 500:
                failures.append(where)
            elif response.status_code >= 400:
                assert "message" in response.json(), response.text
            try:
                case.validate_response(response, checks=[status_code_conformance])
            except (AssertionError, FailureGroup) as exc:  # how schemathesis reports a check
                failures.append(f"{where} is not documented ({type(exc).__name__})")

        run()
    return operations, failures


def test_no_server_errors(model_server: ServerProcess) -> None:
    auth = model_server.auth_header()
    pipeline = {"pipeline": [{"class": "linear_model.LinearRegression"}]}
    r = requests.post(f"{model_server.url}/api/model/regression/lin/", json=pipeline, headers=auth)
    assert r.status_code == 201
    operations, failures = fuzz(model_server, auth, EXAMPLES_PER_OPERATION, STREAMS)
    assert operations >= 18
    assert not failures, (failures[:10], model_server.log()[-4000:])
    assert "Traceback" not in model_server.log()


def test_statuses_without_credentials_are_documented(model_server: ServerProcess) -> None:
    """Every operation, the streams and the token handshake included, without credentials."""
    operations, failures = fuzz(model_server, {}, 5, set())
    assert operations >= 20
    assert not failures, (failures[:10], model_server.log()[-4000:])


def test_statuses_the_server_answers_are_documented(tmp_path: Path) -> None:
    """Provoke each status the server really answers with; the document must list each one
    for the operation that answered it (201 on learn, 413, 415, 401 on token and streams...)."""
    with running_server(tmp_path / "d", "--max-body-bytes", "4096") as server:
        url, auth = server.url, server.auth_header()
        lin = {"pipeline": [{"class": "linear_model.LinearRegression"}]}
        sample = {"model": "lin", "features": {"x": 1.0}, "ground_truth": 2.0, "identifier": "a"}
        big = {**sample, "features": {f"f{i}": 1.0 for i in range(400)}}
        text = {**auth, "Content-Type": "text/plain"}
        calls: list[tuple[str, str, str, dict[str, Any], int]] = [
            (
                "post",
                "/api/model/{flavor}/{name}/",
                "/api/model/regression/lin/",
                {"json": lin},
                201,
            ),
            (
                "post",
                "/api/model/{flavor}/{name}/",
                "/api/model/regression/lin/",
                {"json": lin},
                409,
            ),
            ("post", "/api/model/{flavor}/", "/api/model/regression/", {"data": b"\x80"}, 403),
            ("post", "/api/learn/", "/api/learn/", {"json": sample}, 201),
            ("post", "/api/learn/", "/api/learn/", {"json": sample}, 200),  # a duplicate
            ("post", "/api/learn/", "/api/learn/", {"json": big}, 413),
            ("post", "/api/learn/batch/", "/api/learn/batch/", {"json": {"samples": [big]}}, 413),
            ("post", "/api/label/", "/api/label/", {"json": big}, 413),
            ("delete", "/api/model/", "/api/model/", {"data": {"model": "x" * 5000}}, 413),
            ("get", "/api/metrics/", "/api/metrics/", {"json": {"model": "x" * 5000}}, 413),
            ("get", "/api/model/{name}/", "/api/model/nope/", {}, 404),
        ]
        for path in ("/api/learn/", "/api/learn/batch/", "/api/predict/", "/api/predict/batch/",
                     "/api/label/"):  # fmt: skip
            calls.append(("post", path, path, {"data": "{}", "headers": text}, 415))
        wrong = {"Authorization": "Basic " + base64.b64encode(b"scientist:wrong").decode()}
        for path in ("/api/auth/token/", "/api/stream/events/", "/api/stream/metrics/"):
            calls.append(("get", path, path, {"headers": wrong}, 401))
        doc = requests.get(url + "/api/openapi.json", timeout=30).json()
        undocumented = []
        for method, template, path, kwargs, expected in calls:
            kwargs = {"headers": auth, **kwargs}
            r = requests.request(method, url + path, timeout=30, **kwargs)
            assert r.status_code == expected, (method, path, r.status_code, r.text[:200])
            if str(expected) not in doc["paths"][template][method]["responses"]:
                undocumented.append(f"{method.upper()} {template}: {expected}")
        assert not undocumented, undocumented
    # A storage failure answers 503 on every operation that writes (nothing was applied).
    for template, method in [("/api/learn/", "post"), ("/api/learn/batch/", "post"),
                             ("/api/label/", "post"), ("/api/model/{flavor}/{name}/", "post"),
                             ("/api/model/", "delete")]:  # fmt: skip
        assert "503" in doc["paths"][template][method]["responses"], template


def _server_with_a_file_size_limit(data_dir: Path, limit: int) -> ServerProcess:
    """A real server whose writes past ``limit`` bytes per file fail (RLIMIT_FSIZE: EFBIG, as
    a full disk would; Python ignores SIGXFSZ), so its storage really fails."""
    data_dir.mkdir(parents=True)
    port = free_port()
    serve = ["serve", "--port", str(port), "--data-dir", str(data_dir), "--auth-user", "u"]
    args = ["prlimit", f"--fsize={limit}", "--", *streamml_command(*serve, "--auth-token=t")]
    log_path = data_dir.parent / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")}
    with log_path.open("ab") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
    server = ServerProcess(f"http://127.0.0.1:{port}", "u", "t", data_dir, process, log_path)
    try:
        wait_ready(server)
    except BaseException:
        server.stop()
        raise
    return server


def test_a_storage_failure_is_a_documented_503(tmp_path: Path) -> None:
    server = _server_with_a_file_size_limit(tmp_path / "d", 1_000_000)
    try:
        url, auth = server.url, server.auth_header()
        lin = {"pipeline": [{"class": "linear_model.LinearRegression"}]}
        assert requests.post(url + "/api/model/regression/lin/", json=lin, headers=auth).ok
        wide = {"features": {f"f{i}": 1.0 for i in range(50)}, "ground_truth": 1.0}
        batch = {"model": "lin", "samples": [wide] * 200}
        statuses = []
        for _ in range(100):  # each batch adds ~100 kB to the log: the limit is reached
            r = requests.post(url + "/api/learn/batch/", json=batch, headers=auth, timeout=60)
            statuses.append(r.status_code)
            if r.status_code != 200:
                break
        assert statuses[-1] == 503, statuses
        doc = requests.get(url + "/api/openapi.json", timeout=30).json()
        assert "503" in doc["paths"]["/api/learn/batch/"]["post"]["responses"]
    finally:
        server.stop()
