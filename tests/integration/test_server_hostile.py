"""Malformed, missing, oversized and hostile input: always a 4xx with a JSON message, never a
500, nothing learned by mistake; slow event-stream clients are dropped, not waited for."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests

from tests.fixtures.server import ServerProcess, running_server

pytestmark = pytest.mark.integration

PIPELINE = [
    {"class": "preprocessing.StandardScaler"},
    {"class": "linear_model.LinearRegression", "params": {"intercept_lr": 0.1}},
]
GOOD = {"model": "lin", "features": {"x": 1.0, "y": 2}, "ground_truth": 3.0}


def call(server: ServerProcess, method: str, path: str, **kwargs: Any) -> requests.Response:
    headers = {**server.auth_header(), **kwargs.pop("headers", {})}
    return requests.request(method, server.url + path, headers=headers, timeout=30, **kwargs)


def expect(response: requests.Response, status: int, *words: str) -> None:
    assert response.status_code == status, (response.status_code, response.text)
    message = response.json()["message"]
    for word in words:
        assert word in message, (word, message)


@pytest.fixture
def server(model_server: ServerProcess) -> ServerProcess:
    r = call(model_server, "POST", "/api/model/regression/lin/", json={"pipeline": PIPELINE})
    assert r.status_code == 201
    return model_server


def learned(server: ServerProcess) -> int:
    return int(call(server, "GET", "/api/stats/?model=lin").json()["learn"]["n_calls"])


def test_bad_learn_requests(server: ServerProcess) -> None:
    json_type = {"Content-Type": "application/json"}
    expect(call(server, "POST", "/api/learn/", data=b"{not json", headers=json_type), 400, "JSON")
    expect(call(server, "POST", "/api/learn/", data=b"", headers=json_type), 400, "body")
    expect(call(server, "POST", "/api/learn/", data=json.dumps(GOOD)), 415, "application/json")
    expect(call(server, "POST", "/api/learn/", json={"model": "lin"}), 400, "features")
    expect(call(server, "POST", "/api/learn/", json={**GOOD, "colour": 1}), 400, "colour")
    expect(call(server, "POST", "/api/learn/", json=[1, 2]), 400)
    nan = json.dumps({**GOOD, "features": {"x": float("nan")}})
    expect(call(server, "POST", "/api/learn/", data=nan, headers=json_type), 400)
    inf = b'{"model": "lin", "features": {"x": 1e999}, "ground_truth": 1}'
    expect(call(server, "POST", "/api/learn/", data=inf, headers=json_type), 400, "'x'", "finite")
    nested = {**GOOD, "features": {"x": {"a": 1}}}
    expect(call(server, "POST", "/api/learn/", json=nested), 400, "'x'")
    text = {**GOOD, "features": {"x": "eight"}}
    expect(call(server, "POST", "/api/learn/", json=text), 400, "lin")
    expect(call(server, "POST", "/api/learn/", json={**GOOD, "ground_truth": "a lot"}), 400)
    no_truth = {"model": "lin", "features": {"x": 1.0}}
    expect(call(server, "POST", "/api/learn/", json=no_truth), 400, "ground_truth")
    expect(call(server, "POST", "/api/learn/", json={**GOOD, "model": "nope"}), 404, "nope")
    expect(call(server, "POST", "/api/learn/", json={**GOOD, "models": ["lin"]}), 400, "not both")
    big = {**GOOD, "features": {f"f{i}": 1 for i in range(1001)}}
    expect(call(server, "POST", "/api/learn/", json=big), 400, "1000")
    assert learned(server) == 0  # nothing above was learned
    assert call(server, "POST", "/api/learn/", json=GOOD).status_code == 201
    assert learned(server) == 1


def test_bad_model_requests(server: ServerProcess) -> None:
    pipe = {"pipeline": PIPELINE}
    expect(call(server, "POST", "/api/model/regression/lin/", json=pipe), 409, "exists")
    expect(call(server, "POST", "/api/model/teapot/x/", json=pipe), 400, "flavor")
    for bad in ["UPPER", "a_b", "x" * 64, "-lead", "%2e%2e", "a.b", "..%2Fetc"]:
        expect(call(server, "POST", f"/api/model/regression/{bad}/", json=pipe), 400, "name")
    for path in ["/api/model/..%2F..%2Fetc%2Fpasswd/", "/api/model/download/%2e%2e/"]:
        r = call(server, "GET", path)
        assert 400 <= r.status_code < 500 and "message" in r.json()
    unknown = {"pipeline": [{"class": "os.system"}]}
    expect(call(server, "POST", "/api/model/regression/x/", json=unknown), 400, "os.system")
    not_allowed = {"pipeline": [{"class": "compose.FuncTransformer"}]}
    expect(call(server, "POST", "/api/model/regression/x/", json=not_allowed), 400, "allow")
    bad_param = {"pipeline": [{"class": "linear_model.LinearRegression", "params": {"lr": 1}}]}
    expect(
        call(server, "POST", "/api/model/regression/x/", json=bad_param),
        400,
        "linear_model.LinearRegression",
        "'lr'",
    )
    wrong_type = {
        "pipeline": [{"class": "preprocessing.StandardScaler", "params": {"with_std": 1}}]
    }
    expect(call(server, "POST", "/api/model/regression/x/", json=wrong_type), 400, "with_std")
    nested = {
        "pipeline": [
            {
                "class": "linear_model.LinearRegression",
                "params": {"optimizer": {"class": "optim.SGD", "params": {"lr": "fast"}}},
            }
        ]
    }
    expect(call(server, "POST", "/api/model/regression/x/", json=nested), 400, "optim.SGD", "'lr'")
    transformer_only = {"pipeline": [{"class": "preprocessing.StandardScaler"}]}
    expect(call(server, "POST", "/api/model/regression/x/", json=transformer_only), 400, "predict")
    flavor_clash = {"pipeline": PIPELINE, "flavor": "binary"}
    expect(call(server, "POST", "/api/model/regression/x/", json=flavor_clash), 400, "flavor")
    expect(call(server, "GET", "/api/model/nope/"), 404, "nope")
    expect(call(server, "GET", "/api/model/download/nope/"), 404, "nope")
    expect(call(server, "DELETE", "/api/model/", data={"model": "nope"}), 404, "nope")
    expect(call(server, "DELETE", "/api/model/"), 400, "model")
    expect(call(server, "GET", "/api/metrics/"), 400, "model")
    expect(call(server, "GET", "/api/metrics/?model=nope"), 404)
    expect(call(server, "GET", "/api/nowhere/"), 404)
    expect(call(server, "PUT", "/api/models/"), 405)
    # metrics and stats with riverapi's JSON body on a GET
    assert call(server, "GET", "/api/metrics/", json={"model": "lin"}).status_code == 200
    # riverapi's two keys, plus the drift watch's (issue 12: an additive field)
    assert set(call(server, "GET", "/api/stats/", json={"model": "lin"}).json()) == {
        "predict",
        "learn",
        "drift",
    }
    assert call(server, "GET", "/api/models/").json() == {"models": ["lin"]}


def test_oversized_body(tmp_path: Path) -> None:
    with running_server(tmp_path / "d", "--max-body-bytes", "4096") as server:
        big = {**GOOD, "features": {f"feature{i}": i for i in range(500)}}
        expect(call(server, "POST", "/api/learn/", json=big), 413)
        r = call(server, "POST", "/api/model/regression/x/", data=b"\0" * 10_000)
        assert r.status_code in (403, 413)


def test_batch_endpoints(server: ServerProcess) -> None:
    samples = [{"features": {"x": i, "y": 2 * i}, "ground_truth": 3.0 * i} for i in range(50)]
    r = call(server, "POST", "/api/learn/batch/", json={"model": "lin", "samples": samples})
    assert r.json() == {"results": {"lin": {"learned": 50, "duplicates": 0}}}
    # a sample the model cannot use is skipped and reported; the others are learned
    odd = [*samples[:3], {"features": {"x": "?"}, "ground_truth": 1.0}]
    r = call(server, "POST", "/api/learn/batch/", json={"model": "lin", "samples": odd})
    assert r.status_code == 200, r.text
    result = r.json()["results"]["lin"]
    assert result["learned"] == 3 and result["rejected"][0]["index"] == 3
    only_bad = {"model": "lin", "samples": odd[3:]}
    expect(call(server, "POST", "/api/learn/batch/", json=only_bad), 400, "samples[0]")
    # malformed samples fail the whole request before anything is learned
    for bad_sample, word in [
        ({"features": {"x": [1]}, "ground_truth": 1.0}, "'x'"),
        ({"features": {"x": 1}, "ground_truth": 1.0, "colour": 1}, "colour"),
        ({"ground_truth": 1.0}, "features"),
        ({"features": {"x": 1}, "ground_truth": {}}, "ground_truth"),
        ({"features": {"x": 1}, "identifier": 5}, "identifier"),
        ("text", "object"),
    ]:
        body = {"model": "lin", "samples": [*samples[:2], bad_sample]}
        expect(call(server, "POST", "/api/learn/batch/", json=body), 400, "samples[2]", word)
    assert learned(server) == 53
    expect(call(server, "POST", "/api/learn/batch/", json={"model": "lin", "samples": []}), 400)
    for flag in ("false", 0, None, [False]):  # a JSON boolean only: nothing is guessed
        body = {"model": "lin", "samples": samples[:2], "update_metrics": flag}
        expect(call(server, "POST", "/api/learn/batch/", json=body), 400, "update_metrics")
    assert learned(server) == 53
    preds = call(
        server,
        "POST",
        "/api/predict/batch/",
        json={"model": "lin", "samples": [{"features": {"x": 2, "y": 4}, "identifier": "a"}]},
    ).json()
    assert preds["predictions"][0]["identifier"] == "a"
    assert isinstance(preds["predictions"][0]["prediction"], float)


def test_operations_endpoints(server: ServerProcess) -> None:
    assert requests.get(server.url + "/healthz").json() == {"status": "ok"}
    assert requests.get(server.url + "/readyz").json() == {"status": "ready"}
    doc = requests.get(server.url + "/api/openapi.json").json()
    assert {"/api/learn/", "/api/learn/batch/", "/api/model/{flavor}/{name}/"} <= set(doc["paths"])
    info = requests.get(server.url + "/api/").json()
    assert info["river_version"] == "0.26.1"


async def test_event_streams_and_slow_client(tmp_path: Path) -> None:
    with running_server(
        tmp_path / "d", "--sse-queue-size", "64", "--max-body-bytes", str(64 * 2**20)
    ) as server:
        r = call(server, "POST", "/api/model/regression/lin/", json={"pipeline": PIPELINE})
        assert r.status_code == 201
        # a slow client: subscribes, then never reads (tiny receive buffer)
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect(("127.0.0.1", server.port))
        auth = base64.b64encode(f"{server.username}:{server.token}".encode()).decode()
        slow.sendall(
            b"GET /api/stream/events/ HTTP/1.1\r\nHost: x\r\nAuthorization: Basic "
            + auth.encode()
            + b"\r\n\r\n"
        )
        async with aiohttp.ClientSession(headers=server.auth_header()) as session:
            fast = await session.get(server.url + "/api/stream/metrics/")
            assert fast.status == 200
            await asyncio.sleep(0.5)
            features = {f"f{i}": float(i) for i in range(1000)}
            samples = [{"features": features, "ground_truth": 1.0} for _ in range(200)]
            # Each batch is larger than a client's buffer (a gap, not a disconnect); the slow
            # client is dropped once its connection is backed up and it has read nothing since
            # its previous gap.
            batches = 0
            while (
                batches < 30
                and "dropped_total 1.0" not in requests.get(server.url + "/metrics").text
            ):
                async with session.post(
                    server.url + "/api/learn/batch/", json={"model": "lin", "samples": samples}
                ) as resp:
                    assert resp.status == 200, await resp.text()
                batches += 1
            line = await asyncio.wait_for(fast.content.readline(), 10)
            while not line.startswith(b"data: "):
                line = await asyncio.wait_for(fast.content.readline(), 10)
            assert json.loads(line[6:])["model"] == "lin"
            fast.close()
        assert learned(server) == 200 * batches  # learning never waited for the slow client
        prom = requests.get(server.url + "/metrics").text
        assert "streamml_stream_clients_dropped_total 1.0" in prom
        slow.close()


def test_supplied_prediction_is_checked(server: ServerProcess) -> None:
    body = {**GOOD, "prediction": "high"}
    expect(call(server, "POST", "/api/learn/", json=body), 400, "prediction")
    assert call(server, "POST", "/api/learn/", json={**GOOD, "prediction": 2.5}).status_code == 201
    assert call(server, "GET", "/api/metrics/?model=lin").json()["MAE"] == 0.5
