"""The dashboard's cost (issue 13): the learn rate with the page open vs closed, and the page's
load time and memory with 20 models x 1000 curve points.

1. **Learn rate, paired.** One ``streamml serve`` with ``--models`` models, one headless Chromium
   (:mod:`streamml.testbed.browser`) in both states; per round, ``hey`` sends ``--requests``
   learns over ``--concurrency`` connections with the page **closed** (the tab on about:blank)
   and with it **open** (logged in on ``/dashboard/``: its event streams and 2 s refreshes
   running), in alternating order (ABBA). The ratio open/closed is taken per round; the table
   shows the median and the range. The server's own CPU seconds per 1000 learns
   (``/proc/PID/stat``) separate the server's extra work from the browser's (which shares the
   machine's cores). Anchor: the learn rate drops by at most 5% (ratio >= 0.95).
2. **A full page.** A second server with ``--page-models`` models is taught until every model's
   history holds ``--points`` points (``--history-interval-seconds 0.05``); then the page is
   loaded ``--loads`` times in a fresh tab: the time to the load event and to every curve drawn
   in full (``circle[data-point]`` count), the JS heap and the whole browser's memory (PSS of its
   process group) against an empty tab.

    .venv/bin/python benchmarks/dashboard_bench.py --rounds 6
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from _loadgen import http_json, run_hey
from _ourserver import OurServer
from _report import write_result

from streamml.procs import free_port
from streamml.testbed.browser import Browser, Page, launch_browser

RESULT = Path(__file__).parent / "results" / "dashboard_bench.json"
TICKS = os.sysconf("SC_CLK_TCK")
BODY = {"features": {"nx": 6, "ny": 8, "nz": 8}, "ground_truth": 0.42}
DRAWN = "document.querySelectorAll('svg[data-curve] circle[data-point]').length"


def cpu_seconds(pid: int) -> float:
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def start_server(root: Path, models: int, *extra: str) -> OurServer:
    server = OurServer(root, free_port(), sync="normal", extra_args=list(extra))
    server.start()
    for i in range(models):
        server.create_model(f"m{i:02d}")
    return server


async def open_session(page: Page, server: OurServer) -> None:
    """Log in as the form does (POST /dashboard/login) and hand the browser the cookie."""
    form = {"username": server.user, "token": server.token}
    async with (
        aiohttp.ClientSession() as http,
        http.post(server.url + "/dashboard/login", data=form, allow_redirects=False) as reply,
    ):
        cookie = reply.cookies.get("streamml_session")
        if reply.status != 303 or cookie is None:
            raise RuntimeError(f"dashboard login: {reply.status} {await reply.text()}")
    await page.send(
        "Network.setCookie",
        {"name": "streamml_session", "value": cookie.value, "url": server.url + "/",
         "httpOnly": True, "sameSite": "Strict"},
    )  # fmt: skip


def group_cpu_seconds(browser: Browser) -> float:
    total = 0.0
    for pid in browser.group_members():
        try:
            total += cpu_seconds(pid)
        except (OSError, ValueError):
            continue  # exited meanwhile
    return total


async def learn_round(
    server: OurServer, browser: Browser, args: argparse.Namespace
) -> dict[str, float]:
    assert server.process is not None
    before = cpu_seconds(server.process.pid)
    browser_before = group_cpu_seconds(browser)
    hey = await asyncio.to_thread(
        run_hey, f"{server.url}/api/learn/", BODY, requests=args.requests,
        concurrency=args.concurrency, headers=server.bearer(),
    )  # fmt: skip
    cpu = cpu_seconds(server.process.pid) - before
    browser_cpu = group_cpu_seconds(browser) - browser_before
    if hey.ok != hey.requests:
        raise RuntimeError(f"hey: {hey.ok}/{hey.requests} learns answered 2xx: {hey.statuses}")
    return {
        "learns_per_s": hey.req_per_s,
        "server_cpu_s_per_1000": 1000 * cpu / hey.ok,
        "browser_cpu_s_per_1000": 1000 * browser_cpu / hey.ok,
    }


async def paired_learn_rate(
    browser: Browser, root: Path, args: argparse.Namespace
) -> dict[str, Any]:
    server = start_server(root / "learn", args.models)
    try:
        page = await browser.new_page()
        await open_session(page, server)
        rounds: list[dict[str, Any]] = []
        for r in range(args.rounds):
            order = ("closed", "open") if r % 2 == 0 else ("open", "closed")
            measured: dict[str, Any] = {"order": list(order)}
            for state in order:
                if state == "open":
                    await page.navigate(server.url + "/dashboard/")
                    await page.wait_for("document.body.dataset.ready === 'true'")
                    await page.wait_for(
                        "document.getElementById('status').dataset.state === 'live'"
                    )
                else:
                    await page.navigate("about:blank")
                measured[state] = await learn_round(server, browser, args)
            measured["ratio"] = (
                measured["open"]["learns_per_s"] / measured["closed"]["learns_per_s"]
            )
            rounds.append(measured)
            print(f"  round {r + 1}: closed {measured['closed']['learns_per_s']:.0f}/s, "
                  f"open {measured['open']['learns_per_s']:.0f}/s, ratio {measured['ratio']:.3f}",
                  flush=True)  # fmt: skip
        await page.navigate("about:blank")
    finally:
        server.stop()
    return {"rounds": rounds}


async def wait_history(
    server: OurServer, models: int, points: int, headers: dict[str, str]
) -> None:
    """Teach the server until every model's history holds ``points`` points."""
    deadline = time.monotonic() + 1200
    while time.monotonic() < deadline:
        await asyncio.to_thread(
            run_hey, f"{server.url}/api/learn/", BODY, requests=400, concurrency=2, headers=headers
        )
        _, reply = await asyncio.to_thread(
            http_json, "GET", f"{server.url}/api/dashboard/models", None, headers
        )
        counts = [int(m["points"]) for m in reply["models"]]
        if len(counts) == models and min(counts) >= points:
            return
    raise RuntimeError(f"history did not reach {points} points per model")


