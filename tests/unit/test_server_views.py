"""Views and middleware in-process (aiohttp test client): routing, auth challenge, error shape,
and that the OpenAPI document describes every route the app serves."""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from streamml.modelserver.app import create_app
from streamml.modelserver.openapi import document
from streamml.modelserver.settings import ServerSettings

BASIC = {"Authorization": "Basic " + base64.b64encode(b"u:t").decode()}


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient]:
    settings = ServerSettings(data_dir=tmp_path, auth_user="u", auth_token="t")
    async with TestClient(TestServer(create_app(settings))) as test_client:
        yield test_client


async def test_challenge_and_error_shape(client: TestClient) -> None:
    r = await client.get("/api/models/")
    assert r.status == 401
    assert re.fullmatch(
        r'realm="http://127\.0\.0\.1:\d+/api/auth/token",service="http://127\.0\.0\.1:\d+"',
        r.headers["Www-Authenticate"],
    )
    assert (await r.json())["message"] == "authentication required"
    r = await client.post("/api/learn/", data="x", headers={**BASIC, "Content-Type": "text/plain"})
    assert r.status == 415 and "application/json" in (await r.json())["message"]
    r = await client.get("/nowhere")
    assert r.status == 404 and "message" in await r.json()


async def test_create_learn_predict_in_process(client: TestClient) -> None:
    body = {"pipeline": [{"class": "linear_model.LinearRegression"}]}
    r = await client.post("/api/model/regression/", json=body, headers=BASIC)
    assert r.status == 201
    name = (await r.json())["name"]
    assert re.fullmatch(r"[a-z]+-[a-z]+(-\d+)?", name)
    r = await client.post(
        "/api/learn/", json={"features": {"x": 1.0}, "ground_truth": 2.0}, headers=BASIC
    )
    assert (await r.json())["results"] == {name: {"learned": True, "duplicate": False}}
    r = await client.get("/api/stats/", params={"model": name}, headers=BASIC)
    assert (await r.json())["learn"]["n_calls"] == 1


async def test_openapi_describes_every_route(client: TestClient) -> None:
    doc = document()
    documented = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
    served = set()
    for route in client.app.router.routes():
        if route.method == "HEAD":
            continue
        path = route.resource.canonical if route.resource else ""
        if path == "/api/auth/token":  # the realm alias of /api/auth/token/
            continue
        served.add((route.method, path))
    assert served == documented
    r = await client.get("/api/openapi.json")
    assert (await r.json())["openapi"].startswith("3.")
