"""The local runtime against real ``streamml serve`` processes (no control plane needed).

The operator supervises the server process, creates the declared models on it, polls what they
learned, replaces a model whose pipeline changed, keeps learning across a crash, and removes
everything on delete.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamml.client.api import ModelServerClient
from streamml.errors import AuthError
from streamml.operator import reconcile as rc
from streamml.operator.kube import Kube
from streamml.operator.localruntime import LocalRuntime, ServerProcess
from streamml.operator.settings import OperatorSettings
from streamml.vocabulary.streammodel import StreamModelSpec

pytestmark = pytest.mark.integration

SAMPLE = Path(__file__).parents[2] / "config" / "samples" / "streammodel.yaml"
USER, TOKEN = "operator-test", "a-long-enough-test-token-0123456789"
START_TIMEOUT = 90.0


def sample_spec() -> StreamModelSpec:
    return rc.validate(yaml.safe_load(SAMPLE.read_text())["spec"])


async def wait_ready(server: ServerProcess) -> None:
    async with ModelServerClient(server.address, timeout=2.0) as client:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        while not (server.running and await client.ready()):
            if loop.time() > deadline:
                log = (server.directory / "server.log").read_text(errors="replace")
                raise AssertionError(f"server not ready:\n{log[-3000:]}")
            await asyncio.sleep(0.2)


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[LocalRuntime]:
    rt = LocalRuntime(tmp_path / "state")
    yield rt
    await rt.close()


def context(tmp_path: Path, rt: LocalRuntime) -> rc.OperatorContext:
    settings = OperatorSettings(local_runtime=True, state_dir=tmp_path / "state")
    return rc.OperatorContext(settings=settings, kube=Kube(), runtime=rt)


class Events(list[tuple[str, str, str]]):
    def __call__(self, kind: str, reason: str, message: str) -> None:
        self.append((kind, reason, message))

    def reasons(self) -> list[str]:
        return [reason for _, reason, _ in self]


def _status_models(polls: list[Any], held: dict[str, str]) -> list[dict[str, Any]]:
    return [
        {"name": p.name, "samples": p.samples, "metrics": p.metrics, "specHash": held.get(p.name)}
        for p in polls
    ]


async def test_models_created_learned_replaced_and_survive_a_crash(
    tmp_path: Path, runtime: LocalRuntime
) -> None:
    ctx, state, spec, events = context(tmp_path, runtime), rc.ObjectState(), sample_spec(), Events()
    server = await runtime.ensure("ns", "sm", USER, TOKEN)
    await wait_ready(server)
    token_file = server.directory / "token"
    assert token_file.stat().st_mode & 0o777 == 0o600

    obs, polls, held = await rc.sync_models(
        ctx, state, spec, server.address, (USER, TOKEN), [], events
    )
    assert (obs.status, obs.reason) == ("True", "ModelsCreated")
    assert events.reasons().count("ModelCreated") == len(spec.models) >= 5
    assert {p.name for p in polls} == {m.name for m in spec.models}
    assert all(p.samples == 0 for p in polls)

    # idempotent: a second pass creates nothing
    events.clear()
    obs, polls, held = await rc.sync_models(
        ctx, state, spec, server.address, (USER, TOKEN), _status_models(polls, held), events
    )
    assert obs.status == "True" and events == []

    async with ModelServerClient(server.address, username=USER, token=TOKEN) as client:
        for i in range(12):
            await client.learn({"nx": 8 + i, "ny": 16, "nz": 8 - i % 3}, 120.0 + 3 * i)
    obs, polls, held = await rc.sync_models(
        ctx, state, spec, server.address, (USER, TOKEN), _status_models(polls, held), events
    )
    by_name = {p.name: p for p in polls}
    assert all(p.samples == 12 for p in polls), by_name
    assert "RMSE" in by_name["linear"].metrics and by_name["linear"].metrics["RMSE"] > 0
    previous = _status_models(polls, held)

    # The server dies: the supervisor restarts it and nothing learned is lost.
    address = server.address
    old_pid = server.process.pid if server.process else None
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)
    await asyncio.sleep(0.5)
    await wait_ready(server)
    assert server.restarts == 1 and server.process is not None and server.process.pid != old_pid
    assert server.address == address  # jobs keep their address
    obs, polls, held = await rc.sync_models(
        ctx, state, spec, server.address, (USER, TOKEN), previous, events
    )
    assert obs.status == "True", obs.message
    assert all(p.samples == 12 for p in polls)

    # A changed pipeline replaces that model (learning restarts); the others keep their samples.
    data = spec.model_dump(mode="json", by_alias=True)
    data["models"][0]["pipeline"][1]["params"]["intercept_lr"] = 0.05
    changed = rc.validate(data)
    events.clear()
    obs, polls, held = await rc.sync_models(
        ctx, state, changed, server.address, (USER, TOKEN), _status_models(polls, held), events
    )
    assert events.reasons() == ["ModelReplaced", "ModelCreated"]
    samples = {p.name: p.samples for p in polls}
    assert samples["linear"] == 0 and samples["bayesian"] == 12

    # Removing a model from the spec removes it from the server.
    fewer = rc.validate({**data, "models": data["models"][1:]})
    events.clear()
    await rc.sync_models(
        ctx, state, fewer, server.address, (USER, TOKEN), _status_models(polls, held), events
    )
    assert events.reasons() == ["ModelRemoved"]
    async with ModelServerClient(server.address, username=USER, token=TOKEN) as client:
        assert "linear" not in await client.models()

    # An operator restart (a new runtime on the same state dir) keeps the address and the models.
    await runtime.close()
    again = LocalRuntime(runtime.state_dir)
    try:
        restarted = await again.ensure("ns", "sm", USER, TOKEN)
        assert restarted.address == server.address
        await wait_ready(restarted)
        obs, polls, held = await rc.sync_models(
            ctx, state, fewer, restarted.address, (USER, TOKEN), _status_models(polls, held), events
        )
        assert obs.status == "True"
        assert {p.name: p.samples for p in polls}["bayesian"] == 12

        # Delete: the process stops and its data goes, like a garbage-collected PVC.
        assert restarted.process is not None
        pid = restarted.process.pid
        await again.stop("ns", "sm", remove_data=True)
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        assert not restarted.directory.exists()
    finally:
        await again.close()


async def test_a_model_the_server_rejects_is_reported_once(
    tmp_path: Path, runtime: LocalRuntime
) -> None:
    ctx, state, events = context(tmp_path, runtime), rc.ObjectState(), Events()
    spec = rc.validate(
        {
            "models": [
                {"name": "good", "pipeline": [{"class": "linear_model.BayesianLinearRegression"}]},
                {
                    "name": "bad",
                    "pipeline": [
                        {"class": "linear_model.LinearRegression", "params": {"no_such": 1}}
                    ],
                },
            ]
        }
    )
    server = await runtime.ensure("ns", "rej", USER, TOKEN)
    await wait_ready(server)
    obs, _, _ = await rc.sync_models(ctx, state, spec, server.address, (USER, TOKEN), [], events)
    assert (obs.status, obs.reason) == ("False", "ModelRejected")
    assert "spec.models[1] (bad)" in obs.message and "no_such" in obs.message
    assert events.reasons() == ["ModelCreated", "ModelRejected"]
    events.clear()
    obs, _, _ = await rc.sync_models(ctx, state, spec, server.address, (USER, TOKEN), [], events)
    assert obs.reason == "ModelRejected" and events == []  # not retried: no loop of 400s


async def test_wrong_credentials_are_reported(tmp_path: Path, runtime: LocalRuntime) -> None:
    ctx, state, events = context(tmp_path, runtime), rc.ObjectState(), Events()
    server = await runtime.ensure("ns", "auth", USER, TOKEN)
    await wait_ready(server)
    spec = rc.validate(
        {"models": [{"name": "m", "pipeline": [{"class": "linear_model.PARegressor"}]}]}
    )
    with pytest.raises(Exception, match=r"credentials|401|token"):
        await rc.sync_models(ctx, state, spec, server.address, (USER, "wrong"), [], events)
    # rotating the token restarts the server with the new one
    again = await runtime.ensure("ns", "auth", USER, "another-token-0123456789")
    assert again is not server
    await wait_ready(again)
    obs, _, _ = await rc.sync_models(
        ctx, state, spec, again.address, (USER, "another-token-0123456789"), [], events
    )
    assert obs.status == "True", obs.message


async def test_servers_get_an_explicit_environment(
    tmp_path: Path, runtime: LocalRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing stray in the operator's environment reaches the servers it supervises: with
    STREAMML_NO_AUTH set on the operator, its servers still demand credentials."""
    monkeypatch.setenv("STREAMML_NO_AUTH", "true")
    monkeypatch.setenv("STREAMML_PENDING_MAX", "not-a-number")
    server = await runtime.ensure("ns", "env", USER, TOKEN)
    await wait_ready(server)
    assert server.process is not None
    environ = Path(f"/proc/{server.process.pid}/environ").read_bytes().split(b"\0")
    assert not [v for v in environ if v.startswith(b"STREAMML_")]
    async with ModelServerClient(server.address, timeout=10.0) as anonymous:
        with pytest.raises(AuthError):
            await anonymous.models()
    async with ModelServerClient(server.address, username=USER, token=TOKEN) as client:
        assert await client.models() == []
