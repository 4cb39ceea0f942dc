"""Server CPU time per request, before vs after, in alternating rounds (robust to machine load).

    .venv/bin/python benchmarks/server_cpu_pair.py --before 1065fd7 --after HEAD --rounds 7

Throughput on a shared 2-core machine swings 0.5x-2x between back-to-back runs; the CPU time
the server process itself spends per request (utime + stime from /proc/PID/stat, around each hey
run) moves much less, so it shows a change in the request path's cost that req/s cannot.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _codeversion import checkout, describe
from _loadgen import run_hey
from _ourserver import OurServer
from server_bench import MODEL, make_samples

from streamml.procs import free_port

RESULTS = Path(__file__).resolve().parent / "results" / "server_cpu_pair.json"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="1065fd7")
    parser.add_argument("--after", default="HEAD")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=4000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="server-cpu-"))
    code = {side: checkout(ref, work / f"{side}-code") for side, ref in
            (("before", args.before), ("after", args.after))}  # fmt: skip
    servers = {
        side: OurServer(work / side, free_port(), sync="normal", pythonpath=path)
        for side, path in code.items()
    }
    x, y = make_samples(1)[0]
    bodies = {
        "learn": ("/api/learn/", {"model": MODEL, "features": x, "ground_truth": y}),
        "predict": ("/api/predict/", {"model": MODEL, "features": x}),
    }
    per: dict[str, dict[str, list[float]]] = {k: {s: [] for s in servers} for k in bodies}
    try:
        for server in servers.values():
            server.start()
            server.create_model(MODEL)
        for _ in range(args.rounds):
            for kind, (path, body) in bodies.items():
                for side, server in servers.items():
                    assert server.process is not None
                    before = cpu_seconds(server.process.pid)
                    run_hey(server.url + path, body, requests=args.requests, concurrency=8,
                            headers=server.bearer())  # fmt: skip
                    used = cpu_seconds(server.process.pid) - before
                    per[kind][side].append(used / args.requests * 1e6)
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    lines = [
        "| request | before µs CPU | after µs CPU | median paired before/after |",
        "|---|---:|---:|---:|",
    ]
    summary = {}
    for kind, sides in per.items():
        ratios = [a / b for a, b in zip(sides["before"], sides["after"], strict=True) if b > 0]
        summary[kind] = {"before_us": sides["before"], "after_us": sides["after"],
                         "ratio": statistics.median(ratios)}  # fmt: skip
        lines.append(
            f"| {kind} (hey -c 8 -n {args.requests}) | {statistics.median(sides['before']):.0f} | "
            f"{statistics.median(sides['after']):.0f} | {statistics.median(ratios):.3f} |"
        )
    table = "\n".join(lines)
    print(table)
    RESULTS.write_text(json.dumps({
        "command": " ".join([".venv/bin/python", "benchmarks/server_cpu_pair.py", *sys.argv[1:]]),
        "versions": {"before": describe(args.before), "after": describe(args.after)},
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
        "markdown": table, "per_request": summary}, indent=2) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
