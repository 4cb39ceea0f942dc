"""Durable state in one SQLite file (WAL): model definitions, snapshots and an append-only learn
log, written with group commit.

Every write goes through one FIFO queue. The flusher takes everything queued, writes it in ONE
transaction (in the storage thread; with ``synchronous=NORMAL`` a batch of only learn-log
records is committed on the event loop itself, cheaper than the hand-off) and only then
resolves the callers' futures: a learn is acknowledged after its commit, and many concurrent
learns share one fsync. Because the queue order is the order in which the event loop applied
the learns, every commit is a consistent prefix: a snapshot taken at sequence S is committed
together with (or after) every record <= S.

A commit that fails fails everything queued behind it as well (it was applied in memory on top
of the failed writes) and first calls ``on_failure`` with the models involved, so that the
service returns them to their durable state: an error reply always means "not applied".

Snapshots are pickles that this server wrote of its own in-memory state (model, metrics, stats,
identifiers); uploaded user bytes are never stored or unpickled at start-up.

Opening checks the data dir first (``datadir``): a file that is not a directory or not a database,
a damaged WAL, or pages that fail SQLite's integrity check end in a one-line
:class:`~streamml.modelserver.datadir.DataDirError` naming the file, never a traceback. The reads
return every row there is, including rows of no model (``StoredState.orphans``), so that
recovery can report what it cannot load instead of dropping it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamml.errors import StreamMLError
from streamml.modelserver import datadir
from streamml.modelserver.datadir import DataDirError, WalReport

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    name TEXT PRIMARY KEY, flavor TEXT NOT NULL, origin TEXT NOT NULL, spec TEXT, created REAL
);
CREATE TABLE IF NOT EXISTS snapshots (name TEXT PRIMARY KEY, seq INTEGER NOT NULL, blob BLOB);
CREATE TABLE IF NOT EXISTS learn_log (
    seq INTEGER PRIMARY KEY, name TEXT NOT NULL, body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS learn_log_name ON learn_log (name, seq);
"""


class StorageError(StreamMLError):
    """The data directory could not be written (the request was not made durable)."""


def _sqlite_message(exc: sqlite3.DatabaseError) -> str:
    """SQLite's own words, with what they mean for a data dir."""
    text = str(exc)
    if "file is not a database" in text:
        return f"{text}: the file is damaged, or it is not a streamml data dir"
    if "malformed" in text:
        return f"{text}: pages of the file are corrupted"
    if "no such column" in text or "no such table" in text:
        return f"{text}: this is not a streamml data dir (its tables differ)"
    return text


@dataclass(frozen=True)
class StoredModel:
    name: str
    flavor: str
    origin: str
    spec: str | None
    snapshot_seq: int | None  # None: the model has no snapshot row
    snapshot: bytes | None


@dataclass(frozen=True)
class Orphan:
    """Rows of a name that has no row in ``models`` (its definition was deleted or lost)."""

    name: str
    has_snapshot: bool
    log_rows: int


@dataclass(frozen=True)
class StoredState:
    models: list[StoredModel]
    orphans: list[Orphan] = field(default_factory=list)


# Operations queued for the storage thread (plain tuples keep the hot path cheap):
#   ("log", seq, name, body) | ("create", name, flavor, origin, spec, created, seq, blob)
#   ("snapshot", name, seq, blob) | ("delete", name) | ("abort", name): fails its commit
Op = tuple[Any, ...]


def op_model(op: Op) -> str:
    """The model an operation writes."""
    return str(op[2] if op[0] == "log" else op[1])


def failure_reason(exc: BaseException) -> str:
    """SQLite's own words (``database or disk is full``), not a follow-up error's."""
    return str(exc) or type(exc).__name__


