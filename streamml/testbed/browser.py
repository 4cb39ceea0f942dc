"""Debian's headless Chromium, driven over the DevTools protocol, that reaches only 127.0.0.1.

::

    async with launch_browser() as browser:         # own temp profile, removed on exit
        page = await browser.new_page()
        await page.navigate("http://127.0.0.1:8080/dashboard/")
        await page.fill("#username", "scientist")
        await page.submit("form")
        await page.wait_for("document.querySelectorAll('.model').length > 0")
        cookies = await page.cookies()               # Network.getCookies: HttpOnly ones too
        await page.screenshot(tmp_path / "page.png")
    browser.net_log                                  # streamml.testbed.netlog reads it

No driver (chromedriver is installed beside it, unused): the browser is started with
``--remote-debugging-port=0`` and the harness reads the port it chose from ``DevToolsActivePort``
in the profile, then speaks CDP over one aiohttp websocket (flattened target sessions).

**No outbound connection.** Every background service that phones home is switched off by flag
(:data:`QUIET_FLAGS`); what is left (the component updater still asks once) meets two walls: every
URL but loopback goes to a proxy on 127.0.0.1 that refuses connections (a port this process holds
bound and never listens on), and the host resolver maps every name but 127.0.0.1 to "not found".
``--log-net-log`` records every socket; ``tests/integration/test_browser_harness.py`` proves from
it that the only peers are on 127.0.0.1.

**Lifetime.** The browser leads a process group of its own (it dies with the caller's thread, as
every child does, :mod:`streamml.procs`). Closing asks it to quit (``Browser.close``), waits for
the leader to exit without reaping it (its PID then cannot be reused), signals what is left of
the group, reaps, and removes the profile.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from pydantic import BaseModel, ConfigDict, Field

from streamml import procs
from streamml.errors import InfrastructureError

logger = logging.getLogger(__name__)

#: Debian's binary (``/usr/bin/chromium`` is a shell wrapper that adds remote extensions)
CHROMIUM_PATHS = ("/usr/lib/chromium/chromium", "/usr/bin/chromium")
START_TIMEOUT = 60.0
COMMAND_TIMEOUT = 60.0

#: background networking and everything else that would talk to the outside, off
QUIET_FLAGS: tuple[str, ...] = (
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-breakpad",
    "--disable-crash-reporter",
    "--metrics-recording-only",
    "--no-pings",
    "--disable-extensions",
    "--mute-audio",
    "--password-store=basic",
    "--use-mock-keychain",
    "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",
    "--disable-features=Translate,OptimizationHints,MediaRouter,DialMediaRouteProvider,"
    "NetworkTimeServiceQuerying,AutofillServerCommunication,"
    "CertificateTransparencyComponentUpdater,InterestFeedContentSuggestions,LensOverlay",
)


class BrowserError(InfrastructureError):
    """The browser could not be started, or a DevTools command failed."""


def chromium_binary() -> str:
    """The installed Debian Chromium (``scripts/bootstrap.sh`` installs it)."""
    for path in CHROMIUM_PATHS:
        if os.access(path, os.X_OK):
            return path
    raise BrowserError(
        "Chromium is not installed: `apt-get install chromium chromium-driver` "
        "(scripts/bootstrap.sh does it)"
    )


def chromium_argv(
    binary: str,
    profile: Path,
    *,
    dead_proxy_port: int,
    net_log: Path | None = None,
    window: tuple[int, int] = (1280, 900),
) -> list[str]:
    """The command line of a headless Chromium that can reach only 127.0.0.1."""
    argv = [
        binary,
        "--headless=new",
        f"--user-data-dir={profile}",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={window[0]},{window[1]}",
        *QUIET_FLAGS,
        f"--proxy-server=http://127.0.0.1:{dead_proxy_port}",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    ]
    if os.geteuid() == 0:
        argv.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox
    if net_log is not None:
        argv += [f"--log-net-log={net_log}", "--net-log-capture-mode=Everything"]
    argv.append("about:blank")
    return argv


class Cookie(BaseModel):
    """One cookie as ``Network.getCookies`` reports it."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    name: str
    value: str
    domain: str
    path: str
    http_only: bool = Field(alias="httpOnly")
    secure: bool
    same_site: str | None = Field(default=None, alias="sameSite")
    session: bool = False


