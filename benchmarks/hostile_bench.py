"""/healthz under hostile-but-legal load, before and after issue 8 item 2, side by side.

    .venv/bin/python benchmarks/hostile_bench.py                 # before = 1065fd7, after = HEAD
    .venv/bin/python benchmarks/hostile_bench.py --quick         # smaller loads, shorter windows

Each case is one of the worst requests the cost model (streamml/vocabulary/modelcost.py) lets an
authenticated client send, at its default limits. For each case and each code version a fresh
server starts (under ``prlimit --as`` so that a runaway server on the old code fails with a
MemoryError instead of taking the shared machine down), the heavy request runs in a thread, and a
probe sends ``GET /healthz`` every 50 ms over one keep-alive connection until the request ends or
the window closes. A probe request still waiting when the window closes counts with the time it
has waited. Reported: the probe's p50/p99/max latency and answers, the request's status, and the
server's peak RSS (VmHWM). Every process started here is stopped by its PID.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import random
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _codeversion import checkout, describe
from _loadgen import http_json
from _ourserver import OurServer
from _report import write_result

from streamml.procs import free_port

RESULTS = Path(__file__).resolve().parent / "results" / "hostile.json"
PROBE_INTERVAL = 0.05
ADDRESS_SPACE = 6 * 2**30  # prlimit --as: far above what the bounded server needs


@dataclass
class Case:
    name: str
    description: str
    pipeline: list[dict[str, Any]]
    #: (path, body) requests sent one after the other, in one thread
    requests: Callable[[int], list[tuple[str, dict[str, Any]]]]
    #: options of the code after (the code before has none of these)
    server_args: list[str] = field(default_factory=list)


def _samples(n: int, width: int, seed: int = 1) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        {"features": {f"f{i}": rng.random() for i in range(width)}, "ground_truth": rng.random()}
        for _ in range(n)
    ]


def cases(scale: int) -> list[Case]:
    """The worst legal requests, at the cost model's default limits; ``scale`` divides sizes.

    Longer than ~60 lines: a data table (one ``Case`` literal per row), not logic."""
    wide = {f"f{i}": float(i % 7) for i in range(1000)}
    ten = {f"f{i}": float(i) for i in range(10)}
    return [
        Case(
            "idle",
            "nothing but the probe: the machine's own noise floor",
            [{"class": "linear_model.LinearRegression"}],
            lambda _: [],
        ),
        Case(
            "tree-batch",
            f"{10_000 // scale} samples x 20 features into HoeffdingTreeRegressor(grace_period=10)",
            [{"class": "tree.HoeffdingTreeRegressor", "params": {"grace_period": 10}}],
            lambda _: [
                ("/api/learn/batch/", {"model": "m", "samples": _samples(10_000 // scale, 20)})
            ],
        ),
        Case(
            "forest-batch",
            f"{200 // scale} samples x 20 features into ARFRegressor(n_models=50, lambda 10)",
            [
                {
                    "class": "forest.ARFRegressor",
                    "params": {"n_models": 50, "lambda_value": 10, "grace_period": 10, "seed": 1},
                }
            ],
            lambda _: [
                ("/api/learn/batch/", {"model": "m", "samples": _samples(200 // scale, 20)})
            ],
        ),
        Case(
            "poly-batch",
            f"{10_000 // scale} samples x 13 features into PolynomialExtender(degree=5) | "
            "LinearRegression (8567 derived features: a cheap model at its limit)",
            [
                {"class": "feature_extraction.PolynomialExtender", "params": {"degree": 5}},
                {"class": "linear_model.LinearRegression"},
            ],
            lambda _: [
                ("/api/learn/batch/", {"model": "m", "samples": _samples(10_000 // scale, 13)})
            ],
        ),
        Case(
            "kernel-learn",
            "single learns of 10 features (the most it allows) into "
            "RBFSampler(n_components=1000) | LinearRegression: 10,000 derived features",
            [
                {"class": "feature_extraction.RBFSampler", "params": {"n_components": 1000}},
                {"class": "linear_model.LinearRegression"},
            ],
            lambda n: [("/api/learn/", {"model": "m", "features": ten, "ground_truth": 1.0})] * n,
        ),
        Case(
            "kernel-wide",
            "a 1000-feature learn into the same kernel model (1,000,000 derived features)",
            [
                {"class": "feature_extraction.RBFSampler", "params": {"n_components": 1000}},
                {"class": "linear_model.LinearRegression"},
            ],
            lambda _: [("/api/learn/", {"model": "m", "features": wide, "ground_truth": 1.0})],
        ),
        Case(
            "poly-wide",
            "a 1000-feature learn into PolynomialExtender(degree=5) | LinearRegression",
            [
                {"class": "feature_extraction.PolynomialExtender", "params": {"degree": 5}},
                {"class": "linear_model.LinearRegression"},
            ],
            lambda _: [("/api/learn/", {"model": "m", "features": wide, "ground_truth": 1.0})],
        ),
        Case(
            "pending-flood",
            f"{3000 // scale} predictions of 1000 features never labelled (after: --memory-bytes "
            "1 GiB, so pending predictions get 128 MiB)",
            [{"class": "linear_model.LinearRegression"}],
            lambda _: [("/api/predict/", {"model": "m", "features": wide})] * (3000 // scale),
            ["--memory-bytes", str(2**30)],
        ),
    ]


class Probe(threading.Thread):
    """GET /healthz every PROBE_INTERVAL on one connection; latencies in seconds."""

    def __init__(self, port: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.port, self.stop = port, stop
        self.latencies: list[float] = []
        self.failures = 0
        self.waiting_since: float | None = None

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=3600)
        while not self.stop.is_set():
            self.waiting_since = time.perf_counter()
            try:
                conn.request("GET", "/healthz")
                reply = conn.getresponse()
                reply.read()
                ok = reply.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=3600)
            elapsed = time.perf_counter() - self.waiting_since
            self.waiting_since = None
            if ok:
                self.latencies.append(elapsed)
            else:
                self.failures += 1
            time.sleep(PROBE_INTERVAL)
        conn.close()

    def summary(self) -> dict[str, Any]:
        values = list(self.latencies)
        if self.waiting_since is not None:  # still waiting when the window closed
            values.append(time.perf_counter() - self.waiting_since)
        values.sort()
        if not values:
            return {"answers": 0}

        def pct(q: float) -> float:
            return values[min(len(values) - 1, int(q * len(values)))] * 1000

        return {
            "answers": len(self.latencies),
            "failures": self.failures,
            "p50_ms": round(pct(0.50), 2),
            "p99_ms": round(pct(0.99), 2),
            "max_ms": round(values[-1] * 1000, 2),
        }


def peak_rss(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def run_case(
    case: Case, side: str, code: Path, work: Path, window: float, n: int
) -> dict[str, Any]:
    """One case on one side: start the server, load it, probe it, stop it (a little over ~60
    lines: one measurement sequence whose order is the protocol)."""
    server = OurServer(
        work / f"{side}-{case.name}",
        free_port(),
        sync="normal",
        pythonpath=code,
        extra_args=["--max-body-bytes", str(64 * 2**20)]
        + (case.server_args if side == "after" else []),
        wrapper=["prlimit", f"--as={ADDRESS_SPACE}", "--"],
    )
    server.start()
    try:
        headers = server.bearer()
        status, reply = http_json(
            "POST", f"{server.url}/api/model/regression/m/", body={"pipeline": case.pipeline},
            headers=headers,
        )  # fmt: skip
        created = status == 201
        statuses: list[int] = []
        done = threading.Event()

        def heavy() -> None:
            try:
                for path, body in case.requests(n) if created else []:
                    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=3600)
                    data = json.dumps(body).encode()
                    conn.request("POST", path, body=data, headers={
                        "Content-Type": "application/json", **headers})  # fmt: skip
                    reply = conn.getresponse()
                    reply.read()
                    statuses.append(reply.status)
                    conn.close()
            except (OSError, http.client.HTTPException):
                statuses.append(-1)
            finally:
                done.set()

        stop = threading.Event()
        probe = Probe(server.port, stop)
        probe.start()
        time.sleep(0.5)  # a few idle answers first
        started = time.perf_counter()
        threading.Thread(target=heavy, daemon=True).start()
        finished = done.wait(window) if case.name != "idle" else not time.sleep(window)
        duration = time.perf_counter() - started
        time.sleep(0.3)
        stop.set()
        probe.join(timeout=1.0)
        result = {
            "case": case.name,
            "side": side,
            "created": status if not created else 201,
            "create_reply": None if created else reply,
            "statuses": sorted(set(statuses)),
            "requests_done": len(statuses),
            "finished": finished,
            "seconds": round(duration, 1),
            "peak_rss_mb": round((peak_rss(server.process.pid) or 0) / 2**20, 1)
            if server.process
            else None,
            **probe.summary(),
        }
        print(json.dumps(result), flush=True)
        return result
    finally:
        server.stop(grace=3.0)  # an old server stuck in a batch never answers SIGTERM


def render(rows: list[dict[str, Any]]) -> str:
    head = (
        "| case | code | request | healthz answers | p50 ms | p99 ms | max ms | peak RSS MB |\n"
        "|---|---|---|---:|---:|---:|---:|---:|"
    )
    lines = [head]
    for r in rows:
        if r["created"] != 201:
            request = f"spec refused ({r['created']})"
        else:
            codes = ",".join(str(s) for s in r["statuses"]) or "-"
            state = "done" if r["finished"] else f"still running after {r['seconds']} s"
            request = f"{r['requests_done']} x {codes}, {state}"
        lines.append(
            f"| {r['case']} | {r['side']} | {request} | {r.get('answers', 0)} | "
            f"{r.get('p50_ms', '-')} | {r.get('p99_ms', '-')} | {r.get('max_ms', '-')} | "
            f"{r['peak_rss_mb']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="1065fd7", help="git ref of the code before")
    parser.add_argument("--after", default="HEAD", help="git ref of the code after")
    parser.add_argument("--window", type=float, default=30.0, help="seconds per case at most")
    parser.add_argument("--single-learns", type=int, default=5, help="for the kernel case")
    parser.add_argument("--cases", nargs="*", default=None, help="run only these cases")
    parser.add_argument("--quick", action="store_true", help="smaller loads, 10 s windows")
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    scale = 10 if args.quick else 1
    window = 10.0 if args.quick else args.window
    work = Path(tempfile.mkdtemp(prefix="hostile-bench-"))
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    versions = {
        "before": (describe(args.before), checkout(args.before, work / "before")),
        "after": (describe(args.after), checkout(args.after, work / "after")),
    }
    rows = []
    try:
        for case in cases(scale):
            if args.cases and case.name not in args.cases:
                continue
            for side, (_, code) in versions.items():  # before, then after, for each case
                rows.append(run_case(case, side, code, work, window, args.single_learns))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    table = render(rows)
    print(table)
    result = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join([".venv/bin/python", "benchmarks/hostile_bench.py", *sys.argv[1:]]),
        "loadavg_before": load_before,
        "loadavg_after": Path("/proc/loadavg").read_text().split()[:3],
        "versions": {side: ref for side, (ref, _) in versions.items()},
        "window_s": window,
        "probe_interval_s": PROBE_INTERVAL,
        "rows": rows,
        "markdown": table,
        "after_targets": {
            "p99_under_100ms": all(r.get("p99_ms", 0) < 100 for r in rows if r["side"] == "after"),
            "max_under_1s": all(r.get("max_ms", 0) < 1000 for r in rows if r["side"] == "after"),
        },
    }
    write_result(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
