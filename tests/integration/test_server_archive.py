"""``streamml archive export|import`` with real server processes and real data dirs.

A server learns, is killed (kill -9: the last commits are only in the write-ahead log), its data
dir is exported, imported into a new dir, and a server started there answers exactly as one
restarted on the original dir. Hostile or damaged archives are refused with a clear error and
leave the target (and its parent) exactly as they were.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from streamml.modelserver import archive
from streamml.modelserver.archive import DATABASE, MANIFEST, ArchiveError
from streamml.pycommand import streamml_command
from tests.fixtures.server import ServerProcess, running_server

pytestmark = pytest.mark.integration

KEY = b"0123456789abcdef-archive-key"
PIPELINE = [{"class": "preprocessing.StandardScaler"}, {"class": "linear_model.LinearRegression"}]
PROBE = {"features": {"x": 10, "y": 12}}


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*streamml_command(), "archive", *map(str, args)], capture_output=True, text=True
    )


def call(server: ServerProcess, method: str, path: str, body: Any = None) -> Any:
    r = requests.request(method, server.url + path, json=body, headers=server.auth_header())
    assert r.status_code in (200, 201), r.text
    return r.json()


def observe(server: ServerProcess) -> dict[str, Any]:
    """Everything a client can see of the models."""
    seen: dict[str, Any] = {"models": sorted(call(server, "GET", "/api/models/")["models"])}
    for name in ("lin", "mean"):
        seen[name] = {
            "metrics": call(server, "GET", f"/api/metrics/?model={name}"),
            "learn": call(server, "GET", f"/api/stats/?model={name}")["learn"],
            "prediction": call(server, "POST", "/api/predict/", {"model": name, **PROBE}),
        }
        seen[name]["prediction"].pop("identifier", None)
    return seen


def learned_data_dir(root: Path) -> Path:
    """A data dir whose server learned 120 samples and was then killed (no final snapshot)."""
    data = root / "original"
    with running_server(data, token="t") as server:
        call(server, "POST", "/api/model/regression/lin/", {"pipeline": PIPELINE})
        mean = [
            {"class": "dummy.StatisticRegressor", "params": {"statistic": {"class": "stats.Mean"}}}
        ]
        call(server, "POST", "/api/model/regression/mean/", {"pipeline": mean})
        samples = [
            {"features": {"x": i % 17, "y": i % 5}, "ground_truth": 3.0 * (i % 17) + (i % 5),
             "identifier": f"run-{i}"}
            for i in range(120)
        ]  # fmt: skip
        call(server, "POST", "/api/learn/batch/", {"samples": samples})
        refused = cli("export", "--data-dir", data, "--out", root / "busy.tar")
        assert refused.returncode == 2 and "in use by another streamml server" in refused.stderr
        server.kill()
    return data


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("archive")
    data = learned_data_dir(root)
    out = root / "models.tar"
    done = cli("export", "--data-dir", data, "--out", out, "--key-file", _key_file(root))
    assert done.returncode == 0, done.stderr
    assert "2 models" in done.stdout and "(signed)" in done.stdout
    return data, out


def _key_file(root: Path) -> Path:
    path = root / "archive.key"
    path.write_bytes(KEY)
    return path


def tree(path: Path) -> dict[str, str]:
    """Every file under ``path`` (relative name -> digest): a changed byte changes it."""
    if not path.exists():
        return {}
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "d"
        for p in sorted(path.rglob("*"))
    }


def test_import_serves_exactly_what_the_original_served(
    exported: tuple[Path, Path], tmp_path: Path
) -> None:
    original, out = exported
    with tarfile.open(out) as tar:
        assert tar.getnames() == [MANIFEST, DATABASE]
        manifest = json.loads(tar.extractfile(MANIFEST).read())  # type: ignore[union-attr]
    assert manifest["models"] == ["lin", "mean"] and manifest["hmac"]
    target = tmp_path / "imported"
    done = cli("import", out, "--data-dir", target, "--key-file", _key_file(tmp_path))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in target.iterdir()) == [DATABASE]  # no jwt-secret, no lock
    with running_server(target, token="t2") as server:
        imported = observe(server)
        # the idempotency identifiers came along: a resent run is not learned twice
        again = call(server, "POST", "/api/learn/", {"model": "lin", "identifier": "run-7",
                                                      "features": {"x": 7, "y": 2},
                                                      "ground_truth": 23.0})  # fmt: skip
        assert again["results"]["lin"] == {"learned": False, "duplicate": True}
    with running_server(original, token="t") as server:
        assert observe(server) == imported
    assert imported["lin"]["learn"]["n_calls"] == 120


def test_import_refuses_a_non_empty_dir_unless_forced(
    exported: tuple[Path, Path], tmp_path: Path
) -> None:
    _, out = exported
    target = tmp_path / "busy"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    before = tree(target)
    refused = cli("import", out, "--data-dir", target, "--trusted")
    assert refused.returncode == 2 and "is not empty: give --force" in refused.stderr
    assert tree(target) == before
    done = cli("import", out, "--data-dir", target, "--trusted", "--force")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in target.iterdir()) == [DATABASE]


def _members(out: Path) -> dict[str, bytes]:
    with tarfile.open(out) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar}  # type: ignore[union-attr]


def _tar(path: Path, *entries: tuple[tarfile.TarInfo, bytes | None]) -> Path:
    with tarfile.open(path, "w") as tar:
        for info, data in entries:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str) -> tarfile.TarInfo:
    return tarfile.TarInfo(name)


def _manifest_for(database: bytes, **changes: Any) -> bytes:
    body = {"created": "2026-01-01T00:00:00Z", "models": ["lin", "mean"],
            "files": {DATABASE: {"size": len(database),
                                 "sha256": hashlib.sha256(database).hexdigest()}}}  # fmt: skip
    body.update(changes)
    return json.dumps(body).encode()


Hostile = Callable[[Path, dict[str, bytes]], Path]


def _traversal(d: Path, m: dict[str, bytes]) -> Path:
    return _tar(d / "a.tar", (_file(MANIFEST), m[MANIFEST]), (_file("../escaped"), b"x"))


def _absolute(d: Path, m: dict[str, bytes]) -> Path:
    return _tar(d / "a.tar", (_file(MANIFEST), m[MANIFEST]), (_file("/tmp/escaped"), b"x"))


def _symlink(d: Path, m: dict[str, bytes]) -> Path:
    link = _file(DATABASE)
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    return _tar(d / "a.tar", (_file(MANIFEST), m[MANIFEST]), (link, None))


def _hardlink(d: Path, m: dict[str, bytes]) -> Path:
    link = _file(DATABASE)
    link.type, link.linkname = tarfile.LNKTYPE, MANIFEST
    return _tar(d / "a.tar", (_file(MANIFEST), m[MANIFEST]), (link, None))


def _truncated(d: Path, m: dict[str, bytes]) -> Path:
    whole = _tar(d / "whole.tar", (_file(MANIFEST), m[MANIFEST]), (_file(DATABASE), m[DATABASE]))
    cut = d / "a.tar"
    cut.write_bytes(whole.read_bytes()[: len(m[MANIFEST]) + 512 * 3 + len(m[DATABASE]) // 2])
    return cut


def _manifest_only(d: Path, m: dict[str, bytes]) -> Path:
    return _tar(d / "a.tar", (_file(MANIFEST), m[MANIFEST]))


def _wrong_checksum(d: Path, m: dict[str, bytes]) -> Path:
    db = bytearray(m[DATABASE])
    db[len(db) // 2] ^= 0xFF
    return _tar(d / "a.tar", (_file(MANIFEST), m[MANIFEST]), (_file(DATABASE), bytes(db)))


def _damaged_but_consistent(d: Path, m: dict[str, bytes]) -> Path:
    """A manifest recomputed over a corrupted database: only the data-dir check can tell."""
    db = bytearray(m[DATABASE])
    db[100:4096] = b"\x00" * (4096 - 100)  # the schema page
    return _tar(
        d / "a.tar", (_file(MANIFEST), _manifest_for(bytes(db))), (_file(DATABASE), bytes(db))
    )


def _huge(d: Path, m: dict[str, bytes]) -> Path:
    fake = json.loads(_manifest_for(m[DATABASE]))
    fake["files"][DATABASE]["size"] = 1 << 40
    return _tar(d / "a.tar", (_file(MANIFEST), json.dumps(fake).encode()),
                (_file(DATABASE), m[DATABASE]))  # fmt: skip


def _extra_member(d: Path, m: dict[str, bytes]) -> Path:
    return _tar(d / "a.tar", (_file(MANIFEST), m[MANIFEST]), (_file(DATABASE), m[DATABASE]),
                (_file("jwt-secret"), b"attacker-chosen-secret"))  # fmt: skip


def _duplicate(d: Path, m: dict[str, bytes]) -> Path:
    return _tar(d / "a.tar", (_file(MANIFEST), m[MANIFEST]), (_file(DATABASE), m[DATABASE]),
                (_file(DATABASE), m[DATABASE]))  # fmt: skip


def _not_a_tar(d: Path, m: dict[str, bytes]) -> Path:
    path = d / "a.tar"
    path.write_bytes(b"PK\x03\x04 this is a zip, or anything else")
    return path


def _bad_manifest(d: Path, m: dict[str, bytes]) -> Path:
    bad = _manifest_for(m[DATABASE], format="something-else")
    return _tar(d / "a.tar", (_file(MANIFEST), bad), (_file(DATABASE), m[DATABASE]))


HOSTILE: dict[str, tuple[Hostile, str]] = {
    "path-traversal": (_traversal, "paths are refused"),
    "absolute-path": (_absolute, "paths are refused"),
    "symlink": (_symlink, "is a symlink"),
    "hardlink": (_hardlink, "is a hard link"),
    "truncated": (_truncated, "not a readable tar archive|truncated|bytes where the manifest"),
    "manifest-only": (_manifest_only, "truncated"),
    "wrong-checksum": (_wrong_checksum, "SHA-256 does not match"),
    "damaged-database": (_damaged_but_consistent, "damaged|unusable|not a database"),
    "huge": (_huge, "more than --max-bytes"),
    "extra-member": (_extra_member, "not part of a streamml archive"),
    "duplicate": (_duplicate, "appears twice"),
    "not-a-tar": (_not_a_tar, "not a readable tar archive"),
    "bad-manifest": (_bad_manifest, "manifest.json: format"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
@pytest.mark.parametrize("existing", [False, True])
def test_hostile_archives_are_refused_and_change_nothing(
    exported: tuple[Path, Path], tmp_path: Path, case: str, existing: bool
) -> None:
    _, out = exported
    build, message = HOSTILE[case]
    made = tmp_path / "made"
    made.mkdir()
    hostile = build(made, _members(out))
    parent = tmp_path / "parent"
    target = parent / "data"
    target.mkdir(parents=True)
    if existing:
        (target / DATABASE).write_bytes(b"the current data dir's bytes")
    before = tree(parent)
    with pytest.raises(ArchiveError, match=message):
        archive.import_archive(hostile, target, trusted=True, force=True, max_bytes=1 << 30)
    assert tree(parent) == before  # no staging dir left, nothing replaced, nothing escaped
    assert not (tmp_path / "escaped").exists()


def test_unsigned_or_wrongly_signed_archives_are_not_loaded(
    exported: tuple[Path, Path], tmp_path: Path
) -> None:
    _, out = exported
    target = tmp_path / "data"
    with pytest.raises(ArchiveError, match="--trusted"):
        archive.import_archive(out, target)
    with pytest.raises(ArchiveError, match="signature does not match"):
        archive.import_archive(out, target, key=b"another-key-of-16-bytes")
    members = _members(out)
    unsigned = json.loads(members[MANIFEST])
    del unsigned["hmac"]
    plain = _tar(tmp_path / "plain.tar", (_file(MANIFEST), json.dumps(unsigned).encode()),
                 (_file(DATABASE), members[DATABASE]))  # fmt: skip
    with pytest.raises(ArchiveError, match="signature does not match"):
        archive.import_archive(plain, target, key=KEY)
    assert not target.exists()
    archive.import_archive(out, target, key=KEY)
    assert (target / DATABASE).is_file()
