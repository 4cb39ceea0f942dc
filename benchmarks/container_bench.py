"""Container start overhead (``apptainer exec IMAGE lmp`` vs bare ``lmp``) and HPC build costs.

1. Start overhead: the same LJ run (4x4x4 cells, 20 steps: LAMMPS' own work is a few ms) bare and
   inside the LAMMPS SIF, interleaved, ``--repeats`` times each; also 2 ranks under ``flux run``
   bare and in the container (the prototype's shape, one host). Reported: wall p50/p95 per way.
2. Builds: the cold build time and installed size of flux-core and Apptainer (from their
   ``build-info.json``) and of the LAMMPS SIF, as the cache recorded them when they were built.

Uses the cached builds (builds them first if missing, which takes ~10 min each here). Prints a table
and writes ``benchmarks/results/container_bench.json``.

    .venv/bin/python benchmarks/container_bench.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from streamml import procs
from streamml.clients.lammps import default_input, lammps_env
from streamml.testbed import apptainer, flux
from streamml.testbed.vendorbuild import Build

RESULTS = Path(__file__).parent / "results"
SIZE = ["-var", "nx", "4", "-var", "ny", "4", "-var", "nz", "4", "-var", "steps", "20"]


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    procs.run(argv, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, -(-len(ordered) * 95 // 100) - 1)]


def starts(repeats: int, sif: Path, runtime: Path, instance: flux.FluxInstance) -> dict[str, Any]:
    lmp = ["lmp", "-in", str(default_input()), *SIZE, "-log", "none"]
    box = [str(runtime), "exec", str(sif)]
    bind = [str(runtime), "exec", "--bind", str(instance.prefix), str(sif)]
    frun = [str(instance.flux), "run", "--ntasks=2"]
    ways = {
        "bare lmp": lmp,
        "apptainer exec lmp": [*box, *lmp],
        "flux run -n2 lmp": [*frun, *lmp],
        "flux run -n2 apptainer exec lmp": [*frun, *bind, *lmp],
    }
    env = lammps_env({**os.environ, **instance.env()})
    samples: dict[str, list[float]] = {way: [] for way in ways}
    for argv in ways.values():
        timed(argv, env)  # warm the page cache once per way
    for _ in range(repeats):
        for way, argv in ways.items():
            samples[way].append(timed(argv, env))
    return {
        way: {"n": repeats, "p50_s": statistics.median(v), "p95_s": p95(v)}
        for way, v in samples.items()
    }


def build_costs(sif: Path) -> dict[str, Any]:
    costs: dict[str, Any] = {}
    builds: dict[str, Build | None] = {
        "flux-core": None,
        "apptainer": apptainer.cached_apptainer(),
    }
    cached = flux.cached_flux()
    if cached is not None:
        builds["flux-core"] = Build("flux-core", cached.prefix)
    for tool, build in builds.items():
        info = build.info() if build else {}
        costs[tool] = {
            "build_s": info.get("build_seconds"),
            "installed_mb": (info.get("installed_bytes") or 0) / 1e6,
            "build_tree_mb": (info.get("build_tree_bytes") or 0) / 1e6,
        }
    try:
        meta = json.loads(sif.with_suffix(".json").read_text())
    except (OSError, ValueError):
        meta = {}
    costs["lammps.sif"] = {
        "build_s": meta.get("build_seconds"),
        "installed_mb": sif.stat().st_size / 1e6,
    }
    return costs


def table(report: dict[str, Any]) -> str:
    lines = ["| way (LJ 4x4x4, 20 steps) | n | wall p50 (s) | p95 (s) |", "|---|---|---|---|"]
    for way, r in report["starts"].items():
        lines.append(f"| {way} | {r['n']} | {r['p50_s']:.2f} | {r['p95_s']:.2f} |")
    lines += [
        "",
        "| build (cold) | time (s) | installed (MB) | build tree (MB) |",
        "|---|---|---|---|",
    ]
    for tool, r in report["builds"].items():
        took = f"{r['build_s']:.0f}" if r.get("build_s") is not None else "?"
        tree = f"{r['build_tree_mb']:.0f}" if r.get("build_tree_mb") else "-"
        lines.append(f"| {tool} | {took} | {r['installed_mb']:.0f} | {tree} |")
    lines.append(f"\nload average before: {report['loadavg']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    loadavg = Path("/proc/loadavg").read_text().strip()
    runtime = apptainer.ensure_apptainer(print)
    sif = apptainer.ensure_lammps_sif(print, apptainer=runtime)
    root = Path(tempfile.mkdtemp(prefix="streamml-containerbench-"))
    instance = flux.start(root / "flux", install=flux.ensure_flux(print), detached=False)
    try:
        report = {"loadavg": loadavg, "starts": starts(args.repeats, sif, runtime, instance)}
    finally:
        flux.stop(root / "flux")
        shutil.rmtree(root, ignore_errors=True)
    report["builds"] = build_costs(sif)
    print(table(report))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "container_bench.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
