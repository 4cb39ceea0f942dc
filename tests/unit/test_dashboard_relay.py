"""The relay's path rules (``streamml dashboard``): links and redirects the API server rewrote
to its proxy prefix come back to the relay's root; other sites' redirects are left alone."""

from __future__ import annotations

import asyncio
import functools

import aiohttp
import pytest
from aiohttp import web

from streamml.cli import main
from streamml.clients.dashboard import is_local, service_proxy_base
from streamml.clients.dashboard_relay import DashboardRelay, Upstream
from streamml.procs import free_port


def test_the_api_servers_own_prefix_is_taken_back_to_the_root() -> None:
    base = "https://127.0.0.1:6443/api/v1/namespaces/ns/services/http:sm:http/proxy"
    relay = DashboardRelay(Upstream(base))
    assert str(relay.upstream_url("/dashboard/?a=1")) == base + "/dashboard/?a=1"
    prefix = "/api/v1/namespaces/ns/services/http:sm:http/proxy"
    assert str(relay.upstream_url(prefix + "/api/history/m?since=3")) == (
        base + "/api/history/m?since=3"
    )
    assert relay._local_location(base + "/dashboard/login") == "/dashboard/login"
    assert relay._local_location(prefix + "/dashboard/") == "/dashboard/"
    assert relay._local_location("/dashboard/") == "/dashboard/"
    assert relay._local_location("https://elsewhere.example/x") == "https://elsewhere.example/x"


def test_service_proxy_base_and_local_addresses() -> None:
    assert service_proxy_base("https://10.0.0.1:6443/", "ns", "sm") == (
        "https://10.0.0.1:6443/api/v1/namespaces/ns/services/http:sm:http/proxy"
    )
    assert is_local("http://127.0.0.1:8080") and is_local("http://localhost:1")
    assert is_local("http://[::1]:8080")
    assert not is_local("http://sm.ns.svc:80") and not is_local(None)
    assert not is_local("http://192.0.2.7:80")


@pytest.mark.parametrize(
    ("args", "field"),
    [(["--port", "70000"], "--port"), (["--duration", "-1"], "--duration")],
)
def test_bad_options_are_refused_before_any_cluster_call(
    args: list[str], field: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["dashboard", "--streammodel", "sm", "--kubeconfig", "/nonexistent", *args])
    assert code == 2
    assert field in capsys.readouterr().err


async def test_an_unreachable_upstream_is_a_502_naming_it() -> None:
    port = free_port()  # nothing listens there
    async with (
        DashboardRelay(Upstream(f"http://127.0.0.1:{port}")) as relay,
        aiohttp.ClientSession() as http,
        http.get(relay.url + "/dashboard/") as answer,
    ):
        assert answer.status == 502
        assert "upstream unreachable" in (await answer.json())["message"]


async def test_stopping_ends_an_open_event_stream_instead_of_waiting_for_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An open page's event stream must not hold the relay's exit: with a grace period longer
    than the test's own timeout, a relay that waited for the stream would fail this test."""
    monkeypatch.setattr(web, "AppRunner", functools.partial(web.AppRunner, shutdown_timeout=900))

    async def events(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: first\n\n")
        for _ in range(3600):  # an event stream: open until someone ends it
            await asyncio.sleep(0.05)
            await response.write(b": keep-alive\n\n")
        return response

    app = web.Application()
    app.router.add_get("/api/events", events)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        relay = DashboardRelay(Upstream(f"http://127.0.0.1:{port}"))
        await relay.__aenter__()
        async with (
            aiohttp.ClientSession() as http,
            http.get(relay.url + "/api/events") as answer,
        ):
            assert await answer.content.readuntil(b"\n\n") == b"data: first\n\n"
            await relay.__aexit__(None, None, None)
            rest = await answer.content.read()  # the stream ended: nothing hangs here
            assert set(rest.split(b"\n\n")) <= {b": keep-alive", b""}
    finally:
        await runner.cleanup()
