"""The dashboard's stream, ``GET /api/stream/dashboard/``: what the page shows of the learns and
predictions, coalesced into at most one ``batch`` frame per :data:`INTERVAL`.

The raw streams (``/api/stream/events/``, ``/api/stream/metrics/``) carry a frame per learn and
the model's metrics after each learn: riverapi's wire, exact for a client that wants every event.
A page wants neither: it shows sample counts, the newest metrics, the newest events and
predicted-against-actual points, redrawn a few times a second. Fed from the raw streams, a page
open on a server learning 1300 samples a second made the server read every model's metrics and
write two frames per learn, and the browser (on the same two cores) parse them all
(BENCHMARKS.md, issue 13).

Here a learn costs a counter and two bounded appends, and only while a page is subscribed. One
timer, armed by the first learn after a quiet spell, builds the batch: per model the learns since
the previous batch and its metrics read once, the newest :data:`MAX_EVENTS` events, the newest
:data:`MAX_PAIRS` (prediction, actual) pairs, and how many events and pairs it left out. It goes
out on the hub's ``dashboard`` topic: the same per-client bounds as the raw streams.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streamml.modelserver.learning import ModelState
    from streamml.modelserver.records import LearnRecord

TOPIC = "dashboard"
#: at most one batch per INTERVAL seconds (2 a second: the page repaints at that rate)
INTERVAL = 0.5
#: the newest events and (prediction, actual) pairs a batch carries: what the page keeps
MAX_EVENTS = 50
MAX_PAIRS = 300

Publish = Callable[[str, Any, str], None]


class Feed:
    """Counts and keeps the newest of what happened; a timer publishes it as one batch."""

    def __init__(self, publish: Publish, active: Callable[[], bool]) -> None:
        self._publish = publish
        self.active = active
        self._learned: dict[str, int] = {}
        self._states: dict[str, ModelState] = {}
        self._events: deque[tuple[str, str, Any, Any]] = deque(maxlen=MAX_EVENTS)
        self._pairs: deque[tuple[float, float, str]] = deque(maxlen=MAX_PAIRS)
        self._events_seen = 0
        self._pairs_seen = 0
        self._timer: asyncio.TimerHandle | None = None
        self.batches = 0

    def learned(self, state: ModelState, records: list[LearnRecord], kind: str) -> None:
        """Applied learns (``kind``: learn or label) of one model."""
        name = state.name
        self._learned[name] = self._learned.get(name, 0) + len(records)
        self._states[name] = state
        self._events_seen += len(records)
        for record in records[-MAX_PAIRS:]:  # older ones would fall out of both deques
            value: Any = None if record.prediction is None else record.prediction.value
            truth: Any = record.ground_truth
            self._events.append((kind, name, value, truth))
            if _number(value) and _number(truth):
                self._pairs_seen += 1
                self._pairs.append((float(value), float(truth), name))
        self._arm()

    def predicted(self, model: str, values: Iterable[Any]) -> None:
        for value in values:
            self._events_seen += 1
            self._events.append(("predict", model, value, None))
        self._arm()

    def _arm(self) -> None:
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(INTERVAL, self.flush)

    def flush(self) -> None:
        """Publish what gathered since the previous batch (nothing: no frame)."""
        self._timer = None
        if not self._events_seen:
            return
        models = {
            name: {"learned": n, "metrics": self._states[name].metric_values()}
            for name, n in self._learned.items()
        }
        batch = {
            "models": models,
            "events": [
                {"kind": k, "model": m, "prediction": p}
                if k == "predict"
                else {"kind": k, "model": m, "prediction": p, "ground_truth": t}
                for k, m, p, t in self._events
            ],
            "pairs": [list(pair) for pair in self._pairs],
            "omitted": {
                "events": self._events_seen - len(self._events),
                "pairs": self._pairs_seen - len(self._pairs),
            },
        }
        self.clear()
        self.batches += 1
        if self.active():
            self._publish(TOPIC, batch, "batch")

    def clear(self) -> None:
        self._learned.clear()
        self._states.clear()
        self._events.clear()
        self._pairs.clear()
        self._events_seen = self._pairs_seen = 0

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.clear()


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
