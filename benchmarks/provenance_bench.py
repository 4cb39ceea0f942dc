"""What provenance costs on the learn path (issue 12 item 5), in paired rounds.

    nice -n 19 .venv/bin/python benchmarks/provenance_bench.py --before dbec3c3 --rounds 8

Two servers from one virtualenv (``streamml serve --sync normal``, auth on, one declarative
linear model): ``before`` runs the code at ``--before`` (no provenance), ``after`` the working
tree. Each round sends, one after the other over one keep-alive connection, ``--learns`` single
learns of four kinds, in an order that rotates every round: ``before`` without provenance,
``after`` without provenance, ``after`` with a six-key provenance (the body ``streamml
run-lammps`` sends), and a control: ``after`` without provenance but a body as large (a long
identifier), which separates the cost of a bigger request from that of provenance. Two figures
per kind: requests per second as the client sees them, and the server's own CPU time per learn
(user + system of its process, from ``/proc``), which the other users of a shared machine
disturb far less than a wall-clock rate. Ratios are medians over rounds of paired ratios.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _codeversion import checkout, describe
from _ourserver import OurServer
from _report import write_result
from server_bench import loadavg

from streamml.procs import free_port

RESULTS = Path(__file__).resolve().parent / "results" / "provenance.json"
ORIGIN = {
    "sweep": "eos-sweep",
    "trial": "0b1e7c9a-52d4-4f55-9a57-2b8f0c7b9d1e/t00042",
    "attempt": "1",
    "image_digest": "sha256:" + "ab" * 32,
    "lammps_version": "29 Aug 2024 - Update 1",
    "host": "node-17.cluster.example",
}
KINDS = ("before", "after", "after+provenance", "after+padding")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_round(server: OurServer, learns: int, kind: str, start: int) -> tuple[float, float]:
    """(requests/s, server CPU µs per learn) of ``learns`` sequential learns of ``kind``."""
    assert server.process is not None
    headers = {**server.bearer(), "Content-Type": "application/json"}
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    bodies = []
    for i in range(start, start + learns):
        body: dict[str, Any] = {"model": "m", "features": {"nx": i % 17, "ny": i % 13, "nz": 5},
                                "ground_truth": float(i % 101), "identifier": f"s{i}"}  # fmt: skip
        if kind == "after+provenance":
            body["provenance"] = {**ORIGIN, "trial": f"{ORIGIN['trial'][:-6]}t{i:05d}"}
        elif kind == "after+padding":  # the control: a body as large, without provenance
            body["identifier"] = f"s{i}-" + "x" * 190
        bodies.append(json.dumps(body).encode())
    cpu0, t0 = cpu_seconds(server.process.pid), time.perf_counter()
    for raw in bodies:
        conn.request("POST", "/api/learn/", body=raw, headers=headers)
        response = conn.getresponse()
        response.read()
        if response.status != 201:
            raise RuntimeError(f"learn answered {response.status}")
    elapsed, cpu = time.perf_counter() - t0, cpu_seconds(server.process.pid) - cpu0
    conn.close()
    return learns / elapsed, cpu / learns * 1e6


def run(before_ref: str, rounds: int, learns: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="streamml-provbench-"))
    servers = {
        "before": OurServer(root / "before", free_port(), sync="normal",
                            pythonpath=checkout(before_ref, root / "code")),
        "after": OurServer(root / "after", free_port(), sync="normal"),
    }  # fmt: skip
    rates: dict[str, list[float]] = {k: [] for k in KINDS}
    cpus: dict[str, list[float]] = {k: [] for k in KINDS}
    try:
        for server in servers.values():
            server.start()
            server.create_model("m")
        one_round(servers["before"], 200, "before", 10**6)  # warm-up (imports, first learns)
        one_round(servers["after"], 200, "after+provenance", 10**6)
        for r in range(rounds):
            for k in range(len(KINDS)):
                kind = KINDS[(r + k) % len(KINDS)]
                server = servers["before" if kind == "before" else "after"]
                rate, cpu = one_round(
                    server, learns, kind.endswith("provenance"), r * 10**5 + k * 10**4
                )
                rates[kind].append(rate)
                cpus[kind].append(cpu)
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(root, ignore_errors=True)
    return {"rates": rates, "cpu_us": cpus}


def ratios(values: dict[str, list[float]], a: str, b: str, higher: bool) -> float:
    """Median over rounds of the paired ratio (>= 1: ``a`` as good as ``b`` or better)."""
    pairs = [(x / y if higher else y / x) for x, y in zip(values[a], values[b], strict=True)]
    return statistics.median(pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="dbec3c3", help="the code without provenance")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--learns", type=int, default=2000, help="learns per kind per round")
    args = parser.parse_args()
    load_before = loadavg()
    m = run(args.before, args.rounds, args.learns)
    rates, cpus = m["rates"], m["cpu_us"]
    lines = [
        "| kind | learn req/s (median) | server CPU µs/learn (median) |",
        "|---|---:|---:|",
    ]
    for kind in KINDS:
        rate, cpu = statistics.median(rates[kind]), statistics.median(cpus[kind])
        lines.append(f"| {kind} | {rate:,.0f} | {cpu:,.0f} |")
    compared = {
        "after/before req/s": ratios(rates, "after", "before", True),
        "after/before CPU": ratios(cpus, "after", "before", False),
        "provenance/after req/s": ratios(rates, "after+provenance", "after", True),
        "provenance/after CPU": ratios(cpus, "after+provenance", "after", False),
        "provenance/padding req/s": ratios(rates, "after+provenance", "after+padding", True),
        "provenance/padding CPU": ratios(cpus, "after+provenance", "after+padding", False),
    }
    lines.append("")
    lines += [
        f"- {name} (median paired ratio, >= 1 as good): {v:.3f}" for name, v in compared.items()
    ]
    print("\n".join(lines))
    write_result(
        RESULTS,
        {
            "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "before": describe(args.before),
            "rounds": args.rounds,
            "learns": args.learns,
            "load": {"before": load_before, "after": loadavg()},
            "measures": m,
            "ratios": compared,
        },
    )


if __name__ == "__main__":
    main()
