"""Export and import a stopped server's models and history as one tar archive.

An archive holds exactly two regular files, in this order:

- ``manifest.json`` (:class:`Manifest`): format and version, the models, and the size and
  SHA-256 of every other file; with a key, an HMAC-SHA256 over the rest of the manifest;
- ``streamml.sqlite3``: a consistent single-file copy of the data dir's database (SQLite's
  backup of the database and its write-ahead log), i.e. every model definition, snapshot and
  learn-log row: the models, their metrics, stats and idempotency identifiers.

Not in it: the lock file and ``jwt-secret`` (a credential: the new server makes its own, and
clients repeat the token handshake).

Export reads a copy and holds a shared lock on the data dir, so a running server (which holds
it exclusively) is refused and nothing in the data dir is changed. Import is all-or-nothing: it
writes into a staging directory, checks every member (regular files with the expected names
only: no links, no paths, no devices, no duplicates; sizes within ``max_bytes``; the checksums),
then runs everything start-up does on the staged data dir (``serve --check``: SQLite's integrity
check and every model loaded); only then does it move the files into place. Any failure
removes the staging directory and leaves the target as it was.

Snapshots are pickles, and loading a pickle runs whatever its author put in it. So import only
loads an archive it can authenticate (``key``: the HMAC that export wrote with the same key) or
one it is told to trust (``trusted=True``: the operator made it).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import json
import os
import shutil
import sqlite3
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from streamml.errors import StreamMLError
from streamml.modelserver import datadir

FORMAT: Final = "streamml-data-archive"
MANIFEST = "manifest.json"
DATABASE = "streamml.sqlite3"
MAX_MANIFEST_BYTES = 1 << 20
DEFAULT_MAX_BYTES = 8 << 30
_CHUNK = 1 << 20
_STAGING_PREFIX = ".streamml-import-"


class ArchiveError(StreamMLError):
    """The archive cannot be written or imported (the message says which file and why)."""


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Manifest(BaseModel):
    """What ``manifest.json`` says about the archive."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["streamml-data-archive"] = FORMAT
    version: Literal[1] = 1
    created: str = Field(max_length=64)
    models: list[str] = Field(default_factory=list, max_length=100_000)
    learn_log_rows: int = Field(default=0, ge=0)
    files: dict[str, FileEntry]
    hmac: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")

    @field_validator("files")
    @classmethod
    def _known(cls, files: dict[str, FileEntry]) -> dict[str, FileEntry]:
        if set(files) != {DATABASE}:
            raise ValueError(f"must list exactly {DATABASE!r}")
        return files

    def signed_bytes(self) -> bytes:
        body = self.model_dump(mode="json", exclude={"hmac"})
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    def signature(self, key: bytes) -> str:
        return hmac.new(key, self.signed_bytes(), hashlib.sha256).hexdigest()


# -- export -----------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _snapshot_database(data_dir: Path, into: Path) -> tuple[list[str], int]:
    """A single-file copy of the database in ``into`` (from a copy: the source stays as is)."""
    source = data_dir / DATABASE
    if not source.is_file():
        raise ArchiveError(f"{source} does not exist: {data_dir} is not a server's data dir")
    datadir.check_database_file(source)
    wal = datadir.inspect_wal(source, keep_copy=False)
    if wal is not None and wal.problem is not None:  # the backup would drop it in silence
        raise ArchiveError(f"{wal.path}: {wal.problem} (see streamml serve --check)")
    scratch = into / "source"
    scratch.mkdir()
    for suffix in ("", "-wal"):
        found = source.with_name(source.name + suffix)
        if found.exists():
            shutil.copyfile(found, scratch / (DATABASE + suffix))
    target = into / DATABASE
    src = sqlite3.connect(scratch / DATABASE)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
        dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        models = [str(r[0]) for r in dst.execute("SELECT name FROM models ORDER BY name")]
        rows = int(dst.execute("SELECT count(*) FROM learn_log").fetchone()[0])
    except sqlite3.DatabaseError as exc:
        raise ArchiveError(f"{source}: {exc}") from None
    finally:
        dst.close()
        src.close()
    shutil.rmtree(scratch)
    return models, rows


