"""All models of one server, and the joins between predictions and later labels."""

from __future__ import annotations

import os
from typing import Any

from streamml.errors import NotFoundError, SpecError
from streamml.modelserver.learning import LearnRecord, ModelState, Prediction
from streamml.modelserver.pending import PendingPrediction, PendingPredictions


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
        self.pending = PendingPredictions(
            ttl_seconds=pending_ttl, max_count=pending_max, max_bytes=pending_max_bytes
        )
        self.idempotency_window = idempotency_window
        self.new_id = PredictionIds()

    def get(self, name: str) -> ModelState:
        try:
            return self.models[name]
        except KeyError:
            raise NotFoundError(f"model {name!r} does not exist") from None

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
    ) -> LearnRecord | None:
        """One learn; joins an earlier prediction made under the same identifier, if any."""
        supplied = self.joined(state, identifier, prediction)
        return self.apply(state, features, ground_truth, identifier, supplied)

    def joined(
        self, state: ModelState, identifier: str | None, prediction: Any
    ) -> Prediction | None:
        """The prediction a learn is scored with: the caller's, else one waiting for it."""
        supplied = None if prediction is None else Prediction(prediction)
        if identifier is not None and identifier not in state.seen:
            pending = self.pending.take(state.name, identifier)
            if pending is not None and supplied is None:
                supplied = pending.prediction
        return supplied

    def apply(
        self,
        state: ModelState,
        features: dict[str, Any],
        ground_truth: Any,
        identifier: str | None,
        supplied: Prediction | None,
    ) -> LearnRecord | None:
        """The model's part of a learn (it may run on the model's thread)."""
        record = state.learn(features, ground_truth, identifier, supplied)
        if record is not None and record.identifier is not None:
            state.forget_old_identifiers(self.idempotency_window)
        return record

    def label(self, state: ModelState, identifier: str, label: Any) -> LearnRecord | None:
        """The late ground truth of an earlier prediction: learn it with that prediction."""
        pending = self.take_label(state, identifier)
        if pending is None:
            return None
        return self.apply(state, pending.features, label, identifier, pending.prediction)

    def take_label(self, state: ModelState, identifier: str) -> PendingPrediction | None:
        """The prediction a label is for (None: already learned); NotFoundError if none."""
        if identifier in state.seen:
            return None
        pending = self.pending.take(state.name, identifier)
        if pending is None:
            raise NotFoundError(
                f"no pending prediction {identifier!r} for model {state.name!r} "
                "(unknown, already labelled, or expired)"
            )
        return pending
