"""Where item 2's model threads meet item 1's "an error reply means not applied": a write on a
model's thread whose model is restored meanwhile is not applied, and a snapshot never holds a
sample whose log commit failed (it is queued after the writes it holds, a fan-out batch's too)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from streamml.modelserver.storage import StorageError
from tests.unit.test_server_storage import make_service, model, sample

#: closed: a Gated model's learn_one waits (module-level: the model itself must pickle)
GATE = threading.Event()
#: set once a Gated model's learn_one is waiting at the gate
ENTERED = threading.Event()


class Gated:
    """A regressor whose learn_one waits at GATE on the model's thread: holds a write there."""

    def __init__(self) -> None:
        self.learned = 0

    def predict_one(self, x: dict[str, Any]) -> float:
        return 0.0

    def learn_one(self, x: dict[str, Any], y: Any) -> None:
        if threading.current_thread() is not threading.main_thread():  # a replay never waits
            ENTERED.set()
            assert GATE.wait(60)
        self.learned += 1


async def _entered() -> None:
    while not ENTERED.is_set():  # a state, not a time: the thread is inside learn_one
        await asyncio.sleep(0.01)


@pytest.fixture(autouse=True)
def _gate_open() -> Any:
    GATE.set()
    ENTERED.clear()
    yield
    GATE.set()


async def test_a_write_on_its_thread_when_its_model_is_restored_is_not_applied(
    tmp_path: Path,
) -> None:
    service = make_service(tmp_path)
    await service.storage.open()
    await service.create("slow", "regression", Gated(), origin="pickle", spec=None)
    await service.learn(*sample(0), model="slow", identifier="a0")
    service.predict_now(service.registry.models["slow"], sample(1)[0], "p1")  # waits for p1
    GATE.clear()
    ENTERED.clear()
    learn = asyncio.create_task(service.learn(*sample(1), model="slow", identifier="p1"))
    await _entered()
    service.restore_durable({"slow"})  # what a failed commit does, while the write is computing
    GATE.set()
    with pytest.raises(StorageError, match="durable state"):
        await learn
    state = service.registry.models["slow"]
    assert state.learn_stats.n_calls == 1 and "p1" not in state.seen and state.model.learned == 1
    assert len(service.registry.pending) == 1  # the waiting prediction is back for the retry
    assert (await service.learn(*sample(1), model="slow", identifier="p1"))["slow"]["learned"]
    await service.storage.close()
    restarted = make_service(tmp_path)
    await restarted.storage.open()
    await restarted.load()
    assert restarted.registry.models["slow"].learn_stats.n_calls == 2
    await restarted.storage.close()


async def test_a_snapshot_waits_for_a_fan_out_batch_and_fails_with_it(tmp_path: Path) -> None:
    service = make_service(tmp_path)
    await service.storage.open()
    await service.create("a-lin", "regression", model(), origin="spec", spec=None, heavy=False)
    await service.create("b-slow", "regression", Gated(), origin="pickle", spec=None)
    await service.learn_batch([(*sample(i), f"x{i}") for i in range(5)])
    conn = service.storage._conn
    assert conn is not None
    restore = service.storage.on_failure

    def restore_then_allow_writes(names: set[str]) -> None:
        assert restore is not None
        restore(names)
        conn.execute("PRAGMA query_only=OFF")

    service.storage.on_failure = restore_then_allow_writes
    GATE.clear()
    ENTERED.clear()
    batch = asyncio.create_task(service.learn_batch([(*sample(i), f"y{i}") for i in range(5)]))
    await _entered()  # a-lin has learned its part in memory; b-slow is at the gate
    assert service.registry.models["a-lin"].learn_stats.n_calls == 10
    snapshot = asyncio.create_task(service.snapshot_dirty(force=True))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not snapshot.done()  # it waits for the batch's ops: it would hold a-lin's new samples
    conn.execute("PRAGMA query_only=ON")  # SQLite refuses the batch's commit (a real failure)
    GATE.set()
    with pytest.raises(StorageError, match="readonly"):
        await batch
    await snapshot
    assert service.registry.models["a-lin"].learn_stats.n_calls == 5  # back to what is durable
    await service.storage.close()
    restarted = make_service(tmp_path)
    await restarted.storage.open()
    await restarted.load()
    for name in ("a-lin", "b-slow"):
        state = restarted.registry.models[name]
        assert state.learn_stats.n_calls == 5 and "y0" not in state.seen, name
    await restarted.storage.close()
