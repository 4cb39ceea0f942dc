"""A request that fails half-way through applying (a bug, not the client's input) leaves nothing
applied: the models it touched return to their durable state as soon as what was queued before
it is committed, and the writes queued with it fail instead of landing on top of it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from streamml.modelserver.storage import StorageError
from tests.unit.test_server_storage import make_service, model, sample


class LosesLearnOne:
    """A regressor whose ``learn_one`` disappears after creation: the half-way failure to inject
    (every real component is checked for ``learn_one`` when it is created)."""

    def __init__(self) -> None:
        self.usable = True

    def predict_one(self, x: dict[str, Any]) -> float:
        return 0.0

    @property
    def learn_one(self) -> Callable[[dict[str, Any], Any], None]:
        if not self.usable:
            raise RuntimeError("injected failure")
        return lambda x, y: None


@pytest.mark.parametrize("heavy", [False, True], ids=["inline", "on-its-thread"])
async def test_a_fan_out_batch_failing_half_way_applies_nothing(
    tmp_path: Path, heavy: bool
) -> None:
    service = make_service(tmp_path)
    await service.storage.open()
    await service.create("lin", "regression", model(), origin="spec", spec=None, heavy=heavy)
    broken = LosesLearnOne()
    await service.create("zz-broken", "regression", broken, origin="pickle", spec=None)
    first = [(*sample(i), f"a{i}") for i in range(10)]
    await service.learn_batch(first)
    broken.usable = False
    second = [(*sample(i), f"b{i}") for i in range(10)]
    with pytest.raises(RuntimeError, match="injected"):
        await service.learn_batch(second)  # "lin" had learned them all in memory by then
    # inline, it is queued behind the abort marker; on its thread, the revert may land while it
    # is being applied, and it finds its model restored: not applied either way
    with pytest.raises(StorageError, match=r"half-way|returned to its durable state"):
        await service.learn(*sample(0), model="lin", identifier="c0")  # queued behind it
    lin = service.registry.models["lin"]
    assert lin.learn_stats.n_calls == 10
    assert "b0" not in lin.seen and "c0" not in lin.seen
    assert service.registry.models["zz-broken"].model.usable  # as it was made durable

    results = await service.learn_batch(second)  # the retry is applied, once
    assert results["lin"] == {"learned": 10, "duplicates": 0}
    await service.storage.close()
    restarted = make_service(tmp_path)
    await restarted.storage.open()
    await restarted.load()
    assert restarted.registry.models["lin"].learn_stats.n_calls == 20
    assert restarted.registry.models["zz-broken"].learn_stats.n_calls == 20
    await restarted.storage.close()


async def test_a_resend_waits_for_the_first_attempt_and_is_learned_when_that_failed(
    tmp_path: Path,
) -> None:
    service = make_service(tmp_path)
    await service.storage.open()
    await service.create("lin", "regression", model(), origin="spec", spec=None)
    conn = service.storage._conn
    assert conn is not None
    conn.execute("PRAGMA query_only=ON")  # SQLite refuses the next write (a real failure)
    restore = getattr(service.storage, "on_failure", None)  # the hook under test

    def restore_then_allow_writes(names: set[str]) -> None:
        if restore is not None:
            restore(names)
        conn.execute("PRAGMA query_only=OFF")

    service.storage.on_failure = restore_then_allow_writes
    first = asyncio.create_task(service.learn(*sample(1), model="lin", identifier="job-1"))
    await asyncio.sleep(0)  # applied in memory, its commit queued
    second = asyncio.create_task(service.learn(*sample(1), model="lin", identifier="job-1"))
    with pytest.raises(StorageError, match="readonly"):
        await first
    assert (await second)["lin"] == {"learned": True, "duplicate": False}
    state = service.registry.models["lin"]
    assert state.learn_stats.n_calls == 1 and "job-1" in state.seen
    await service.storage.close()


@pytest.mark.parametrize("heavy", [False, True], ids=["inline", "on-its-thread"])
async def test_several_targets_in_one_learn_fail_together(tmp_path: Path, heavy: bool) -> None:
    """One run's targets (``truths``: each model its own ground truth) are one write: when one
    target's model fails half-way, the other target's model has learned nothing either (an
    error reply means nothing was applied; one learn per target used to commit the first)."""
    service = make_service(tmp_path)
    await service.storage.open()
    await service.create("lin", "regression", model(), origin="spec", spec=None, heavy=heavy)
    broken = LosesLearnOne()
    await service.create("zz-broken", "regression", broken, origin="pickle", spec=None)
    x, y = sample(1)
    both = {"lin": y, "zz-broken": 2 * y}
    results = await service.learn(x, None, models=list(both), identifier="t1", truths=both)
    assert results == {name: {"learned": True, "duplicate": False} for name in both}
    broken.usable = False
    with pytest.raises(RuntimeError, match="injected"):
        await service.learn(x, None, models=list(both), identifier="t2", truths=both)
    with pytest.raises(StorageError):  # queued behind the revert: discarded with it
        await service.learn(x, 1.0, model="lin", identifier="queued")
    await service.learn(x, 1.0, model="lin", identifier="after")
    lin = service.registry.models["lin"]
    assert "t2" not in lin.seen and {"t1", "after"} <= set(lin.seen)
    await service.storage.close()
    restarted = make_service(tmp_path)
    await restarted.storage.open()
    await restarted.load()
    assert restarted.registry.models["lin"].learn_stats.n_calls == 2  # t1 and "after" only
    await restarted.storage.close()
