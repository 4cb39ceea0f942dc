"""The dashboard's durable state: ``dashboard.sqlite3`` in the data dir, beside the models' file.

It holds each model's metrics history (at most ``history_points`` rows per model) and the sweep
summaries published to the server. A file of its own keeps it out of the models' group commit:
the learn path never waits for it, and a data dir of an earlier release (which has no such file)
opens as it is and gains it. The same discipline as the models' file: WAL, the server's
``synchronous`` setting (``normal`` survives kill -9), one transaction per write, all writes on
one thread. A damaged file never keeps the models from serving: it is moved aside (kept, with the
time in its name) and the dashboard starts with an empty history, said once in the log.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger(__name__)

FILE = "dashboard.sqlite3"
SCHEMA = """
CREATE TABLE IF NOT EXISTS history (
    name TEXT NOT NULL, created REAL, seq INTEGER NOT NULL, time REAL NOT NULL,
    samples INTEGER NOT NULL, metrics TEXT NOT NULL, PRIMARY KEY (name, seq)
);
CREATE TABLE IF NOT EXISTS sweeps (name TEXT PRIMARY KEY, updated REAL NOT NULL, body TEXT);
"""


@dataclass(frozen=True, slots=True)
class Point:
    """One point of a model's learning curve: its metrics after ``samples`` learns."""

    seq: int
    time: float
    samples: int
    metrics: dict[str, float | None]

    def to_data(self) -> dict[str, Any]:
        return {"seq": self.seq, "time": self.time, "samples": self.samples, **self.metrics}


@dataclass(frozen=True, slots=True)
class NewPoint:
    name: str
    created: float | None
    point: Point


class DashboardStore:
    def __init__(self, data_dir: Path, *, synchronous: str, keep: int) -> None:
        self.path = data_dir / FILE
        self.synchronous = synchronous
        self.keep = keep
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dashboard")
        self._conn: sqlite3.Connection | None = None

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def open(self) -> None:
        await self._run(self._open_sync)

    def _open_sync(self) -> None:
        try:
            self._conn = self._connect()
        except sqlite3.DatabaseError as exc:
            aside = self.path.with_name(f"{FILE}.damaged-{int(time.time())}")
            self.path.rename(aside)
            for suffix in ("-wal", "-shm"):
                self.path.with_name(FILE + suffix).unlink(missing_ok=True)
            log.error("%s: %s; moved aside to %s, the history starts empty", self.path, exc, aside)
            self._conn = self._connect()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            if [row[0] for row in conn.execute("PRAGMA quick_check(1)")] != ["ok"]:
                raise sqlite3.DatabaseError("the database is damaged (SQLite quick check)")
            conn.executescript(SCHEMA)
        except BaseException:
            conn.close()
            raise
        return conn

    async def close(self) -> None:
        await self._run(self._close_sync)
        self._executor.shutdown(wait=True)

    def _close_sync(self) -> None:
        if self._conn is not None:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.close()
            self._conn = None

    # -- history -------------------------------------------------------------------------------

    async def load_history(self) -> dict[str, tuple[float | None, list[Point]]]:
        """Per model: its creation time and its newest ``keep`` points, oldest first."""
        result: dict[str, tuple[float | None, list[Point]]] = await self._run(self._load_sync)
        return result

    def _load_sync(self) -> dict[str, tuple[float | None, list[Point]]]:
        assert self._conn is not None
        out: dict[str, tuple[float | None, list[Point]]] = {}
        rows = self._conn.execute(
            "SELECT name, created, seq, time, samples, metrics FROM history ORDER BY name, seq"
        )
        for name, created, seq, when, samples, metrics in rows:
            entry = out.setdefault(name, (created, []))
            entry[1].append(Point(seq, when, samples, orjson.loads(metrics)))
        return {name: (c, points[-self.keep :]) for name, (c, points) in out.items()}

    async def write_history(self, new: list[NewPoint], forget: set[str]) -> None:
        """One transaction: the new points, the oldest beyond ``keep`` dropped, and every point
        of the models in ``forget`` (deleted, or replaced by a new model of the same name)."""
        await self._run(self._write_history_sync, new, forget)

    def _write_history_sync(self, new: list[NewPoint], forget: set[str]) -> None:
        assert self._conn is not None
        conn = self._conn
        conn.execute("BEGIN")
        try:
            conn.executemany("DELETE FROM history WHERE name = ?", [(n,) for n in sorted(forget)])
            conn.executemany(
                "INSERT OR REPLACE INTO history (name, created, seq, time, samples, metrics) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (p.name, p.created, p.point.seq, p.point.time, p.point.samples,
                     orjson.dumps(p.point.metrics).decode())
                    for p in new
                ],
            )  # fmt: skip
            newest = {p.name: p.point.seq for p in new}
            conn.executemany(
                "DELETE FROM history WHERE name = ? AND seq <= ?",
                [(name, seq - self.keep) for name, seq in newest.items()],
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    # -- sweeps --------------------------------------------------------------------------------

    async def load_sweeps(self) -> dict[str, tuple[float, str]]:
        result: dict[str, tuple[float, str]] = await self._run(self._load_sweeps_sync)
        return result

    def _load_sweeps_sync(self) -> dict[str, tuple[float, str]]:
        assert self._conn is not None
        rows = self._conn.execute("SELECT name, updated, body FROM sweeps ORDER BY updated")
        return {name: (updated, body) for name, updated, body in rows}

    async def put_sweep(self, name: str, updated: float, body: str | None) -> None:
        """Store (or with ``body`` None, delete) one sweep summary, committed before return."""
        await self._run(self._put_sweep_sync, name, updated, body)

    def _put_sweep_sync(self, name: str, updated: float, body: str | None) -> None:
        assert self._conn is not None
        if body is None:
            self._conn.execute("DELETE FROM sweeps WHERE name = ?", (name,))
        else:
            self._conn.execute(
                "INSERT OR REPLACE INTO sweeps (name, updated, body) VALUES (?, ?, ?)",
                (name, updated, body),
            )
