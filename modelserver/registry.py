"""All models of one server, and the joins between predictions and later labels."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from streamml.errors import ConflictError, NotFoundError, SpecError, StreamMLError
from streamml.modelserver.learning import ModelState, Taken
from streamml.modelserver.pending import PendingPrediction, PendingPredictions
from streamml.modelserver.records import LearnRecord, Prediction


class PredictionIds:
    """Random version-4 UUID strings, as ``str(uuid.uuid4())`` makes them, from a pooled
    ``os.urandom`` read: the same unguessable ids at ~1/5 of the cost (one syscall and one
    UUID object per prediction were ~4.5% of the predict path)."""

    POOL_BYTES = 16 * 1024

    def __init__(self) -> None:
        self._pool = b""
        self._pos = 0

    def __call__(self) -> str:
        pos = self._pos
        if pos >= len(self._pool):
            self._pool, pos = os.urandom(self.POOL_BYTES), 0
        self._pos = pos + 16
        n = int.from_bytes(self._pool[pos : pos + 16])
        # the version (4) and RFC 4122 variant bits, exactly as uuid.UUID(version=4) sets them
        n = (n & ~(0xC000 << 48) | (0x8000 << 48)) & ~(0xF000 << 64) | (4 << 76)
        h = f"{n:032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass(frozen=True)
class Quarantine:
    """A stored model that could not be loaded: held out of serving, its rows kept as they are,
    until it is deleted (``DELETE /api/model/``). The other models serve meanwhile."""

    name: str
    #: what is damaged: "snapshot" (blob unloadable), "log" (a learn-log row garbled or not
    #: replayable), "no-snapshot" (the snapshot row is missing), "no-definition" (rows of a
    #: model whose row in ``models`` is missing)
    kind: str
    #: one line: the file, the row and what is wrong with it
    reason: str
    #: learn-log rows of the model held back (not replayed)
    log_rows: int


class ModelQuarantinedError(StreamMLError):
    """The named model is quarantined (503): it exists in the data dir but could not be loaded."""

    def __init__(self, quarantine: Quarantine) -> None:
        super().__init__(
            f"model {quarantine.name!r} is quarantined: {quarantine.reason} "
            "(delete it to discard what is stored of it)"
        )
        self.quarantine = quarantine


class Registry:
    """All models of one server, applied in order on one event loop (no locks needed)."""

    def __init__(
        self,
        *,
        pending_ttl: float,
        pending_max: int,
        idempotency_window: int,
        pending_max_bytes: int | None = None,
    ) -> None:
        self.models: dict[str, ModelState] = {}
        #: stored models that could not be loaded (see :class:`Quarantine`)
        self.quarantined: dict[str, Quarantine] = {}
        self.pending = PendingPredictions(
            ttl_seconds=pending_ttl, max_count=pending_max, max_bytes=pending_max_bytes
        )
        self.idempotency_window = idempotency_window
        self.new_id = PredictionIds()

    def get(self, name: str) -> ModelState:
        try:
            return self.models[name]
        except KeyError:
            if name in self.quarantined:
                raise ModelQuarantinedError(self.quarantined[name]) from None
            raise NotFoundError(f"model {name!r} does not exist") from None

    def check_free(self, name: str) -> None:
        """A ConflictError when ``name`` is taken, by a served or by a quarantined model."""
        if name in self.models:
            raise ConflictError(f"model {name!r} already exists (delete it first to replace it)")
        if name in self.quarantined:
            raise ConflictError(
                f"model {name!r} exists but is quarantined ({self.quarantined[name].reason}); "
                "delete it first to replace it"
            )

    def targets(self, model: str | None, models: list[str] | None) -> list[ModelState]:
        """The models one learn goes to: one, a subset, or (neither given) all of them."""
        if model is not None and models is not None:
            raise SpecError("give either 'model' or 'models', not both", field="models")
        if model is not None:
            return [self.get(model)]
        if models is not None:
            return [self.get(name) for name in dict.fromkeys(models)]
        if not self.models:
            raise NotFoundError("there are no models to learn")
        return list(self.models.values())

    def predict(
        self, state: ModelState, features: dict[str, Any], identifier: str | None
    ) -> tuple[Any, str]:
        pending = self.pending
        size = pending.room_for(features)
        prediction = state.predict_timed(features)
        identifier = identifier or self.new_id()
        pending.add(
            state.name, identifier, PendingPrediction(features, prediction, pending.clock(), size)
        )
        return prediction.value, identifier

    def remember(
        self,
        state: ModelState,
        features: dict[str, Any],
        prediction: Prediction,
        identifier: str | None,
        size: int,
    ) -> str:
        """Keep a prediction for its label (``size`` from :meth:`PendingPredictions.room_for`)."""
        identifier = identifier or self.new_id()
        item = PendingPrediction(features, prediction, self.pending.clock(), size)
        self.pending.add(state.name, identifier, item)
        return identifier

    def learn(
        self,
        state: ModelState,
        features: dict[str, Any],
        ground_truth: Any,
        identifier: str | None = None,
        prediction: Any = None,
        taken: Taken | None = None,
    ) -> LearnRecord | None:
        """One learn, here; joins an earlier prediction made under the same identifier, if any.
        The sample is checked before that prediction is taken, and a refused learn puts it
        back: the corrected retry still finds it. What was taken is noted in ``taken``."""
        join = self.join(state, features, ground_truth, identifier, prediction)
        return self.applied(state, join, taken)

    def join(
        self,
        state: ModelState,
        features: dict[str, Any],
        ground_truth: Any,
        identifier: str | None,
        prediction: Any,
        provenance: dict[str, str] | None = None,
    ) -> Join:
        """On the loop: the learn with the prediction it is scored with (the caller's, else the
        one waiting for it, taken now), after checking the target."""
        supplied = None if prediction is None else Prediction(prediction)
        waiting = None
        if identifier is not None and identifier not in state.seen:
            state.check_target(ground_truth)
            waiting = self.pending.take(state.name, identifier)
        if supplied is None and waiting is not None:
            return Join(
                features, ground_truth, identifier, waiting.prediction, waiting, True, provenance
            )
        return Join(features, ground_truth, identifier, supplied, waiting, False, provenance)

    def apply(self, state: ModelState, join: Join) -> LearnRecord | None:
        """The model's part of a learn (it may run on the model's thread)."""
        return state.learn(
            join.features,
            join.ground_truth,
            join.identifier,
            join.prediction,
            supplied=not join.own,
            window=self.idempotency_window,
            provenance=join.provenance,
        )

    def settle(self, state: ModelState, join: Join, taken: Taken | None, ok: bool) -> None:
        """On the loop, after :meth:`apply`: a refused (or failed) learn puts its waiting
        prediction back, a learned one notes it in ``taken`` (put back if the write fails)."""
        if join.waiting is None or join.identifier is None:
            return
        if not ok:
            self.pending.restore(state.name, join.identifier, join.waiting)
        elif taken is not None:
            taken.append((state.name, join.identifier, join.waiting))

    def applied(self, state: ModelState, join: Join, taken: Taken | None) -> LearnRecord | None:
        """:meth:`apply` then :meth:`settle`, here (inline)."""
        try:
            record = self.apply(state, join)
        except BaseException:
            self.settle(state, join, taken, ok=False)
            raise
        self.settle(state, join, taken, ok=True)
        return record

    def label(
        self, state: ModelState, identifier: str, label: Any, taken: Taken | None = None
    ) -> LearnRecord | None:
        """The late ground truth of an earlier prediction: learn it with that prediction.
        A label the model refuses leaves the prediction waiting for the corrected retry."""
        join = self.take_label(state, identifier, label)
        return None if join is None else self.applied(state, join, taken)

    def take_label(self, state: ModelState, identifier: str, label: Any) -> Join | None:
        """The learn a label makes, with the prediction it is for, taken (None: already
        learned); NotFoundError if there is none."""
        if identifier in state.seen:
            return None
        state.check_target(label)
        pending = self.pending.take(state.name, identifier)
        if pending is None:
            raise NotFoundError(
                f"no pending prediction {identifier!r} for model {state.name!r} "
                "(unknown, already labelled, or expired)"
            )
        return Join(pending.features, label, identifier, pending.prediction, pending, own=True)


@dataclass(slots=True)
class Join:
    """One learn as the registry hands it to a model: the sample, what it is scored with, and
    the waiting prediction it took (to put back if the learn is refused or its write fails)."""

    features: dict[str, Any]
    ground_truth: Any
    identifier: str | None
    prediction: Prediction | None
    waiting: PendingPrediction | None
    #: the prediction is the model's own (made earlier), not the client's
    own: bool
    #: where the sample came from (None: not said)
    provenance: dict[str, str] | None = None
