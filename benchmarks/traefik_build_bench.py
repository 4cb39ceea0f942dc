"""Traefik's cold build with and without the project's patch (lego's DNS providers left out).

Each variant is built by the project's own ``nodebuild.ensure(traefik_target())`` in a child
process with an empty Go build cache and an empty ``STREAMML_CACHE_DIR`` of its own (the Go
module cache is shared: downloads are not what this measures). Reported per variant: packages
compiled, wall time, and CPU time (user + sys of the child and everything it waited for, which
on a shared machine moves much less than wall time), and the binary's size; then the ratios.
The variants run one after the other, patched first, in one invocation.

    .venv/bin/python -P benchmarks/traefik_build_bench.py

Prints a table and writes ``benchmarks/results/traefik_build_bench.json``.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _report import write_result  # noqa: E402

from streamml import procs  # noqa: E402

RESULTS = HERE / "results" / "traefik_build_bench.json"
CHILD = """
import sys
from streamml.testbed import nodebuild
if sys.argv[1] == "unpatched":
    nodebuild.TRAEFIK_PATCHES = ()
target = nodebuild.ensure(nodebuild.traefik_target(), progress=print)
print("SIZE", target.path("traefik").stat().st_size)
"""


def build(variant: str, scratch: Path) -> dict[str, Any]:
    env = dict(os.environ)
    env["STREAMML_CACHE_DIR"] = str(scratch / variant / "cache")
    env["GOCACHE"] = str(scratch / variant / "go-build")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    out = procs.run(
        [sys.executable, "-P", "-c", CHILD, variant],
        env=env,
        cwd=scratch,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise SystemExit(f"{variant} build failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    packages = re.search(r"compiling (\d+) packages", out.stdout)
    size = re.search(r"^SIZE (\d+)$", out.stdout, re.M)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "variant": variant,
        "packages": int(packages.group(1)) if packages else None,
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "binary_mb": round(int(size.group(1)) / 2**20, 1) if size else None,
    }


def main() -> None:
    load_before = os.getloadavg()
    scratch = Path(tempfile.mkdtemp(prefix="traefik-bench-"))
    try:
        rows = [build(variant, scratch) for variant in ("patched", "unpatched")]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    load_after = os.getloadavg()
    patched, unpatched = rows
    ratios = {
        key: round(unpatched[key] / patched[key], 2)
        for key in ("packages", "wall_s", "cpu_s")
        if patched[key] and unpatched[key]
    }
    print(f"{'variant':<10} {'packages':>9} {'wall s':>8} {'CPU s':>8} {'binary MB':>10}")
    for row in rows:
        print(
            f"{row['variant']:<10} {row['packages']:>9} {row['wall_s']:>8} {row['cpu_s']:>8} "
            f"{row['binary_mb']:>10}"
        )
    print("unpatched / patched: " + ", ".join(f"{k} {v}x" for k, v in ratios.items()))
    print(f"load average before {load_before}, after {load_after}")
    write_result(
        RESULTS,
        {
            "date": datetime.now().isoformat(timespec="seconds"),
            "load_before": load_before,
            "load_after": load_after,
            "rows": rows,
            "unpatched_over_patched": ratios,
        },
    )


if __name__ == "__main__":
    main()
