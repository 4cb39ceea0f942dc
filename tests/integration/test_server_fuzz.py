"""Fuzz the live server from its own OpenAPI document: no input may produce a 5xx."""

from __future__ import annotations

from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck

from tests.fixtures.server import ServerProcess

pytestmark = pytest.mark.integration

EXAMPLES_PER_OPERATION = 40
SKIP = {"/api/stream/events/", "/api/stream/metrics/"}  # endless responses


def test_no_server_errors(model_server: ServerProcess) -> None:
    auth = model_server.auth_header()
    pipeline = {"pipeline": [{"class": "linear_model.LinearRegression"}]}
    r = requests.post(f"{model_server.url}/api/model/regression/lin/", json=pipeline, headers=auth)
    assert r.status_code == 201
    schema = schemathesis.openapi.from_url(model_server.url + "/api/openapi.json")
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path in SKIP:
            continue
        operations += 1

        @hypothesis.given(case=operation.as_strategy())
        @hypothesis.settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
            phases=[hypothesis.Phase.generate],
        )
        def run(case: Any) -> None:
            response = case.call(base_url=model_server.url, headers=auth, timeout=30)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path}: {response.status_code}")
            elif response.status_code >= 400 and response.status_code != 405:
                assert "message" in response.json(), response.text

        run()
    assert operations >= 18
    assert not failures, (failures[:10], model_server.log()[-4000:])
    assert "Traceback" not in model_server.log()