class Storage:
    def __init__(self, data_dir: Path, *, synchronous: str = "FULL") -> None:
        self.path = data_dir / "streamml.sqlite3"
        self.synchronous = synchronous
        # Without fsync (NORMAL) a commit of a few learns takes ~60 us: cheaper to do on the
        # event loop than to hand each group commit to the thread (measured ~31% of the loop).
        # FULL fsyncs (~6 ms), and snapshots/deletes can be large: those stay on the thread.
        self.inline_logs = synchronous.upper() != "FULL"
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="storage")
        self._conn: sqlite3.Connection | None = None
        self._queue: list[tuple[Op, asyncio.Future[None] | None]] = []
        self._wakeup = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._closing = False
        self.commits = 0
        self.seq = 0
        #: what the WAL held at open (and what SQLite was about to drop of it)
        self.wal: WalReport | None = None
        self._scratch: tempfile.TemporaryDirectory[str] | None = None
        self._lock: int | None = None
        #: called (on the event loop, before any waiter resumes) with the models whose queued
        #: writes were all discarded after a failed commit, so that memory can return to what
        #: is durable; see :meth:`_fail_queued`
        self.on_failure: Callable[[set[str]], None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self, *, check_only: bool = False) -> None:
        """Open (creating the data dir if needed) and start the flusher. ``check_only`` opens a
        copy of an existing data dir instead, leaving the files as they are, and runs SQLite's
        full integrity check (``streamml serve --check``); nothing can be written then."""
        await self._run(self._open_sync, check_only)
        if not check_only:
            self._flusher = asyncio.create_task(self._flush_loop(), name="storage-flusher")

    def _open_sync(self, check_only: bool) -> None:
        datadir.check_directory(self.path.parent, create=not check_only)
        self._lock = datadir.lock(self.path.parent, exclusive=not check_only)
        try:
            self._open_locked(check_only)
        except BaseException:
            self._close_sync()
            raise

    def _unlock(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # closing the descriptor releases the flock
            self._lock = None

    def _open_locked(self, check_only: bool) -> None:
        datadir.check_database_file(self.path)
        self.wal = datadir.inspect_wal(self.path, keep_copy=not check_only)
        if self.wal is not None and self.wal.problem is not None:
            kept = f" (a copy is kept as {self.wal.kept})" if self.wal.kept else ""
            log.warning("%s: %s%s", self.wal.path, self.wal.problem, kept)
        target = self.path
        if check_only:
            if not self.path.exists():
                raise DataDirError(f"{self.path} does not exist: no data dir to check")
            target = self._copy_for_check()
        try:
            self._conn = self._connect(target, "integrity_check" if check_only else "quick_check")
        except sqlite3.DatabaseError as exc:
            raise DataDirError(f"{self.path}: {_sqlite_message(exc)}") from None

    def _copy_for_check(self) -> Path:
        self._scratch = tempfile.TemporaryDirectory(prefix="streamml-check-")
        copy = Path(self._scratch.name) / self.path.name
        for suffix in ("", "-wal"):
            source = self.path.with_name(self.path.name + suffix)
            if source.exists():
                shutil.copyfile(source, copy.with_name(copy.name + suffix))
        return copy

    def _connect(self, path: Path, check: str) -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            findings = [row[0] for row in conn.execute(f"PRAGMA {check}(5)")]
            if findings != ["ok"]:
                raise sqlite3.DatabaseError(
                    "the database is damaged (SQLite integrity check: "
                    + "; ".join(str(f) for f in findings)
                    + ")"
                )
            conn.executescript(SCHEMA)
            row = conn.execute(
                "SELECT max(s) FROM (SELECT max(seq) AS s FROM learn_log "
                "UNION ALL SELECT max(seq) FROM snapshots)"
            ).fetchone()
        except BaseException:
            conn.close()
            raise
        self.seq = int(row[0] or 0)
        return conn

    async def close(self) -> None:
        """Flush everything queued, then close (graceful shutdown)."""
        self._closing = True
        self._wakeup.set()
        if self._flusher is not None:
            await self._flusher
        await self._run(self._close_sync)
        self._executor.shutdown(wait=True)

    def _close_sync(self) -> None:
        if self._conn is not None:
            if self._scratch is None:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.close()
            self._conn = None
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None
        self._unlock()

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # -- reads (start-up only) ---------------------------------------------------------------

    async def load_stored(self) -> StoredState:
        result: StoredState = await self._read(self._load_stored_sync)
        return result

    def _load_stored_sync(self) -> StoredState:
        assert self._conn is not None
        rows = self._conn.execute(
            "SELECT m.name, m.flavor, m.origin, m.spec, s.seq, s.blob FROM models m "
            "LEFT JOIN snapshots s ON s.name = m.name ORDER BY m.created, m.name"
        ).fetchall()
        orphans = self._conn.execute(
            "SELECT name, max(snap), sum(logs) FROM ("
            " SELECT name, 1 AS snap, 0 AS logs FROM snapshots"
            " UNION ALL SELECT name, 0, count(*) FROM learn_log GROUP BY name"
            ") WHERE name NOT IN (SELECT name FROM models) GROUP BY name ORDER BY name"
        ).fetchall()
        return StoredState(
            [StoredModel(*row) for row in rows],
            [Orphan(name, bool(snap), int(logs)) for name, snap, logs in orphans],
        )

    def load_model_sync(self, name: str) -> StoredModel | None:
        """One model as it is durable now (only while no commit is running: the rollback)."""
        assert self._conn is not None
        row = self._conn.execute(
            "SELECT m.name, m.flavor, m.origin, m.spec, s.seq, s.blob FROM models m "
            "JOIN snapshots s ON s.name = m.name WHERE m.name = ?",
            (name,),
        ).fetchone()
        return None if row is None else StoredModel(*row)

    async def log_after(self, name: str, seq: int) -> list[tuple[int, bytes]]:
        """The learn-log rows (seq, body) of one model after its snapshot, in order."""
        result: list[tuple[int, bytes]] = await self._read(self._log_after_sync, name, seq)
        return result

    def log_after_sync(self, name: str, seq: int) -> list[tuple[int, bytes]]:
        return self._log_after_sync(name, seq)

    def _log_after_sync(self, name: str, seq: int) -> list[tuple[int, bytes]]:
        assert self._conn is not None
        cursor = self._conn.execute(
            "SELECT seq, body FROM learn_log WHERE name = ? AND seq > ? ORDER BY seq", (name, seq)
        )
        return [(int(row[0]), row[1]) for row in cursor]

    async def _read(self, fn: Any, *args: Any) -> Any:
        try:
            return await self._run(fn, *args)
        except sqlite3.DatabaseError as exc:
            raise DataDirError(f"{self.path}: {_sqlite_message(exc)}") from None

    # -- writes --------------------------------------------------------------------------------

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def submit(self, ops: list[Op], *, wait: bool = True) -> asyncio.Future[None] | None:
        """Queue operations in order; the future resolves once they are committed."""
        if self._closing:
            raise StorageError("the server is shutting down")
        future = asyncio.get_running_loop().create_future() if wait else None
        last = len(ops) - 1
        for i, op in enumerate(ops):
            self._queue.append((op, future if i == last else None))
        self._wakeup.set()
        return future

    async def _flush_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            if self.inline_logs:
                # one more loop turn first: requests whose bytes arrived in the same poll queue
                # their learns too, so each commit holds more of them
                await asyncio.sleep(0)
            self._wakeup.clear()
            while self._queue:
                batch, self._queue = self._queue, []
                ops = [op for op, _ in batch]
                try:
                    if self.inline_logs and all(op[0] == "log" for op in ops):
                        self._commit_sync(ops)
                    else:
                        await self._run(self._commit_sync, ops)
                except Exception as exc:
                    self._fail_queued(batch, exc)
                    continue
                self.commits += 1
                for _, future in batch:
                    if future is not None and not future.done():
                        future.set_result(None)
            if self._closing and not self._queue:
                return

    def _fail_queued(
        self, batch: list[tuple[Op, asyncio.Future[None] | None]], exc: Exception
    ) -> None:
        """A commit failed: nothing of it is durable. Everything queued behind it was applied
        in memory on top of it (and may hold a snapshot of that state), so it is discarded too:
        the models involved go back to their durable state (``on_failure``) before any caller
        hears of the failure, and every caller gets the real cause."""
        failed, self._queue = batch + self._queue, []
        reason = failure_reason(exc)
        log.error("storage commit of %d writes failed: %s", len(failed), reason)
        error = (
            exc
            if isinstance(exc, StorageError)
            else StorageError(f"could not write the data directory: {reason}")
        )
        if self.on_failure is not None:
            try:
                self.on_failure({op_model(op) for op, _ in failed})
            except Exception:  # the callers still get their 503; the log says what broke
                log.exception("restoring the durable state after a failed commit failed")
        for _, future in failed:
            if future is not None and not future.done():
                future.set_exception(error)

    def _commit_sync(self, ops: list[Op]) -> None:
        assert self._conn is not None
        conn = self._conn
        conn.execute("BEGIN")
        try:
            logs = [op[1:] for op in ops if op[0] == "log"]
            if len(logs) == len(ops):  # the common case: only learns
                conn.executemany("INSERT INTO learn_log (seq, name, body) VALUES (?, ?, ?)", logs)
            else:
                for op in ops:
                    self._apply_sync(conn, op)
            conn.execute("COMMIT")
        except BaseException:
            # SQLite may already have rolled back (a full disk does): a second ROLLBACK would
            # raise "no transaction is active" and hide the real cause
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    log.exception("rollback after a failed commit failed")
            raise

    @staticmethod
    def _apply_sync(conn: sqlite3.Connection, op: Op) -> None:
        kind = op[0]
        if kind == "log":
            conn.execute("INSERT INTO learn_log (seq, name, body) VALUES (?, ?, ?)", op[1:])
        elif kind == "create":
            _, name, flavor, origin, spec, created, seq, blob = op
            conn.execute(
                "INSERT INTO models (name, flavor, origin, spec, created) VALUES (?, ?, ?, ?, ?)",
                (name, flavor, origin, spec, created),
            )
            conn.execute(
                "INSERT INTO snapshots (name, seq, blob) VALUES (?, ?, ?)", (name, seq, blob)
            )
        elif kind == "snapshot":
            _, name, seq, blob = op
            conn.execute("UPDATE snapshots SET seq = ?, blob = ? WHERE name = ?", (seq, blob, name))
            conn.execute("DELETE FROM learn_log WHERE name = ? AND seq <= ?", (name, seq))
        elif kind == "delete":
            name = op[1]
            for table in ("models", "snapshots", "learn_log"):
                conn.execute(f"DELETE FROM {table} WHERE name = ?", (name,))  # noqa: S608
        elif kind == "abort":  # queued by a request that failed half-way (ModelService._abort)
            raise StorageError(
                "a request failed half-way (see the server log); the writes queued with it "
                "were discarded"
            )
        else:  # pragma: no cover - programming error
            raise ValueError(f"unknown storage operation {kind!r}")
