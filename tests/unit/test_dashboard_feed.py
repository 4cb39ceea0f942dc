"""The dashboard's coalesced stream (modelserver/feed.py) on the real hub and real models: many
learns become one batch with exact counts, bounded events and pairs, and what was left out."""

from __future__ import annotations

import asyncio
import json

from river import linear_model

from streamml.modelserver import feed
from streamml.modelserver.events import EventHub, Subscriber, publish_learns, publish_predictions
from streamml.modelserver.learning import ModelState
from streamml.modelserver.records import LearnRecord, Prediction


def learned(state: ModelState, n: int) -> list[LearnRecord]:
    """``n`` learns; every other one of a prediction made earlier (a labelled prediction)."""
    records = [
        state.learn(
            {"x": float(i % 7)}, 2.0 * (i % 7), None, Prediction(1.0 + i) if i % 2 else None
        )
        for i in range(n)
    ]
    return [r for r in records if r is not None]


async def batches(subscriber: Subscriber) -> list[dict[str, object]]:
    out = []
    while subscriber.frames:
        frame = await subscriber.get()
        assert frame is not None
        head, data = frame.decode().strip().split("\n")
        assert head == "event: batch"
        out.append(json.loads(data.removeprefix("data: ")))
    return out


async def test_a_thousand_learns_of_two_models_are_one_batch() -> None:
    hub = EventHub(100)
    page = hub.subscribe(feed.TOPIC, None)
    a = ModelState("a", "regression", linear_model.LinearRegression())
    b = ModelState("b", "regression", linear_model.LinearRegression())
    for _ in range(10):
        publish_learns(hub, a, learned(a, 90), "learn")
    publish_learns(hub, b, learned(b, 100), "learn")
    publish_predictions(hub, "b", [({"x": 1.0}, 2.5)])
    assert not page.frames  # nothing is written per learn
    await asyncio.sleep(feed.INTERVAL * 2)
    [batch] = await batches(page)
    models = batch["models"]
    assert isinstance(models, dict)
    assert {name: m["learned"] for name, m in models.items()} == {"a": 900, "b": 100}
    assert models["a"]["metrics"] == a.metric_values()
    events = batch["events"]
    assert isinstance(events, list) and len(events) == feed.MAX_EVENTS
    assert events[-1] == {"kind": "predict", "model": "b", "prediction": 2.5}
    assert events[-2]["model"] == "b" and events[-2]["ground_truth"] == 2.0 * (99 % 7)
    pairs = batch["pairs"]
    assert isinstance(pairs, list) and len(pairs) == feed.MAX_PAIRS
    # a pair: a labelled prediction and its truth (b's last learn, i = 99, had one)
    assert pairs[-1] == [100.0, 2.0 * (99 % 7), "b"]
    assert batch["omitted"] == {"events": 1001 - feed.MAX_EVENTS, "pairs": 500 - feed.MAX_PAIRS}
    # quiet: no more batches; the next learn is in the next one, counted from zero
    await asyncio.sleep(feed.INTERVAL * 2)
    assert not page.frames
    publish_learns(hub, a, learned(a, 3), "label")
    await asyncio.sleep(feed.INTERVAL * 2)
    [batch] = await batches(page)
    assert batch["models"] == {"a": {"learned": 3, "metrics": a.metric_values()}}
    assert [e["kind"] for e in batch["events"]] == ["label"] * 3  # type: ignore[union-attr]
    hub.close()


async def test_without_a_page_the_feed_gathers_nothing() -> None:
    hub = EventHub(100)
    raw = hub.subscribe("events", None)
    state = ModelState("a", "regression", linear_model.LinearRegression())
    publish_learns(hub, state, learned(state, 5), "learn")
    await asyncio.sleep(feed.INTERVAL * 2)
    assert hub.feed.batches == 0 and len(raw.frames) == 5
    hub.close()
