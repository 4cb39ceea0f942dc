"""Delivery without a server: retry schedule, spool files (atomic, confined), hostile entries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamml.client import delivery
from streamml.clients.runjob import as_feature, parse_vars
from streamml.errors import ConfigurationError, DeliveryError
from streamml.procs import free_port


def test_retry_schedule_is_exponential_and_capped() -> None:
    retry = delivery.Retry(attempts=6, initial_s=0.5, factor=2.0, max_s=3.0)
    assert retry.delays() == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert delivery.Retry(attempts=1).delays() == []


def test_spool_path_is_confined_to_the_spool_dir(tmp_path: Path) -> None:
    for hostile in ("../../etc/passwd", "/abs", "a/b", "", "x" * 5000, "t\x00n"):
        path = delivery.spool_path(tmp_path, hostile)
        assert path.parent == tmp_path and len(path.name) <= 205


async def test_unreachable_server_spools_after_retries(tmp_path: Path) -> None:
    request = delivery.Request(
        kind="learn", server=f"http://127.0.0.1:{free_port()}", trial="sw-t1",
        features={"nx": 4}, ground_truth=0.5,
    )  # fmt: skip
    outcome = await delivery.deliver(
        request, delivery.Credentials(), retry=delivery.Retry(attempts=2, initial_s=0.01),
        spool_dir=tmp_path / "spool",
    )  # fmt: skip
    assert not outcome.delivered and outcome.unreachable
    assert outcome.spooled == tmp_path / "spool" / "sw-t1.json"
    assert delivery.Request.from_data(json.loads(outcome.spooled.read_text())) == request
    assert list((tmp_path / "spool").iterdir()) == [outcome.spooled]  # no temp file left


async def test_redeliver_reports_every_entry_and_moves_none(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "garbage.json").write_text("{not json")
    (spool / "list.json").write_text("[1, 2]")
    (spool / "kind.json").write_text(json.dumps({"kind": "exec", "server": "x", "trial": "t"}))
    good = delivery.Request(kind="learn", server=f"http://127.0.0.1:{free_port()}",
                            trial="t", features={}, ground_truth=1.0)  # fmt: skip
    delivery.spool(good, spool)
    report = await delivery.redeliver(spool, delivery.Credentials())
    assert report.delivered == []
    assert set(report.failed) == {str(spool / n) for n in
                                  ("garbage.json", "list.json", "kind.json", "t.json")}  # fmt: skip
    assert "invalid kind 'exec'" in report.failed[str(spool / "kind.json")]
    assert "Cannot connect" in report.failed[str(spool / "t.json")]
    assert len(list(spool.glob("*.json"))) == 4  # nothing lost


@pytest.mark.parametrize(
    "data",
    [
        {"kind": "learn", "server": 1, "trial": "t", "features": {}},
        {"kind": "learn", "server": "s", "trial": "t", "features": []},
        {"kind": "learn", "server": "s", "trial": "t", "features": {}, "models": "all"},
        {"kind": "learn", "server": "s", "trial": "t", "features": {}, "models": [1]},
    ],
)
def test_invalid_spool_entries(data: dict[str, object]) -> None:
    with pytest.raises(DeliveryError, match="spool entry"):
        delivery.Request.from_data(data)


def test_vars_and_features() -> None:
    assert parse_vars(["nx=4", " ny = 5 ", "lat=fcc"]) == {"nx": "4", "ny": "5", "lat": "fcc"}
    assert [as_feature(v) for v in ("4", "0.5", "1e3", "fcc")] == [4, 0.5, 1000.0, "fcc"]
    for bad in ("nan", "inf", "-inf"):
        with pytest.raises(ConfigurationError, match="finite"):
            as_feature(bad)
    for bad in ("nx", "=1", "nx="):
        with pytest.raises(ConfigurationError, match="NAME=VALUE"):
            parse_vars([bad])


def test_spool_names_are_injective(tmp_path: Path) -> None:
    """Ids that differ only in characters the old name mapped to '_' kept one file for two."""
    ids = ["exp/t1", "exp:t1", "exp_t1", "exp t1", "exp\u00e9t1", "exp_2Ft1", ".", "..", "",
           "x" * 300, "x" * 299 + "y", "sweep-uid/t00001", "sweep-uid_t00001"]  # fmt: skip
    paths = [delivery.spool_path(tmp_path, trial) for trial in ids]
    assert len(set(paths)) == len(ids)
    assert all(p.parent == tmp_path and not p.name.startswith(".") for p in paths)
    assert delivery.spool_path(tmp_path, "exp/t1") == delivery.spool_path(tmp_path, "exp/t1")
