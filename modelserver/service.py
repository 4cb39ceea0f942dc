"""The model service: the one object the views talk to, still without HTTP.

It holds the rooms of the server's work and the lifecycle of whole models:

- ``registry``: the models served, the quarantined ones, and the predictions waiting for labels;
- ``commits`` (``commits.py``): ops submitted to storage in the order applied, and the learns in
  flight until their group commit;
- ``learns`` (``learns.py``): single learns, labels and batches, on the loop or the models' threads;
- ``predictions`` (``predictions.py``): single and batch predictions;
- ``snapshots`` (``snapshots.py``): when each model's state is snapshotted;
- here: start-up (``recovery``), create, delete, and the return of models to their durable state
  after a failed commit.

Shared state (pending predictions, storage sequence numbers, in-flight identifiers, event fan-out)
is only ever touched on the event loop. An error reply means "not applied": a learn, label, create
or delete changes what the server serves only together with its commit. A failed commit returns
every model it touched to its durable state (:meth:`ModelService.restore_durable`) before any
caller hears of the failure, and puts back the waiting predictions it took.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from streamml.errors import ConflictError, SpecError
from streamml.modelserver.commits import Commits, dumps
from streamml.modelserver.drift import DriftWatch
from streamml.modelserver.events import EventHub
from streamml.modelserver.learning import ModelState, default_metrics
from streamml.modelserver.learns import Learns
from streamml.modelserver.predictions import Predictions
from streamml.modelserver.recovery import LoadReport, recover, restored
from streamml.modelserver.registry import Quarantine, Registry
from streamml.modelserver.snapshots import SnapshotSchedule, snapshot_blob
from streamml.modelserver.storage import Op, Storage
from streamml.modelserver.workers import ModelWorkers
from streamml.vocabulary.modelspec import DriftSettings

log = logging.getLogger(__name__)


class ModelService:
    """Models in memory, made durable in order (see the module docstring for its rooms)."""

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
        self.workers = ModelWorkers()
        self.commits = Commits(registry, storage)
        self.learns = Learns(registry, self.workers, self.commits, hub)
        self.predictions = Predictions(registry, self.workers, hub)
        self.snapshots = SnapshotSchedule(
            registry, self.workers, storage, every=snapshot_every, interval=snapshot_interval
        )
        # the operations, each from its room (bound here: no call in between on the hot paths)
        self.learn = self.learns.learn
        self.learn_batch = self.learns.learn_batch
        self.label = self.learns.label
        self.predict = self.predictions.predict
        self.predict_now = self.predictions.now
        self.predict_many = self.predictions.many
        self.predict_spread = self.predictions.spread
        self.snapshot_dirty = self.snapshots.snapshot_dirty
        #: what start-up loaded (filled by :meth:`load`)
        self.report = LoadReport()
        #: names whose creation is being committed (not served until it is durable)
        self._creating: set[str] = set()
        storage.on_failure = self.restore_durable

    # -- start-up and failed commits -----------------------------------------------------------

    async def load(self) -> LoadReport:
        """Each model from its snapshot, then the learn log after it, in order; what cannot be
        loaded is quarantined (see ``recovery``)."""
        self.report = await recover(self.registry, self.storage)
        for state in self.registry.models.values():
            if state.heavy:
                self.workers.expensive(state.name)
        return self.report

    def restore_durable(self, names: set[str]) -> None:
        """After a failed commit (nothing is running or queued then): these models become what
        the data directory holds, a deleted one comes back, one never made durable is gone, and
        one whose stored state turns out damaged is quarantined (as start-up would). A
        quarantined model stays out of service (its delete puts its quarantine back).

        The restored state is a new object: a model's thread may still be computing on the old
        one (a write applied on top of the failed state), and nothing here touches that. Such a
        write, back on the loop, finds its state replaced and is refused
        (``Commits.refuse_stale``)."""
        registry = self.registry
        for name in sorted(names):
            stored = self.storage.load_model_sync(name)
            if stored is None or stored.snapshot_seq is None:
                registry.models.pop(name, None)
                continue
            rows = self.storage.log_after_sync(name, stored.snapshot_seq)
            loaded = restored(self.storage.path, stored, rows, registry.idempotency_window)
            if isinstance(loaded, Quarantine):
                registry.models.pop(name, None)
                registry.quarantined[name] = loaded
                log.error("quarantined model %s: %s", name, loaded.reason)
                continue
            registry.models[name] = loaded[0]
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
        drift: DriftSettings | None = None,
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
            drift=DriftWatch.from_settings(drift, flavor),
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
            await self.commits.commit([op])
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
                future = self.commits.submit([("delete", name)])
            await self.commits.wait(future)
        else:
            try:
                await self.commits.commit([("delete", name)])
            except Exception:
                self.registry.quarantined[name] = quarantined
                raise
        self.workers.forget(name)
        self.registry.pending.forget_model(name)
        log.info("deleted model %s", name)
