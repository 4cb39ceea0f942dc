"""A 200-trial sweep on the ``local`` scheduler with a trivial job: engine + scheduler overhead.

Each trial runs ``sleep JOB_S`` and writes its result document (no LAMMPS, no server), so the
ideal wall time is ``ceil(trials / parallelism) * JOB_S``; whatever the sweep takes beyond that is
the engine's polling, the status writes before/after every submission, and process start-up.

    .venv/bin/python benchmarks/sweep_bench.py [--trials 200] [--parallelism 8] [--job-s 0.5]

Prints a table and writes ``benchmarks/results/sweep_bench.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from streamml.sweep import jobs
from streamml.sweep.engine import SweepEngine
from streamml.sweep.schedulers.local import LocalScheduler
from streamml.sweep.state import FileStore
from streamml.vocabulary.lammpssweep import LammpsSweepSpec

RESULTS = Path(__file__).parent / "results" / "sweep_bench.json"


def trivial_job(job_s: float) -> list[str]:
    # the engine appends run-lammps' options; the shell ignores them ($1...) and only uses the
    # result path the engine also passes in the environment
    script = (
        f"s=$(date +%s.%N); sleep {job_s}; e=$(date +%s.%N); "
        'printf \'{"target": 1.0, "delivered": true, "metrics": {"start": %s, "end": %s}}\' '
        '"$s" "$e" > "$STREAMML_RESULT_FILE"'
    )
    return ["/bin/sh", "-c", script, "trivial-job"]


async def one_run(trials: int, parallelism: int, job_s: float, interval: float) -> dict[str, Any]:
    spec = LammpsSweepSpec.model_validate(
        {
            "streamModelRef": {"name": "none"},
            "parameters": [{"name": "n", "type": "int", "min": 1, "max": 100_000}],
            "trials": trials,
            "parallelism": parallelism,
            "maxFailures": 0,
        }
    )
    with tempfile.TemporaryDirectory(prefix="sweep-bench-") as tmp:
        work = Path(tmp)
        store = FileStore(work / "state.json")
        saves = 0
        original = store.save

        async def counting_save(status: Any) -> None:
            nonlocal saves
            saves += 1
            await original(status)

        store.save = counting_save  # type: ignore[method-assign]
        scheduler = LocalScheduler(work / "jobs", max_parallel=parallelism)
        ctx = jobs.JobContext(
            server="http://127.0.0.1:9",
            workdir=work,
            identity="bench",
            prefix=trivial_job(job_s),
            spool=False,
        )
        engine = SweepEngine("bench", spec, scheduler, store, ctx)
        start = time.perf_counter()
        await engine.run(interval=interval)
        wall = time.perf_counter() - start
        await scheduler.close()
        status = engine.status
        assert status.phase == "Succeeded", status.phase
        spans = [json.loads(p.read_text())["metrics"] for p in work.glob("trials/*/result.json")]
        ideal = math.ceil(trials / parallelism) * job_s
        waves = math.ceil(trials / parallelism)
        job_wall = sum(m["end"] - m["start"] for m in spans) / len(spans)
        return {
            "trials": trials,
            "parallelism": parallelism,
            "job_s": job_s,
            "interval_s": interval,
            "wall_s": round(wall, 2),
            "ideal_s": round(ideal, 2),
            "efficiency": round(ideal / wall, 3),
            "job_measured_s": round(job_wall, 3),
            "first_start_to_last_end_s": round(
                max(m["end"] for m in spans) - min(m["start"] for m in spans), 2
            ),
            "overhead_per_wave_s": round((wall - ideal) / waves, 3),
            "status_writes": saves,
            "submitted": status.submitted,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--parallelism", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--job-s", type=float, default=0.5)
    parser.add_argument("--interval", type=float, nargs="+", default=[0.1, 0.5])
    args = parser.parse_args()
    rows = [
        asyncio.run(one_run(args.trials, p, args.job_s, i))
        for p in args.parallelism
        for i in args.interval
    ]
    head = f"{'trials':>6} {'par':>4} {'job s':>6} {'tick s':>6} {'wall s':>7} {'ideal s':>7}"
    head += f" {'effic.':>6} {'over/wave s':>11} {'job meas s':>10} {'writes':>6}"
    print(head)
    for r in rows:
        print(
            f"{r['trials']:>6} {r['parallelism']:>4} {r['job_s']:>6} {r['interval_s']:>6}"
            f" {r['wall_s']:>7} {r['ideal_s']:>7} {r['efficiency']:>6}"
            f" {r['overhead_per_wave_s']:>11} {r['job_measured_s']:>10} {r['status_writes']:>6}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": platform.platform(), "runs": rows}, indent=1) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
