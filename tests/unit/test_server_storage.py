"""Storage and the model service without HTTP: group commit, snapshot + log recovery."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from river import linear_model, preprocessing

from streamml.modelserver.events import EventHub
from streamml.modelserver.registry import ModelQuarantinedError, Registry
from streamml.modelserver.service import ModelService
from streamml.modelserver.storage import Storage


def make_service(data_dir: Path, snapshot_every: int = 1_000_000) -> ModelService:
    registry = Registry(pending_ttl=60, pending_max=100, idempotency_window=10_000)
    return ModelService(
        registry,
        Storage(data_dir, synchronous="NORMAL"),
        EventHub(8),
        snapshot_every=snapshot_every,
        snapshot_interval=1e9,
    )


def model() -> object:
    return preprocessing.StandardScaler() | linear_model.LinearRegression(intercept_lr=0.1)


def sample(i: int) -> tuple[dict[str, float], float]:
    x = {"x": float(i % 7), "y": float(i % 5)}
    return x, 3 * x["x"] - x["y"] + 1


async def test_group_commit_batches_concurrent_learns(tmp_path: Path) -> None:
    service = make_service(tmp_path)
    await service.storage.open()
    # a cheap model (as a spec'd linear model is): its single learns apply inline, and their
    # writes queue up for one commit (an expensive model's wait their turn on its thread)
    await service.create("lin", "regression", model(), origin="spec", spec=None, heavy=False)
    commits_before = service.storage.commits
    await asyncio.gather(
        *(service.learn(*sample(i), model="lin", identifier=f"i{i}") for i in range(200))
    )
    commits = service.storage.commits - commits_before
    assert 1 <= commits < 200  # many learns shared a transaction
    await service.storage.close()


async def test_recovery_from_snapshot_plus_log(tmp_path: Path) -> None:
    service = make_service(tmp_path, snapshot_every=30)
    await service.storage.open()
    await service.create("lin", "regression", model(), origin="spec", spec={"pipeline": []})
    await service.create("gone", "regression", model(), origin="spec", spec=None)
    for i in range(100):
        await service.learn(*sample(i), model="lin", identifier=f"i{i}")
        if i == 45:
            assert await service.snapshot_dirty() == 1  # a snapshot in the middle of the stream
    await service.learn_batch([(*sample(i), None) for i in range(100, 150)], model="lin")
    await service.delete("gone")
    expected_metrics = service.registry.models["lin"].metric_values()
    expected_prediction = service.registry.models["lin"].predict({"x": 2.0, "y": 1.0})
    # no graceful snapshot: flush the queue only (as if killed right after the last commit)
    await service.storage.close()

    restarted = make_service(tmp_path)
    await restarted.storage.open()
    await restarted.load()
    assert list(restarted.registry.models) == ["lin"]
    state = restarted.registry.models["lin"]
    assert state.learn_stats.n_calls == 150
    assert state.metric_values() == expected_metrics
    assert state.predict({"x": 2.0, "y": 1.0}) == expected_prediction
    assert "i99" in state.seen
    result = await restarted.learn(*sample(99), model="lin", identifier="i99")
    assert result["lin"]["duplicate"]
    # sequence numbers continue after the highest one stored (2 creates, 100 learns, 1 batch)
    assert restarted.storage.seq == 103
    await restarted.storage.close()


async def test_identifier_window_after_a_restart_is_the_live_one(tmp_path: Path) -> None:
    """The window of remembered identifiers is applied as each identifier is learned, live and
    on replay alike. (It was trimmed after each single learn live but only once after the whole
    replay, so an identifier re-learned after it had left the window came back out of order: a
    restart forgot it and remembered an older one instead.)"""

    def windowed(data_dir: Path) -> ModelService:
        service = make_service(data_dir)
        service.registry.idempotency_window = 2
        return service

    service = windowed(tmp_path)
    await service.storage.open()
    await service.create("lin", "regression", model(), origin="spec", spec=None, heavy=False)
    for i, identifier in enumerate(["a", "b", "c", "a"]):  # "a" left the window, so learned again
        result = await service.learn(*sample(i), model="lin", identifier=identifier)
        assert result["lin"]["learned"], identifier
    live = list(service.registry.models["lin"].seen)
    assert live == ["c", "a"]
    await service.storage.close()

    restarted = windowed(tmp_path)
    await restarted.storage.open()
    await restarted.load()
    assert list(restarted.registry.models["lin"].seen) == live
    again = await restarted.learn(*sample(9), model="lin", identifier="a")
    assert again["lin"]["duplicate"]
    await restarted.storage.close()


async def test_a_model_damaged_on_disk_when_it_returns_to_it_is_quarantined(
    tmp_path: Path,
) -> None:
    """After a failed commit a model returns to what the data dir holds; when that turns out
    damaged it is quarantined, as start-up would (it was dropped: neither served nor named)."""
    service = make_service(tmp_path)
    await service.storage.open()
    await service.create("lin", "regression", model(), origin="spec", spec=None, heavy=False)
    await service.learn(*sample(1), model="lin", identifier="a")
    with sqlite3.connect(service.storage.path, timeout=10) as damage:
        damage.execute("UPDATE snapshots SET blob = ? WHERE name = 'lin'", (b"Z\x00\x00\x00\x00P",))
    service.restore_durable({"lin"})
    assert "lin" not in service.registry.models
    assert service.registry.quarantined["lin"].kind == "snapshot"
    with pytest.raises(ModelQuarantinedError):
        service.registry.get("lin")
    await service.storage.close()
