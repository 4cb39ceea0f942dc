"""The model service: the learning core plus durability and events, still without HTTP.

Every mutation is applied in memory in order per model (on the event loop, or on the model's own
thread for large or expensive work: see ``workers``) and queued to storage in the order it was
applied; the caller awaits the commit before replying. Shared state (pending predictions, storage
sequence numbers, event fan-out) is only ever touched on the event loop.
"""

from __future__ import annotations

import io
import logging
import pickle
import time
from collections.abc import Iterable
from typing import Any

import dill
import orjson

from streamml.errors import ConflictError, NotFoundError, SpecError
from streamml.modelserver.events import EventHub, jsonable
from streamml.modelserver.learning import LearnRecord, ModelState, default_metrics
from streamml.modelserver.pending import TakenPredictions
from streamml.modelserver.registry import Registry
from streamml.modelserver.storage import Op, Storage
from streamml.modelserver.workers import ModelWorkers

log = logging.getLogger(__name__)


#: an interval snapshot waits at least this many times as long as the model's last one took
SNAPSHOT_SHARE = 10


def dumps(data: Any) -> bytes:
    encoded: bytes = orjson.dumps(data, default=jsonable, option=orjson.OPT_NON_STR_KEYS)
    return encoded


def snapshot_blob(state: ModelState) -> bytes:
    """Our own pickle of a model's state; dill only for objects plain pickle cannot handle.

    An expensive model's state can be large, and the C pickler holds the GIL for the whole dump
    (seconds for a big kernel sampler: measured, a 4.6 s stall of /healthz). Such a model is
    snapshotted on its own thread with the pure-Python pickler, which hands the GIL over like
    any Python code: slower, but nothing else waits for it.
    """
    payload = {
        "model": state.model,
        "metrics": state.metrics,
        "learn_stats": state.learn_stats,
        "predict_stats": state.predict_stats,
        "seen": state.seen,
        "max_features": state.max_features,
        "known_features": state.known_features,
        "heavy": state.heavy,
    }
    if state.heavy:
        try:
            return b"P" + yielding_dumps(payload)
        except Exception:  # what the pure-Python pickler cannot do, the C one decides below
            log.debug("model %s: pure-Python pickling failed", state.name, exc_info=True)
    try:
        return b"P" + pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError):
        return b"D" + bytes(dill.dumps(payload))


def yielding_dumps(obj: Any) -> bytes:
    """``pickle.dumps`` by the pure-Python pickler (same format; it hands the GIL over).

    Protocol 4: the pure-Python pickler's protocol-5 buffer path trips over its own memo on
    numpy arrays (an AssertionError in CPython 3.11)."""
    buffer = io.BytesIO()
    pickle._Pickler(buffer, protocol=4).dump(obj)
    return buffer.getvalue()


def load_snapshot(name: str, flavor: str, blob: bytes) -> ModelState:
    # Only blobs this server wrote itself (snapshot_blob) are ever loaded here.
    body = blob[1:]
    payload = pickle.loads(body) if blob[:1] == b"P" else dill.loads(body)  # noqa: S301
    return ModelState(name=name, flavor=flavor, **payload)


