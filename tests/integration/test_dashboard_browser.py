"""The dashboard in a real browser (Debian's headless Chromium, reaching only 127.0.0.1).

- While a real learning script teaches a real server, the page (logged in through its form with
  the read-only credential) lists the models, their sample counts rise to what the server counted,
  and each learning curve gains points; a screenshot is saved as a test artefact.
- Mid-way through a real local sweep (``streamml sweep``, real LAMMPS), the page shows the sweep
  and its models learning; screenshot too (``STREAMML_DASHBOARD_SCREENSHOT=docs/dashboard.png``
  also writes it there: the README's picture).
- Without credentials the page redirects to the login form and the data API answers 401; wrong
  credentials fail (401, no cookie); the session cookie is HttpOnly and SameSite=Strict (read over
  CDP: the page's own script cannot see it) and gives no power to write.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import yaml

from streamml.pycommand import python_code, streamml_command
from streamml.testbed.browser import Page
from tests.fixtures.server import ServerProcess, create_models, learn_calls, running_server
from tests.fixtures.sweeps import sweep_doc

pytestmark = pytest.mark.lammps

READ_USER, READ_TOKEN = "viewer", "a-read-only-token-0123456789abcdef"
SCREENSHOT_COPY = "STREAMML_DASHBOARD_SCREENSHOT"

#: a learning script: ``count`` results of a made-up cost model, one every ``pause`` seconds
LEARNER = """
import asyncio, sys
from streamml.client.api import ModelServerClient