def _check_staged(staged: Path) -> None:
    """Everything start-up does (``serve --check``); an :class:`ArchiveError` unless healthy."""
    from streamml.modelserver.recovery import check

    try:
        report = asyncio.run(check(staged))
    except datadir.DataDirError as exc:
        raise ArchiveError(f"the archived database is unusable: {exc}") from None
    if not report.healthy:
        problems = [*report.findings, *(f"model {q.name}: {q.reason}" for q in report.quarantined)]
        raise ArchiveError("the archived data dir is damaged: " + "; ".join(problems[:5]))


def export(data_dir: Path, out: Path, *, key: bytes | None = None) -> Manifest:
    """Write ``out`` (atomically: a temporary file renamed) from a stopped server's data dir."""
    if not data_dir.is_dir():
        raise ArchiveError(f"--data-dir {data_dir} is not a directory")
    fd = datadir.lock(data_dir, exclusive=False)  # refused while a server holds the dir
    try:
        with tempfile.TemporaryDirectory(prefix="streamml-export-") as tmp:
            work = Path(tmp)
            models, rows = _snapshot_database(data_dir, work)
            _check_staged(work)
            entry = FileEntry(
                size=(work / DATABASE).stat().st_size, sha256=_sha256(work / DATABASE)
            )
            manifest = Manifest(
                created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                models=models,
                learn_log_rows=rows,
                files={DATABASE: entry},
            )
            if key is not None:
                manifest = manifest.model_copy(update={"hmac": manifest.signature(key)})
            _write_tar(out, manifest, work / DATABASE)
    finally:
        if fd is not None:
            os.close(fd)
    return manifest


def _write_tar(out: Path, manifest: Manifest, database: Path) -> None:
    partial = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.partial")
    body = manifest.model_dump_json(indent=2, exclude_none=True).encode()
    try:
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
            info = tarfile.TarInfo(MANIFEST)
            info.size, info.mtime, info.mode = len(body), int(time.time()), 0o600
            tar.addfile(info, io.BytesIO(body))
            info = tarfile.TarInfo(DATABASE)
            info.size, info.mtime, info.mode = database.stat().st_size, int(time.time()), 0o600
            with database.open("rb") as handle:
                tar.addfile(info, handle)
        os.replace(partial, out)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise ArchiveError(f"{out}: cannot write it: {exc.strerror}") from None


# -- import -----------------------------------------------------------------------------------


def _member_problem(member: tarfile.TarInfo, seen: set[str]) -> str | None:
    if not member.isreg():
        kind = "a symlink" if member.issym() else "a hard link" if member.islnk() else "not a file"
        return f"member {member.name!r} is {kind}: only regular files are accepted"
    if member.name not in (MANIFEST, DATABASE):
        return f"member {member.name!r} is not part of a streamml archive (paths are refused)"
    if member.name in seen:
        return f"member {member.name!r} appears twice"
    if not seen and member.name != MANIFEST:
        return f"the first member must be {MANIFEST}, not {member.name!r}"
    return None


def _read_manifest(tar: tarfile.TarFile, member: tarfile.TarInfo) -> Manifest:
    if member.size > MAX_MANIFEST_BYTES:
        raise ArchiveError(f"{MANIFEST} is {member.size} bytes (at most {MAX_MANIFEST_BYTES})")
    handle = tar.extractfile(member)
    raw = handle.read(MAX_MANIFEST_BYTES + 1) if handle else b""
    if len(raw) != member.size:
        raise ArchiveError(f"{MANIFEST} is truncated")
    try:
        return Manifest.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "(document)"
        raise ArchiveError(f"{MANIFEST}: {where}: {first['msg']}") from None


def _copy_member(handle: IO[bytes], target: Path, expected: FileEntry) -> None:
    digest, written = hashlib.sha256(), 0
    with target.open("wb") as out:
        while chunk := handle.read(_CHUNK):
            written += len(chunk)
            if written > expected.size:
                break
            digest.update(chunk)
            out.write(chunk)
    if written != expected.size:
        raise ArchiveError(
            f"{target.name}: {written} bytes where the manifest says {expected.size}"
        )
    if digest.hexdigest() != expected.sha256:
        raise ArchiveError(f"{target.name}: its SHA-256 does not match the manifest: damaged")


