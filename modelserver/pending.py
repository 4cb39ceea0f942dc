"""Predictions waiting for their label (riverapi's predict-then-label flow), bounded by age, by
count (the oldest dropped first) and by bytes (a prediction that does not fit is refused: 429)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from streamml.errors import CapacityError

if TYPE_CHECKING:
    from streamml.modelserver.records import Prediction

#: what a pending entry costs besides its features: key tuple, dataclass, prediction, ids
ENTRY_BYTES = 600
#: one feature in a dict: slot, key object, value object
FEATURE_BYTES = 120


def approx_bytes(features: dict[str, Any]) -> int:
    """An upper estimate of the memory a pending prediction holds (CPython objects)."""
    size = ENTRY_BYTES + FEATURE_BYTES * len(features) + sum(map(len, features))
    if str in map(type, features.values()):  # C-speed scan; string values are rare
        size += sum(len(value) for value in features.values() if type(value) is str)
    return size


@dataclass
class PendingPrediction:
    features: dict[str, Any]
    prediction: Prediction
    created: float
    size: int = 0


class PendingSource(Protocol):
    """Where a learn finds the prediction waiting for it, and puts back one it did not use."""

    def take(self, model: str, identifier: str) -> PendingPrediction | None: ...

    def restore(self, model: str, identifier: str, item: PendingPrediction) -> None: ...


class TakenPredictions:
    """Predictions taken on the event loop for a batch that is learned on the model's thread.
    What the batch did not use (a refused sample) is handed back on the loop (:meth:`unused`)."""

    def __init__(self, items: dict[tuple[str, str], PendingPrediction]) -> None:
        self._items = items
        self._returned: list[tuple[tuple[str, str], PendingPrediction]] = []

    def take(self, model: str, identifier: str) -> PendingPrediction | None:
        return self._items.pop((model, identifier), None)

    def restore(self, model: str, identifier: str, item: PendingPrediction) -> None:
        self._returned.append(((model, identifier), item))

    def unused(self) -> list[tuple[tuple[str, str], PendingPrediction]]:
        """The predictions taken but not learned with (to put back where they were)."""
        return [*self._items.items(), *self._returned]


class PendingPredictions:
    """Predictions waiting for a label, bounded by age, by count and by bytes."""

    def __init__(
        self,
        *,
        ttl_seconds: float,
        max_count: int,
        max_bytes: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clock = clock
        self.ttl = ttl_seconds
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[tuple[str, str], PendingPrediction] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def room_for(self, features: dict[str, Any]) -> int:
        """The size of a prediction of these features; CapacityError when it does not fit
        (after dropping the expired ones). Checked before predicting."""
        size = approx_bytes(features)
        if self.max_bytes is not None and self.bytes + size > self.max_bytes:
            self._make_room(size)
        return size

    def room_for_many(self, samples: list[dict[str, Any]]) -> list[int]:
        """:meth:`room_for` for all of a batch's predictions at once: all fit, or none."""
        sizes = [approx_bytes(features) for features in samples]
        if self.max_bytes is not None and self.bytes + sum(sizes) > self.max_bytes:
            self._make_room(sum(sizes))
        return sizes

    def _make_room(self, needed: int) -> None:
        assert self.max_bytes is not None
        self.expire()
        if self.bytes + needed > self.max_bytes:
            raise CapacityError(
                f"predictions waiting for a label hold {self.bytes} bytes and this request "
                f"needs {needed} more (server limit pending_max_bytes={self.max_bytes}): "
                "label them, or retry after they expire"
            )

    def add(self, model: str, identifier: str, item: PendingPrediction) -> None:
        key = (model, identifier)
        items = self._items
        replaced = items.pop(key, None)  # the hot path: usually a new identifier
        if replaced is not None:
            self.bytes -= replaced.size
        items[key] = item
        self.bytes += item.size
        while len(items) > self.max_count:
            self._pop(next(iter(items)))

    def take(self, model: str, identifier: str) -> PendingPrediction | None:
        item = self._pop((model, identifier))
        if item is not None and self.clock() - item.created > self.ttl:
            return None
        return item

    def take_many(
        self, model: str, identifiers: Iterable[str | None], seen: Any
    ) -> TakenPredictions:
        """Take the predictions a batch will join (those not already learned)."""
        taken: dict[tuple[str, str], PendingPrediction] = {}
        for identifier in identifiers:
            if identifier is not None and identifier not in seen:
                item = self.take(model, identifier)
                if item is not None:
                    taken[(model, identifier)] = item
        return TakenPredictions(taken)

    def restore(self, model: str, identifier: str, item: PendingPrediction) -> None:
        """Put back a prediction taken for a learn that was refused or not made durable, so
        that the corrected retry finds it (unless a newer prediction took its identifier)."""
        key = (model, identifier)
        items = self._items
        if key in items:
            return
        items[key] = item
        self.bytes += item.size
        items.move_to_end(key, last=False)  # older than anything added since it was taken
        while len(items) > self.max_count:
            self._pop(next(iter(items)))

    def _pop(self, key: tuple[str, str]) -> PendingPrediction | None:
        item = self._items.pop(key, None)
        if item is not None:
            self.bytes -= item.size
        return item

    def expire(self) -> int:
        """Drop expired entries (insertion order is age order); returns how many."""
        limit = self.clock() - self.ttl
        dropped = 0
        while self._items:
            key, item = next(iter(self._items.items()))
            if item.created >= limit:
                break
            self._pop(key)
            dropped += 1
        return dropped

    def forget_model(self, model: str) -> None:
        for key in [k for k in self._items if k[0] == model]:
            self._pop(key)
