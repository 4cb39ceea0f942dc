"""Sweep planning over huge ranges, and the per-trial cost of copying an input directory.

Planning: ``plan()`` of today's code next to the code before issue 8 (taken from git, commit
``OLD``) in paired rounds, on a range the old code can still plan (it lists every value once per
drawn point); then today's code alone on the ranges the old code could not plan at all (a list
of 10**8 values; 3e6 values x 10,000 trials; a float span of 2e15 by 1e-300).

Staging: :func:`streamml.sweep.snapshot.stage` (what each trial's ``run-lammps
--input-dir`` does) for snapshots of a few sizes.

    .venv/bin/python benchmarks/inputs_bench.py [--rounds 3]

Prints a table and writes ``benchmarks/results/inputs_bench.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from streamml import procs
from streamml.sweep import snapshot as sweep_inputs
from streamml.sweep.sampling import plan
from streamml.vocabulary.lammpssweep import LammpsSweepSpec

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "inputs_bench.json"
OLD = "1065fd7"


def spec(param: dict[str, Any], trials: int, method: str = "random") -> LammpsSweepSpec:
    return LammpsSweepSpec.model_validate(
        {"streamModelRef": {"name": "m"}, "parameters": [param], "trials": trials,
         "sampling": {"method": method, "seed": 1}}
    )  # fmt: skip


def old_sampling() -> ModuleType:
    source = procs.run(
        ["git", "show", f"{OLD}:clients/sampling.py"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    path = Path(tempfile.mkdtemp(prefix="streamml-old-sampling-")) / "old_sampling.py"
    path.write_text(source)
    loader = importlib.util.spec_from_file_location("old_sampling", path)
    assert loader is not None and loader.loader is not None
    module = importlib.util.module_from_spec(loader)
    sys.modules["old_sampling"] = module
    loader.loader.exec_module(module)
    return module


def seconds(fn: Any, *args: Any) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def planning(rounds: int) -> dict[str, Any]:
    old = old_sampling()
    shared = spec({"name": "n", "type": "int", "min": 0, "max": 3e5}, 1_000)
    pairs = [(seconds(old.plan, shared), seconds(plan, shared)) for _ in range(rounds)]
    alone = {
        "int 1..1e8, 1,000 trials (random)": spec(
            {"name": "n", "type": "int", "min": 1, "max": 1e8}, 1_000
        ),
        "int 0..3e6, 10,000 trials (random)": spec(
            {"name": "n", "type": "int", "min": 0, "max": 3e6}, 10_000
        ),
        "int 0..3e6, 10,000 trials (latinHypercube)": spec(
            {"name": "n", "type": "int", "min": 0, "max": 3e6}, 10_000, "latinHypercube"
        ),
        "float -1e15..1e15 step 1e-300, 1,000 trials": spec(
            {"name": "t", "type": "float", "min": -1e15, "max": 1e15, "step": 1e-300}, 1_000
        ),
    }
    return {
        "shared_case": "int 0..3e5, 1,000 trials (random)",
        "old_s": [a for a, _ in pairs],
        "ours_s": [b for _, b in pairs],
        "speedup_median": statistics.median(a / b for a, b in pairs),
        "ours_only_s": {
            label: statistics.median(seconds(plan, s) for _ in range(rounds))
            for label, s in alone.items()
        },
    }


def staging(rounds: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for label, files, size in (("32 KiB, 3 files", 3, 32 * 1024 // 3),
                               ("1 MiB, 10 files", 10, 100 * 1024),
                               ("16 MiB, 16 files", 16, 1024 * 1024)):  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="streamml-stage-") as tmp:
            source = Path(tmp) / "input"
            source.mkdir()
            for i in range(files):
                (source / f"f{i}").write_bytes(os.urandom(size))
            times = []
            for r in range(rounds):
                run = Path(tmp) / f"run{r}"
                run.mkdir()
                times.append(seconds(sweep_inputs.stage, source, run))
            out[label] = statistics.median(times)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    load = Path("/proc/loadavg").read_text().split()[:3]
    result = {"machine": platform.node(), "cpus": os.cpu_count(), "loadavg_before": load,
              "planning": planning(args.rounds), "staging_s": staging(args.rounds)}  # fmt: skip
    result["loadavg_after"] = Path("/proc/loadavg").read_text().split()[:3]
    p = result["planning"]
    print(f"load {' '.join(load)} -> {' '.join(result['loadavg_after'])}")
    print(f"{'planning':<48} {'old s':>8} {'ours s':>8} {'old/ours':>9}")
    print(f"{p['shared_case']:<48} {statistics.median(p['old_s']):>8.3f}"
          f" {statistics.median(p['ours_s']):>8.4f} {p['speedup_median']:>9.0f}")  # fmt: skip
    for label, value in p["ours_only_s"].items():
        print(f"{label:<48} {'(fails)':>8} {value:>8.3f}")
    print(f"\n{'staging one trial (run-lammps --input-dir)':<48} {'s':>8}")
    for label, value in result["staging_s"].items():
        print(f"{label:<48} {value:>8.4f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