def _authenticate(manifest: Manifest, key: bytes | None, trusted: bool) -> None:
    if key is not None:
        if manifest.hmac is None or not hmac.compare_digest(manifest.hmac, manifest.signature(key)):
            raise ArchiveError(
                "the archive's signature does not match this key: refused (it holds pickles, "
                "which run code when loaded)"
            )
    elif not trusted:
        raise ArchiveError(
            "an archive holds pickled models, which run code when loaded: give the --key-file "
            "it was exported with, or --trusted if you made it yourself"
        )


def _unpack(archive: Path, staged: Path, max_bytes: int, key: bytes | None, trusted: bool) -> None:
    manifest: Manifest | None = None
    seen: set[str] = set()
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                problem = _member_problem(member, seen)
                if problem:
                    raise ArchiveError(problem)
                seen.add(member.name)
                if manifest is None:
                    manifest = _read_manifest(tar, member)
                    total = sum(e.size for e in manifest.files.values())
                    if total > max_bytes:
                        raise ArchiveError(
                            f"the archive holds {total} bytes, more than --max-bytes {max_bytes}"
                        )
                    _authenticate(manifest, key, trusted)
                    continue
                entry = manifest.files.get(member.name)
                if entry is None or member.size != entry.size:
                    raise ArchiveError(f"member {member.name!r} does not match the manifest")
                handle = tar.extractfile(member)
                assert handle is not None  # a regular file
                _copy_member(handle, staged / member.name, entry)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ArchiveError(f"{archive}: not a readable tar archive ({exc})") from None
    if manifest is None:
        raise ArchiveError(f"{archive}: empty archive (no {MANIFEST})")
    missing = set(manifest.files) - seen
    if missing:
        raise ArchiveError(f"{archive} is truncated: {', '.join(sorted(missing))} missing")


@contextmanager
def _staging(data_dir: Path) -> Iterator[Path]:
    """A staging directory on the target's file system; removed whatever happens."""
    parent = data_dir if data_dir.is_dir() else data_dir.parent
    if not parent.is_dir():
        raise ArchiveError(f"--data-dir {data_dir}: its parent directory does not exist")
    staged = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=parent))
    try:
        yield staged
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def _existing(data_dir: Path, staged: Path) -> list[Path]:
    keep = {staged.name, datadir.LOCK_FILE}
    return [p for p in data_dir.iterdir() if p.name not in keep]


def _install(data_dir: Path, staged: Path) -> None:
    """Move the staged files into the target; on a failure, put back what was there."""
    if not data_dir.exists():
        os.rename(staged, data_dir)
        return
    aside = Path(tempfile.mkdtemp(prefix=".streamml-replaced-", dir=data_dir))
    moved: list[Path] = []
    placed: list[Path] = []
    try:
        for path in _existing(data_dir, staged):
            if path != aside:
                os.rename(path, aside / path.name)
                moved.append(path)
        for path in staged.iterdir():
            os.rename(path, data_dir / path.name)
            placed.append(data_dir / path.name)
    except OSError as exc:
        for path in placed:
            path.unlink(missing_ok=True)
        for path in moved:
            os.rename(aside / path.name, path)
        shutil.rmtree(aside, ignore_errors=True)
        raise ArchiveError(f"--data-dir {data_dir}: cannot move files into it: {exc}") from None
    shutil.rmtree(aside, ignore_errors=True)


def import_archive(
    archive: Path,
    data_dir: Path,
    *,
    force: bool = False,
    key: bytes | None = None,
    trusted: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> None:
    """Make ``data_dir`` hold what ``archive`` holds, or change nothing (see the module doc)."""
    if data_dir.exists() and not data_dir.is_dir():
        raise ArchiveError(f"--data-dir {data_dir} is not a directory")
    fd = None
    if data_dir.is_dir():
        if _existing(data_dir, data_dir) and not force:
            raise ArchiveError(f"--data-dir {data_dir} is not empty: give --force to replace it")
        fd = datadir.lock(data_dir, exclusive=False)  # refused while a server holds the dir
    try:
        with _staging(data_dir) as staged:
            _unpack(archive, staged, max_bytes, key, trusted)
            _check_staged(staged)
            _install(data_dir, staged)
    finally:
        if fd is not None:
            os.close(fd)