class ModelService:
    def __init__(
        self,
        registry: Registry,
        storage: Storage,
        hub: EventHub,
        *,
        snapshot_every: int,
        snapshot_interval: float,
    ) -> None:
        self.registry = registry
        self.storage = storage
        self.hub = hub
        self.snapshot_every = snapshot_every
        self.snapshot_interval = snapshot_interval
        self._last_snapshot = time.monotonic()
        self.workers = ModelWorkers()
        #: per model: when its last snapshot ended and how long it took
        self._snapshot_costs: dict[str, tuple[float, float]] = {}

    # -- start-up ----------------------------------------------------------------------------

    async def load(self) -> None:
        """Each model from its snapshot, then the learn log after it, in order."""
        for stored in await self.storage.load_models():
            state = load_snapshot(stored.name, stored.flavor, stored.snapshot)
            replayed = 0
            for body in await self.storage.log_after(stored.name, stored.snapshot_seq):
                for item in orjson.loads(body):
                    state.replay(LearnRecord.decode(item))
                    replayed += 1
            state.forget_old_identifiers(self.registry.idempotency_window)
            self.registry.models[state.name] = state
            if state.heavy:
                self.workers.expensive(state.name)
            log.info(
                "loaded model %s (%s, %d samples, %d replayed from the log)",
                state.name,
                state.flavor,
                state.learn_stats.n_calls,
                replayed,
            )

    # -- models --------------------------------------------------------------------------------

    async def create(
        self,
        name: str,
        flavor: str,
        model: Any,
        *,
        origin: str,
        spec: Any,
        max_features: int | None = None,
        heavy: bool = True,
    ) -> str:
        if name in self.registry.models:
            raise ConflictError(f"model {name!r} already exists (delete it first to replace it)")
        state = ModelState(
            name=name,
            flavor=flavor,
            model=model,
            metrics=default_metrics(flavor),
            max_features=max_features,
            heavy=heavy,
        )
        blob = snapshot_blob(state)
        self.registry.models[name] = state
        if heavy:
            self.workers.expensive(name)
        spec_text = None if spec is None else dumps(spec).decode()
        op: Op = (
            "create",
            name,
            flavor,
            origin,
            spec_text,
            time.time(),
            self.storage.next_seq(),
            blob,
        )
        future = self.storage.submit([op])
        assert future is not None
        try:
            await future
        except Exception:
            self.registry.models.pop(name, None)
            raise
        log.info("created model %s (%s, %s)", name, flavor, origin)
        return name

    async def delete(self, name: str) -> None:
        self.registry.get(name)
        await self.workers.drain(name)  # what was submitted before the delete runs first
        if self.registry.models.pop(name, None) is None:
            raise NotFoundError(f"model {name!r} does not exist")
        self.workers.forget(name)
        self.registry.pending.forget_model(name)
        future = self.storage.submit([("delete", name)])
        assert future is not None
        await future
        log.info("deleted model %s", name)

    # -- learning ------------------------------------------------------------------------------

    async def learn(
        self,
        features: dict[str, Any],
        ground_truth: Any,
        *,
        model: str | None = None,
        models: list[str] | None = None,
        identifier: str | None = None,
        prediction: Any = None,
    ) -> dict[str, dict[str, Any]]:
        targets = self.registry.targets(model, models)
        results: dict[str, dict[str, Any]] = {}
        ops: list[Op] = []
        errors: list[str] = []
        for state in targets:
            try:
                supplied = self.registry.joined(state, identifier, prediction)
                record = await self.workers.call(
                    state.name,
                    not state.heavy,
                    self.registry.apply,
                    state,
                    features,
                    ground_truth,
                    identifier,
                    supplied,
                )
            except SpecError as exc:
                results[state.name] = {"learned": False, "duplicate": False, "error": str(exc)}
                errors.append(str(exc))
                continue
            if record is None:
                results[state.name] = {"learned": False, "duplicate": True}
                continue
            results[state.name] = {"learned": True, "duplicate": False}
            ops.append(("log", self.storage.next_seq(), state.name, dumps([record.encode()])))
            self._published(state, [record], "learn")
        if errors and len(errors) == len(targets):
            raise SpecError(errors[0] if len(errors) == 1 else "; ".join(errors))
        await self._commit(ops)
        return results

    async def learn_batch(
        self,
        samples: list[tuple[dict[str, Any], Any, str | None]],
        *,
        model: str | None = None,
        models: list[str] | None = None,
        update_metrics: bool = True,
    ) -> dict[str, dict[str, Any]]:
        """Many samples in one commit per model. A sample a model rejects is skipped and
        listed under ``rejected`` (index and reason); the others are learned. Only when no
        model could learn any sample is it an error."""
        targets = self.registry.targets(model, models)
        results: dict[str, dict[str, Any]] = {}
        ops: list[Op] = []
        reasons: list[str] = []
        accepted = 0
        for state in targets:
            taken = self.registry.pending.take_many(
                state.name, (identifier for _, _, identifier in samples), state.seen
            )
            # a batch is never learned on the event loop: it may take seconds to minutes
            encoded, body, duplicates, rejected = await self.workers.run(
                state.name, self._learn_many, state, samples, taken, update_metrics
            )
            result: dict[str, Any] = {"learned": len(encoded), "duplicates": duplicates}
            if rejected:
                result["rejected"] = [{"index": i, "message": m} for i, m in rejected[:100]]
                reasons.append(f"samples[{rejected[0][0]}]: {rejected[0][1]}")
            results[state.name] = result
            accepted += len(encoded) + duplicates
            if encoded:
                ops.append(("log", self.storage.next_seq(), state.name, body))
                if self.hub.has_subscribers("events") or self.hub.has_subscribers("metrics"):
                    self._published(state, map(LearnRecord.decode, encoded), "learn")
        if not accepted and reasons:
            raise SpecError("; ".join(reasons[:3]), field="samples")
        await self._commit(ops)
        return results

    def _learn_many(
        self,
        state: ModelState,
        samples: list[tuple[dict[str, Any], Any, str | None]],
        taken: TakenPredictions,
        update_metrics: bool,
    ) -> tuple[list[list[Any]], bytes, int, list[tuple[int, str]]]:
        """The model's part of a batch, and its log record (encoded here, off the loop)."""
        encoded, duplicates, rejected = state.learn_many(
            samples, taken, update_metrics=update_metrics
        )
        state.forget_old_identifiers(self.registry.idempotency_window)
        return encoded, dumps(encoded) if encoded else b"", duplicates, rejected

    async def predict(
        self, model: str, features: dict[str, Any], identifier: str | None
    ) -> tuple[Any, str]:
        state = self.registry.get(model)
        if not state.heavy and self.workers.idle(model):
            return self.predict_now(state, features, identifier)
        size = self.registry.pending.room_for(features)
        prediction = await self.workers.run(model, state.predict_timed, features)
        value = prediction.value
        identifier = self.registry.remember(state, features, prediction, identifier, size)
        self._published_prediction(model, features, value)
        return value, identifier

    def predict_now(
        self, state: ModelState, features: dict[str, Any], identifier: str | None
    ) -> tuple[Any, str]:
        """A prediction on the event loop: a cheap model whose thread is idle."""
        value, identifier = self.registry.predict(state, features, identifier)
        self._published_prediction(state.name, features, value)
        return value, identifier

    def _published_prediction(self, model: str, features: dict[str, Any], value: Any) -> None:
        if self.hub.has_subscribers("events"):
            self.hub.publish(
                "events",
                {"model": model, "features": features, "prediction": value},
                event="predict",
            )

    async def predict_many(
        self, model: str, samples: list[tuple[dict[str, Any], str | None]]
    ) -> list[tuple[Any, str]]:
        """A batch of predictions, on the model's thread; all kept for their labels, or none
        (CapacityError) when they do not fit."""
        state = self.registry.get(model)
        sizes = self.registry.pending.room_for_many([features for features, _ in samples])
        predictions = await self.workers.run(
            model, lambda: [state.predict_timed(features) for features, _ in samples]
        )
        out = []
        for (features, identifier), prediction, size in zip(
            samples, predictions, sizes, strict=True
        ):
            identifier = self.registry.remember(state, features, prediction, identifier, size)
            out.append((prediction.value, identifier))
        if self.hub.has_subscribers("events"):
            self.hub.publish_many(
                "events",
                (
                    {"model": model, "features": features, "prediction": value}
                    for (features, _), (value, _) in zip(samples, out, strict=True)
                ),
                event="predict",
            )
        return out

    async def label(self, model: str, identifier: str, label: Any) -> bool:
        state = self.registry.get(model)
        pending = self.registry.take_label(state, identifier)
        if pending is None:
            return False
        record = await self.workers.call(
            model,
            not state.heavy,
            self.registry.apply,
            state,
            pending.features,
            label,
            identifier,
            pending.prediction,
        )
        if record is None:
            return False
        op: Op = ("log", self.storage.next_seq(), state.name, dumps([record.encode()]))
        self._published(state, [record], "label")
        await self._commit([op])
        return True

    async def _commit(self, ops: list[Op]) -> None:
        if ops:
            future = self.storage.submit(ops)
            assert future is not None
            await future

    def _published(self, state: ModelState, records: Iterable[LearnRecord], event: str) -> None:
        if self.hub.has_subscribers("events"):
            self.hub.publish_many(
                "events",
                (
                    {
                        "model": state.name,
                        "features": record.features,
                        "prediction": None
                        if record.prediction is None
                        else record.prediction.value,
                        "ground_truth": record.ground_truth,
                    }
                    for record in records
                ),
                event=event,
            )
        if self.hub.has_subscribers("metrics"):
            self.hub.publish("metrics", {"model": state.name, **state.metric_values()})

    # -- snapshots -----------------------------------------------------------------------------

    async def snapshot_dirty(self, *, force: bool = False) -> int:
        """Queue snapshots of models changed enough (or long enough ago); returns how many.

        A model that is cheap and idle is pickled right here; any other on its own thread,
        after the work queued for it (the event loop goes on meanwhile). The sequence number is
        read in the same loop step that gets the blob, with nothing of that model in between.
        """
        now = time.monotonic()
        interval_due = now - self._last_snapshot >= self.snapshot_interval
        if interval_due or force:
            self._last_snapshot = now
        count = 0
        for state in list(self.registry.models.values()):
            last, took = self._snapshot_costs.get(state.name, (0.0, 0.0))
            # a model whose snapshot is slow is snapshotted on time less often (<= 10% of its
            # thread's time), still after every snapshot_every learns
            timely = interval_due and now - last >= SNAPSHOT_SHARE * took
            if not (state.dirty and (force or timely or state.dirty >= self.snapshot_every)):
                continue
            started = time.monotonic()
            blob = await self.workers.call(state.name, not state.heavy, snapshot_blob, state)
            if self.registry.models.get(state.name) is not state:
                continue  # deleted meanwhile
            op: Op = ("snapshot", state.name, self.storage.seq, blob)
            state.dirty = 0
            self.storage.submit([op], wait=False)
            self._snapshot_costs[state.name] = (time.monotonic(), time.monotonic() - started)
            count += 1
        return count

    def require(self, name: str) -> ModelState:
        try:
            return self.registry.models[name]
        except KeyError:
            raise NotFoundError(f"model {name!r} does not exist") from None