class _Cdp:
    """One DevTools websocket: commands by id, events to whoever waits for them."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._next_id = 0
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._waiters: list[tuple[str, str | None, asyncio.Future[dict[str, Any]]]] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self._ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(message.data)
            if "id" in data:
                future = self._pending.pop(int(data["id"]), None)
                if future is not None and not future.done():
                    future.set_result(data)
                continue
            for waiter in list(self._waiters):
                method, session, future = waiter
                if data.get("method") == method and session in (None, data.get("sessionId")):
                    self._waiters.remove(waiter)
                    if not future.done():
                        future.set_result(data.get("params", {}))
        for future in self._pending.values():
            if not future.done():
                future.set_exception(BrowserError("the DevTools connection closed"))

    def expect(self, method: str, session: str | None) -> asyncio.Future[dict[str, Any]]:
        """A future for the next event ``method`` (register it before the command causing it)."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters.append((method, session, future))
        return future

    async def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[self._next_id] = future
        await self._ws.send_str(json.dumps(message))
        reply = await asyncio.wait_for(future, COMMAND_TIMEOUT)
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error'].get('message', reply['error'])}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    async def close(self) -> None:
        await self._ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


class Page:
    """One tab: navigate, evaluate, wait, fill forms, read cookies, take screenshots."""

    def __init__(self, cdp: _Cdp, session: str, target: str) -> None:
        self._cdp = cdp
        self.session = session
        self.target = target

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Any DevTools command on this page (``Performance.getMetrics``, ...)."""
        return await self._cdp.send(method, params, self.session)

    async def navigate(self, url: str, *, limit: float = COMMAND_TIMEOUT) -> None:
        """Load ``url`` and wait for its ``load`` event; a network error raises."""
        loaded = self._cdp.expect("Page.loadEventFired", self.session)
        reply = await self.send("Page.navigate", {"url": url})
        if reply.get("errorText"):
            loaded.cancel()
            raise BrowserError(f"navigating to {url}: {reply['errorText']}")
        await asyncio.wait_for(loaded, limit)

    async def evaluate(self, expression: str) -> Any:
        """The JSON value of ``expression`` (promises awaited); a JS exception raises."""
        reply = await self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in reply:
            details = reply["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"JavaScript error in {expression[:80]!r}: {text}")
        return reply.get("result", {}).get("value")

    async def wait_for(
        self, expression: str, *, limit: float = COMMAND_TIMEOUT, interval: float = 0.1
    ) -> Any:
        """The first truthy value of ``expression``, polled every ``interval`` seconds for at
        most ``limit`` seconds."""
        deadline = time.monotonic() + limit
        value: Any = None
        while time.monotonic() < deadline:
            value = await self.evaluate(expression)
            if value:
                return value
            await asyncio.sleep(interval)
        raise BrowserError(f"timed out waiting for {expression!r} (last value {value!r})")

    async def fill(self, selector: str, value: str) -> None:
        """Set a form field as typing would (``input`` and ``change`` events fire)."""
        await self._on_element(
            selector,
            "el.value = arg; el.dispatchEvent(new Event('input', {bubbles: true}));"
            " el.dispatchEvent(new Event('change', {bubbles: true}));",
            value,
        )

    async def submit(self, selector: str = "form", *, navigates: bool = False) -> None:
        """Submit the form ``selector`` (or the element's form) as its submit button would;
        ``navigates``: also wait for the page it loads."""
        loaded = self._cdp.expect("Page.loadEventFired", self.session) if navigates else None
        await self._on_element(selector, "(el.form || el).requestSubmit();", None)
        if loaded is not None:
            await asyncio.wait_for(loaded, COMMAND_TIMEOUT)

    async def click(self, selector: str) -> None:
        await self._on_element(selector, "el.click();", None)

    async def _on_element(self, selector: str, body: str, arg: str | None) -> None:
        script = (
            f"(() => {{ const el = document.querySelector({json.dumps(selector)});"
            f" if (!el) throw new Error('no element ' + {json.dumps(selector)});"
            f" const arg = {json.dumps(arg)}; {body} return true; }})()"
        )
        await self.evaluate(script)

    async def cookies(self, urls: list[str] | None = None) -> list[Cookie]:
        """The page's cookies (``urls``: those sent to these URLs), HttpOnly ones included."""
        reply = await self.send("Network.getCookies", {"urls": urls} if urls else {})
        return [Cookie.model_validate(c) for c in reply.get("cookies", [])]

    async def screenshot(self, path: Path, *, full_page: bool = True) -> Path:
        """A PNG of the page (the whole document when ``full_page``) written to ``path``."""
        params: dict[str, Any] = {"format": "png", "captureBeyondViewport": full_page}
        reply = await self.send("Page.captureScreenshot", params)
        await asyncio.to_thread(_write_file, path, base64.b64decode(reply["data"]))
        return path

    async def js_heap_bytes(self) -> int:
        """Bytes the page's JavaScript heap uses now (``Runtime.getHeapUsage``)."""
        return int((await self.send("Runtime.getHeapUsage"))["usedSize"])


@dataclass
class Browser:
    """A running headless Chromium (see the module docstring)."""

    process: subprocess.Popen[bytes]
    profile: Path
    net_log: Path | None
    log_path: Path
    _cdp: _Cdp
    _http: aiohttp.ClientSession
    window: tuple[int, int] = (1280, 900)
    closed: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid

    async def new_page(self) -> Page:
        """A fresh tab, attached, with page, runtime and network events on, its viewport the
        window's size."""
        target = (await self._cdp.send("Target.createTarget", {"url": "about:blank"}))["targetId"]
        attached = await self._cdp.send(
            "Target.attachToTarget", {"targetId": target, "flatten": True}
        )
        page = Page(self._cdp, attached["sessionId"], target)
        for domain in ("Page", "Runtime", "Network"):
            await page.send(f"{domain}.enable")
        width, height = self.window
        metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
        await page.send("Emulation.setDeviceMetricsOverride", metrics)
        return page

    def group_members(self) -> list[int]:
        """PIDs still in the browser's process group (renderers, zygotes, the leader)."""
        return group_members(self.pid)

    def memory_bytes(self) -> int:
        """Proportional set size of the whole browser (every process of its group)."""
        return sum(_pss_bytes(pid) for pid in self.group_members())

    async def close(self, grace: float = 10.0) -> None:
        """Quit, stop what is left of the group, reap, remove the profile (once)."""
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(BrowserError, TimeoutError, ConnectionError, aiohttp.ClientError):
            await asyncio.wait_for(self._cdp.send("Browser.close"), grace)
        await self._cdp.close()
        await self._http.close()
        await _until(lambda: not procs.running(self.pid), grace)
        await stop_group(self.process, grace)
        shutil.rmtree(self.profile, ignore_errors=True)


async def stop_group(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL, what is left of ``process``'s group; then reap ``process``.

    Signalled only while a member remains: a live member holds the group id, so it cannot
    have been given to another process meanwhile.
    """
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not group_members(process.pid):
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        await _until(lambda: not group_members(process.pid), grace)
    process.wait(timeout=10)


async def _until(condition: Callable[[], bool], seconds: float) -> bool:
    """Whether ``condition()`` came true within ``seconds`` (polled, the loop kept free)."""
    deadline = time.monotonic() + seconds
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.05)


def _write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _devtools_port_file(profile: Path) -> list[str]:
    """``DevToolsActivePort``'s lines (port, browser target path) once Chromium wrote it."""
    port_file = profile / "DevToolsActivePort"
    return port_file.read_text().split() if port_file.exists() else []


def _tail(path: Path, size: int = 2000) -> str:
    return path.read_text(errors="replace")[-size:]


def group_members(group: int) -> list[int]:
    """PIDs (not zombies) whose process group is ``group``."""
    return sorted(p for p, pgrp in _process_groups().items() if pgrp == group)


def _process_groups() -> dict[int, int]:
    groups: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            raw = Path(f"/proc/{entry}/stat").read_text()
            fields = raw[raw.rindex(")") + 2 :].split()
            if fields[0] not in ("Z", "X"):
                groups[int(entry)] = int(fields[2])
    return groups


def _pss_bytes(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    return 0


def _hold_dead_port() -> socket.socket:
    """A port on 127.0.0.1 bound and never listened on: connecting to it is refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


async def _devtools_url(profile: Path, process: subprocess.Popen[bytes], log: Path) -> str:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BrowserError(f"chromium exited with {process.returncode}:\n{_tail(log)}")
        lines = _devtools_port_file(profile)
        if len(lines) >= 2:
            return f"ws://127.0.0.1:{lines[0]}{lines[1]}"
        await asyncio.sleep(0.05)
    raise BrowserError(f"chromium did not open its DevTools port in {START_TIMEOUT:.0f}s")


@contextlib.asynccontextmanager
async def launch_browser(
    *, net_log: Path | None = None, window: tuple[int, int] = (1280, 900)
) -> AsyncIterator[Browser]:
    """A started headless Chromium; stopped and its profile removed on exit."""
    profile = Path(tempfile.mkdtemp(prefix="streamml-chromium-"))
    log_path = profile.parent / f"{profile.name}.log"
    dead_port = _hold_dead_port()
    argv = chromium_argv(
        chromium_binary(),
        profile,
        dead_proxy_port=dead_port.getsockname()[1],
        net_log=net_log,
        window=window,
    )
    browser: Browser | None = None
    with log_path.open("ab") as log:
        process = procs.popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=procs.child_environment(),
            process_group=0,
        )
    try:
        url = await _devtools_url(profile, process, log_path)
        http = aiohttp.ClientSession()
        ws = await http.ws_connect(url, max_msg_size=0)
        browser = Browser(process, profile, net_log, log_path, _Cdp(ws), http, window)
        yield browser
    finally:
        if browser is not None:
            await browser.close()
        else:
            await stop_group(process)
            shutil.rmtree(profile, ignore_errors=True)
        dead_port.close()
        log_path.unlink(missing_ok=True)
