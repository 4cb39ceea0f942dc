"""Predictions waiting for their label (riverapi's predict-then-label flow), bounded."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streamml.modelserver.learning import Prediction


@dataclass
class PendingPrediction:
    features: dict[str, Any]
    prediction: Prediction
    created: float


class PendingPredictions:
    """Predictions waiting for a label, bounded by age and by count (oldest dropped first)."""

    def __init__(
        self, *, ttl_seconds: float, max_count: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.clock = clock
        self.ttl = ttl_seconds
        self.max_count = max_count
        self._items: OrderedDict[tuple[str, str], PendingPrediction] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def add(self, model: str, identifier: str, item: PendingPrediction) -> None:
        key = (model, identifier)
        self._items.pop(key, None)
        self._items[key] = item
        while len(self._items) > self.max_count:
            self._items.popitem(last=False)

    def take(self, model: str, identifier: str) -> PendingPrediction | None:
        item = self._items.pop((model, identifier), None)
        if item is not None and self.clock() - item.created > self.ttl:
            return None
        return item

    def restore(self, model: str, identifier: str, item: PendingPrediction) -> None:
        """Put back a prediction taken for a learn that was refused or not made durable, so
        that the corrected retry finds it (unless a newer prediction took its identifier)."""
        key = (model, identifier)
        if key in self._items:
            return
        self._items[key] = item
        self._items.move_to_end(key, last=False)  # older than anything added since it was taken
        while len(self._items) > self.max_count:
            self._items.popitem(last=False)

    def expire(self) -> int:
        """Drop expired entries (insertion order is age order); returns how many."""
        limit = self.clock() - self.ttl
        dropped = 0
        while self._items:
            key, item = next(iter(self._items.items()))
            if item.created >= limit:
                break
            del self._items[key]
            dropped += 1
        return dropped

    def forget_model(self, model: str) -> None:
        for key in [k for k in self._items if k[0] == model]:
            del self._items[key]
