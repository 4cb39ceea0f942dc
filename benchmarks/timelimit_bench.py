"""Predicted time limits vs. a fixed user limit: real LAMMPS, a real server, ``streamml sweep``.

Two sweeps of the same plan (LJ melt boxes of nx, ny, nz = 6..12 cells, ``--steps`` steps) on
the ``local`` scheduler (second resolution), each with a wall-time model (BayesianLinearRegression
on the cell product, the sample's ``atoms-bayesian``) learning ``job_wall_time``:

- ``predicted``: ``resources.predictedTimeLimit`` (conformal ``--quantile``, after ``--after``
  runs); before that the user's limit;
- ``fixed``: the user's ``timeLimitSeconds`` only (the scheduler gets it + 60 s).

For each: the jobs under a predicted limit, the fraction killed at their limit (target <= 2 %),
the median requested / actual wall time (target <= 2x), resubmissions, and the sweep's wall
time. ``--scheduler flux`` runs the same on a Flux instance: the one ``FLUX_URI`` names, else one
the benchmark starts (``streamml.testbed.flux``, the project's flux-core build) and shuts down.

    .venv/bin/python benchmarks/timelimit_bench.py [--trials 40] [--parallelism 2]

Prints a table and writes ``benchmarks/results/timelimit.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).parent))

from _ourserver import OurServer

from streamml import procs
from streamml.client.api import ModelServerClient
from streamml.pycommand import streamml_command
from streamml.vocabulary.modelspec import ModelSpec

RESULTS = Path(__file__).parent / "results" / "timelimit.json"
WALL_MODEL = {
    "name": "wall-bayes",
    "pipeline": [
        {"class": "feature_extraction.PolynomialExtender",
         "params": {"degree": 3, "interaction_only": True, "include_bias": True}},
        {"class": "compose.Select", "params": {"keys": ["nx*ny*nz", "bias"]}},
        {"class": "linear_model.BayesianLinearRegression", "params": {"alpha": 1, "beta": 10000}},
    ],
}  # fmt: skip
LOOP_MODEL = {"name": "loop-bayes", "pipeline": WALL_MODEL["pipeline"]}


def sweep_doc(args: argparse.Namespace, mode: str) -> dict[str, Any]:
    resources: dict[str, Any] = {"timeLimitSeconds": args.user_limit}
    if mode == "predicted":
        resources["predictedTimeLimit"] = {
            "fromModel": "wall-bayes",
            "quantile": args.quantile,
            "minSeconds": 3,
            "maxSeconds": 4 * args.user_limit,
            "after": args.after,
        }
    scheduler: dict[str, Any] = {"type": args.scheduler}
    return {
        "apiVersion": "streamml.io/v1alpha1",
        "kind": "LammpsSweep",
        "metadata": {"name": f"limits-{mode}"},
        "spec": {
            "streamModelRef": {"name": "unused-by-the-cli"},
            "parameters": [
                {"name": n, "type": "int", "min": 6, "max": 12} for n in ("nx", "ny", "nz")
            ],
            "sampling": {"method": "random", "seed": args.seed},
            "trials": args.trials,
            "testTrials": 0,
            "parallelism": args.parallelism,
            "maxFailures": 3,
            "lammps": {"vars": {"steps": str(args.steps)}},
            "targets": [
                {"name": "loop", "metric": "loop_time", "models": ["loop-bayes"]},
                {"name": "wall", "metric": "job_wall_time", "models": ["wall-bayes"]},
            ],
            "resources": resources,
            "scheduler": scheduler,
        },
    }


async def fresh_models(server: OurServer) -> None:
    async with ModelServerClient(server.url, username=server.user, token=server.token) as c:
        for model in (WALL_MODEL, LOOP_MODEL):
            if model["name"] in await c.models():
                await c.delete_model(str(model["name"]))
            await c.create_model(ModelSpec.model_validate(model))


def run_sweep(server: OurServer, doc: dict[str, Any], work: Path) -> tuple[dict[str, Any], float]:
    work.mkdir(parents=True)
    file = work / "sweep.yaml"
    file.write_text(yaml.safe_dump(doc))
    token = work / "token"
    token.write_text(server.token)
    cmd = [*streamml_command(), "sweep", str(file), "--server", server.url,
           "--workdir", str(work / "wd"), "--no-progress", "--interval", "0.5",
           "--username", server.user, "--token-file", str(token)]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")}
    start = time.perf_counter()
    done = procs.run(cmd, capture_output=True, text=True, env=env, timeout=7200, check=False)
    took = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"sweep failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads((work / "wd" / "state.json").read_text()), took


def summarize(mode: str, state: dict[str, Any], took: float) -> dict[str, Any]:
    """The figures of one sweep, from its trial records (every attempt is one)."""
    trials = state["trials"]
    predicted = [t for t in trials if t.get("timeLimitSeconds") is not None]
    user_limit = state_user_limit(state)
    done = [t for t in trials if t["state"] == "Succeeded" and t.get("wallSeconds")]

    def requested(t: dict[str, Any]) -> float:
        return float(t.get("timeLimitSeconds") or user_limit)

    limited = predicted if mode == "predicted" else trials
    killed = [t for t in limited if t.get("censored") or _killed_reason(t.get("reason"))]
    ratios = [requested(t) / t["wallSeconds"] for t in done if t in limited]
    walls = [t["wallSeconds"] for t in done]
    tl = state.get("timeLimits") or {}
    return {
        "mode": mode,
        "runs": len(done),
        "attempts": len(trials),
        "limited_jobs": len(limited),
        "killed": len(killed),
        "killed_fraction": round(len(killed) / len(limited), 4) if limited else None,
        "median_requested_over_actual": round(statistics.median(ratios), 3) if ratios else None,
        "max_requested_over_actual": round(max(ratios), 3) if ratios else None,
        "min_requested_over_actual": round(min(ratios), 3) if ratios else None,
        "resubmitted": tl.get("resubmitted", 0),
        "failed": state["failed"],
        "wall_s_median": round(statistics.median(walls), 2) if walls else None,
        "wall_s_range": [round(min(walls), 2), round(max(walls), 2)] if walls else None,
        "status": {k: v for k, v in tl.items() if k not in ("ratios", "samples", "censoredRatios")},
        "sweep_s": round(took, 1),
    }


def same_runs_fixed(state: dict[str, Any]) -> dict[str, Any]:
    """The predicted sweep's completed runs as if each had had the fixed user limit: a fixed
    limit does not change a run it does not kill, so limit / wall time is the same figure."""
    limit = state_user_limit(state)
    walls = [t["wallSeconds"] for t in state["trials"] if t.get("wallSeconds")]
    ratios = [limit / w for w in walls]
    killed = [w for w in walls if w > limit]
    return {
        "mode": "fixed (same runs)",
        "runs": len(walls),
        "attempts": len(walls),
        "limited_jobs": len(walls),
        "killed": len(killed),
        "killed_fraction": round(len(killed) / len(walls), 4) if walls else None,
        "median_requested_over_actual": round(statistics.median(ratios), 3) if ratios else None,
        "max_requested_over_actual": round(max(ratios), 3) if ratios else None,
        "min_requested_over_actual": round(min(ratios), 3) if ratios else None,
        "resubmitted": 0,
        "failed": 0,
        "wall_s_median": round(statistics.median(walls), 2) if walls else None,
        "wall_s_range": [round(min(walls), 2), round(max(walls), 2)] if walls else None,
        "status": {},
        "sweep_s": None,
    }


def _killed_reason(reason: str | None) -> bool:
    return any(word in (reason or "") for word in ("TimeLimit", "LammpsTimeout", "TIMEOUT"))


def state_user_limit(state: dict[str, Any]) -> float:
    return float(state["_user_limit"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--parallelism", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--quantile", type=float, default=0.95)
    parser.add_argument("--after", type=int, default=10)
    parser.add_argument("--user-limit", type=int, default=120, help="timeLimitSeconds (both)")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--scheduler", choices=("local", "flux"), default="local")
    parser.add_argument("--modes", nargs="+", default=["predicted", "fixed"])
    parser.add_argument("--out", type=Path, default=RESULTS, help="the result JSON")
    parser.add_argument(
        "--state",
        type=Path,
        help="summarize this saved state.json of a predicted sweep instead of running one",
    )
    args = parser.parse_args()
    if args.state is not None:
        state = json.loads(args.state.read_text())
        state["_user_limit"] = args.user_limit + 60
        rows = [summarize("predicted", state, float("nan")), same_runs_fixed(state)]
        finish(rows, args)
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="timelimit-bench-") as tmp:
        flux_dir = _start_flux(Path(tmp) / "flux") if args.scheduler == "flux" else None
        server = OurServer(Path(tmp) / "server", port=_free_port())
        server.start()
        try:
            for mode in args.modes:
                asyncio.run(fresh_models(server))
                state, took = run_sweep(server, sweep_doc(args, mode), Path(tmp) / mode)
                state["_user_limit"] = args.user_limit + 60  # the scheduler's (jobs.build_job)
                rows.append(summarize(mode, state, took))
                if mode == "predicted":
                    rows.append(same_runs_fixed(state))
        finally:
            server.stop()
            if flux_dir is not None:
                from streamml.testbed import flux

                flux.stop(flux_dir)
    finish(rows, args)


def _start_flux(state_dir: Path) -> Path | None:
    """A Flux instance for the sweeps when ``FLUX_URI`` names none (its directory, to stop)."""
    if os.environ.get("FLUX_URI"):
        return None
    from streamml.testbed import flux

    instance = flux.start(state_dir, install=flux.ensure_flux(print))
    os.environ.update(instance.env())  # FLUX_URI and the flux command on PATH, for the sweeps
    return state_dir


def finish(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print_table(rows, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    args.out.write_text(
        json.dumps(
            {
                "machine": platform.platform(),
                "load_avg": [round(x, 2) for x in load],
                "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                "runs": rows,
            },
            indent=1,
        )
        + "\n"
    )
    print(f"wrote {args.out}")


def print_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(
        f"scheduler {args.scheduler}, {args.trials} trials, parallelism {args.parallelism}, "
        f"quantile {args.quantile}, after {args.after}, user limit {args.user_limit} s"
    )
    head = f"{'mode':>18} {'runs':>5} {'limited':>7} {'killed':>6} {'killed %':>8}"
    head += f" {'median req/act':>14} {'min..max req/act':>17} {'resub':>5} {'wall s':>12}"
    print(head)
    for r in rows:
        span = f"{r['min_requested_over_actual']}..{r['max_requested_over_actual']}"
        fraction = r["killed_fraction"]
        walls = r["wall_s_range"]
        print(
            f"{r['mode']:>18} {r['runs']:>5} {r['limited_jobs']:>7} {r['killed']:>6}"
            f" {'-' if fraction is None else f'{100 * fraction:.1f}':>8}"
            f" {r['median_requested_over_actual']!s:>14} {span:>17} {r['resubmitted']:>5}"
            f" {f'{walls[0]}-{walls[1]}' if walls else '-':>12}"
        )


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


if __name__ == "__main__":
    main()
