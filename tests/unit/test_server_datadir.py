"""The data-dir checks without a server: the WAL walker against WALs that real SQLite wrote, and
the snapshot blob's checksum and older format."""

from __future__ import annotations

import pickle
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from river import linear_model

from streamml.modelserver.datadir import inspect_wal
from streamml.modelserver.learning import ModelState
from streamml.modelserver.snapshots import SnapshotError, load_snapshot, snapshot_blob


@pytest.fixture
def wal_db(tmp_path: Path) -> Iterator[Path]:
    """A database with 20 committed transactions still in its WAL (the writer is open)."""
    db = tmp_path / "x.sqlite3"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("CREATE TABLE t (v BLOB)")
    for i in range(20):
        conn.execute("INSERT INTO t VALUES (?)", (bytes([i]) * 100,))
    yield db
    conn.close()


def frame_size(db: Path) -> int:
    return 24 + int.from_bytes(db.with_name(db.name + "-wal").read_bytes()[8:12], "big")


def test_a_whole_wal_is_healthy_and_its_commits_are_counted(wal_db: Path) -> None:
    report = inspect_wal(wal_db, keep_copy=False)
    assert report is not None
    assert report.problem is None
    assert report.commits == 21  # the table and the 20 inserts
    assert report.valid == report.frames


def test_without_the_shm_a_cut_is_still_seen_when_it_splits_a_frame_or_a_transaction(
    wal_db: Path, tmp_path: Path
) -> None:
    wal = wal_db.with_name(wal_db.name + "-wal")
    data = wal.read_bytes()
    copy = tmp_path / "copy" / wal_db.name
    copy.parent.mkdir()
    copy_wal = copy.with_name(copy.name + "-wal")
    copy_wal.write_bytes(data[:-100])  # no -shm beside it: only the WAL itself to go by
    report = inspect_wal(copy, keep_copy=True)
    assert report is not None and report.problem is not None
    assert "ends inside a frame" in report.problem
    assert report.kept is not None and report.kept.read_bytes() == data[:-100]
    frames = (len(data) - 32) // frame_size(wal_db)
    # the first frame of a two-page transaction: a transaction without its commit frame
    conn = sqlite3.connect(wal_db, isolation_level=None)
    conn.execute("INSERT INTO t VALUES (?)", (b"y" * 6000,))  # an overflow page: two frames
    conn.close()
    longer = wal.read_bytes()
    added = (len(longer) - len(data)) // frame_size(wal_db)
    assert added >= 2
    copy_wal.write_bytes(longer[: 32 + (frames + 1) * frame_size(wal_db)])
    report = inspect_wal(copy, keep_copy=False)
    assert report is not None and report.problem is not None
    assert "1 frames after the last commit have no commit frame" in report.problem


def test_with_the_shm_a_cut_at_a_commit_boundary_is_seen(wal_db: Path) -> None:
    wal = wal_db.with_name(wal_db.name + "-wal")
    data = wal.read_bytes()
    report = inspect_wal(wal_db, keep_copy=False)
    assert report is not None
    # drop the last commit frame exactly: the WAL alone looks whole, the -shm knows better
    wal.write_bytes(data[: len(data) - frame_size(wal_db)])
    cut = inspect_wal(wal_db, keep_copy=False)
    assert cut is not None and cut.problem is not None
    assert f"the writer had committed {report.valid}" in cut.problem
    wal.write_bytes(b"")
    empty = inspect_wal(wal_db, keep_copy=False)
    assert empty is not None and empty.problem is not None
    assert "missing or empty" in empty.problem


def test_a_flipped_byte_in_a_frame_breaks_the_checksum_chain(wal_db: Path, tmp_path: Path) -> None:
    data = bytearray((wal_db.with_name(wal_db.name + "-wal")).read_bytes())
    data[32 + 24 + 10] ^= 0x01  # inside the first frame's page
    copy = tmp_path / "c" / wal_db.name
    copy.parent.mkdir()
    copy.with_name(copy.name + "-wal").write_bytes(bytes(data))
    shm = wal_db.with_name(wal_db.name + "-shm")
    copy.with_name(copy.name + "-shm").write_bytes(shm.read_bytes())
    report = inspect_wal(copy, keep_copy=False)
    assert report is not None and report.valid == 0
    assert report.problem is not None and "truncated or damaged" in report.problem


def test_the_vectorised_checksum_is_sqlites_step_by_step_one() -> None:
    import os
    import struct

    from streamml.modelserver.datadir import _checksum

    def reference(data: bytes, order: str, s0: int, s1: int) -> tuple[int, int]:
        words = struct.unpack(f"{order}{len(data) // 4}I", data)
        for i in range(0, len(words), 2):  # as the file-format document writes it
            s0 = (s0 + words[i] + s1) & 0xFFFFFFFF
            s1 = (s1 + words[i + 1] + s0) & 0xFFFFFFFF
        return s0, s1

    for size in (24, 8 + 512, 8 + 4096, 8 + 65536):
        data = os.urandom(size)
        for order in "<>":
            start = (0xFFFFFFFF, 0x12345678)
            assert _checksum(data, order, start) == reference(data, order, *start)


def state() -> ModelState:
    return ModelState(name="m", flavor="regression", model=linear_model.LinearRegression())


def test_snapshot_blobs_carry_a_checksum_and_older_blobs_still_load() -> None:
    blob = snapshot_blob(state())
    assert blob[:1] == b"Z"
    assert load_snapshot("m", "regression", blob).name == "m"
    damaged = blob[:-3] + bytes([blob[-3] ^ 0xFF]) + blob[-2:]
    with pytest.raises(SnapshotError, match="checksum does not match"):
        load_snapshot("m", "regression", damaged)
    payload = {"model": linear_model.LinearRegression(), "metrics": []}
    older = b"P" + pickle.dumps(payload)  # as releases up to 1065fd7 wrote them
    assert load_snapshot("m", "regression", older).metrics == []
    with pytest.raises(SnapshotError, match="not a snapshot this server wrote"):
        load_snapshot("m", "regression", b"\x00\x01")
    with pytest.raises(SnapshotError, match="cannot be unpickled"):
        load_snapshot("m", "regression", b"P\x80\x05garbage")


def test_a_state_only_dill_can_pickle_round_trips_with_its_checksum() -> None:
    from river import compose

    live = state()
    live.model = compose.FuncTransformer(lambda x: {"y": 2 * x["x"]}) | live.model
    live.heavy = False  # a cheap model's state goes through the C pickler, then dill
    blob = snapshot_blob(live)
    assert blob[:1] == b"Z" and blob[5:6] == b"D"
    restored = load_snapshot("m", "regression", blob)
    assert restored.model.transform_one({"x": 2.0}) == {"y": 4.0}
