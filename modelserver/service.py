"""The model service: the learning core plus durability and events, still without HTTP.

Every mutation is applied in memory on the event loop (so it is ordered and never lost to a race)
and queued to storage in the same order; the caller awaits the commit before replying.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

from streamml.errors import SpecError
from streamml.modelserver.events import EventHub, jsonable
from streamml.modelserver.learning import LearnRecord, ModelState, default_metrics
from streamml.modelserver.recovery import LoadReport, recover
from streamml.modelserver.registry import Registry
from streamml.modelserver.snapshots import snapshot_blob
from streamml.modelserver.storage import Op, Storage

log = logging.getLogger(__name__)


def dumps(data: Any) -> bytes:
    encoded: bytes = orjson.dumps(data, default=jsonable, option=orjson.OPT_NON_STR_KEYS)
    return encoded


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
        #: what start-up loaded (filled by :meth:`load`)
        self.report = LoadReport()

    # -- start-up ----------------------------------------------------------------------------

    async def load(self) -> LoadReport:
        """Each model from its snapshot, then the learn log after it, in order; what cannot be
        loaded is quarantined (see ``recovery``)."""
        self.report = await recover(self.registry, self.storage)
        return self.report

    # -- models --------------------------------------------------------------------------------

    async def create(self, name: str, flavor: str, model: Any, *, origin: str, spec: Any) -> str:
        self.registry.check_free(name)
        state = ModelState(name=name, flavor=flavor, model=model, metrics=default_metrics(flavor))
        blob = snapshot_blob(state)
        self.registry.models[name] = state
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
        if self.registry.quarantined.pop(name, None) is None:  # a quarantined one may go too
            self.registry.get(name)
            del self.registry.models[name]
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
                record = self.registry.learn(state, features, ground_truth, identifier, prediction)
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
            encoded, duplicates, rejected = state.learn_many(
                samples, self.registry.pending, update_metrics=update_metrics
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
                if self.hub.has_subscribers("events") or self.hub.has_subscribers("metrics"):
                    self._published(state, [LearnRecord.decode(item) for item in encoded], "learn")
        if not accepted and reasons:
            raise SpecError("; ".join(reasons[:3]), field="samples")
        await self._commit(ops)
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
        record = self.registry.label(state, identifier, label)
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
