"""Drift detection: what it costs per learn, how soon it sees a real change, how often it cries
wolf without one.

1. Overhead, in-process, interleaved rounds: river ``learn_one`` alone, a served model's learn
   (progressive validation) with its drift watch off, and with it on (defaults).
2. Detection delay: one sweep per seed (real ``lmp``, the local scheduler, a real server learning
   ``cpu_time`` with the default watch) continues after ``--change-after`` runs with a change:
   ``--change ranks`` (two MPI ranks instead of one: how much that moves ``cpu_time`` depends on
   the load) or ``--change cutoff`` (the input script's pair cutoff 2.5 -> 5.0 sigma, the sweep
   resumed with the edited spec: ``cpu_time`` x5-6 whatever the load); the delay is the runs
   learned from the first changed run up to the detection (1 = the first changed run completed it).
3. False alarms: the same sweep with no change, ``--steady-trials`` runs per seed; detections per
   100 runs.

    nice -n 19 .venv/bin/python -P benchmarks/drift_bench.py [--seeds 3] [--steady-trials 50] \
        [--change ranks|cutoff]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _report (also with -P)
sys.path.append(str(Path(__file__).resolve().parents[1]))  # tests.fixtures (after the stdlib)

import requests
from _report import write_result
from river import linear_model, preprocessing

from streamml.modelserver.drift import DriftWatch
from streamml.modelserver.learning import ModelState, default_metrics
from streamml.modelserver.records import Prediction
from streamml.sweep.access import ServerAccess
from tests.fixtures.drift import LONGER_CUTOFF, MODEL, MORE_RANKS, PIPELINE, run_drift_sweep
from tests.fixtures.server import ServerProcess, running_server

RESULT = Path(__file__).parent / "results" / "drift_bench.json"
#: the changes ``--change`` names (tests/fixtures/drift.py)
CHANGES: dict[str, dict[str, Any]] = {"ranks": MORE_RANKS, "cutoff": LONGER_CUTOFF}
OVERHEAD = Path(__file__).parent / "results" / "drift_bench_overhead.json"


# -- 1. overhead ----------------------------------------------------------------------------------


def _samples(n: int) -> list[tuple[dict[str, float], float]]:
    rng = random.Random(0)
    out = []
    for _ in range(n):
        x = {"nx": rng.uniform(4, 8), "ny": rng.uniform(4, 8), "atoms": rng.uniform(200, 2000)}
        out.append((x, 1e-5 * x["atoms"] + rng.gauss(0, 0.001)))
    return out


def _per_learn_us(kind: str, data: list[tuple[dict[str, float], float]]) -> float:
    model = preprocessing.StandardScaler() | linear_model.LinearRegression()
    start = time.perf_counter()
    if kind == "learn_one":
        for x, y in data:
            model.learn_one(x, y)
    else:
        state = ModelState(
            "m",
            "regression",
            model,
            metrics=default_metrics("regression"),
            drift=DriftWatch.from_settings(None) if kind == "watch on" else None,
        )
        for x, y in data:
            state.learn(x, y)
    return (time.perf_counter() - start) / len(data) * 1e6


def _hook_us(data: list[tuple[dict[str, float], float]]) -> float:
    """The drift hook alone (error, watch), per scored learn: what the watch adds to a learn."""
    state = ModelState("m", "regression", None, drift=DriftWatch.from_settings(None))
    scored = [(y, Prediction(y * 1.1)) for _, y in data]
    watch = state._watch
    start = time.perf_counter()
    for y, prediction in scored:
        watch(y, prediction)
    return (time.perf_counter() - start) / len(scored) * 1e6


def overhead(rounds: int, n: int) -> dict[str, Any]:
    data = _samples(n)
    kinds = ["learn_one", "watch off", "watch on"]
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for r in range(rounds):
        for kind in kinds if r % 2 == 0 else reversed(kinds):  # alternate who goes first
            times[kind].append(_per_learn_us(kind, data))
    ratios = [on / off for on, off in zip(times["watch on"], times["watch off"], strict=True)]
    hooks = [_hook_us(data) for _ in range(rounds)]
    return {
        "median_us": {k: statistics.median(v) for k, v in times.items()},
        "on_over_off_median": statistics.median(ratios),
        "on_over_off_range": [min(ratios), max(ratios)],
        "hook_us_median": statistics.median(hooks),
        "hook_share_of_learn": statistics.median(hooks) / statistics.median(times["watch off"]),
        "rounds": rounds,
        "learns_per_round": n,
    }


# -- 2. and 3. real sweeps --------------------------------------------------------------------


def _fresh_model(server: ServerProcess) -> None:
    headers = server.auth_header()
    requests.delete(f"{server.url}/api/model/", data={"model": MODEL}, headers=headers, timeout=30)
    r = requests.post(
        f"{server.url}/api/model/regression/{MODEL}/",
        json={"pipeline": PIPELINE},  # the default watch
        headers=headers,
        timeout=30,
    )
    r.raise_for_status()


async def sweeps(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    delays: list[dict[str, Any]] = []
    steady: list[dict[str, Any]] = []
    with running_server(work / "server") as server:
        access = ServerAccess(server.url, server.username, server.token)
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            _fresh_model(server)
            run = await run_drift_sweep(
                access,
                work / f"change-{seed}",
                trials=args.change_after + args.after,
                change_after=args.change_after,
                seed=seed,
                name=f"change{seed}",
                change=CHANGES[args.change],
            )
            assert run.changed_at is not None
            before = [n for n in run.notes if n.detected_after_trials < run.changed_at]
            after = [n for n in run.notes if n.detected_after_trials >= run.changed_at]
            delay = after[0].detected_after_trials - run.changed_at + 1 if after else None
            delays.append({
                "seed": seed, "changed_at": run.changed_at, "delay_runs": delay,
                "alarms_before_change": len(before),
                "first_trial_after": after[0].first_trial_after if after else None,
                "magnitude": after[0].magnitude if after else None,
                "cpu_time_ratio": run.change_ratio(),
            })  # fmt: skip
            print(f"seed {seed}: change at run {run.changed_at}, delay {delay} runs", flush=True)
            _fresh_model(server)
            run = await run_drift_sweep(
                access,
                work / f"steady-{seed}",
                trials=args.steady_trials,
                change_after=None,
                seed=seed,
                name=f"steady{seed}",
            )
            steady.append({"seed": seed, "runs": run.learned, "alarms": len(run.notes)})
            print(f"seed {seed}: {len(run.notes)} alarms in {run.learned} steady runs", flush=True)
    runs = sum(s["runs"] for s in steady)
    alarms = sum(s["alarms"] for s in steady)
    found = [d["delay_runs"] for d in delays if d["delay_runs"] is not None]
    return {
        "detection": delays,
        "steady": steady,
        "false_alarms_per_100_runs": 100.0 * alarms / runs if runs else None,
        "detected": f"{len(found)}/{len(delays)}",
        "delay_runs_median": statistics.median(found) if found else None,
        "delay_runs_max": max(found) if found else None,
    }


def table(result: dict[str, Any]) -> str:
    o = result["overhead"]
    lines = [
        "per learn (in-process, median of rounds)      µs",
        *(f"  {k:<44}{v:8.1f}" for k, v in o["median_us"].items()),
        f"  watch on / watch off (median of rounds)     {o['on_over_off_median']:8.3f}",
        f"  the drift hook alone (error + watch)        {o['hook_us_median']:8.2f}",
        f"  hook / learn with the watch off             {o['hook_share_of_learn']:8.3f}",
    ]
    s = result.get("sweeps")
    if s:
        lines += [
            "",
            "seed  change at run  delay (runs)  alarms before  steady runs  steady alarms",
            *(
                f"{d['seed']:>4}  {d['changed_at']:>13}  {d['delay_runs']!s:>12}  "
                f"{d['alarms_before_change']:>13}  {t['runs']:>11}  {t['alarms']:>13}"
                for d, t in zip(s["detection"], s["steady"], strict=True)
            ),
            f"detected {s['detected']}; delay median {s['delay_runs_median']} runs, max "
            f"{s['delay_runs_max']}; false alarms per 100 steady runs: "
            f"{s['false_alarms_per_100_runs']}",
        ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--steady-trials", type=int, default=50)
    parser.add_argument("--change-after", type=int, default=30)
    parser.add_argument("--after", type=int, default=15, help="runs after the change")
    parser.add_argument("--change", choices=sorted(CHANGES), default="ranks")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--learns", type=int, default=5000)
    parser.add_argument("--overhead-only", action="store_true")
    args = parser.parse_args()
    result: dict[str, Any] = {"overhead": overhead(args.rounds, args.learns), "change": args.change}
    if not args.overhead_only:
        with tempfile.TemporaryDirectory(prefix="drift-bench-") as tmp:
            result["sweeps"] = asyncio.run(sweeps(args, Path(tmp)))
    result["loadavg"] = Path("/proc/loadavg").read_text().strip()
    print(table(result))
    sweeps_result = (
        RESULT if args.change == "ranks" else RESULT.with_stem(f"drift_bench_{args.change}")
    )
    write_result(OVERHEAD if args.overhead_only else sweeps_result, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
