"""Atomic rewrites: concurrent readers never see an empty or partial file."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import pytest

from streamml.files import replacing, write_atomic


def test_readers_never_see_an_empty_or_partial_file(tmp_path: Path) -> None:
    # The sweep rewrites job credential files while adopted jobs read them; a truncate-then-write
    # let a job read "" and send no credentials (a CI failure). Rewrite and read concurrently.
    path = tmp_path / "token"
    values = ["a" * 4096, "b" * 8192]
    write_atomic(path, values[0], private=True)
    stop = threading.Event()
    seen: set[str] = set()

    def reader() -> None:
        while not stop.is_set():
            seen.add(path.read_text())

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(3000):
            write_atomic(path, values[i % 2], private=True)
    finally:
        stop.set()
        thread.join()
    assert seen <= set(values), f"a reader saw {len(seen - set(values))} torn versions"
    assert len(seen) >= 1


def test_modes_and_no_temporary_files_left(tmp_path: Path) -> None:
    private = write_atomic(tmp_path / "sub" / "secret", "s3cret", private=True)
    public = write_atomic(tmp_path / "sub" / "table.csv", "a,b\n")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(public.stat().st_mode) == 0o644
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["secret", "table.csv"]


def test_a_failed_write_leaves_the_old_content(tmp_path: Path) -> None:
    path = write_atomic(tmp_path / "state.json", '{"phase": "Running"}')
    with pytest.raises(RuntimeError), replacing(path) as handle:
        handle.write('{"pha')
        raise RuntimeError("disk full, say")
    assert path.read_text() == '{"phase": "Running"}'
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]