async def main(url, user, token, count, pause):
    async with ModelServerClient(url, username=user, token=token) as client:
        for i in range(count):
            nx = 4 + i % 9
            await client.learn({"nx": nx, "ny": 8, "nz": 8}, 0.002 * nx * 64 + 0.01 * (i % 3))
            await asyncio.sleep(pause)

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])))
"""

JS_MODELS = "[...document.querySelectorAll('table#models tbody tr[data-model]')]"
JS_READY = "document.body.dataset.ready === 'true'"


def js_samples(model: str) -> str:
    cell = json.dumps(f'tr[data-model="{model}"] td[data-field=samples]')
    return f"Number(document.querySelector({cell})?.textContent ?? -1)"


def js_points(model: str) -> str:
    points = json.dumps(f'svg[data-curve="{model}"] circle[data-point]')
    return f"document.querySelectorAll({points}).length"


@pytest.fixture
def dashboard_server(tmp_path: Path) -> Iterator[ServerProcess]:
    with running_server(
        tmp_path / "server",
        "--auth-read-user", READ_USER, f"--auth-read-token={READ_TOKEN}",
        "--history-interval-seconds", "0.2",
    ) as server:  # fmt: skip
        yield server


async def log_in(page: Page, server_url: str, user: str, token: str) -> None:
    await page.navigate(server_url + "/dashboard/")
    assert await page.evaluate("document.body.id") == "login-page"
    await page.fill("#username", user)
    await page.fill("#token", token)
    await page.submit("#login-form", navigates=True)


def keep_screenshot(shot: Path) -> None:
    target = os.environ.get(SCREENSHOT_COPY)
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target)


async def test_the_page_follows_a_learning_script(
    page: Page, dashboard_server: ServerProcess, tmp_path: Path
) -> None:
    server = dashboard_server
    await create_models(server)
    assert server.username and server.token
    count = 120
    argv = python_code(LEARNER, server.url, server.username, server.token, str(count), "0.05")
    learner = subprocess.Popen(argv)
    try:
        await log_in(page, server.url, READ_USER, READ_TOKEN)
        await page.wait_for(JS_READY)
        names = await page.wait_for(
            f"{JS_MODELS}.length === 2 && {JS_MODELS}.map(r => r.dataset.model)"
        )
        assert sorted(names) == ["linear", "mean"]
        first = await page.wait_for(f"{js_samples('linear')} > 0 && {js_samples('linear')}")
        assert learner.poll() is None, "the script ended before the page saw it learn"
        rising = await page.wait_for(f"{js_samples('linear')} > {first} && {js_samples('linear')}")
        points = await page.wait_for(f"{js_points('linear')} > 0 && {js_points('linear')}")
        more = await page.wait_for(f"{js_points('linear')} > {points} && {js_points('linear')}")
        assert first < rising and points < more
        assert learner.wait(timeout=120) == 0
        learned = await learn_calls(server, "linear")
        assert learned == count
        # the page settles on exactly what the server counted, for every model
        for model in ("linear", "mean"):
            await page.wait_for(f"{js_samples(model)} === {learned}")
        assert await page.evaluate("document.getElementById('status').dataset.state") == "live"
        shot = await page.screenshot(tmp_path / "artefacts" / "dashboard.png")
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        if learner.poll() is None:
            learner.kill()
            learner.wait(timeout=30)


async def test_the_page_mid_sweep(
    page: Page, dashboard_server: ServerProcess, tmp_path: Path
) -> None:
    server = dashboard_server
    await create_models(server)
    assert server.username and server.token
    doc = sweep_doc("browser-sweep", "unused-by-the-cli", trials=8, testTrials=2, parallelism=1)
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump(doc))
    token_file = tmp_path / "token"
    token_file.write_text(server.token)
    argv = [*streamml_command(), "sweep", str(sweep_file), "--server", server.url,
            "--username", server.username, "--token-file", str(token_file),
            "--workdir", str(tmp_path / "work"), "--no-progress"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")}
    sweep = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        await log_in(page, server.url, READ_USER, READ_TOKEN)
        await page.wait_for(JS_READY)
        seen = await page.wait_for(
            f"{js_samples('linear')} >= 3 && {js_samples('linear')}", limit=300
        )
        assert sweep.poll() is None, "the sweep ended before the page saw it learn"
        await page.wait_for("document.querySelectorAll('#sweeps section[data-sweep]').length > 0")
        shot = await page.screenshot(tmp_path / "artefacts" / "dashboard-mid-sweep.png")
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        keep_screenshot(shot)
        output, _ = sweep.communicate(timeout=600)
        assert sweep.returncode == 0, output.decode(errors="replace")[-3000:]
        final = await learn_calls(server, "linear")
        assert seen < final == 8
        await page.wait_for(f"{js_samples('linear')} === {final}")
        phase = "document.querySelector('#sweeps section[data-sweep]').dataset.phase"
        assert await page.wait_for(f"{phase} === 'Succeeded' && {phase}", limit=60) == "Succeeded"
    finally:
        if sweep.poll() is None:
            sweep.terminate()
            sweep.wait(timeout=60)


async def test_the_page_and_its_data_need_credentials(
    page: Page, dashboard_server: ServerProcess
) -> None:
    server = dashboard_server
    await create_models(server)
    async with aiohttp.ClientSession() as http:
        async with http.get(server.url + "/dashboard/", allow_redirects=False) as answer:
            assert answer.status == 303
            assert answer.headers["Location"].endswith("/dashboard/login")
        for path in ("/api/dashboard/models", "/api/history/linear", "/api/sweeps"):
            async with http.get(server.url + path) as answer:
                assert answer.status == 401, path
    # a browser without a session lands on the login form
    await page.navigate(server.url + "/dashboard/")
    assert await page.evaluate("location.pathname") == "/dashboard/login"
    # wrong credentials: the form again, a message, no cookie
    await log_in(page, server.url, READ_USER, "not-the-token")
    assert await page.evaluate("document.body.id") == "login-page"
    message = await page.evaluate("document.getElementById('login-message').textContent")
    assert "wrong username or token" in message
    assert [c for c in await page.cookies() if c.name == "streamml_session"] == []
    # right credentials: an HttpOnly, SameSite=Strict session the page's script cannot read
    await log_in(page, server.url, READ_USER, READ_TOKEN)
    assert await page.evaluate("location.pathname") == "/dashboard/"
    await page.wait_for(JS_READY)
    [cookie] = [c for c in await page.cookies() if c.name == "streamml_session"]
    assert cookie.http_only and cookie.same_site == "Strict"
    assert READ_TOKEN not in cookie.value
    assert "streamml_session" not in await page.evaluate("document.cookie")
    assert READ_TOKEN not in await page.evaluate("document.documentElement.outerHTML")
    # the session reads the data API, and may not write
    reads = await page.evaluate("fetch('/api/dashboard/models').then(r => r.status)")
    assert reads == 200
    write = (
        "fetch('/api/learn/', {method: 'POST', headers: {'Content-Type': 'application/json'},"
        " body: JSON.stringify({features: {nx: 1}, ground_truth: 1})}).then(r => r.status)"
    )
    assert await page.evaluate(write) == 403
    assert await learn_calls(server, "linear") == 0
