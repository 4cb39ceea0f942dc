"""Snapshots: the blob (this server's own pickle of a model's state, with a checksum), and
when each model is snapshotted (:class:`SnapshotSchedule`).

Format: ``b"Z" + crc32 (4 bytes, big-endian) + inner``, where ``inner`` is ``b"P" + pickle`` or
``b"D" + dill`` (dill only for objects plain pickle cannot handle). The checksum turns bytes
changed on disk (a bad sector, a stray write into the file) into a clear "damaged snapshot" at
start-up instead of a model silently restored with wrong numbers. Blobs written before the
checksum (``b"P"``/``b"D"`` first) still load.

Only blobs this server wrote itself are ever loaded here; uploaded user bytes never are.
"""

from __future__ import annotations

import io
import logging
import pickle
import time
import zlib
from typing import Any

import dill

from streamml.errors import StreamMLError
from streamml.modelserver.drift import DriftWatch
from streamml.modelserver.learning import ModelState
from streamml.modelserver.registry import Registry
from streamml.modelserver.storage import Storage
from streamml.modelserver.workers import ModelWorkers

log = logging.getLogger(__name__)

#: an interval snapshot waits at least this many times as long as the model's last one took
SNAPSHOT_SHARE = 10


class SnapshotError(StreamMLError):
    """A stored snapshot blob cannot be loaded (damaged, or written by an incompatible version)."""


def snapshot_blob(state: ModelState) -> bytes:
    """The blob of ``state``. Blobs written before the cost model lack ``max_features``,
    ``known_features`` and ``heavy``; they load with ModelState's defaults (unbounded, heavy);
    blobs written before drift detection lack ``drift`` (they load with a fresh watch), before
    the ``fork`` policy ``fork`` (they load with none), before provenance ``origins`` (they load
    with an empty index).

    An expensive model's state can be large, and the C pickler holds the GIL for the whole dump
    (seconds for a big kernel sampler: measured, a 4.6 s stall of /healthz). Such a model is
    snapshotted on its own thread with the pure-Python pickler, which hands the GIL over like
    any Python code: slower, but nothing else waits for it."""
    payload = {
        "model": state.model,
        "metrics": state.metrics,
        "learn_stats": state.learn_stats,
        "predict_stats": state.predict_stats,
        "seen": state.seen,
        "max_features": state.max_features,
        "known_features": state.known_features,
        "heavy": state.heavy,
        "drift": state.drift,
        "fork": state.fork,
        "origins": state.origins,
    }
    inner = b""
    if state.heavy:
        try:
            inner = b"P" + yielding_dumps(payload)
        except Exception:  # what the pure-Python pickler cannot do, the C one decides below
            log.debug("model %s: pure-Python pickling failed", state.name, exc_info=True)
    if not inner:
        try:
            inner = b"P" + pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError):
            inner = b"D" + bytes(dill.dumps(payload))
    return b"Z" + zlib.crc32(inner).to_bytes(4, "big") + inner


def yielding_dumps(obj: Any) -> bytes:
    """``pickle.dumps`` by the pure-Python pickler (same format; it hands the GIL over).

    Protocol 4: the pure-Python pickler's protocol-5 buffer path trips over its own memo on
    numpy arrays (an AssertionError in CPython 3.11)."""
    buffer = io.BytesIO()
    pickle._Pickler(buffer, protocol=4).dump(obj)
    return buffer.getvalue()


def load_snapshot(name: str, flavor: str, blob: bytes) -> ModelState:
    """The state in ``blob``, or a :class:`SnapshotError` saying what is wrong with it."""
    if blob[:1] == b"Z":
        inner = blob[5:]
        if len(blob) < 6 or zlib.crc32(inner).to_bytes(4, "big") != blob[1:5]:
            raise SnapshotError(f"its checksum does not match ({len(blob)} bytes): it is damaged")
    else:
        inner = blob  # written before snapshots had a checksum
    kind, body = inner[:1], inner[1:]
    if kind not in (b"P", b"D"):
        raise SnapshotError(f"it is not a snapshot this server wrote (starts with {kind!r})")
    try:
        payload: Any = pickle.loads(body) if kind == b"P" else dill.loads(body)  # noqa: S301
        if "drift" not in payload:  # written before drift detection: a fresh watch
            payload["drift"] = DriftWatch.from_settings(None, flavor)
        return ModelState(name=name, flavor=flavor, **payload)
    except Exception as exc:  # whatever unpickling a damaged or foreign blob raises
        detail = f"{type(exc).__name__}: {str(exc)[:200]}"
        raise SnapshotError(f"it cannot be unpickled ({detail})") from None


class SnapshotSchedule:
    """When each model is snapshotted (and its learn log truncated by the storage): after
    ``every`` learns, or ``interval`` seconds after its last snapshot once it changed, and at
    shutdown. A model whose snapshot is slow is snapshotted on time less often (at most
    1/:data:`SNAPSHOT_SHARE` of its thread's time), still after every ``every`` learns."""

    def __init__(
        self,
        registry: Registry,
        workers: ModelWorkers,
        storage: Storage,
        *,
        every: int,
        interval: float,
    ) -> None:
        self.registry = registry
        self.workers = workers
        self.storage = storage
        self.every = every
        self.interval = interval
        self._last = time.monotonic()
        #: per model: when its last snapshot ended and how long it took
        self._costs: dict[str, tuple[float, float]] = {}

    async def snapshot_dirty(self, *, force: bool = False) -> int:
        """Queue snapshots of models changed enough (or long enough ago); returns how many.

        A model that is cheap and idle is pickled right here; any other on its own thread,
        after the work queued for it (the event loop goes on meanwhile). The model's write lock
        is held from before the blob until it is submitted: every write in the blob is queued
        before it (its sequence number is <= the snapshot's) and every later one after it, so a
        snapshot never holds a sample whose log commit failed (that failure fails it too).
        """
        now = time.monotonic()
        interval_due = now - self._last >= self.interval
        if interval_due or force:
            self._last = now
        count = 0
        for name in list(self.registry.models):
            state = self.registry.models.get(name)
            if state is None:
                continue
            last, took = self._costs.get(name, (0.0, 0.0))
            timely = interval_due and now - last >= SNAPSHOT_SHARE * took
            if not (state.dirty and (force or timely or state.dirty >= self.every)):
                continue
            if await self._snapshot(name):
                count += 1
        return count

    async def _snapshot(self, name: str) -> bool:
        async with self.workers.locked([name]):
            state = self.registry.models.get(name)  # a restore may have replaced it meanwhile
            if state is None or not state.dirty:
                return False
            started = time.monotonic()
            blob = await self.workers.call(name, not state.heavy, snapshot_blob, state)
            if self.registry.models.get(name) is not state:
                return False  # deleted or restored meanwhile
            state.dirty = 0
            self.storage.submit([("snapshot", name, self.storage.seq, blob)], wait=False)
        self._costs[name] = (time.monotonic(), time.monotonic() - started)
        return True