async def full_page(browser: Browser, root: Path, args: argparse.Namespace) -> dict[str, Any]:
    server = start_server(
        root / "page", args.page_models, "--history-interval-seconds", "0.05",
        "--history-points", str(args.points),
    )  # fmt: skip
    try:
        await wait_history(server, args.page_models, args.points, server.bearer())
        blank = await browser.new_page()
        await blank.navigate("about:blank")
        empty_pss = browser.memory_bytes()
        expected = args.page_models * args.points
        loads: list[dict[str, float]] = []
        for _ in range(args.loads):
            page = await browser.new_page()
            await open_session(page, server)
            started = time.perf_counter()
            await page.navigate(server.url + "/dashboard/")
            loaded = time.perf_counter() - started
            await page.wait_for(f"{DRAWN} >= {expected}", interval=0.02)
            drawn = time.perf_counter() - started
            loads.append({
                "load_event_s": loaded, "curves_drawn_s": drawn,
                "js_heap_mb": await page.js_heap_bytes() / 2**20,
                "browser_pss_mb": browser.memory_bytes() / 2**20,
                "empty_tab_pss_mb": empty_pss / 2**20,
            })  # fmt: skip
            await page.send("Page.close")
            print(f"  load: {loaded:.2f}s to load, {drawn:.2f}s to {expected} points", flush=True)
    finally:
        server.stop()
    return {"models": args.page_models, "points_per_model": args.points, "loads": loads}


def median(rows: list[dict[str, Any]], *path: str) -> float:
    values = []
    for row in rows:
        value: Any = row
        for key in path:
            value = value[key]
        values.append(float(value))
    return statistics.median(values)


def report(result: dict[str, Any]) -> str:
    rounds = result["learn"]["rounds"]
    ratios = [r["ratio"] for r in rounds]
    page = result["page"]["loads"]
    n = result["page"]["models"] * result["page"]["points_per_model"]
    rows = [
        ("learns/s, page closed (median round)", f"{median(rounds, 'closed', 'learns_per_s'):.0f}"),
        ("learns/s, page open (median round)", f"{median(rounds, 'open', 'learns_per_s'):.0f}"),
        ("ratio open/closed (median; range)",
         f"{statistics.median(ratios):.3f} ({min(ratios):.3f}..{max(ratios):.3f})"),
        ("server CPU s / 1000 learns, closed",
         f"{median(rounds, 'closed', 'server_cpu_s_per_1000'):.3f}"),
        ("server CPU s / 1000 learns, open",
         f"{median(rounds, 'open', 'server_cpu_s_per_1000'):.3f}"),
        ("browser CPU s / 1000 learns, closed",
         f"{median(rounds, 'closed', 'browser_cpu_s_per_1000'):.3f}"),
        ("browser CPU s / 1000 learns, open",
         f"{median(rounds, 'open', 'browser_cpu_s_per_1000'):.3f}"),
        (f"page load event ({n} points)", f"{median(page, 'load_event_s'):.2f} s"),
        (f"page: all {n} points drawn", f"{median(page, 'curves_drawn_s'):.2f} s"),
        ("page JS heap", f"{median(page, 'js_heap_mb'):.1f} MB"),
        ("browser PSS, page open / empty tab",
         f"{median(page, 'browser_pss_mb'):.0f} / {median(page, 'empty_tab_pss_mb'):.0f} MB"),
    ]  # fmt: skip
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


async def main(args: argparse.Namespace) -> int:
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    with tempfile.TemporaryDirectory(prefix="dashboard-bench-") as tmp:
        async with launch_browser() as browser:
            print(f"learn rate, page closed vs open: {args.rounds} rounds", flush=True)
            learn = await paired_learn_rate(browser, Path(tmp), args)
            print(f"page with {args.page_models} models x {args.points} points", flush=True)
            page = await full_page(browser, Path(tmp), args)
    result = {
        "settings": vars(args),
        "loadavg_before": load_before,
        "loadavg_after": Path("/proc/loadavg").read_text().split()[:3],
        "learn": learn,
        "page": page,
    }
    ratio = statistics.median(r["ratio"] for r in learn["rounds"])
    result["target"] = {"learn_rate_ratio_at_least": 0.95, "met": ratio >= 0.95}
    print(report(result))
    write_result(Path(args.out), result)
    return 0


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--requests", type=int, default=3000, help="learns per hey run")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--models", type=int, default=6, help="models on the learn-rate server")
    parser.add_argument("--page-models", type=int, default=20)
    parser.add_argument("--points", type=int, default=1000, help="history points per model")
    parser.add_argument("--loads", type=int, default=5, help="page loads measured")
    parser.add_argument("--out", default=str(RESULT))
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse(sys.argv[1:]))))
