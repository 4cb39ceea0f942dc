"""Model server vs django-river-ml 0.0.21, side by side in one run (issue 2, "Benchmark").

    .venv/bin/python benchmarks/server_bench.py            # full run, writes results/server.json
    .venv/bin/python benchmarks/server_bench.py --quick --json /tmp/x.json   # smoke run

Everything listens on 127.0.0.1 on free ports and every process started here is stopped by PID.
The old server runs from a throwaway virtualenv (benchmarks/_oldserver.py) under gunicorn with one
sync worker, authentication off (its default); ours runs as `streamml serve` with auth on, and the
load generator sends a bearer token fetched through the handshake. Both serve the same model,
`StandardScaler | LinearRegression`: uploaded to the old one as a dill pickle through the real
`riverapi` client, declared as a JSON pipeline to ours. Each measure runs on the old server, then
on ours, back to back, so machine noise hits both alike.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _loadgen import HeyResult, free_port, learn_calls, run_hey
from _oldserver import OldServer, ensure_venv, tail
from _ourserver import OurServer

MODEL = "bench"
RESULTS = Path(__file__).resolve().parent / "results" / "server.json"


def make_samples(n: int, seed: int = 2) -> list[tuple[dict[str, float], float]]:
    """LAMMPS-like jobs: box size and ranks -> wall time (seconds), with noise; deterministic."""
    rng = random.Random(seed)
    samples = []
    for _ in range(n):
        x, y, z = (float(rng.randint(4, 32)) for _ in range(3))
        ranks = float(rng.choice((1, 2, 4, 8)))
        seconds = 0.002 * x * y * z / ranks + 0.5 * ranks + rng.gauss(0.0, 0.5)
        samples.append(({"x": x, "y": y, "z": z, "ranks": ranks}, seconds))
    return samples


def riverapi_rate(url: str, kind: str, calls: int, env: dict[str, str]) -> float:
    """Sequential calls/s through the real riverapi client (a new connection per call)."""
    from riverapi.main import Client

    saved = {k: os.environ.get(k) for k in ("RIVER_ML_USER", "RIVER_ML_TOKEN")}
    os.environ.update(env)
    try:
        client = Client(url, quiet=True)
        samples = make_samples(calls, seed=3)
        x0, y0 = samples[0]
        # Warm-up: also does the 401 -> Basic -> Bearer handshake where auth is on.
        client.learn(MODEL, x0, y0) if kind == "learn" else client.predict(MODEL, x0)
        started = time.perf_counter()
        for x, y in samples:
            client.learn(MODEL, x, y) if kind == "learn" else client.predict(MODEL, x)
        return calls / (time.perf_counter() - started)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def batch_learn_rate(server: OurServer, total: int, chunk: int) -> dict[str, Any]:
    """Samples/s through POST /api/learn/batch/ over one keep-alive connection."""
    import http.client

    samples = make_samples(total, seed=4)
    bodies = [
        json.dumps(
            {
                "model": MODEL,
                "samples": [{"features": x, "ground_truth": y} for x, y in samples[i : i + chunk]],
            }
        ).encode()
        for i in range(0, total, chunk)
    ]
    headers = {"Content-Type": "application/json", **server.bearer()}
    before = learn_calls(server.url, MODEL, server.bearer())
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    started = time.perf_counter()
    for body in bodies:
        conn.request("POST", "/api/learn/batch/", body=body, headers=headers)
        reply = conn.getresponse()
        data = reply.read()
        if reply.status not in (200, 201):
            raise RuntimeError(f"batch learn: {reply.status} {data[:300]!r}")
    elapsed = time.perf_counter() - started
    conn.close()
    after = learn_calls(server.url, MODEL, server.bearer())
    return {
        "samples": total,
        "chunk": chunk,
        "samples_per_s": total / elapsed,
        "learn_calls_delta": after - before,
    }


def inprocess_rates(total: int) -> dict[str, float]:
    """river's own rate on the same model and data: learn_one alone (the limit), and the
    per-sample work a server with progressive validation does (predict, metrics, learn)."""
    from river import linear_model, metrics, preprocessing

    samples = make_samples(total, seed=4)
    model = preprocessing.StandardScaler() | linear_model.LinearRegression()
    started = time.perf_counter()
    for x, y in samples:
        model.learn_one(x, y)
    learn_only = total / (time.perf_counter() - started)

    model = preprocessing.StandardScaler() | linear_model.LinearRegression()
    tracked = [metrics.MAE(), metrics.RMSE(), metrics.SMAPE(), metrics.R2()]  # type: ignore[no-untyped-call]
    started = time.perf_counter()
    for x, y in samples:
        y_pred = model.predict_one(x)
        for metric in tracked:
            metric.update(y, y_pred)
        model.learn_one(x, y)
    progressive = total / (time.perf_counter() - started)
    return {"learn_one_per_s": learn_only, "progressive_per_s": progressive}


def upload_old_model(old: OldServer) -> None:
    """The old way: a dill pickle through riverapi (auth off, as the old default)."""
    from river import linear_model, preprocessing
    from riverapi.main import Client

    model = preprocessing.StandardScaler() | linear_model.LinearRegression()
    Client(old.url, quiet=True).upload_model(model, "regression", model_name=MODEL)


def loadavg() -> list[float]:
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def measure(args: argparse.Namespace, old: OldServer, ours: OurServer) -> dict[str, Any]:
    x, y = make_samples(1)[0]
    learn_body = {"model": MODEL, "features": x, "ground_truth": y}
    predict_body = {"model": MODEL, "features": x}
    urls = {"old": old.url, "ours": ours.url}
    out: dict[str, dict[str, Any]] = {"old": {}, "ours": {}}

    def hey(side: str, path: str, body: dict[str, Any], n: int, c: int) -> HeyResult:
        # A fresh token per run: a long run must not outlive a JWT.
        headers = ours.bearer() if side == "ours" else None
        return run_hey(f"{urls[side]}{path}", body, requests=n, concurrency=c, headers=headers)

    for side in ("old", "ours"):  # warm-up: first-request costs are not what is measured
        hey(side, "/api/learn/", learn_body, args.warmup, 4)
        hey(side, "/api/predict/", predict_body, args.warmup, 4)

    for name, path, body, n, c in (
        ("seq_learn", "/api/learn/", learn_body, args.seq_requests, 1),
        ("seq_predict", "/api/predict/", predict_body, args.seq_requests, 1),
        ("conc_learn", "/api/learn/", learn_body, args.requests, args.concurrency),
        ("conc_predict", "/api/predict/", predict_body, args.requests, args.concurrency),
    ):
        for side in ("old", "ours"):
            headers = ours.bearer() if side == "ours" else None
            before = learn_calls(urls[side], MODEL, headers)
            result = hey(side, path, body, n, c)
            after = learn_calls(urls[side], MODEL, headers)
            out[side][name] = result.as_dict()
            if name == "conc_learn":
                out[side]["learns_kept"] = {"acknowledged": result.ok, "kept": after - before}
            print(
                f"  {side:4} {name:12} {result.req_per_s:9.1f} req/s  "
                f"p50 {result.p50_ms:6.2f} ms  p99 {result.p99_ms:6.2f} ms  "
                f"2xx {result.ok}/{result.requests}",
                flush=True,
            )

    for kind in ("learn", "predict"):
        for side in ("old", "ours"):
            env = {}
            if side == "ours":
                env = {"RIVER_ML_USER": ours.user, "RIVER_ML_TOKEN": ours.token}
            rate = riverapi_rate(urls[side], kind, args.client_calls, env)
            out[side][f"riverapi_{kind}_per_s"] = rate
            print(f"  {side:4} riverapi {kind:7} {rate:9.1f} calls/s", flush=True)

    out["ours"]["batch_learn"] = batch_learn_rate(ours, args.batch_samples, args.batch_chunk)
    out["inprocess"] = inprocess_rates(args.batch_samples)
    print(
        f"  ours batch learn {out['ours']['batch_learn']['samples_per_s']:9.1f} samples/s; "
        f"in-process learn_one {out['inprocess']['learn_one_per_s']:9.1f}/s",
        flush=True,
    )
    return out


def summarise(m: dict[str, Any]) -> tuple[list[list[str]], dict[str, Any]]:
    """The table rows (measure | old | ours | ratio) and the targets met or missed."""
    old, ours, inproc = m["old"], m["ours"], m["inprocess"]
    rows: list[list[str]] = []

    def rate(label: str, a: float, b: float, unit: str) -> None:
        rows.append([f"{label} ({unit})", f"{a:,.0f}", f"{b:,.0f}", f"{b / a:.1f}x"])

    def latency(label: str, a: float, b: float) -> None:
        rows.append([f"{label} (ms)", f"{a:.2f}", f"{b:.2f}", f"{a / b:.1f}x"])

    for key, label in (
        ("seq_learn", "sequential learn, hey -c 1"),
        ("seq_predict", "sequential predict, hey -c 1"),
        ("conc_learn", "16 clients learn, hey -c 16"),
        ("conc_predict", "16 clients predict, hey -c 16"),
    ):
        rate(label, old[key]["req_per_s"], ours[key]["req_per_s"], "req/s")
        latency(f"{label}: p50", old[key]["p50_ms"], ours[key]["p50_ms"])
        latency(f"{label}: p99", old[key]["p99_ms"], ours[key]["p99_ms"])
    rate(
        "sequential learn, riverapi client",
        old["riverapi_learn_per_s"],
        ours["riverapi_learn_per_s"],
        "calls/s",
    )
    rate(
        "sequential predict, riverapi client",
        old["riverapi_predict_per_s"],
        ours["riverapi_predict_per_s"],
        "calls/s",
    )
    ok, kept = old["learns_kept"]["acknowledged"], old["learns_kept"]["kept"]
    ok2, kept2 = ours["learns_kept"]["acknowledged"], ours["learns_kept"]["kept"]
    rows.append(
        [
            "learns kept after the 16-client run (kept / 2xx)",
            f"{kept} / {ok}",
            f"{kept2} / {ok2}",
            "",
        ]
    )
    batch = ours["batch_learn"]["samples_per_s"]
    best_old = max(old["conc_learn"]["req_per_s"], old["seq_learn"]["req_per_s"])
    rows.append(
        [
            "learn samples/s, best path (old: one per request; ours: batch)",
            f"{best_old:,.0f}",
            f"{batch:,.0f}",
            f"{batch / best_old:.1f}x",
        ]
    )
    rows.append(
        [
            "in-process river learn_one, same model and data (samples/s)",
            "",
            f"{inproc['learn_one_per_s']:,.0f}",
            f"batch at {batch / inproc['learn_one_per_s']:.2f} of it",
        ]
    )
    rows.append(
        [
            "in-process predict + metrics + learn_one (samples/s)",
            "",
            f"{inproc['progressive_per_s']:,.0f}",
            f"batch at {batch / inproc['progressive_per_s']:.2f} of it",
        ]
    )

    def speedup(key: str) -> float:
        return float(ours[key]["req_per_s"] / old[key]["req_per_s"])

    targets = {
        "concurrent_learn_10x": speedup("conc_learn") >= 10.0,
        "concurrent_predict_10x": speedup("conc_predict") >= 10.0,
        "p99_under_10ms": max(ours["conc_learn"]["p99_ms"], ours["conc_predict"]["p99_ms"]) < 10.0,
        "zero_learns_lost": kept2 == ok2 and ok2 == ours["conc_learn"]["requests"],
        "batch_within_2x_of_inprocess": inproc["learn_one_per_s"] / batch <= 2.0,
    }
    return rows, targets


def render(rows: list[list[str]]) -> str:
    header = ["measure", "old (django-river-ml)", "ours (streamml serve)", "ratio"]
    lines = ["| " + " | ".join(header) + " |", "|---|---:|---:|---:|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="hey -n for 16 clients")
    parser.add_argument("--concurrency", type=int, default=16, help="hey -c")
    parser.add_argument("--seq-requests", type=int, default=1000, help="hey -n for -c 1")
    parser.add_argument("--client-calls", type=int, default=300, help="riverapi calls per kind")
    parser.add_argument("--batch-samples", type=int, default=20000)
    parser.add_argument("--batch-chunk", type=int, default=1000, help="samples per request")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="tiny counts, to check it runs")
    parser.add_argument("--json", type=Path, default=RESULTS, help="where to write results")
    parser.add_argument("--venv", type=Path, default=None, help="old server's virtualenv")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, data)")
    args = parser.parse_args(argv)
    given = sys.argv[1:] if argv is None else argv
    if args.quick:
        # hey prints a p99 only from 100 requests on.
        args.requests, args.concurrency, args.seq_requests = 128, 4, 100
        args.client_calls, args.batch_samples, args.batch_chunk, args.warmup = 20, 400, 100, 20

    work = Path(tempfile.mkdtemp(prefix="server-bench-"))
    print(f"setting up the old server's virtualenv (log {work / 'venv.log'})", flush=True)
    python = (
        ensure_venv(args.venv, log=work / "venv.log")
        if args.venv
        else ensure_venv(log=work / "venv.log")
    )
    old = OldServer(python, work / "old", free_port())
    ours = OurServer(work / "ours", free_port())
    load_before = loadavg()
    try:
        old.start()
        upload_old_model(old)
        ours.start()
        ours.create_model(MODEL)
        print(
            f"old {old.url} (pid {old.process.pid if old.process else '?'}), "
            f"ours {ours.url} (pid {ours.process.pid if ours.process else '?'})",
            flush=True,
        )
        measured = measure(args, old, ours)
    except Exception:
        for path in (old.log_path, ours.log_path):
            print(f"--- {path}\n{tail(path)}", file=sys.stderr)
        raise
    finally:
        old.stop()
        ours.stop()
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    rows, targets = summarise(measured)
    table = render(rows)
    print()
    print(table)
    print()
    for name, met in targets.items():
        print(f"target {name}: {'met' if met else 'MISSED'}")

    result = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": shlex.join([".venv/bin/python", "benchmarks/server_bench.py", *given]),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_before": load_before,
            "loadavg_after": loadavg(),
        },
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "measured": measured,
        "table": rows,
        "targets": targets,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2, sort_keys=False) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
