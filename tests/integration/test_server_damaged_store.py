"""A damaged data dir gets a clear answer, never a silent loss (real server processes, real files
damaged by the test): a one-line error naming the file when the store cannot be used at all; a
quarantined model, reported in /readyz, /metrics and at its model endpoint, while the others
serve; a start-up line that counts what was loaded and skipped; ``serve --check``."""

from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests

from streamml.pycommand import streamml_command
from tests.fixtures.server import ServerProcess, free_port, running_server

pytestmark = pytest.mark.integration

DB = "streamml.sqlite3"
MODELS = ("alpha", "beta", "gamma")
PIPELINE = [{"class": "preprocessing.StandardScaler"}, {"class": "linear_model.LinearRegression"}]


def call(server: ServerProcess, method: str, path: str, body: Any = None) -> requests.Response:
    return requests.request(
        method, server.url + path, json=body, headers=server.auth_header(), timeout=30
    )


def teach(server: ServerProcess, count: int = 12) -> None:
    for name in MODELS:
        r = call(server, "POST", f"/api/model/regression/{name}/", {"pipeline": PIPELINE})
        assert r.status_code == 201, r.text
    for i in range(count):  # one log row per model and learn
        body = {"features": {"x": i, "y": i % 3}, "ground_truth": 2.0 * i, "identifier": f"i{i}"}
        assert call(server, "POST", "/api/learn/", body).status_code == 201


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two data dirs of three models with 12 learns each: ``stopped`` (SIGTERM: snapshots, an
    empty log, no WAL) and ``killed`` (kill -9: snapshots of the empty models, every learn in the
    log, the WAL and its -shm left behind)."""
    root = tmp_path_factory.mktemp("stores")
    with running_server(root / "stopped", token="t") as server:
        teach(server)
    with running_server(root / "killed", token="t") as server:
        teach(server)
        server.kill()
    return {"stopped": root / "stopped", "killed": root / "killed"}


def copy(store: Path, tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(store, data, ignore=shutil.ignore_patterns("*.log"))
    return data


def sql(data: Path, *statements: str, args: tuple[Any, ...] = ()) -> Any:
    conn = sqlite3.connect(data / DB)
    try:
        result = [conn.execute(statement, args).fetchall() for statement in statements]
        conn.commit()
        return result[-1]
    finally:
        conn.close()


def serve_fails(data_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [*streamml_command(), "serve", "--data-dir", str(data_dir), "--no-auth", *extra]
    done = subprocess.run(
        [*argv, "--port", str(free_port())], capture_output=True, text=True, timeout=120
    )
    assert "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
    return done


def check(data_dir: Path) -> subprocess.CompletedProcess[str]:
    argv = [*streamml_command(), "serve", "--check", "--data-dir", str(data_dir)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
    return done


def error_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in done.stderr.splitlines() if line.startswith("streamml serve:")]
    assert len(lines) == 1, done.stderr
    return lines[0]


def startup_line(server: ServerProcess) -> str:
    lines = [line for line in server.log().splitlines() if "start-up: loaded" in line]
    assert len(lines) == 1, server.log()
    return lines[0]


def prometheus(server: ServerProcess) -> str:
    return requests.get(server.url + "/metrics", timeout=30).text


# -- the store cannot be used at all: one line, naming the file ----------------------------------


def test_a_regular_file_as_data_dir_is_one_clear_line(tmp_path: Path) -> None:
    path = tmp_path / "not-a-dir"
    path.write_text("hello\n")
    for done in (serve_fails(path), check(path)):
        assert done.returncode == 2
        assert error_line(done) == (
            f"streamml serve: error: --data-dir {path} is not a directory (it is a regular file)"
        )


def test_a_garbage_file_in_place_of_the_database_is_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / DB).write_bytes(bytes(range(256)) * 64)
    for done in (serve_fails(tmp_path), check(tmp_path)):
        assert done.returncode == 2
        line = error_line(done)
        assert f"{tmp_path / DB} is not a SQLite database" in line, line
    assert (tmp_path / DB).read_bytes() == bytes(range(256)) * 64  # left as it was


@pytest.mark.parametrize("damage", ["page-header", "cut-file"])
def test_corrupted_pages_are_one_clear_line(
    stores: dict[str, Path], tmp_path: Path, damage: str
) -> None:
    data = copy(stores["stopped"], tmp_path)
    page_size = sql(data, "PRAGMA page_size")[0][0]
    root = sql(data, "SELECT rootpage FROM sqlite_master WHERE name = 'learn_log_name'")[0][0]
    with (data / DB).open("r+b") as handle:
        if damage == "page-header":  # the b-tree page header of the log's index
            handle.seek((root - 1) * page_size)
            handle.write(b"\x0d\xff\xff\xff\xff\xff\xff\xff" * 4)
        else:  # the file ends before the pages its tables point to
            handle.truncate((root - 1) * page_size)
    for done in (serve_fails(data), check(data)):
        assert done.returncode == 2
        line = error_line(done)
        assert line.startswith(f"streamml serve: error: {data / DB}: "), line
        assert "damaged" in line or "malformed" in line, line


def test_a_second_server_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    with running_server(tmp_path / "data", token="t") as server:
        for done in (serve_fails(server.data_dir), check(server.data_dir)):
            assert done.returncode == 2
            assert error_line(done) == (
                f"streamml serve: error: --data-dir {server.data_dir} is in use by another "
                f"streamml server (pid {server.pid}): one server per data dir (stop it first)"
            )
        assert requests.get(server.url + "/readyz", timeout=30).json() == {"status": "ready"}
        server.kill()  # the kernel releases the lock of a killed server
    with running_server(tmp_path / "data", token="t") as server:
        assert requests.get(server.url + "/readyz", timeout=30).json() == {"status": "ready"}


# -- one model is damaged: it is quarantined, the others serve -----------------------------------


def assert_quarantined(server: ServerProcess, name: str, kind: str, reason: str) -> None:
    ready = requests.get(server.url + "/readyz", timeout=30)
    assert ready.status_code == 200
    report = ready.json()
    assert report["status"] == "degraded"
    assert list(report["quarantined"]) == [name]
    assert report["quarantined"][name]["kind"] == kind
    assert re.search(reason, report["quarantined"][name]["reason"]), report
    model = call(server, "GET", f"/api/model/{name}/")
    assert model.status_code == 503
    assert model.json()["status"] == "quarantined"
    assert model.json()["kind"] == kind
    assert str(server.data_dir / DB) in model.json()["reason"]
    for path in (f"/api/stats/?model={name}", f"/api/metrics/?model={name}"):
        answer = call(server, "GET", path)
        assert answer.status_code == 503
        assert "is quarantined" in answer.json()["message"]
    learn = {"model": name, "features": {"x": 1}, "ground_truth": 1.0}
    assert call(server, "POST", "/api/learn/", learn).status_code == 503
    metrics = prometheus(server)
    assert "streamml_models_quarantined 1.0" in metrics
    assert f'streamml_model_quarantined{{kind="{kind}",model="{name}"}} 1.0' in metrics
    assert "Traceback" not in server.log()


def assert_others_serve(server: ServerProcess, names: list[str], learns: int) -> None:
    assert call(server, "GET", "/api/models/").json()["models"] == names
    for name in names:
        stats = call(server, "GET", f"/api/stats/?model={name}").json()
        assert stats["learn"]["n_calls"] == learns, name
        learn = {"model": name, "features": {"x": 1, "y": 1}, "ground_truth": 2.0}
        assert call(server, "POST", "/api/learn/", learn).status_code == 201
        predict = {"model": name, "features": {"x": 1, "y": 1}}
        assert call(server, "POST", "/api/predict/", predict).status_code == 200


def test_a_bad_snapshot_blob_quarantines_only_that_model(
    stores: dict[str, Path], tmp_path: Path
) -> None:
    data = copy(stores["stopped"], tmp_path)
    sql(data, "UPDATE snapshots SET blob = randomblob(300) WHERE name = 'beta'")
    with running_server(data, token="t") as server:
        assert_quarantined(server, "beta", "snapshot", r"the snapshot of model 'beta' .* is bad")
        assert_others_serve(server, ["alpha", "gamma"], learns=12)
        assert "loaded 2 models" in startup_line(server)
        assert "quarantined 1: beta (snapshot)" in startup_line(server)
        # the name is taken until the damaged model is deleted; then it is free again
        create = call(server, "POST", "/api/model/regression/beta/", {"pipeline": PIPELINE})
        assert create.status_code == 409
        assert "quarantined" in create.json()["message"]
        assert call(server, "DELETE", "/api/model/?model=beta").status_code == 200
        assert requests.get(server.url + "/readyz", timeout=30).json() == {"status": "ready"}
        create = call(server, "POST", "/api/model/regression/beta/", {"pipeline": PIPELINE})
        assert create.status_code == 201


def test_bytes_changed_inside_a_snapshot_on_disk_are_caught_by_its_checksum(
    stores: dict[str, Path], tmp_path: Path
) -> None:
    data = copy(stores["stopped"], tmp_path)
    blob = sql(data, "SELECT blob FROM snapshots WHERE name = 'gamma'")[0][0]
    raw = (data / DB).read_bytes()
    # a float of the model's state, inside the pickle in the file: flip one byte of it
    at = raw.index(blob) + len(blob) // 2
    (data / DB).write_bytes(raw[:at] + bytes([raw[at] ^ 0x10]) + raw[at + 1 :])
    with running_server(data, token="t") as server:
        assert_quarantined(server, "gamma", "snapshot", r"checksum does not match")
        assert_others_serve(server, ["alpha", "beta"], learns=12)


@pytest.mark.parametrize("body", [b"not json{", b"[[1, 2]]", b"[[7, 1.0, null, 5, null]]"])
def test_a_garbled_log_row_quarantines_only_that_model(
    stores: dict[str, Path], tmp_path: Path, body: bytes
) -> None:
    data = copy(stores["killed"], tmp_path)
    seq = sql(data, "SELECT min(seq) FROM learn_log WHERE name = 'beta'")[0][0]
    sql(data, "UPDATE learn_log SET body = ? WHERE seq = ?", args=(body, seq))
    with running_server(data, token="t") as server:
        assert_quarantined(server, "beta", "log", rf"learn-log row seq {seq} of model 'beta'")
        assert_others_serve(server, ["alpha", "gamma"], learns=12)
        line = startup_line(server)
        assert "loaded 2 models" in line
        assert "replayed 24 learn-log rows (24 learns)" in line
        assert "skipped 12 learn-log rows (12 of models with a damaged log row)" in line


def test_missing_snapshot_and_definition_rows_are_reported_not_dropped(
    stores: dict[str, Path], tmp_path: Path
) -> None:
    data = copy(stores["killed"], tmp_path)
    sql(data, "DELETE FROM snapshots WHERE name = 'alpha'")
    sql(data, "DELETE FROM models WHERE name = 'gamma'")
    with running_server(data, token="t") as server:
        report = requests.get(server.url + "/readyz", timeout=30).json()
        assert report["status"] == "degraded"
        assert report["quarantined"]["alpha"]["kind"] == "no-snapshot"
        assert report["quarantined"]["gamma"]["kind"] == "no-definition"
        assert report["quarantined"]["gamma"]["log_rows"] == 12
        assert "no row in table models" in report["quarantined"]["gamma"]["reason"]
        assert call(server, "GET", "/api/model/gamma/").status_code == 503
        assert_others_serve(server, ["beta"], learns=12)
        line = startup_line(server)
        assert "loaded 1 models" in line
        assert "skipped 24 learn-log rows" in line
        assert "12 of models without a definition row" in line
        assert "12 of models without a snapshot row" in line
        assert 'streamml_startup_log_rows_skipped{reason="no-definition"} 12.0' in prometheus(
            server
        )


# -- a truncated WAL: the lost commits are detected and reported ---------------------------------


def wal_frame(wal: Path) -> int:
    """A frame's size: its 24-byte header and a page (the page size is in the WAL's header)."""
    with wal.open("rb") as handle:
        return 24 + int.from_bytes(handle.read(12)[8:12], "big")


@pytest.mark.parametrize("cut", ["bytes", "frame", "all-frames"])
def test_a_truncated_wal_after_kill_9_is_reported(
    stores: dict[str, Path], tmp_path: Path, cut: str
) -> None:
    data = copy(stores["killed"], tmp_path)
    wal = data / f"{DB}-wal"
    size = wal.stat().st_size
    frame = wal_frame(wal)
    assert (size - 32) % frame == 0 and size > 32 + 8 * frame, size
    keep = {"bytes": size - 100, "frame": size - frame, "all-frames": 32}[cut]
    with wal.open("r+b") as handle:
        handle.truncate(keep)
    checked = check(data)
    assert checked.returncode == 1, checked.stdout
    finding = next(line for line in checked.stdout.splitlines() if "WAL" in line)
    assert finding.startswith(f"DAMAGED {wal}: the WAL holds "), finding
    assert "the writer had committed" in finding and "are lost" in finding, finding
    assert wal.stat().st_size == keep  # --check left the files as they were
    with running_server(data, token="t") as server:
        report = requests.get(server.url + "/readyz", timeout=30).json()
        assert report["status"] == "degraded"
        assert report["quarantined"] == {}
        assert len(report["findings"]) == 1 and str(wal) in report["findings"][0]
        assert "streamml_data_dir_findings 1.0" in prometheus(server)
        assert "the writer had committed" in startup_line(server)
        kept = list(data.glob(f"{DB}-wal.damaged-*"))
        assert len(kept) == 1 and kept[0].stat().st_size == keep


# -- serve --check -------------------------------------------------------------------------------


def test_serve_check_passes_a_healthy_data_dir_and_changes_nothing(
    stores: dict[str, Path], tmp_path: Path
) -> None:
    for store in ("stopped", "killed"):
        data = copy(stores[store], tmp_path / store)
        before = {p.name: p.read_bytes() for p in sorted(data.iterdir())}
        done = check(data)
        assert done.returncode == 0, done.stdout + done.stderr
        last = done.stdout.splitlines()[-1]
        assert last.startswith(f"{data}: healthy: loaded 3 models; "), last
        replayed = 0 if store == "stopped" else 36
        assert f"replayed {replayed} learn-log rows" in last, last
        assert {p.name: p.read_bytes() for p in sorted(data.iterdir())} == before


def test_serve_check_lists_every_damaged_model(stores: dict[str, Path], tmp_path: Path) -> None:
    data = copy(stores["killed"], tmp_path)
    sql(data, "UPDATE snapshots SET blob = x'00' WHERE name = 'alpha'")
    sql(data, "UPDATE learn_log SET body = x'ff' WHERE name = 'gamma'")
    done = check(data)
    assert done.returncode == 1
    damaged = [line for line in done.stdout.splitlines() if line.startswith("DAMAGED")]
    assert [line.split()[2] for line in damaged] == ["alpha", "gamma"], damaged
    assert f"{data}: DAMAGED: loaded 1 models" in done.stdout
    missing = check(tmp_path / "nothing-here")
    assert missing.returncode == 2
    assert "does not exist" in error_line(missing)
