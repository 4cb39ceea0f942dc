"""Scheduler overhead per trial, per backend, and submit-to-learned latency.

1. Overhead: N trivial jobs (``true``) through each backend (local, slurm CLI/REST, flux), all
   submitted at once, polled every 50 ms until all finish. Reported: submit call latency, submit ->
   observed-finished latency per job, and the wall time for all N divided by N (the per-trial
   cost of scheduling when the job itself costs nothing, at the backend's parallelism).
2. Submit-to-learned: one real ``streamml run-lammps`` trial (LJ 4x4x4, 20 steps) through every
   backend against a real model server, one at a time; the clock stops when the server's learn
   counter moves. Reported with LAMMPS' own loop time, so the rest is scheduling + process start-up.

Starts its own Slurm cluster (``streamml.testbed.hpc``), Flux instance (``streamml.testbed.flux``,
flux-core built once from the vendor archive) and model server in a temp dir, on free
ports; stops them at the end. Prints a table and writes ``benchmarks/results/scheduler_bench.json``.

    .venv/bin/python benchmarks/scheduler_bench.py [--jobs 40] [--repeats 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from _ourserver import PIPELINE, OurServer

from streamml.client.api import ModelServerClient
from streamml.procs import free_port
from streamml.pycommand import streamml_command
from streamml.sweep.schedulers import JobRequest, Scheduler, make_scheduler
from streamml.testbed import flux, hpc
from streamml.vocabulary.modelspec import ModelSpec

RESULTS = Path(__file__).parent / "results"
POLL_S = 0.05
SIZE = ["--var", "nx=4", "--var", "ny=4", "--var", "nz=4", "--var", "steps=20"]


async def overhead(scheduler: Scheduler, jobs: int, workdir: Path) -> dict[str, Any]:
    submit_s: list[float] = []
    submitted: dict[str, float] = {}
    t0 = time.perf_counter()
    for i in range(jobs):
        start = time.perf_counter()
        job_id = await scheduler.submit(
            JobRequest(name=f"bench-{i:04d}", command=["true"], workdir=workdir)
        )
        submit_s.append(time.perf_counter() - start)
        submitted[job_id] = start
    finished: dict[str, float] = {}
    states: dict[str, str] = {}
    while len(finished) < jobs:
        now = time.perf_counter()
        pending = [job_id for job_id in submitted if job_id not in finished]
        for job_id, status in (await scheduler.poll(pending)).items():
            if status.state.finished:
                finished[job_id] = now - submitted[job_id]
                states[job_id] = status.state.value
        if now - t0 > 600:
            raise RuntimeError(f"{scheduler.name}: jobs still running after 600 s")
        await asyncio.sleep(POLL_S)
    wall = time.perf_counter() - t0
    latencies = sorted(finished.values())
    return {
        "jobs": jobs,
        "succeeded": sum(1 for s in states.values() if s == "Succeeded"),
        "submit_ms_mean": 1000 * statistics.mean(submit_s),
        "submit_to_done_s_p50": statistics.median(latencies),
        "submit_to_done_s_p95": percentile(latencies, 95),
        "submit_to_done_s_max": latencies[-1],
        "wall_s": wall,
        "per_trial_s": wall / jobs,
    }


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation: a value that was measured)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))
    return ordered[int(rank) - 1]


async def submit_to_learned(
    scheduler: Scheduler, server: OurServer, workdir: Path, repeats: int
) -> dict[str, Any]:
    async with ModelServerClient(server.url, username=server.user, token=server.token) as client:
        samples: list[float] = []
        loops: list[float] = []
        for i in range(repeats):
            before = (await client.stats("linear")).learn.n_calls
            name = f"learn-{scheduler.name}-{i}"
            result = workdir / f"{name}.json"
            command = [*streamml_command(), "run-lammps", "--server",
                       server.url, "--trial-id", name, "--result-file", str(result),
                       *SIZE]  # fmt: skip
            env = {"STREAMML_USERNAME": server.user, "STREAMML_TOKEN": server.token}
            start = time.perf_counter()
            await scheduler.submit(JobRequest(name=name, command=command, env=env, workdir=workdir))
            while (await client.stats("linear")).learn.n_calls == before:
                if time.perf_counter() - start > 300:
                    raise RuntimeError(f"{name} never learned; see {workdir}")
                await asyncio.sleep(POLL_S)
            samples.append(time.perf_counter() - start)
            while not result.exists():  # written just after the delivery returns
                await asyncio.sleep(POLL_S)
            loops.append(float(json.loads(result.read_text())["metrics"]["loop_time"]))
    return {
        "repeats": repeats,
        "submit_to_learned_s_p50": statistics.median(samples),
        "submit_to_learned_s_p95": percentile(samples, 95),
        "submit_to_learned_s_min": min(samples),
        "submit_to_learned_s_max": max(samples),
        "lammps_loop_time_s_p50": statistics.median(loops),
    }


async def main_async(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    t = time.perf_counter()
    cluster = hpc.start(root / "slurm")
    started_s = time.perf_counter() - t
    install = flux.ensure_flux(print)
    t = time.perf_counter()
    instance = flux.start(root / "flux", install=install, detached=False)
    flux_started_s = time.perf_counter() - t
    server = OurServer(root / "server", port=free_port())
    try:
        server.start()
        async with ModelServerClient(server.url, username=server.user, token=server.token) as c:
            await c.create_model(ModelSpec.model_validate({"name": "linear", "pipeline": PIPELINE}))
        rest = {"url": cluster.rest_url, "user": "root", "token": cluster.token()}
        backends: dict[str, tuple[str, dict[str, Any]]] = {
            "local (2 slots)": ("local", {"root": str(root / "jobs"), "maxParallel": 2}),
            "slurm CLI": ("slurm", {"env": cluster.env()}),
            "slurm REST": ("slurm-rest", rest),
            "flux": ("flux", {"uri": instance.uri, "flux": str(instance.flux)}),
        }
        report: dict[str, Any] = {
            "slurm_cluster_start_s": started_s,
            "flux_instance_start_s": flux_started_s,
            "overhead": {},
            "learned": {},
        }
        for label, (kind, settings) in backends.items():
            scheduler = make_scheduler(kind, settings)
            work = root / kind
            work.mkdir(exist_ok=True)
            report["overhead"][label] = await overhead(scheduler, args.jobs, work)
            report["learned"][label] = await submit_to_learned(
                scheduler, server, work, args.repeats
            )
            await scheduler.close()
        return report
    finally:
        server.stop()
        hpc.stop(root / "slurm")
        flux.stop(root / "flux")


def table(report: dict[str, Any]) -> str:
    lines = [
        "| backend | jobs | submit call (ms) | submit->done p50 (s) | p95 (s) | wall / job (s) |",
        "|---|---|---|---|---|---|",
    ]
    for label, r in report["overhead"].items():
        lines.append(
            f"| {label} | {r['succeeded']}/{r['jobs']} | {r['submit_ms_mean']:.1f} | "
            f"{r['submit_to_done_s_p50']:.2f} | {r['submit_to_done_s_p95']:.2f} | "
            f"{r['per_trial_s']:.3f} |"
        )
    lines += [
        "",
        "| submit -> learned (LJ 4x4x4, 20 steps) | p50 (s) | p95 (s) | min (s) | max (s) "
        "| LAMMPS loop time (s) |",
        "|---|---|---|---|---|---|",
    ]
    for label, r in report["learned"].items():
        lines.append(
            f"| {label} (n={r['repeats']}) | {r['submit_to_learned_s_p50']:.2f} | "
            f"{r['submit_to_learned_s_p95']:.2f} | "
            f"{r['submit_to_learned_s_min']:.2f} | {r['submit_to_learned_s_max']:.2f} | "
            f"{r['lammps_loop_time_s_p50']:.4f} |"
        )
    lines.append(f"\nSlurm cluster start (munge+slurmctld+slurmd+slurmrestd): "
                 f"{report['slurm_cluster_start_s']:.2f} s; Flux instance start (to `run`): "
                 f"{report['flux_instance_start_s']:.2f} s")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=40, help="trivial jobs per backend")
    parser.add_argument("--repeats", type=int, default=5, help="submit-to-learned samples")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="streamml-schedbench-"))
    root.chmod(0o755)  # munged and slurmrestd (other users) must reach the Slurm state dir
    try:
        report = asyncio.run(main_async(args, root))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(table(report))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scheduler_bench.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
