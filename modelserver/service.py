"""The model service: the learning core plus durability and events, still without HTTP.

Every mutation is applied in memory on the event loop (so it is ordered and never lost to a race)
and queued to storage in the same order; the caller awaits the commit before replying. A commit
that fails takes back what it applied (see :class:`ModelService`).
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
from streamml.modelserver.recovery import LoadReport, recover
from streamml.modelserver.registry import Registry
from streamml.modelserver.snapshots import SnapshotError, load_snapshot, snapshot_blob
from streamml.modelserver.storage import Op, Storage, StorageError, StoredModel

log = logging.getLogger(__name__)


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
        quarantined model stays out of service (its delete puts its quarantine back)."""
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

    async def create(self, name: str, flavor: str, model: Any, *, origin: str, spec: Any) -> str:
        """Served only once everything about it is checked and durable (never a ghost)."""
        self.registry.check_free(name)
        if name in self._creating:
            raise ConflictError(f"model {name!r} already exists (delete it first to replace it)")
        state = ModelState(name=name, flavor=flavor, model=model, metrics=default_metrics(flavor))
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
        log.info("created model %s (%s, %s)", name, flavor, origin)
        return name

    async def delete(self, name: str) -> None:
        quarantined = self.registry.quarantined.pop(name, None)  # a quarantined one may go too
        if quarantined is None:
            self.registry.get(name)
            del self.registry.models[name]  # no learn reaches it meanwhile; a failed commit undoes
        try:
            await self._commit([("delete", name)])
        except Exception:
            if quarantined is not None:
                self.registry.quarantined[name] = quarantined
            raise
        self.registry.pending.forget_model(name)
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
        while identifier is not None and self._inflight:
            if not await self._settle([(state.name, identifier) for state in targets]):
                break
            targets = self.registry.targets(model, models)
        results: dict[str, dict[str, Any]] = {}
        ops: list[Op] = []
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
                    results[state.name] = {"learned": False, "duplicate": False, "error": str(exc)}
                    errors.append(str(exc))
                    continue
                if record is None:
                    results[state.name] = {"learned": False, "duplicate": True}
                    continue
                results[state.name] = {"learned": True, "duplicate": False}
                ops.append(("log", self.storage.next_seq(), state.name, dumps([record.encode()])))
                learned.append((state, record))
        except Exception:
            self._abort([state.name for state in targets])
            raise
        if errors and len(errors) == len(targets):
            raise SpecError(errors[0] if len(errors) == 1 else "; ".join(errors))
        keys = [] if identifier is None else [(state.name, identifier) for state, _ in learned]
        await self._commit(ops, keys, taken)
        for state, record in learned:
            self._published(state, [record], "learn")
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
        while self._inflight:
            keys = [(s.name, i) for s in targets for _, _, i in samples if i is not None]
            if not await self._settle(keys):
                break
            targets = self.registry.targets(model, models)
        results: dict[str, dict[str, Any]] = {}
        ops: list[Op] = []
        learned: list[tuple[ModelState, list[list[Any]]]] = []
        reasons: list[str] = []
        accepted = 0
        taken: Taken = []
        try:
            for state in targets:
                encoded, duplicates, rejected = state.learn_many(
                    samples, self.registry.pending, update_metrics=update_metrics, taken=taken
                )
                state.forget_old_identifiers(self.registry.idempotency_window)
                result: dict[str, Any] = {"learned": len(encoded), "duplicates": duplicates}
                if rejected:
                    result["rejected"] = [{"index": i, "message": m} for i, m in rejected[:100]]
                    reasons.append(f"samples[{rejected[0][0]}]: {rejected[0][1]}")
                results[state.name] = result
                accepted += len(encoded) + duplicates
                if encoded:
                    ops.append(("log", self.storage.next_seq(), state.name, dumps(encoded)))
                    learned.append((state, encoded))
        except Exception:
            self._abort([state.name for state in targets])
            raise
        if not accepted and reasons:
            raise SpecError("; ".join(reasons[:3]), field="samples")
        keys = [(s.name, item[4]) for s, encoded in learned for item in encoded if item[4]]
        await self._commit(ops, keys, taken)
        if self.hub.has_subscribers("events") or self.hub.has_subscribers("metrics"):
            for state, encoded in learned:
                self._published(state, [LearnRecord.decode(item) for item in encoded], "learn")
        return results

    def predict(
        self, model: str, features: dict[str, Any], identifier: str | None
    ) -> tuple[Any, str]:
        state = self.registry.get(model)
        value, identifier = self.registry.predict(state, features, identifier)
        if self.hub.has_subscribers("events"):
            self.hub.publish(
                "events",
                {"model": model, "features": features, "prediction": value},
                event="predict",
            )
        return value, identifier

    async def label(self, model: str, identifier: str, label: Any) -> bool:
        state = self.registry.get(model)
        while self._inflight and await self._settle([(model, identifier)]):
            state = self.registry.get(model)
        taken: Taken = []
        try:
            record = self.registry.label(state, identifier, label, taken)
        except StreamMLError:
            raise
        except Exception:
            self._abort([model])
            raise
        if record is None:
            return False
        op: Op = ("log", self.storage.next_seq(), state.name, dumps([record.encode()]))
        await self._commit([op], [(model, identifier)], taken)
        self._published(state, [record], "label")
        return True

    async def _commit(
        self,
        ops: list[Op],
        keys: list[tuple[str, str]] | None = None,
        taken: Taken | None = None,
    ) -> None:
        """Wait for the commit of ``ops``; meanwhile ``keys`` are in flight. When it fails, the
        models are already back to their durable state and the ``taken`` predictions wait again."""
        if not ops:
            return
        future = self.storage.submit(ops)
        assert future is not None
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
            for record in records:
                self.hub.publish(
                    "events",
                    {
                        "model": state.name,
                        "features": record.features,
                        "prediction": None
                        if record.prediction is None
                        else record.prediction.value,
                        "ground_truth": record.ground_truth,
                    },
                    event=event,
                )
        if self.hub.has_subscribers("metrics"):
            self.hub.publish("metrics", {"model": state.name, **state.metric_values()})

    # -- snapshots -----------------------------------------------------------------------------

    def snapshot_dirty(self, *, force: bool = False) -> int:
        """Queue snapshots of models changed enough (or long enough ago); returns how many."""
        now = time.monotonic()
        interval_due = now - self._last_snapshot >= self.snapshot_interval
        ops: list[Op] = []
        for state in self.registry.models.values():
            if state.dirty and (force or interval_due or state.dirty >= self.snapshot_every):
                ops.append(("snapshot", state.name, self.storage.seq, snapshot_blob(state)))
                state.dirty = 0
        if interval_due or force:
            self._last_snapshot = now
        if ops:
            self.storage.submit(ops, wait=False)
        return len(ops)

    def require(self, name: str) -> ModelState:
        return self.registry.get(name)
