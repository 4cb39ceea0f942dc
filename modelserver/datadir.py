"""What is wrong with a data dir, found before SQLite touches it: the checks of start-up and of
``streamml serve --check``.

- :func:`lock`: one server per data dir (a second one is refused with the holder's pid).
- :func:`check_directory` and :func:`check_database_file`: ``--data-dir`` must be a directory (or
  creatable), and the database file, when it exists, must start with the SQLite header. Either
  failure is a :class:`DataDirError` whose one-line message names the file and what is wrong.
- :func:`inspect_wal`: SQLite silently ignores a write-ahead log it cannot trust (a bad header,
  a frame that fails its checksum, a transaction without its commit frame): the commits in it are
  lost without a word. Before the database is opened (opening recovers the WAL and the next
  checkpoint resets it), this walks the WAL as SQLite's recovery does (the format is documented at
  https://sqlite.org/fileformat2.html#the_write_ahead_log) and compares it with the writer's
  wal-index in ``-shm``, which a killed process leaves behind and which counts the frames the
  writer had committed: fewer valid frames than that is a truncated or damaged WAL.
  A damaged WAL is copied aside (``<name>-wal.damaged-<time>``) so the ignored frames are kept.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import shutil
import struct
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from streamml.errors import StreamMLError

SQLITE_HEADER = b"SQLite format 3\x00"
WAL_MAGIC = (0x377F0682, 0x377F0683)  # checksums little-endian, big-endian
WAL_HEADER = 32
FRAME_HEADER = 24
#: the wal-index header in -shm: iVersion, unused, iChange, isInit, bigEndCksum, szPage, mxFrame,
#: nPage, aFrameCksum[2], aSalt[2], aCksum[2] (native byte order; written twice, back to back)
SHM_HEADER = struct.Struct("=IIIBBHII2I2I2I")


class DataDirError(StreamMLError):
    """The data dir cannot be used: the message names the file and what is wrong with it."""


def check_directory(data_dir: Path, *, create: bool) -> None:
    if data_dir.exists() and not data_dir.is_dir():
        raise DataDirError(f"--data-dir {data_dir} is not a directory (it is a regular file)")
    if not data_dir.exists():
        if not create:
            raise DataDirError(f"--data-dir {data_dir} does not exist")
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataDirError(f"--data-dir {data_dir}: cannot create it: {exc.strerror}") from None
    if create and not os.access(data_dir, os.W_OK | os.X_OK):
        raise DataDirError(f"--data-dir {data_dir} is not writable by this user")


LOCK_FILE = "streamml.lock"


def lock(data_dir: Path, *, exclusive: bool) -> int | None:
    """Hold the data dir: one server per data dir (two would interleave their writes in one
    database). The lock is the kernel's (``flock``), so a killed server never leaves it held.
    ``exclusive=False`` (``serve --check``) only shares it, to be sure no server is writing, and
    creates nothing. Returns the descriptor to close when done (None: no lock file yet)."""
    path = data_dir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT if exclusive else os.O_RDONLY, 0o644)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DataDirError(f"{path}: cannot open it: {exc.strerror}") from None
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        pid = f" (pid {holder})" if holder.isdigit() else ""
        raise DataDirError(
            f"--data-dir {data_dir} is in use by another streamml server{pid}: "
            "one server per data dir (stop it first)"
        ) from None
    if exclusive:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def check_database_file(path: Path) -> None:
    if not path.exists():
        return
    if not path.is_file():
        raise DataDirError(f"{path} is not a regular file (the SQLite database must be one)")
    try:
        with path.open("rb") as handle:
            head = handle.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise DataDirError(f"{path}: cannot read it: {exc.strerror}") from None
    if head and head != SQLITE_HEADER:
        raise DataDirError(
            f"{path} is not a SQLite database (its first bytes are not the SQLite header): "
            "it was overwritten or is another program's file"
        )


@dataclass(frozen=True)
class WalReport:
    """What SQLite will recover from a WAL, and what it will silently drop."""

    path: Path
    frames: int  # whole frames in the file
    valid: int  # frames SQLite accepts: the valid chain up to and including its last commit
    commits: int  # commit frames among them
    problem: str | None = None  # one line: what is lost, and why
    kept: Path | None = None  # where the damaged WAL was copied


def inspect_wal(db_path: Path, *, keep_copy: bool) -> WalReport | None:
    """None when there is no WAL (or an empty one); else what it holds and any loss in it.
    The WAL is mapped, not read: one written by a large snapshot can be big."""
    wal = db_path.with_name(db_path.name + "-wal")
    try:
        with wal.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            data: bytes | mmap.mmap = (
                mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
            )
    except FileNotFoundError:
        data = b""
    except OSError as exc:
        raise DataDirError(f"{wal}: cannot read it: {exc.strerror}") from None
    committed = _shm_frames(db_path.with_name(db_path.name + "-shm"), data[16:24])
    if not data:
        if committed:
            problem = (
                f"the WAL is missing or empty, but the writer had committed {committed} frames"
            )
            return WalReport(wal, 0, 0, 0, problem)
        return None
    try:
        report = _walk(wal, data, committed)
    finally:
        if isinstance(data, mmap.mmap):
            data.close()
    if report.problem is not None and keep_copy:
        kept = wal.with_name(f"{wal.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
        shutil.copyfile(wal, kept)
        report = WalReport(wal, report.frames, report.valid, report.commits, report.problem, kept)
    return report


def _walk(wal: Path, data: bytes | mmap.mmap, committed: int | None) -> WalReport:
    if len(data) < WAL_HEADER:
        return WalReport(wal, 0, 0, 0, f"the WAL is cut inside its header ({len(data)} bytes)")
    magic, _version, page_size, _ckpt, salt1, salt2, c1, c2 = struct.unpack(">8I", data[:32])
    if magic not in WAL_MAGIC or page_size < 512 or page_size & (page_size - 1):
        return WalReport(wal, 0, 0, 0, "the WAL header is invalid: SQLite ignores the whole WAL")
    order = ">" if magic & 1 else "<"
    frame_size = FRAME_HEADER + page_size
    frames = (len(data) - WAL_HEADER) // frame_size
    if _checksum(data[:24], order, (0, 0)) != (c1, c2):
        bad = f"the WAL header fails its checksum: SQLite ignores all {frames} frames"
        return WalReport(wal, frames, 0, 0, bad)
    sums, valid, commits, chain = (c1, c2), 0, 0, 0
    pairs = (8 + page_size) // 8
    for index, added in enumerate(_frame_sums(data, order, page_size, frames)):
        offset = WAL_HEADER + index * frame_size
        _page, db_size, s1, s2, f1, f2 = struct.unpack(">6I", data[offset : offset + 24])
        if (s1, s2) != (salt1, salt2):
            break  # a frame of an earlier generation of this WAL: not data any more
        sums = _carry(sums, pairs, added)
        if sums != (f1, f2):
            break
        chain = index + 1
        if db_size:
            valid, commits = chain, commits + 1
    problem = _loss(frames, valid, chain, len(data) - WAL_HEADER - frames * frame_size, committed)
    return WalReport(wal, frames, valid, commits, problem)


def _loss(frames: int, valid: int, chain: int, tail: int, committed: int | None) -> str | None:
    if committed is not None:
        # the writer's own count: frames after it were never committed (nor acknowledged)
        if valid >= committed:
            return None
        return (
            f"the WAL holds {valid} valid frames but the writer had committed {committed}: "
            f"it was truncated or damaged, and the commits in the last {committed - valid} "
            "frames are lost"
        )
    if chain > valid:
        return (
            f"{chain - valid} frames after the last commit have no commit frame: that "
            "transaction is lost (cut off by a crash during the commit, or a truncated WAL)"
        )
    if tail and chain == frames:
        return (
            f"the WAL ends inside a frame ({tail} bytes after frame {frames}): it was cut off "
            "(a crash during a commit, or a truncated WAL)"
        )
    return None


def _checksum(data: bytes, order: str, sums: tuple[int, int]) -> tuple[int, int]:
    """SQLite's WAL checksum of ``data`` continuing from ``sums``."""
    words = np.frombuffer(data, dtype=">u4" if order == ">" else "<u4").reshape(1, -1, 2)
    return _carry(sums, len(words[0]), _sums(words)[0])


