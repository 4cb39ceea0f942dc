"""What the data-dir checks add to opening the store at start-up.

Opening used to be: connect, set WAL mode, create the tables if missing, read the highest sequence
number. Now it first checks the directory and the database header, walks the WAL (checksums, and
the writer's frame count in -shm) and runs SQLite's ``quick_check``. This measures both on data
dirs of growing size, with the WAL a ``kill -9`` leaves (``--wal-frames`` frames, its -shm beside
it) and without one (after a graceful stop), in paired rounds (old then new, on the same files).

Prints a table and writes ``benchmarks/results/startup_checks.json``.

    .venv/bin/python -P benchmarks/startup_checks_bench.py [--sizes-mb 10,100] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from streamml.modelserver.datadir import inspect_wal
from streamml.modelserver.storage import SCHEMA, Storage

BLOB = 256 * 1024  # one snapshot row


def build(directory: Path, size_mb: int, wal_frames: int) -> None:
    """``size_mb`` of snapshot rows checkpointed into the file, then about ``wal_frames`` frames
    of learn-log rows left in the WAL with its -shm, as a killed server leaves them."""
    db = directory / "streamml.sqlite3"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(SCHEMA)
    for i in range(size_mb * 1024 * 1024 // BLOB):
        conn.execute("INSERT INTO snapshots VALUES (?, ?, ?)", (f"m{i}", i, os.urandom(BLOB)))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    seq = 10**6
    while (db.with_name(db.name + "-wal").stat().st_size - 32) // 4120 < wal_frames:
        conn.execute("BEGIN")
        for _ in range(20):
            seq += 1
            conn.execute("INSERT INTO learn_log VALUES (?, 'm0', ?)", (seq, os.urandom(200)))
        conn.execute("COMMIT")
    for suffix in ("", "-wal", "-shm"):  # copy while the writer is open: what kill -9 leaves
        shutil.copyfile(f"{db}{suffix}", directory / f"kept{suffix}")
    conn.close()


def restore(directory: Path, with_wal: bool) -> Path:
    db = directory / "streamml.sqlite3"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
        if with_wal or not suffix:
            shutil.copyfile(directory / f"kept{suffix}", f"{db}{suffix}")
    if not with_wal:  # as after a graceful stop: the WAL folded into the file
        conn = sqlite3.connect(db)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
    return db


def open_old(db: Path) -> float:
    start = time.perf_counter()
    conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(SCHEMA)
    conn.execute("SELECT max(seq) FROM learn_log").fetchone()
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


def open_new(db: Path) -> tuple[float, float]:
    storage = Storage(db.parent, synchronous="NORMAL")
    start = time.perf_counter()
    inspect_wal(db, keep_copy=False)
    walk = time.perf_counter() - start
    start = time.perf_counter()
    storage._open_sync(False)  # the whole open: checks, WAL walk, connect, quick_check
    elapsed = time.perf_counter() - start
    storage._close_sync()
    return elapsed, walk


def measure(size_mb: int, wal_frames: int, rounds: int) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="startup-bench-") as tmp:
        directory = Path(tmp)
        build(directory, size_mb, wal_frames)
        for with_wal in (True, False):
            old, new, walks = [], [], []
            for _ in range(rounds):
                old.append(open_old(restore(directory, with_wal)))
                elapsed, walk = open_new(restore(directory, with_wal))
                new.append(elapsed)
                walks.append(walk)
            rows.append(
                {
                    "size_mb": size_mb,
                    "wal": f"{wal_frames} frames" if with_wal else "none",
                    "old_ms": 1000 * statistics.median(old),
                    "new_ms": 1000 * statistics.median(new),
                    "wal_walk_ms": 1000 * statistics.median(walks),
                    "added_ms": 1000 * statistics.median(map(float.__sub__, new, old)),
                }
            )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mb", default="10,100")
    parser.add_argument("--wal-frames", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    for size in (int(s) for s in args.sizes_mb.split(",")):
        rows += measure(size, args.wal_frames, args.rounds)
    heads = ("data dir", "WAL", "old open", "new open", "WAL walk", "added")
    print(" ".join(f"{h:>{w}}" for h, w in zip(heads, (9, 12, 10, 10, 10, 9), strict=True)))
    for r in rows:
        print(
            f"{r['size_mb']:>6} MB {r['wal']:>12} {r['old_ms']:>8.1f}ms {r['new_ms']:>8.1f}ms "
            f"{r['wal_walk_ms']:>8.1f}ms {r['added_ms']:>7.1f}ms"
        )
    out = Path(__file__).resolve().parent / "results" / "startup_checks.json"
    load = Path("/proc/loadavg").read_text().split()[:3]
    out.write_text(json.dumps({"rows": rows, "loadavg": load}, indent=1) + "\n")
    print(f"loadavg {' '.join(load)}; wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
