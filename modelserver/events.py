"""Server-sent event fan-out with bounded per-client queues.

Publishing never waits: each subscriber has a bounded queue; a subscriber whose queue is full is
too slow to keep up, so it is dropped (its stream is ended) rather than letting it stall learning
or grow memory without bound.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson

log = logging.getLogger(__name__)


class Subscriber:
    def __init__(self, topic: str, size: int, transport: asyncio.BaseTransport | None) -> None:
        self.topic = topic
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=size)
        self.dropped = False
        self.transport = transport

    def drop(self) -> None:
        """Too slow: end its stream. Aborting the connection also frees a blocked write."""
        self.dropped = True
        if self.transport is not None and not self.transport.is_closing():
            abort = getattr(self.transport, "abort", None)
            if callable(abort):
                abort()
            else:
                self.transport.close()


class EventHub:
    """Topics ``events`` (learn/predict/label) and ``metrics`` (after each learn or label)."""

    def __init__(self, queue_size: int) -> None:
        self.queue_size = queue_size
        self._subscribers: dict[str, set[Subscriber]] = {"events": set(), "metrics": set()}
        self.dropped_total = 0

    def has_subscribers(self, topic: str) -> bool:
        return bool(self._subscribers[topic])

    def subscribe(self, topic: str, transport: asyncio.BaseTransport | None) -> Subscriber:
        subscriber = Subscriber(topic, self.queue_size, transport)
        self._subscribers[topic].add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers[subscriber.topic].discard(subscriber)

    def publish(self, topic: str, data: Any, event: str | None = None) -> None:
        subscribers = self._subscribers[topic]
        if not subscribers:
            return
        payload = orjson.dumps(data, default=jsonable, option=orjson.OPT_NON_STR_KEYS)
        frame = (
            (b"event: " + event.encode() + b"\n" if event else b"") + b"data: " + payload + b"\n\n"
        )
        for subscriber in list(subscribers):
            try:
                subscriber.queue.put_nowait(frame)
            except asyncio.QueueFull:
                log.warning(
                    "dropping a slow %s stream client (queue of %d full)", topic, self.queue_size
                )
                self.dropped_total += 1
                subscribers.discard(subscriber)
                subscriber.drop()

    def close(self) -> None:
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