def _carry(sums: tuple[int, int], pairs: int, added: tuple[int, int]) -> tuple[int, int]:
    (a, b), (c, d) = _powers(pairs)[1]
    s0, s1 = sums
    return (a * s0 + b * s1 + added[0]) & 0xFFFFFFFF, (c * s0 + d * s1 + added[1]) & 0xFFFFFFFF


def _frame_sums(
    data: bytes | mmap.mmap, order: str, page_size: int, frames: int
) -> list[tuple[int, int]]:
    """What each whole frame adds to the running checksum (its header's first 8 bytes and its
    page), independent of the sums before it; in blocks of frames, as numpy arrays."""
    frame = FRAME_HEADER + page_size
    dtype = ">u4" if order == ">" else "<u4"
    body = np.frombuffer(data, dtype=np.uint8, count=frames * frame, offset=WAL_HEADER)
    rows = body.reshape(frames, frame)
    out: list[tuple[int, int]] = []
    for start in range(0, frames, 256):
        block = rows[start : start + 256]
        covered = np.concatenate([block[:, :8], block[:, FRAME_HEADER:]], axis=1)
        words = np.ascontiguousarray(covered).view(dtype).reshape(len(block), -1, 2)
        out += _sums(words)
    return out


def _sums(words: np.ndarray[Any, Any]) -> list[tuple[int, int]]:
    """For each row of (x0, x1) word pairs, ``sum(M**(n-1-k) v_k)`` modulo 2**32.

    SQLite's step ``s0 += x0 + s1; s1 += x1 + s0`` (modulo 2**32) is affine: s' = M s + v with
    M = [[1, 1], [1, 2]] and v = (x0, x0 + x1), so a run of n pairs is ``M**n s + sum(...)``:
    one integer matrix product per block of frames (numpy's own loop, not a BLAS thread pool).
    The powers are split in 16-bit halves so that no product or sum overflows 64 bits."""
    pairs = words.shape[1]
    x = words.astype(np.uint64)
    steps = np.stack([x[..., 0], (x[..., 0] + x[..., 1]) & _MASK], axis=-1)
    steps = steps.reshape(len(words), 2 * pairs)  # (frame, (k, j))
    powers = _powers(pairs)[0].transpose(0, 2, 1).reshape(2 * pairs, 2)  # ((k, j), i)
    half = np.uint64(16)
    low = steps @ (powers & np.uint64(0xFFFF))
    high = steps @ (powers >> half)
    added = (((high & _MASK) << half) + low) & _MASK
    return [(int(a), int(b)) for a, b in added]


