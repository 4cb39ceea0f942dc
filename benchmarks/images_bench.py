"""Images benchmark: build time and size of the server, operator and LAMMPS-job images.

``--cold`` first removes this project's image tars and metadata for the current sources (not the
base tar, not the buildah storage's base, nothing else of ``~/.cache/streamml``) so that every
image is built again from its Dockerfile; without it the cached figures are reported. The build
time is the one each build recorded (``buildah bud`` + ``buildah push``; the first image built
also pays for importing the base). Prints a table and writes ``benchmarks/results/images.json``.

Usage: ``nice -n 19 .venv/bin/python benchmarks/images_bench.py [--cold]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamml.testbed import imagebuild  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true", help="rebuild every image first")
    args = parser.parse_args()
    if args.cold:
        for name in imagebuild.IMAGE_NAMES:
            found = imagebuild.cached_image(name)
            if found is not None:
                found.tar.unlink()
                found.tar.with_suffix(".json").unlink()
    started = time.monotonic()
    built = imagebuild.ensure_images(imagebuild.IMAGE_NAMES)
    wall = time.monotonic() - started
    base = imagebuild.images_dir() / f"base-python-{imagebuild.base_key()}.tar"
    rows = [
        {"image": i.ref, "build_s": i.build_seconds, "tar_mib": round(i.bytes / 2**20, 1)}
        for i in built.values()
    ]
    print(f"{'IMAGE':34} {'BUILD s':>8} {'TAR MiB':>8}")
    for row in rows:
        print(f"{row['image']:34} {row['build_s']:8.0f} {row['tar_mib']:8.0f}")
    base_mib = round(base.stat().st_size / 2**20, 1) if base.is_file() else None
    print(f"base (mmdebstrap) tar: {base_mib} MiB; wall of this run {wall:.0f} s")
    loadavg = Path("/proc/loadavg").read_text().split()[:3]
    result = {"images": rows, "base_tar_mib": base_mib, "wall_s": round(wall, 1),
              "cold": args.cold, "loadavg_after": loadavg}  # fmt: skip
    out = ROOT / "benchmarks" / "results" / "images.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
