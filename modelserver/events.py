"""Server-sent event fan-out with per-client buffers bounded in frames and in bytes, and what
the model service publishes on it (learns, labels, predictions, metrics).

Publishing never waits. A client's buffer holds at most ``queue_size`` frames and
``client_bytes`` bytes; all buffers together at most ``total_bytes`` (so at most
``total_bytes // client_bytes`` clients are served at once; one more is told 429).

When a publication does not fit a client's buffer, the client is not dropped: the rest of that
publication is *coalesced* into one ``event: skipped`` frame (``{"topic": ..., "skipped": N}``)
that it reads in the events' place, so a batch larger than the buffer costs each client a gap it
is told about, not its connection. A client is dropped only when
it has read nothing since its previous overflow: it is stuck, and waiting for it would hold memory.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import orjson

from streamml.errors import CapacityError
from streamml.modelserver import feed

if TYPE_CHECKING:
    from streamml.modelserver.learning import ModelState
    from streamml.modelserver.records import LearnRecord

log = logging.getLogger(__name__)


def frame_of(data: Any, event: str | None) -> bytes:
    payload = orjson.dumps(data, default=jsonable, option=orjson.OPT_NON_STR_KEYS)
    head = b"event: " + event.encode() + b"\n" if event else b""
    return head + b"data: " + payload + b"\n\n"


class Subscriber:
    def __init__(
        self,
        topic: str,
        size: int,
        max_bytes: int,
        transport: asyncio.BaseTransport | None,
    ) -> None:
        self.topic = topic
        self.size = size
        self.max_bytes = max_bytes
        #: frames to write, and (as an int) where events were coalesced away, in order
        self.frames: deque[bytes | int] = deque()
        self.bytes = 0
        #: frames the client's writer has taken (its progress)
        self.taken = 0
        #: ``taken`` at the last overflow (None: never overflowed)
        self.overflow_mark: int | None = None
        self.dropped = False
        self.transport = transport
        self._ready = asyncio.Event()

    def fits(self, frame: bytes) -> bool:
        return len(self.frames) < self.size and self.bytes + len(frame) <= self.max_bytes

    def put(self, frame: bytes) -> None:
        self.frames.append(frame)
        self.bytes += len(frame)
        self._ready.set()

    def overflow(self, skipped: int) -> bool:
        """``skipped`` events did not fit: the client reads their count in their place.
        False when the client has read nothing since its previous overflow (drop it)."""
        if self.overflow_mark is not None and self.overflow_mark == self.taken:
            return False
        self.overflow_mark = self.taken
        if self.frames and isinstance(self.frames[-1], int):
            self.frames[-1] += skipped
        else:
            self.frames.append(skipped)
        self._ready.set()
        return True

    async def get(self) -> bytes | None:
        """The next frame to write; None once the subscriber was dropped."""
        while not self.frames and not self.dropped:
            self._ready.clear()
            await self._ready.wait()
        if self.dropped:
            return None
        self.taken += 1
        item = self.frames.popleft()
        if isinstance(item, int):
            return frame_of({"topic": self.topic, "skipped": item}, "skipped")
        self.bytes -= len(item)
        return item

    def drop(self) -> None:
        """Stuck: end its stream. Aborting the connection also frees a blocked write."""
        self.dropped = True
        self.frames.clear()
        self.bytes = 0
        self._ready.set()
        if self.transport is not None and not self.transport.is_closing():
            abort = getattr(self.transport, "abort", None)
            if callable(abort):
                abort()
            else:
                self.transport.close()


class EventHub:
    """Topics ``events`` (learn/predict/label), ``metrics`` (after each learn or label) and
    ``dashboard`` (the page's coalesced batches, gathered by :attr:`feed`)."""

    def __init__(
        self, queue_size: int, *, client_bytes: int = 4 * 2**20, total_bytes: int = 64 * 2**20
    ) -> None:
        self.queue_size = queue_size
        self.client_bytes = client_bytes
        self.total_bytes = max(total_bytes, client_bytes)
        self.max_clients = self.total_bytes // client_bytes
        self._subscribers: dict[str, set[Subscriber]] = {
            "events": set(),
            "metrics": set(),
            feed.TOPIC: set(),
        }
        self.dropped_total = 0
        self.skipped_total = 0
        self.feed = feed.Feed(self.publish, lambda: self.has_subscribers(feed.TOPIC))

    def watched(self) -> bool:
        """Whether any stream has a client (else nothing needs publishing)."""
        return any(self._subscribers.values())

    def has_subscribers(self, topic: str) -> bool:
        return bool(self._subscribers[topic])

    def subscribe(self, topic: str, transport: asyncio.BaseTransport | None) -> Subscriber:
        clients = sum(len(s) for s in self._subscribers.values())
        if clients >= self.max_clients:
            raise CapacityError(
                f"{clients} event-stream clients already hold the streams' memory (server "
                f"limits sse_total_bytes={self.total_bytes}, sse_client_bytes="
                f"{self.client_bytes}): retry later"
            )
        subscriber = Subscriber(topic, self.queue_size, self.client_bytes, transport)
        self._subscribers[topic].add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers[subscriber.topic].discard(subscriber)

    def publish(self, topic: str, data: Any, event: str | None = None) -> None:
        self.publish_many(topic, (data,), event)

    def publish_many(self, topic: str, items: Iterable[Any], event: str | None = None) -> None:
        """One frame per item to every subscriber of ``topic``; what does not fit a client's
        buffer is coalesced into a count for it, and once no client has room the remaining
        items are only counted (never serialised)."""
        subscribers = self._subscribers[topic]
        if not subscribers:
            return
        open_ = list(subscribers)
        overflow_at: dict[Subscriber, int] = {}  # the item that did not fit, per subscriber
        count = 0
        iterator = iter(items)
        for index, data in enumerate(iterator):
            count = index + 1
            frame = frame_of(data, event)
            for subscriber in open_:
                if subscriber.fits(frame):
                    subscriber.put(frame)
                else:
                    overflow_at[subscriber] = index
            if overflow_at:
                open_ = [s for s in open_ if s not in overflow_at]
                if not open_:
                    count += sum(1 for _ in iterator)
                    break
        for subscriber, index in overflow_at.items():
            self.skipped_total += count - index
            if subscriber.overflow(count - index):
                continue
            log.warning("dropping a stuck %s stream client (nothing read since a gap)", topic)
            self.dropped_total += 1
            subscribers.discard(subscriber)
            subscriber.drop()

    def close(self) -> None:
        self.feed.close()
        for subscribers in self._subscribers.values():
            for subscriber in list(subscribers):
                subscriber.drop()
            subscribers.clear()


def jsonable(value: Any) -> Any:
    """orjson fallback: numpy scalars and other number-likes become floats, the rest strings."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


# -- what the model service publishes --------------------------------------------------------


def publish_learns(
    hub: EventHub, state: ModelState, records: list[LearnRecord], event: str
) -> None:
    """Applied learns (``event``: learn or label) on ``events``, then the model's metrics."""
    if hub.has_subscribers("events"):
        hub.publish_many(
            "events",
            (
                {
                    "model": state.name,
                    "features": record.features,
                    "prediction": None if record.prediction is None else record.prediction.value,
                    "ground_truth": record.ground_truth,
                }
                for record in records
            ),
            event=event,
        )
    if hub.has_subscribers("metrics"):
        hub.publish("metrics", {"model": state.name, **state.metric_values()})
    if hub.has_subscribers(feed.TOPIC):
        hub.feed.learned(state, records, event)


def publish_predictions(
    hub: EventHub, model: str, predictions: Iterable[tuple[dict[str, Any], Any]]
) -> None:
    """Predictions made, as (features, value), on ``events`` (and to the dashboard's feed)."""
    if not hub.watched():
        return
    made = list(predictions)
    if hub.has_subscribers("events"):
        hub.publish_many(
            "events",
            (
                {"model": model, "features": features, "prediction": value}
                for features, value in made
            ),
            event="predict",
        )
    if hub.has_subscribers(feed.TOPIC):
        hub.feed.predicted(model, (value for _, value in made))
