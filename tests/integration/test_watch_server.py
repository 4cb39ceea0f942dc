"""``streamml watch`` and ``streamml plot`` against a real model server process."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from streamml.client.api import ModelServerClient
from streamml.clients import plot, watch
from streamml.pycommand import streamml_command
from streamml.sweep.access import ServerAccess
from streamml.vocabulary.modelspec import ModelSpec
from tests.fixtures.server import ServerProcess, free_port

pytestmark = pytest.mark.integration

MODELS = [
    ModelSpec.model_validate(
        {
            "name": "linear",
            "pipeline": [
                {"class": "preprocessing.StandardScaler"},
                {"class": "linear_model.LinearRegression", "params": {"intercept_lr": 0.1}},
            ],
        }
    ),
    ModelSpec.model_validate(
        {
            "name": "atoms-bayes",
            "pipeline": [
                {
                    "class": "feature_extraction.PolynomialExtender",
                    "params": {"degree": 3, "interaction_only": True, "include_bias": True},
                },
                {"class": "compose.Select", "params": {"keys": ["nx*ny*nz", "bias"]}},
                {
                    "class": "linear_model.BayesianLinearRegression",
                    "params": {"alpha": 1, "beta": 10000},
                },
            ],
        }
    ),
]


def _client(server: ServerProcess) -> ModelServerClient:
    return ModelServerClient(server.url, username=server.username, token=server.token)


async def _learn(server: ServerProcess, start: int, stop: int) -> None:
    async with _client(server) as client:
        for spec in MODELS:
            await client.ensure_model(spec)
        for i in range(start, stop):
            nx, ny, nz = 4 + i % 3, 5 + i % 4, 4 + i % 5
            await client.learn({"nx": nx, "ny": ny, "nz": nz}, 1e-4 * nx * ny * nz)


def _watch_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*streamml_command(), "watch", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


async def test_watch_records_what_the_server_reports(
    model_server: ServerProcess, tmp_path: Path
) -> None:
    await _learn(model_server, 0, 6)
    out = tmp_path / "watch"
    env = {
        "STREAMML_USERNAME": str(model_server.username),
        "STREAMML_TOKEN": str(model_server.token),
    }
    args = ["--server", model_server.url, "--interval", "0.2", "--count", "1", "--out", str(out)]
    first = await asyncio.to_thread(_watch_cli, *args, env=env)
    assert first.returncode == 0, first.stderr
    await _learn(model_server, 6, 10)
    second = await asyncio.to_thread(_watch_cli, *args, env=env)
    assert second.returncode == 0, second.stderr
    assert "recorded 2 snapshots from 1 polls" in second.stdout

    async with _client(model_server) as client:
        final_metrics = {m.name: await client.metrics(m.name) for m in MODELS}
        final_json = {m.name: await client.model_json(m.name) for m in MODELS}

    with (out / watch.METRICS_CSV).open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted((r["model"], r["samples"]) for r in rows) == [
        ("atoms-bayes", "10"),
        ("atoms-bayes", "6"),
        ("linear", "10"),
        ("linear", "6"),
    ]
    for row in rows:
        if row["samples"] == "10":
            for metric, value in final_metrics[row["model"]].items():
                assert float(row[metric]) == pytest.approx(value)
    snapshots = [json.loads(x) for x in (out / watch.SNAPSHOTS_JSONL).read_text().splitlines()]
    assert len(snapshots) == 4
    latest = {s["model"]: s for s in snapshots if s["samples"] == 10}
    assert {name: s["parameters"] for name, s in latest.items()} == final_json
    assert all(s["stats"]["learn"]["n_calls"] == s["samples"] for s in snapshots)

    written = plot.render(out, tmp_path / "png")
    curve_names = {p.name for p in written}
    assert "learning_curve_RMSE.png" in curve_names
    figure = plot.learning_curve_figure(watch.read_metrics_table(out / watch.METRICS_CSV), "RMSE")
    lines = {line.get_label(): list(line.get_xdata()) for line in figure.axes[0].get_lines()}
    assert lines == {"atoms-bayes": [6, 10], "linear": [6, 10]}


async def test_watch_with_a_wrong_token_fails_clearly(
    model_server: ServerProcess, tmp_path: Path
) -> None:
    result = await asyncio.to_thread(
        _watch_cli,
        "--server",
        model_server.url,
        "--username",
        str(model_server.username),
        "--token",
        "wrong",
        "--count",
        "1",
        "--out",
        str(tmp_path),
    )
    assert result.returncode == 1
    assert "never answered" in result.stderr
    assert "token exchange failed" in result.stderr or "credentials" in result.stderr
    assert not (tmp_path / watch.METRICS_CSV).exists()


def test_watch_of_an_unreachable_server_fails_clearly(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = _watch_cli(
        "--server", url, "--count", "2", "--interval", "0.1", "--out", str(tmp_path)
    )
    assert result.returncode == 1
    assert f"{url} never answered" in result.stderr


@pytest.fixture
async def hostile_server() -> AsyncIterator[str]:
    """A server that answers with what a broken or malicious server might send.

    The real server cannot be made to produce this (it validates its own names and metrics).
    """

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"models": ["ok", "../../etc/passwd", "x" * 5000, "gone"]})

    async def metrics(request: web.Request) -> web.Response:
        if request.query.get("model") == "gone":
            return web.json_response({"message": "no such model"}, status=404)
        return web.json_response({"MAE": "NaN", "RMSE": 1.5, "R2": float("inf"), "deep": {"a": 1}})

    async def stats(_: web.Request) -> web.Response:
        return web.json_response({"learn": {"n_calls": "lots"}})

    async def model_json(_: web.Request) -> web.Response:
        return web.json_response({"LinearRegression": {"l2": 0.0}})

    app = web.Application()
    app.router.add_get("/api/models/", models)
    app.router.add_get("/api/metrics/", metrics)
    app.router.add_get("/api/stats/", stats)
    app.router.add_get("/api/model/{name}/", model_json)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_watch_keeps_only_sane_data_from_a_hostile_server(
    hostile_server: str, tmp_path: Path
) -> None:
    recorded, answered = await watch.watch(
        ServerAccess(hostile_server), tmp_path, interval=0.05, count=2
    )
    assert (recorded, answered) == (2, 2)
    rows = watch.read_metrics_table(tmp_path / watch.METRICS_CSV)
    assert [(r["model"], r["samples"], r["metrics"]) for r in rows] == [
        ("ok", 0, {"RMSE": 1.5}),
        ("ok", 0, {"RMSE": 1.5}),
    ]
