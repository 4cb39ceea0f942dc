"""The headless-Chromium harness itself, against a small local aiohttp page (no dashboard needed).

It navigates, evaluates JavaScript with values back, waits for a condition, fills and submits a
form, reads an HttpOnly cookie over CDP, writes a PNG, stops every process it started and
removes its profile, and (from Chromium's own net log) connects to nothing but 127.0.0.1.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from streamml.testbed.browser import Browser, BrowserError, Page
from tests.fixtures.browser import closed_net_log

#: names under .invalid (RFC 6761) never resolve anywhere: what the page asks for outside
OUTSIDE = ("http://cdn.example.invalid/chart.js", "https://api.example.invalid/data")

PAGE = """<!doctype html><html><head><title>harness</title></head><body>
<form id="login" method="post" action="/login">
  <input id="user" name="user"><input id="secret" name="secret" type="password">
  <button type="submit">log in</button>
</form>
<div id="ticks">0</div><ul id="items"></ul>
<script src="{script}"></script>
<script>
  let ticks = 0;
  setInterval(() => {{
    document.getElementById('ticks').textContent = String(++ticks);
    const li = document.createElement('li'); li.textContent = 'item ' + ticks;
    document.getElementById('items').appendChild(li);
  }}, 20);
  fetch('{api}').catch(() => null);
</script></body></html>"""


@pytest.fixture
async def local_site() -> AsyncIterator[str]:
    async def index(request: web.Request) -> web.Response:
        html = PAGE.format(script=OUTSIDE[0], api=OUTSIDE[1])
        return web.Response(text=html, content_type="text/html")

    async def login(request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("secret") != "right":
            raise web.HTTPUnauthorized(text="wrong credentials")
        response = web.HTTPSeeOther("/welcome")
        response.set_cookie("session", f"s-{form['user']}", httponly=True, samesite="Strict")
        raise response

    async def welcome(request: web.Request) -> web.Response:
        who = request.cookies.get("session", "nobody")
        return web.Response(text=f"<p id='who'>{who}</p>", content_type="text/html")

    app = web.Application()
    app.add_routes([web.get("/", index), web.post("/login", login), web.get("/welcome", welcome)])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_evaluates_and_waits_for_a_live_page(page: Page, local_site: str) -> None:
    await page.navigate(local_site + "/")
    assert await page.evaluate("document.title") == "harness"
    assert await page.evaluate("({a: [1, 2], b: 'x'})") == {"a": [1, 2], "b": "x"}
    assert await page.evaluate("Promise.resolve(41).then(v => v + 1)") == 42
    first = await page.evaluate("document.querySelectorAll('#items li').length")
    later = await page.wait_for(
        f"document.querySelectorAll('#items li').length > {first + 5}"
        f" && document.querySelectorAll('#items li').length"
    )
    assert later > first + 5
    with pytest.raises(BrowserError, match="nope"):
        await page.evaluate("(() => { throw new Error('nope'); })()")
    with pytest.raises(BrowserError, match="timed out"):
        await page.wait_for("false", limit=0.5)


async def test_fills_and_submits_a_form_and_reads_httponly_cookies(
    page: Page, local_site: str
) -> None:
    await page.navigate(local_site + "/")
    await page.fill("#user", "alice")
    await page.fill("#secret", "right")
    await page.submit("#login", navigates=True)
    assert await page.evaluate("document.getElementById('who').textContent") == "s-alice"
    assert await page.evaluate("document.cookie") == ""  # HttpOnly: hidden from the page
    cookies = {c.name: c for c in await page.cookies([local_site + "/"])}
    assert cookies["session"].value == "s-alice"
    assert cookies["session"].http_only
    assert cookies["session"].same_site == "Strict"
    with pytest.raises(BrowserError, match="no element"):
        await page.fill("#missing", "x")


async def test_screenshot_is_a_png_of_the_window(
    page: Page, local_site: str, tmp_path: Path
) -> None:
    await page.navigate(local_site + "/")
    shot = await page.screenshot(tmp_path / "shots" / "harness.png", full_page=False)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])  # IHDR
    assert (width, height) == (1280, 900)


async def test_connects_to_nothing_but_loopback(
    chromium: Browser, page: Page, local_site: str
) -> None:
    await page.navigate(local_site + "/")
    await page.wait_for("Number(document.getElementById('ticks').textContent) > 3")
    summary = await closed_net_log(chromium)
    port = local_site.rsplit(":", 1)[1]
    assert f"127.0.0.1:{port}" in summary.peers  # the log saw the page's own connection
    assert set(OUTSIDE) <= summary.urls  # the page asked for the outside ...
    assert set(OUTSIDE) <= summary.failed_urls  # ... and got nothing
    assert summary.non_loopback_peers == set()
    assert summary.bytes_sent_elsewhere == 0


async def test_close_stops_the_whole_group_and_removes_the_profile(
    chromium: Browser, page: Page, local_site: str
) -> None:
    await page.navigate(local_site + "/")
    members = chromium.group_members()
    assert chromium.pid in members and len(members) > 1  # renderer, zygotes, ...
    assert chromium.memory_bytes() > 0
    await chromium.close()
    assert chromium.group_members() == []
    assert chromium.process.returncode is not None
    assert not chromium.profile.exists()
