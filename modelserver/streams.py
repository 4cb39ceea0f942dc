"""The server-sent event streams: riverapi's ``stream_events`` and ``stream_metrics``, and the
dashboard's coalesced one (:mod:`streamml.modelserver.feed`)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from streamml.modelserver import feed
from streamml.modelserver.appkeys import HUB

KEEPALIVE_SECONDS = 15.0


async def _stream(request: web.Request, topic: str) -> web.StreamResponse:
    hub = request.app[HUB]
    subscriber = hub.subscribe(topic, request.transport)  # 429 before any byte is sent
    try:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        while True:
            try:
                frame = await asyncio.wait_for(subscriber.get(), KEEPALIVE_SECONDS)
            except TimeoutError:
                frame = b": keep-alive\n\n"
            if frame is None:
                break
            await response.write(frame)
    except ConnectionResetError:
        pass  # a departed or dropped (stuck) client: end quietly, learning goes on
    finally:
        hub.unsubscribe(subscriber)
    return response


async def stream_events(request: web.Request) -> web.StreamResponse:
    return await _stream(request, "events")


async def stream_metrics(request: web.Request) -> web.StreamResponse:
    return await _stream(request, "metrics")


async def stream_dashboard(request: web.Request) -> web.StreamResponse:
    return await _stream(request, feed.TOPIC)
