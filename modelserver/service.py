"""The model service: the learning core plus durability and events, still without HTTP.

Every mutation is applied in memory in order per model (on the event loop, or on the model's own
thread for large or expensive work: see ``workers``) and queued to storage in the order it was
applied; the caller awaits the commit before replying. Shared state (pending predictions, storage
sequence numbers, in-flight identifiers, event fan-out) is only ever touched on the event loop. A
commit that fails takes back what it applied (see :class:`ModelService`).

The seam between the two: a write that runs on a model's thread holds that model's write lock
(``workers.locked``) from before its in-flight check until its ops are submitted; the thread
only computes, and the bookkeeping (in-flight identifiers, taken predictions, sequence numbers,
submit) happens on the loop in the one step after the thread returns. A snapshot takes the same
lock, so it is queued after every write it holds and before every write it does not. A cheap
model's single write runs inline, with no await at all between check, apply and submit, when its
thread is idle and its lock free.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson

from streamml.errors import ConflictError, SpecError, StreamMLError
from streamml.modelserver.events import EventHub, jsonable
from streamml.modelserver.learning import LearnRecord, ModelState, Taken, default_metrics
from streamml.modelserver.pending import TakenPredictions
from streamml.modelserver.recovery import LoadReport, recover
from streamml.modelserver.registry import Registry
from streamml.modelserver.snapshots import SnapshotError, load_snapshot, snapshot_blob
from streamml.modelserver.storage import Op, Storage, StorageError, StoredModel
from streamml.modelserver.workers import ModelWorkers

log = logging.getLogger(__name__)

#: an interval snapshot waits at least this many times as long as the model's last one took
SNAPSHOT_SHARE = 10

Sample = tuple[dict[str, Any], Any, str | None]


def dumps(data: Any) -> bytes:
    encoded: bytes = orjson.dumps(data, default=jsonable, option=orjson.OPT_NON_STR_KEYS)
    return encoded


class ModelService:
    """Models in memory, made durable in order. An error reply means "not applied": a learn,
    label, create or delete changes what the server serves only together with its commit. A
    failed commit returns every model it touched to its durable state (:meth:`restore_durable`)
    before any caller hears of the failure, and puts back the waiting predictions it took."""

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
        #: what start-up loaded (filled by :meth:`load`)
        self.report = LoadReport()
        #: names whose creation is being committed (not served until it is durable)
        self._creating: set[str] = set()
        #: (model, identifier) of learns applied in memory whose commit has not finished: a
        #: resend waits for that outcome instead of being told "duplicate" too early
        self._inflight: dict[tuple[str, str], asyncio.Future[None]] = {}
        storage.on_failure = self.restore_durable

    # -- start-up ----------------------------------------------------------------------------

    async def load(self) -> LoadReport:
        """Each model from its snapshot, then the learn log after it, in order; what cannot be
        loaded is quarantined (see ``recovery``)."""
        self.report = await recover(self.registry, self.storage)
        for state in self.registry.models.values():
            if state.heavy:
                self.workers.expensive(state.name)
        return self.report

    def _restore(
        self, stored: StoredModel, rows: list[tuple[int, bytes]]
    ) -> tuple[ModelState, int]:
        if stored.snapshot is None:  # the JOIN of load_model_sync returns snapshot rows only
            raise SnapshotError(f"model {stored.name!r} has no snapshot row")
        state = load_snapshot(stored.name, stored.flavor, stored.snapshot)
        replayed = 0
        for _seq, body in rows:
            for item in orjson.loads(body):
                state.replay(LearnRecord.decode(item))
                replayed += 1
        state.forget_old_identifiers(self.registry.idempotency_window)
        return state, replayed

    def restore_durable(self, names: set[str]) -> None:
        """After a failed commit (nothing is running or queued then): these models become what
        the data directory holds, a deleted one comes back, one never made durable is gone. A
        quarantined model stays out of service (its delete puts its quarantine back).

        The restored state is a new object: a model's thread may still be computing on the old
        one (a write applied on top of the failed state), and nothing here touches that. Such a
        write, back on the loop, finds its state replaced and is refused (:meth:`_stale`)."""
        for name in sorted(names):
            stored = self.storage.load_model_sync(name)
            if stored is None or stored.snapshot_seq is None:
                self.registry.models.pop(name, None)
                continue
            rows = self.storage.log_after_sync(name, stored.snapshot_seq)
            try:
                self.registry.models[name], _ = self._restore(stored, rows)
            except Exception as exc:  # damaged on disk: it was quarantined, or is now
                self.registry.models.pop(name, None)
                log.warning("model %s cannot return to its durable state: %s", name, exc)
        log.warning("models %s returned to their durable state", ", ".join(sorted(names)))

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
        """Served only once everything about it is checked and durable (never a ghost)."""
        self.registry.check_free(name)
        if name in self._creating:
            raise ConflictError(f"model {name!r} already exists (delete it first to replace it)")
        state = ModelState(
            name=name,
            flavor=flavor,
            model=model,
            metrics=default_metrics(flavor),
            max_features=max_features,
            heavy=heavy,
        )
        try:
            blob = snapshot_blob(state)
            spec_text = None if spec is None else dumps(spec).decode()
        except Exception as exc:  # whatever pickle/dill/orjson refuse, it is about this model
            raise SpecError(
                f"model {name!r} cannot be stored: {type(exc).__name__}: {str(exc)[:200]}"
            ) from None
        created = time.time()
        op: Op = ("create", name, flavor, origin, spec_text, created, self.storage.next_seq(), blob)
        self._creating.add(name)
        try:
            await self._commit([op])
        finally:
            self._creating.discard(name)
        self.registry.models[name] = state
        if heavy:
            self.workers.expensive(name)
        log.info("created model %s (%s, %s)", name, flavor, origin)
        return name

    async def delete(self, name: str) -> None:
        quarantined = self.registry.quarantined.pop(name, None)  # a quarantined one may go too
        if quarantined is None:
            self.registry.get(name)
            async with self.workers.locked([name]):  # writes applied before it are queued first
                self.registry.get(name)
                del self.registry.models[name]  # no learn reaches it meanwhile; a failure undoes
                future = self._submit([("delete", name)])
            await self._wait(future)
        else:
            try:
                await self._commit([("delete", name)])
            except Exception:
                self.registry.quarantined[name] = quarantined
                raise
        self.workers.forget(name)
        self.registry.pending.forget_model(name)
        log.info("deleted model %s", name)

    # -- learning ------------------------------------------------------------------------------

    def _inline(self, targets: list[ModelState]) -> bool:
        """Every target is cheap, its thread idle and its write lock free: apply right here."""
        workers = self.workers
        return all(
            not s.heavy and workers.idle(s.name) and workers.unlocked(s.name) for s in targets
        )

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
        inflight = self._inflight
        waits = identifier is not None and any((s.name, identifier) in inflight for s in targets)
        if not waits and self._inline(targets):  # the hot path: no await until the commit
            results, ops, learned, taken = self._learn_inline(
                targets, features, ground_truth, identifier, prediction
            )
            future = self._submit(ops)
        else:
            async with self.workers.locked([state.name for state in targets]):
                names = {state.name for state in targets}
                if identifier is not None:
                    while self._inflight and await self._settle([(n, identifier) for n in names]):
                        pass
                targets = [s for s in self.registry.targets(model, models) if s.name in names]
                results, ops, learned, taken = await self._learn_each(
                    targets, features, ground_truth, identifier, prediction
                )
                future = self._submit(ops)
        keys = [] if identifier is None else [(state.name, identifier) for state, _ in learned]
        await self._wait(future, keys, taken)
        for state, record in learned:
            self._published(state, [record], "learn")
        return results

    def _learn_inline(
        self,
        targets: list[ModelState],
        features: dict[str, Any],
        ground_truth: Any,
        identifier: str | None,
        prediction: Any,
    ) -> tuple[dict[str, dict[str, Any]], list[Op], list[tuple[ModelState, LearnRecord]], Taken]:
        results: dict[str, dict[str, Any]] = {}
        learned: list[tuple[ModelState, LearnRecord]] = []
        errors: list[str] = []
        taken: Taken = []
        try:
            for state in targets:
                try:
                    record = self.registry.learn(
                        state, features, ground_truth, identifier, prediction, taken
                    )
                except SpecError as exc:
                    self._refused(results, errors, state, exc)
                    continue
                self._learned(results, learned, state, record)
        except Exception:
            self._abort([state.name for state in targets])
            raise
        self._unless_all_refused(errors, targets)
        return results, self._log_ops(learned), learned, taken

    async def _learn_each(
        self,
        targets: list[ModelState],
        features: dict[str, Any],
        ground_truth: Any,
        identifier: str | None,
        prediction: Any,
    ) -> tuple[dict[str, dict[str, Any]], list[Op], list[tuple[ModelState, LearnRecord]], Taken]:
        """:meth:`_learn_inline` with each model's part on its thread (when it must be); called
        with the targets' write locks held. The ops are built in the step that returns them."""
        results: dict[str, dict[str, Any]] = {}
        learned: list[tuple[ModelState, LearnRecord]] = []
        errors: list[str] = []
        taken: Taken = []
        registry = self.registry
        for state in targets:
            try:
                join = registry.join(state, ground_truth, identifier, prediction)
                call = self.workers.call(
                    state.name, not state.heavy, registry.apply, state, features, ground_truth,
                    identifier, join,
                )  # fmt: skip
                try:
                    record = await call
                except BaseException as exc:
                    registry.settle(state, identifier, join, taken, ok=False)
                    if not isinstance(exc, SpecError):  # a bug, or cancelled mid-apply
                        self._abort([state.name for state in targets])
                    raise
                registry.settle(state, identifier, join, taken, ok=True)
            except SpecError as exc:
                self._refused(results, errors, state, exc)
                continue
            self._learned(results, learned, state, record)
        self._refuse_stale([state for state, _ in learned], taken)
        self._unless_all_refused(errors, targets)
        return results, self._log_ops(learned), learned, taken

    @staticmethod
    def _refused(
        results: dict[str, dict[str, Any]], errors: list[str], state: ModelState, exc: SpecError
    ) -> None:
        results[state.name] = {"learned": False, "duplicate": False, "error": str(exc)}
        errors.append(str(exc))

    @staticmethod
    def _unless_all_refused(errors: list[str], targets: list[ModelState]) -> None:
        """A request every target refused is a 400 (nothing was applied); a partial one is not."""
        if errors and len(errors) == len(targets):
            raise SpecError(errors[0] if len(errors) == 1 else "; ".join(errors))

    @staticmethod
    def _learned(
        results: dict[str, dict[str, Any]],
        learned: list[tuple[ModelState, LearnRecord]],
        state: ModelState,
        record: LearnRecord | None,
    ) -> None:
        if record is None:
            results[state.name] = {"learned": False, "duplicate": True}
        else:
            results[state.name] = {"learned": True, "duplicate": False}
            learned.append((state, record))

    def _log_ops(self, learned: list[tuple[ModelState, LearnRecord]]) -> list[Op]:
        return [
            ("log", self.storage.next_seq(), state.name, dumps([record.encode()]))
            for state, record in learned
        ]

    def _refuse_stale(self, applied: list[ModelState], taken: Taken) -> None:
        """Back on the loop after a model's thread: when a failed commit restored one of these
        models meanwhile, the write was applied on top of the failed state (to an object no
        longer served). It fails like the writes queued behind the failure: the waiting
        predictions go back, and the models it did reach are reverted (abort marker)."""
        models = self.registry.models
        stale = [state.name for state in applied if models.get(state.name) is not state]
        if not stale:
            return
        for name, identifier, item in taken:
            self.registry.pending.restore(name, identifier, item)
        current = [state.name for state in applied if models.get(state.name) is state]
        if current:
            self._abort(current)
        raise StorageError(
            f"model {', '.join(stale)} returned to its durable state after a failed write "
            "while this request was being applied: nothing was applied (retry)"
        )

    async def learn_batch(
        self,
        samples: list[Sample],
        *,
        model: str | None = None,
        models: list[str] | None = None,
        update_metrics: bool = True,
    ) -> dict[str, dict[str, Any]]:
        """Many samples in one commit per model. A sample a model rejects is skipped and
        listed under ``rejected`` (index and reason); the others are learned. Only when no
        model could learn any sample is it an error. Never learned on the event loop (it may
        take seconds to minutes): each model's part runs on its thread, under the write locks
        of all targets, and all ops are submitted together after the last one."""
        targets = self.registry.targets(model, models)
        names = {state.name for state in targets}
        results: dict[str, dict[str, Any]] = {}
        learned: list[tuple[ModelState, list[list[Any]]]] = []
        taken: Taken = []
        async with self.workers.locked(list(names)):
            while self._inflight:
                keys = [(n, i) for n in names for _, _, i in samples if i is not None]
                if not await self._settle(keys):
                    break
            targets = [s for s in self.registry.targets(model, models) if s.name in names]
            bodies: list[tuple[str, bytes]] = []
            reasons: list[str] = []
            accepted = 0
            for state in targets:
                encoded, body, result = await self._batch_part(
                    state, samples, update_metrics, targets, taken
                )
                results[state.name] = result
                accepted += result["learned"] + result["duplicates"]
                if "rejected" in result:
                    first = result["rejected"][0]
                    reasons.append(f"samples[{first['index']}]: {first['message']}")
                if encoded:
                    bodies.append((state.name, body))
                    learned.append((state, encoded))
            self._refuse_stale([state for state, _ in learned], taken)
            if not accepted and reasons:
                raise SpecError("; ".join(reasons[:3]), field="samples")
            ops: list[Op] = [("log", self.storage.next_seq(), n, body) for n, body in bodies]
            future = self._submit(ops)
        keys = [(s.name, item[4]) for s, encoded in learned for item in encoded if item[4]]
        await self._wait(future, keys, taken)
        if self.hub.has_subscribers("events") or self.hub.has_subscribers("metrics"):
            for state, encoded in learned:
                self._published(state, [LearnRecord.decode(item) for item in encoded], "learn")
        return results

    async def _batch_part(
        self,
        state: ModelState,
        samples: list[Sample],
        update_metrics: bool,
        targets: list[ModelState],
        taken: Taken,
    ) -> tuple[list[list[Any]], bytes, dict[str, Any]]:
        """One model's part of a batch on its thread; its predictions are taken and the unused
        ones put back here, on the loop."""
        pending = self.registry.pending
        joined = pending.take_many(state.name, (i for _, _, i in samples), state.seen)
        consumed: Taken = []
        try:
            encoded, body, duplicates, rejected = await self.workers.run(
                state.name, self._learn_many, state, samples, joined, update_metrics, consumed
            )
        except Exception:
            for name, identifier, item in consumed:
                pending.restore(name, identifier, item)
            self._abort([s.name for s in targets])
            raise
        finally:
            for (name, identifier), item in joined.unused():
                pending.restore(name, identifier, item)
        taken.extend(consumed)
        result: dict[str, Any] = {"learned": len(encoded), "duplicates": duplicates}
        if rejected:
            result["rejected"] = [{"index": i, "message": m} for i, m in rejected[:100]]
        return encoded, body, result

    def _learn_many(
        self,
        state: ModelState,
        samples: list[Sample],
        joined: TakenPredictions,
        update_metrics: bool,
        consumed: Taken,
    ) -> tuple[list[list[Any]], bytes, int, list[tuple[int, str]]]:
        """The model's part of a batch, and its log record (encoded here, off the loop)."""
        encoded, duplicates, rejected = state.learn_many(
            samples, joined, update_metrics=update_metrics, taken=consumed
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
        taken: Taken = []
        if (model, identifier) not in self._inflight and self._inline([state]):  # no await
            record = self._label_now(state, identifier, label, taken)
            future = self._submit(self._log_ops([(state, record)]) if record else [])
        else:
            async with self.workers.locked([model]):
                while self._inflight and await self._settle([(model, identifier)]):
                    pass
                state = self.registry.get(model)
                record = await self._label_on_thread(state, identifier, label, taken)
                if record is not None:
                    self._refuse_stale([state], taken)
                future = self._submit(self._log_ops([(state, record)]) if record else [])
        if record is None:
            return False
        await self._wait(future, [(model, identifier)], taken)
        self._published(state, [record], "label")
        return True

    def _label_now(
        self, state: ModelState, identifier: str, label: Any, taken: Taken
    ) -> LearnRecord | None:
        try:
            return self.registry.label(state, identifier, label, taken)
        except StreamMLError:
            raise
        except Exception:
            self._abort([state.name])
            raise

    async def _label_on_thread(
        self, state: ModelState, identifier: str, label: Any, taken: Taken
    ) -> LearnRecord | None:
        registry = self.registry
        join = registry.take_label(state, identifier, label)
        if join is None:
            return None
        assert join.waiting is not None
        try:
            record = await self.workers.call(
                state.name,
                not state.heavy,
                registry.apply,
                state,
                join.waiting.features,
                label,
                identifier,
                join,
            )
        except BaseException as exc:
            registry.settle(state, identifier, join, taken, ok=False)
            if not isinstance(exc, SpecError):  # a bug, or cancelled mid-apply
                self._abort([state.name])
            raise
        registry.settle(state, identifier, join, taken, ok=True)
        return record

    # -- commits -------------------------------------------------------------------------------

    def _submit(self, ops: list[Op]) -> asyncio.Future[None] | None:
        return self.storage.submit(ops) if ops else None

    async def _commit(self, ops: list[Op]) -> None:
        await self._wait(self._submit(ops))

    async def _wait(
        self,
        future: asyncio.Future[None] | None,
        keys: list[tuple[str, str]] | None = None,
        taken: Taken | None = None,
    ) -> None:
        """Wait for the commit of submitted ops; meanwhile ``keys`` are in flight. When it
        fails, the models are already back to their durable state and the ``taken``
        predictions wait again."""
        if future is None:
            return
        inflight = self._inflight
        for key in keys or ():
            inflight[key] = future
        try:
            await future
        except StorageError:
            for name, identifier, item in taken or ():
                self.registry.pending.restore(name, identifier, item)
            raise
        finally:
            for key in keys or ():
                if inflight.get(key) is future:
                    del inflight[key]

    async def _settle(self, keys: list[tuple[str, str]]) -> bool:
        """Wait until no learn under these identifiers is in flight; True if one was."""
        inflight = self._inflight
        waits = {inflight[key] for key in keys if key in inflight}
        if waits:
            await asyncio.wait(waits)  # their outcome is their callers' to report
        return bool(waits)

    def _abort(self, names: list[str]) -> None:
        """A request failed half-way (a bug, not the client's input): what it applied is not
        logged, so these models must return to their durable state, which the storage does
        (after committing everything queued before) by failing this marker."""
        log.error("a request failed while applying to %s; reverting them", ", ".join(names))
        self.storage.submit([("abort", name) for name in names], wait=False)

    def _published(self, state: ModelState, records: list[LearnRecord], event: str) -> None:
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
        after the work queued for it (the event loop goes on meanwhile). The model's write lock
        is held from before the blob until it is submitted: every write in the blob is queued
        before it (its sequence number is <= the snapshot's) and every later one after it, so a
        snapshot never holds a sample whose log commit failed (that failure fails it too).
        """
        now = time.monotonic()
        interval_due = now - self._last_snapshot >= self.snapshot_interval
        if interval_due or force:
            self._last_snapshot = now
        count = 0
        for name in list(self.registry.models):
            state = self.registry.models.get(name)
            if state is None:
                continue
            last, took = self._snapshot_costs.get(name, (0.0, 0.0))
            # a model whose snapshot is slow is snapshotted on time less often (<= 10% of its
            # thread's time), still after every snapshot_every learns
            timely = interval_due and now - last >= SNAPSHOT_SHARE * took
            if not (state.dirty and (force or timely or state.dirty >= self.snapshot_every)):
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
        self._snapshot_costs[name] = (time.monotonic(), time.monotonic() - started)
        return True

    def require(self, name: str) -> ModelState:
        return self.registry.get(name)
