"""Submit -> learned for the prototype's resource shape, ``flux run -N6 --ntasks 48``, on Flux.

One Flux instance of 6 brokers with a fake resource set of 8 cores each
(``streamml.testbed.flux.start(size=6, fake_cores=8)``) and one real model server. Each shape's
job is built from a LammpsSweep spec by the sweep engine's own builder (``build_job``:
``resources.nodes``, ``lammps.mpiProcs``), submitted through the flux scheduler; the clock stops
when the server's learn counter moves. Shapes are interleaved, one trial at a time, so they share
the machine's load alike: serial (``flux submit -n1``), ``-N1 -n2`` and ``-N6 -n48`` (48 real
LAMMPS ranks on this host's cores). Reported with LAMMPS' loop time and its rank count.

    .venv/bin/python benchmarks/flux_shape_bench.py [--repeats 3]

Prints a table and writes ``benchmarks/results/flux_shape_bench.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from _ourserver import PIPELINE, OurServer
from scheduler_bench import percentile

from streamml.client.api import ModelServerClient
from streamml.sweep.jobs import JobContext, build_job
from streamml.sweep.sampling import plan
from streamml.sweep.schedulers import make_scheduler
from streamml.testbed import flux, hpc
from streamml.vocabulary.lammpssweep import LammpsSweepSpec
from streamml.vocabulary.modelspec import ModelSpec

RESULTS = Path(__file__).parent / "results"
POLL_S = 0.1
NODES, CORES = 6, 8
#: label -> (mpiProcs, resources.nodes)
SHAPES: dict[str, tuple[int, int | None]] = {
    "serial (-n1)": (1, None),
    "-N1 -n2": (2, 1),
    "-N6 -n48 (the prototype's)": (48, 6),
}


def shape_spec(procs: int, nodes: int | None) -> LammpsSweepSpec:
    return LammpsSweepSpec.model_validate({
        "streamModelRef": {"name": "bench"},
        "parameters": [{"name": "nx", "type": "int", "min": 4, "max": 5}],
        "trials": 64,
        "lammps": {"mpiProcs": procs, "vars": {"ny": "4", "nz": "4", "steps": "20"}},
        "resources": {"cpus": 1, "nodes": nodes, "timeLimitSeconds": 1200},
        "scheduler": {"type": "flux"},
    })  # fmt: skip


async def one_trial(
    label: str, trial: int, server: OurServer, instance: flux.FluxInstance, root: Path
) -> dict[str, Any]:
    procs, nodes = SHAPES[label]
    spec = shape_spec(procs, nodes)
    key = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")
    ctx = JobContext(
        server=server.url, workdir=root / key, identity=f"bench-{key}", models=["linear"],
        env={"STREAMML_USERNAME": server.user, "STREAMML_TOKEN": server.token},
    )  # fmt: skip
    job = build_job(spec, ctx, trial=trial, attempt=1, point=plan(spec)[trial], test=False,
                    sweep=key)  # fmt: skip
    assert job.workdir is not None
    job.workdir.mkdir(parents=True, exist_ok=True)
    scheduler = make_scheduler("flux", {"uri": instance.uri, "flux": str(instance.flux)})
    async with ModelServerClient(server.url, username=server.user, token=server.token) as client:
        before = (await client.stats("linear")).learn.n_calls
        start = time.perf_counter()
        await scheduler.submit(job)
        while (await client.stats("linear")).learn.n_calls == before:
            if time.perf_counter() - start > 1500:
                raise RuntimeError(f"{job.name} never learned; see {job.workdir}")
            await asyncio.sleep(POLL_S)
        learned = time.perf_counter() - start
    result = job.workdir / "result.json"
    while not result.exists():  # written just after the delivery returns
        await asyncio.sleep(POLL_S)
    log = (job.workdir / "lammps.log").read_text()
    ranks = re.search(r"Loop time of \S+ on (\d+) procs", log)
    return {
        "learned_s": learned,
        "loop_time_s": float(json.loads(result.read_text())["metrics"]["loop_time"]),
        "ranks": int(ranks.group(1)) if ranks else None,
        "tasks": job.tasks,
        "nodes": job.nodes,
    }


async def main_async(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    install = flux.ensure_flux(print)
    t = time.perf_counter()
    instance = flux.start(root / "flux", size=NODES, fake_cores=CORES, install=install,
                          detached=False, timeout_s=600)  # fmt: skip
    started_s = time.perf_counter() - t
    server = OurServer(root / "server", port=hpc.free_port())
    samples: dict[str, list[dict[str, Any]]] = {label: [] for label in SHAPES}
    try:
        server.start()
        async with ModelServerClient(server.url, username=server.user, token=server.token) as c:
            await c.create_model(ModelSpec.model_validate({"name": "linear", "pipeline": PIPELINE}))
        for i in range(args.repeats):
            for label in SHAPES:
                samples[label].append(await one_trial(label, i, server, instance, root))
                print(label, samples[label][-1], flush=True)
    finally:
        server.stop()
        flux.stop(root / "flux")
    report: dict[str, Any] = {"flux_instance_start_s": started_s, "nodes": NODES,
                              "cores_per_node": CORES, "shapes": {}}  # fmt: skip
    for label, rows in samples.items():
        times = [r["learned_s"] for r in rows]
        report["shapes"][label] = {
            "repeats": len(rows),
            "tasks": rows[0]["tasks"],
            "nodes": rows[0]["nodes"],
            "ranks": sorted({r["ranks"] for r in rows}),
            "submit_to_learned_s_p50": statistics.median(times),
            "submit_to_learned_s_p95": percentile(times, 95),
            "submit_to_learned_s_min": min(times),
            "submit_to_learned_s_max": max(times),
            "lammps_loop_time_s_p50": statistics.median(r["loop_time_s"] for r in rows),
            "samples": rows,
        }
    return report


def table(report: dict[str, Any]) -> str:
    lines = [
        "| shape (LJ 4x4x4, 20 steps) | tasks | nodes | LAMMPS ranks | n | submit->learned p50 (s) "
        "| p95 (s) | min (s) | max (s) | LAMMPS loop time p50 (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, r in report["shapes"].items():
        lines.append(
            f"| {label} | {r['tasks']} | {r['nodes'] or '-'} | "
            f"{','.join(str(n) for n in r['ranks'])} | {r['repeats']} | "
            f"{r['submit_to_learned_s_p50']:.2f} | {r['submit_to_learned_s_p95']:.2f} | "
            f"{r['submit_to_learned_s_min']:.2f} | {r['submit_to_learned_s_max']:.2f} | "
            f"{r['lammps_loop_time_s_p50']:.4f} |"
        )
    lines.append(f"\nFlux instance start ({report['nodes']} brokers x "
                 f"{report['cores_per_node']} fake cores, to `run`): "
                 f"{report['flux_instance_start_s']:.2f} s")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="trials per shape")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="streamml-fluxshape-"))
    try:
        report = asyncio.run(main_async(args, root))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(table(report))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "flux_shape_bench.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