_MASK = np.uint64(0xFFFFFFFF)


@cache
def _powers(n: int) -> tuple[np.ndarray[Any, Any], tuple[tuple[int, int], tuple[int, int]]]:
    """(M**(n-1-k) for k in 0..n-1 as an array, M**n as ints), modulo 2**32."""
    out = np.empty((n, 2, 2), dtype=np.uint64)
    a, b, c, d = 1, 0, 0, 1  # the identity
    for j in range(n):
        out[n - 1 - j] = ((a, b), (c, d))
        a, b, c, d = (
            (a + c) & 0xFFFFFFFF,
            (b + d) & 0xFFFFFFFF,
            (a + 2 * c) & 0xFFFFFFFF,
            (b + 2 * d) & 0xFFFFFFFF,
        )
    return out, ((a, b), (c, d))


def _shm_frames(shm: Path, wal_salts: bytes) -> int | None:
    """The writer's count of committed frames (mxFrame) in a left-over -shm of this WAL."""
    try:
        with shm.open("rb") as handle:
            raw = handle.read(2 * SHM_HEADER.size)
    except OSError:
        return None
    if len(raw) < 2 * SHM_HEADER.size or raw[: SHM_HEADER.size] != raw[SHM_HEADER.size :]:
        return None  # no header, or the writer died while updating it: no trustworthy count
    fields = SHM_HEADER.unpack(raw[: SHM_HEADER.size])
    is_init, max_frame = fields[3], fields[6]
    if not is_init or not max_frame:
        return None
    # aSalt is a byte copy of the WAL header's salts (offset 32 of the index header)
    if len(wal_salts) == 8 and raw[32:40] != wal_salts:
        return None  # the -shm describes another generation of the WAL
    return int(max_frame)
