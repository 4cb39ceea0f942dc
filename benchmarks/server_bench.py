"""Model server vs django-river-ml 0.0.21, side by side in one run (issue 2, "Benchmark").

    .venv/bin/python benchmarks/server_bench.py            # full run, writes results/server.json
    .venv/bin/python benchmarks/server_bench.py --quick --json /tmp/x.json   # smoke run

Everything listens on 127.0.0.1 on free ports and every process started here is stopped by PID.
The old server runs from a throwaway virtualenv (benchmarks/_oldserver.py) under gunicorn with one
sync worker, authentication off (its default). Ours runs as `streamml serve` with auth on (the
load generator sends a bearer token fetched through the handshake), once per durability setting:
`--sync normal` (survives `kill -9`, which is what the issue asks; the old server never fsyncs)
and `--sync full` (an fsync per group commit: also survives power loss). All serve the same
model, `StandardScaler | LinearRegression`: uploaded to the old one as a dill pickle through the
real `riverapi` client, declared as a JSON pipeline to ours.

The machine is shared and noisy, so each measure runs on every server back to back, `--rounds`
times over: the table gives each server's median round, and each ratio is the median of the
per-round ratios (ours against the old server measured right before it). Batch learning and
river's in-process rate alternate in the same way.
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
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _loadgen import learn_calls, run_hey, storage_commits
from _oldserver import OldServer, ensure_venv, tail
from _ourserver import EchoServer, OurServer
from _report import SECTION, render, section_text, summarise, update_section, write_result

from streamml import procs
from streamml.procs import free_port

MODEL = "bench"
RESULTS = Path(__file__).resolve().parent / "results" / "server.json"
HEY_MEASURES = (  # name, path, learn?, concurrency option
    ("seq_learn", "/api/learn/", True, False),
    ("seq_predict", "/api/predict/", False, False),
    ("conc_learn", "/api/learn/", True, True),
    ("conc_predict", "/api/predict/", False, True),
)


def alternating(targets: dict[str, Target], round_: int) -> list[tuple[str, Target]]:
    """The sides in this round's order: reversed every other round, so that whatever the one
    measured first leaves running (a snapshot, the storage thread's tail) does not always land
    on the same side's measurement."""
    order = list(targets.items())
    return order if round_ % 2 == 0 else order[::-1]


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
    for k in saved:
        os.environ.pop(k, None)
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
            os.environ.pop(k, None)
            if v is not None:
                os.environ[k] = v


def batch_learn_rate(
    server: OurServer, total: int, chunk: int, seed: int, *, update_metrics: bool = True
) -> dict[str, Any]:
    """Samples/s through POST /api/learn/batch/ over one keep-alive connection; with
    ``update_metrics`` False the server learns only (a backfill), like river's bare learn_one."""
    extra = {} if update_metrics else {"update_metrics": False}
    import http.client

    samples = make_samples(total, seed=seed)
    bodies = [
        json.dumps(
            {
                "model": MODEL,
                "samples": [{"features": x, "ground_truth": y} for x, y in samples[i : i + chunk]],
                **extra,
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
    return {"samples_per_s": total / elapsed, "learn_calls_delta": after - before}


def inprocess_rates(total: int, seed: int) -> dict[str, float]:
    """river's own rate on the same model and data: learn_one alone (the limit), and the
    per-sample work of progressive validation (predict, update the metrics, learn)."""
    from river import linear_model, metrics, preprocessing

    samples = make_samples(total, seed=seed)
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


def versions() -> dict[str, Any]:
    from importlib.metadata import version

    from _oldserver import OLD_SERVER_PACKAGE, OLD_SERVER_REQUIREMENTS

    ours = {name: version(name) for name in ("river", "aiohttp", "orjson", "riverapi", "dill")}

    query = ["dpkg-query", "-W", "-f=${Version}", "hey"]
    done = procs.run(query, capture_output=True, text=True, check=False)
    hey = done.stdout.strip() or "unknown"
    return {"ours": ours, "old": [OLD_SERVER_PACKAGE, *OLD_SERVER_REQUIREMENTS], "hey": hey}


def git_state() -> dict[str, Any]:
    """Which server code was measured: HEAD, and whether the server's files differ from it."""

    root = Path(__file__).resolve().parents[1]

    def git(*cmd: str) -> str:
        done = procs.run(["git", *cmd], cwd=root, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    changed = git("status", "--porcelain", "--", "modelserver", "streamml")
    return {"commit": git("rev-parse", "HEAD"), "server_files_modified": bool(changed)}


def loadavg() -> list[float]:
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


class Target:
    """One server under test: its URL and how to authenticate."""

    def __init__(self, server: OldServer | OurServer) -> None:
        self.server = server
        self.url = server.url
        self.ours = isinstance(server, OurServer)

    def headers(self) -> dict[str, str] | None:
        # A fresh token per run: a long benchmark must not outlive a JWT.
        return self.server.bearer() if isinstance(self.server, OurServer) else None

    def riverapi_env(self) -> dict[str, str]:
        if isinstance(self.server, OurServer):
            return {"RIVER_ML_USER": self.server.user, "RIVER_ML_TOKEN": self.server.token}
        return {}


def measure(
    args: argparse.Namespace, targets: dict[str, Target], echo: EchoServer | None
) -> dict[str, Any]:
    """Every figure for every target, interleaved (longer than ~60 lines: one measurement
    sequence; its order is the benchmark's protocol and the JSON's layout)."""
    x, y = make_samples(1)[0]
    bodies: dict[bool, dict[str, Any]] = {
        True: {"model": MODEL, "features": x, "ground_truth": y},
        False: {"model": MODEL, "features": x},
    }
    out: dict[str, dict[str, Any]] = {side: {} for side in targets}
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}

    for t in targets.values():  # warm-up: first-request costs are not what is measured
        for learn in (True, False):
            path = "/api/learn/" if learn else "/api/predict/"
            run_hey(
                t.url + path,
                bodies[learn],
                requests=args.warmup,
                concurrency=4,
                headers=t.headers(),
            )

    for round_ in range(args.rounds):
        for name, path, learn, concurrent in HEY_MEASURES:
            n = args.requests if concurrent else args.seq_requests
            c = args.concurrency if concurrent else 1
            for side, t in alternating(targets, round_):
                headers = t.headers()
                before = learn_calls(t.url, MODEL, headers)
                commits = storage_commits(t.url, headers) if t.ours else None
                result = run_hey(
                    t.url + path, bodies[learn], requests=n, concurrency=c, headers=headers
                )
                kept = learn_calls(t.url, MODEL, headers) - before
                record = {**result.as_dict(), "learn_calls_delta": kept}
                if commits is not None and learn:
                    # how many acknowledged learns shared one commit (one fsync with --sync full)
                    done = (storage_commits(t.url, headers) or commits) - commits
                    record["storage_commits"] = done
                    record["learns_per_commit"] = round(kept / done, 2) if done else None
                runs.setdefault((side, name), []).append(record)
                print(
                    f"  r{round_} {side:11} {name:12} {result.req_per_s:9.1f} req/s  "
                    f"p50 {result.p50_ms:6.2f} ms  p99 {result.p99_ms:6.2f} ms  "
                    f"2xx {result.ok}/{result.requests}"
                    + (
                        f"  {record['learns_per_commit']} learns/commit"
                        if "learns_per_commit" in record
                        else ""
                    ),
                    flush=True,
                )

            if echo is not None and name == "conc_predict":
                # the HTTP stack's ceiling at this moment, for reference
                ref = run_hey(echo.url + path, bodies[learn], requests=n, concurrency=c)
                runs.setdefault(("echo", name), []).append(ref.as_dict())

    out["echo"] = {}
    for (side, name), records in runs.items():
        ranked = sorted(records, key=lambda r: float(r["req_per_s"]))
        out[side][name] = {**ranked[len(ranked) // 2], "rounds": records}
        if name == "conc_learn":
            out[side]["learns_kept"] = {
                "acknowledged": sum(int(r["ok"]) for r in records),
                "sent": sum(int(r["requests"]) for r in records),
                "kept": sum(int(r["learn_calls_delta"]) for r in records),
            }

    for kind in ("learn", "predict"):
        rates: dict[str, list[float]] = {side: [] for side in targets}
        for round_ in range(args.rounds):
            for side, t in alternating(targets, round_):
                rate = riverapi_rate(t.url, kind, args.client_calls, t.riverapi_env())
                rates[side].append(rate)
        for side, values in rates.items():
            out[side][f"riverapi_{kind}"] = {"per_s": statistics.median(values), "rounds": values}
            print(f"  {side:11} riverapi {kind:7} {statistics.median(values):9.1f} calls/s")

    # Batch learning against river in-process, measured next to each other in every round.
    batch: dict[str, list[dict[str, Any]]] = {}
    backfill: dict[str, list[dict[str, Any]]] = {}
    inproc: list[dict[str, float]] = []
    for round_ in range(args.rounds):
        inproc.append(inprocess_rates(args.batch_samples, seed=10 + round_))
        for side, t in alternating(targets, round_):
            if isinstance(t.server, OurServer):
                rec = batch_learn_rate(t.server, args.batch_samples, args.batch_chunk, 10 + round_)
                rec["of_learn_one"] = rec["samples_per_s"] / inproc[-1]["learn_one_per_s"]
                rec["of_progressive"] = rec["samples_per_s"] / inproc[-1]["progressive_per_s"]
                batch.setdefault(side, []).append(rec)
                rec = batch_learn_rate(
                    t.server, args.batch_samples, args.batch_chunk, 10 + round_,
                    update_metrics=False,
                )  # fmt: skip
                rec["of_learn_one"] = rec["samples_per_s"] / inproc[-1]["learn_one_per_s"]
                backfill.setdefault(side, []).append(rec)
    for side, records in batch.items():
        out[side]["batch_learn"] = {
            "samples_per_s": statistics.median(r["samples_per_s"] for r in records),
            "of_learn_one": statistics.median(r["of_learn_one"] for r in records),
            "of_progressive": statistics.median(r["of_progressive"] for r in records),
            "samples": args.batch_samples,
            "chunk": args.batch_chunk,
            "all_learned": all(r["learn_calls_delta"] == args.batch_samples for r in records),
            "rounds": records,
        }
        print(f"  {side:11} batch learn {out[side]['batch_learn']['samples_per_s']:9.1f}/s")
    for side, records in backfill.items():
        out[side]["batch_backfill"] = {
            "samples_per_s": statistics.median(r["samples_per_s"] for r in records),
            "of_learn_one": statistics.median(r["of_learn_one"] for r in records),
            "all_learned": all(r["learn_calls_delta"] == args.batch_samples for r in records),
            "rounds": records,
        }
        rate = out[side]["batch_backfill"]["samples_per_s"]
        print(f"  {side:11} batch learn, update_metrics false {rate:9.1f}/s")
    out["inprocess"] = {
        "learn_one_per_s": statistics.median(r["learn_one_per_s"] for r in inproc),
        "progressive_per_s": statistics.median(r["progressive_per_s"] for r in inproc),
        "rounds": inproc,
    }
    print(f"  in-process learn_one {out['inprocess']['learn_one_per_s']:9.1f}/s", flush=True)
    return out


def rerender(path: Path, markdown: Path | None) -> int:
    """Rebuild table and targets of a results file (after a change of presentation)."""
    result = json.loads(path.read_text())
    settings = result["settings"]
    sides = [f"ours-{sync}" for sync in settings["sync"]]
    rows, met = summarise(result["measured"], sides, settings["concurrency"], settings["requests"])
    result.update(table=rows, markdown=render(rows, sides), targets=met)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(result["markdown"])
    if markdown is not None:
        update_section(markdown, section_text(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Options, servers up, measure, report (longer than ~60 lines: mostly argparse
    declarations and the start/stop of the servers it compares)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="hey -n for the clients")
    parser.add_argument("--concurrency", type=int, default=16, help="hey -c")
    parser.add_argument("--seq-requests", type=int, default=1000, help="hey -n for -c 1")
    parser.add_argument("--client-calls", type=int, default=300, help="riverapi calls per kind")
    parser.add_argument("--batch-samples", type=int, default=20000, help="per batch round")
    parser.add_argument("--batch-chunk", type=int, default=1000, help="samples per request")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3, help="repeat every measure")
    parser.add_argument(
        "--sync",
        nargs="+",
        default=["normal", "full"],
        choices=["full", "normal"],
        help="our server's --sync settings to run",
    )
    parser.add_argument("--quick", action="store_true", help="tiny counts, to check it runs")
    parser.add_argument("--json", type=Path, default=RESULTS, help="where to write results")
    parser.add_argument("--venv", type=Path, default=None, help="old server's virtualenv")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, data)")
    parser.add_argument(
        "--markdown", type=Path, default=None, help="update this benchmark's section of this file"
    )
    parser.add_argument(
        "--render", type=Path, default=None, help="only re-render the table of this results JSON"
    )
    args = parser.parse_args(argv)
    given = sys.argv[1:] if argv is None else argv
    if args.render is not None:
        return rerender(args.render, args.markdown)
    if args.quick:
        # hey prints a p99 only from 100 requests on.
        args.requests, args.concurrency, args.seq_requests, args.rounds = 128, 4, 100, 1
        args.client_calls, args.batch_samples, args.batch_chunk, args.warmup = 20, 400, 100, 20

    work = Path(tempfile.mkdtemp(prefix="server-bench-"))
    print(f"old server's virtualenv (log {work / 'venv.log'})", flush=True)
    python = ensure_venv(log=work / "venv.log", **({"venv": args.venv} if args.venv else {}))
    old = OldServer(python, work / "old", free_port())
    ours = {sync: OurServer(work / f"ours-{sync}", free_port(), sync=sync) for sync in args.sync}
    echo = EchoServer(free_port())
    load_before = loadavg()
    started = time.monotonic()
    pids: dict[str, int] = {}
    try:
        old.start()
        upload_old_model(old)
        targets = {"old": Target(old)}
        for sync, server in ours.items():
            server.start()
            server.create_model(MODEL)
            targets[f"ours-{sync}"] = Target(server)
        for side, t in targets.items():
            pids[side] = t.server.process.pid if t.server.process else -1
            print(f"{side}: {t.url} (pid {pids[side]})", flush=True)
        echo.start()
        pids["echo"] = echo.process.pid if echo.process else -1
        measured = measure(args, targets, echo)
    except Exception:
        for path in (old.log_path, *(s.log_path for s in ours.values())):
            print(f"--- {path}\n{tail(path)}", file=sys.stderr)
        raise
    finally:
        old.stop()
        for server in ours.values():
            server.stop()
        echo.stop()
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)

    sides = [f"ours-{sync}" for sync in args.sync]
    rows, targets_met = summarise(measured, sides, args.concurrency, args.requests)
    table = render(rows, sides)
    print()
    print(table)
    print()
    for side, met in targets_met.items():
        for name, ok in met.items():
            print(f"{side} target {name}: {'met' if ok else 'MISSED'}")
    result = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": shlex.join([".venv/bin/python", "benchmarks/server_bench.py", *given]),
        "duration_s": round(time.monotonic() - started, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_before": load_before,
            "loadavg_after": loadavg(),
        },
        "versions": versions(),
        "git": git_state(),
        "pids": pids,  # all stopped by now
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "table": rows,
        "markdown": table,
        "targets": targets_met,
        "measured": measured,
    }
    write_result(args.json, result)
    if args.markdown is not None:
        update_section(args.markdown, section_text(result))
        print(f"updated the section {SECTION!r} of {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
