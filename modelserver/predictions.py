"""Predictions: one or many, each kept for its label (riverapi's predict-then-label flow).

A cheap model whose thread is idle predicts right on the event loop (:meth:`Predictions.now`,
the hot path); any other prediction runs on the model's own thread, in order with its writes.
A prediction changes no durable state (its count is snapshotted with the model), so nothing here
is committed.
"""

from __future__ import annotations

from typing import Any

from streamml.modelserver.events import EventHub, publish_predictions
from streamml.modelserver.learning import ModelState
from streamml.modelserver.registry import Registry
from streamml.modelserver.spread import spreads
from streamml.modelserver.workers import ModelWorkers


class Predictions:
    def __init__(self, registry: Registry, workers: ModelWorkers, hub: EventHub) -> None:
        self.registry = registry
        self.workers = workers
        self.hub = hub

    async def predict(
        self, model: str, features: dict[str, Any], identifier: str | None
    ) -> tuple[Any, str]:
        """The prediction and the identifier it waits for its label under (a new one when
        none was given)."""
        state = self.registry.get(model)
        if not state.heavy and self.workers.idle(model):
            return self.now(state, features, identifier)
        size = self.registry.pending.room_for(features)
        prediction = await self.workers.run(model, state.predict_timed, features)
        identifier = self.registry.remember(state, features, prediction, identifier, size)
        publish_predictions(self.hub, model, ((features, prediction.value),))
        return prediction.value, identifier

    def now(
        self, state: ModelState, features: dict[str, Any], identifier: str | None
    ) -> tuple[Any, str]:
        """A prediction on the event loop: a cheap model whose thread is idle."""
        value, identifier = self.registry.predict(state, features, identifier)
        publish_predictions(self.hub, state.name, ((features, value),))
        return value, identifier

    async def many(
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
        made = ((features, value) for (features, _), (value, _) in zip(samples, out, strict=True))
        publish_predictions(self.hub, model, made)
        return out

    async def spread(
        self, model: str, samples: list[dict[str, Any]]
    ) -> list[tuple[Any, float | None]]:
        """Predictions with their predictive standard deviations (None: the model has no
        distribution), on the model's thread; looks only: none waits for a label, none is
        published, so a candidate pool costs no capacity."""
        state = self.registry.get(model)
        return await self.workers.run(model, lambda: spreads(state, samples))
