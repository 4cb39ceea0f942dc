"""The server benchmark on two versions of our own code, in paired rounds of one run.

    .venv/bin/python benchmarks/server_pair_bench.py --before 1065fd7 --after HEAD --rounds 5

Both versions run from the same virtualenv (benchmarks/_codeversion.py unpacks each ref and puts
it first on the server's PYTHONPATH), as ``streamml serve --sync normal`` with auth on, serving
the same model. Every measure of ``benchmarks/server_bench.py`` (hey sequential and concurrent
learn/predict, the riverapi client, batch learning with and without metric updates) runs on both
back to back in each round; a figure's ratio is the median over rounds of after/before for rates
and before/after for latencies, so a ratio >= 1 means "after is as good or better" either way.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _codeversion import checkout, describe
from _ourserver import OurServer
from _report import write_result
from server_bench import HEY_MEASURES, MODEL, Target, loadavg, measure

from streamml.procs import free_port

RESULTS = Path(__file__).resolve().parent / "results" / "server_pair.json"
TARGET = 0.95


def figures(m: dict[str, Any], side: str) -> dict[str, tuple[list[float], bool]]:
    """Per-round values of each figure, and whether higher is better."""
    out: dict[str, tuple[list[float], bool]] = {}
    for name, *_ in HEY_MEASURES:
        rounds = m[side][name]["rounds"]
        out[f"{name} req/s"] = ([float(r["req_per_s"]) for r in rounds], True)
        out[f"{name} p50 ms"] = ([float(r["p50_ms"]) for r in rounds], False)
        out[f"{name} p99 ms"] = ([float(r["p99_ms"]) for r in rounds], False)
    for kind in ("learn", "predict"):
        out[f"riverapi {kind} calls/s"] = (list(m[side][f"riverapi_{kind}"]["rounds"]), True)
    for key in ("batch_learn", "batch_backfill"):
        rounds = m[side][key]["rounds"]
        out[f"{key} samples/s"] = ([float(r["samples_per_s"]) for r in rounds], True)
    return out


def table(m: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    before, after = figures(m, "before"), figures(m, "after")
    rows = []
    lines = [
        "| figure | before (median) | after (median) | median paired ratio | lowest round |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, (old, higher) in before.items():
        new = after[name][0]
        ratios = [
            (b / a if higher else a / b) for a, b in zip(old, new, strict=True) if a > 0 and b > 0
        ]
        ratio = statistics.median(ratios) if ratios else float("nan")
        rows.append({"figure": name, "before": old, "after": new, "ratio": ratio,
                     "higher_is_better": higher, "met": ratio >= TARGET})  # fmt: skip
        lines.append(
            f"| {name} | {statistics.median(old):,.2f} | {statistics.median(new):,.2f} | "
            f"{ratio:.3f} | {min(ratios):.3f} |"
        )
    return "\n".join(lines), rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="1065fd7")
    parser.add_argument("--after", default="HEAD")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seq-requests", type=int, default=1000)
    parser.add_argument("--client-calls", type=int, default=300)
    parser.add_argument("--batch-samples", type=int, default=20000)
    parser.add_argument("--batch-chunk", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.concurrency, args.seq_requests, args.rounds = 128, 4, 100, 1
        args.client_calls, args.batch_samples, args.batch_chunk, args.warmup = 20, 400, 100, 20
    work = Path(tempfile.mkdtemp(prefix="server-pair-"))
    refs = {"before": describe(args.before), "after": describe(args.after)}
    servers = {
        side: OurServer(
            work / side, free_port(), sync="normal", pythonpath=checkout(ref, work / f"{side}-code")
        )
        for side, ref in (("before", args.before), ("after", args.after))
    }
    load = loadavg()
    try:
        for server in servers.values():
            server.start()
            server.create_model(MODEL)
        measured = measure(args, {side: Target(s) for side, s in servers.items()}, None)
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    text, rows = table(measured)
    print(text)
    result = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join([".venv/bin/python", "benchmarks/server_pair_bench.py", *sys.argv[1:]]),
        "versions": refs,
        "loadavg_before": load,
        "loadavg_after": loadavg(),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "markdown": text,
        "rows": rows,
        "all_at_least": {"target": TARGET, "met": all(r["met"] for r in rows)},
        "measured": measured,
    }
    write_result(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
