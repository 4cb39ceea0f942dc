"""The application factory: ``create_app(settings) -> web.Application``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from streamml.modelserver.appkeys import AUTH, HUB, READY, SERVICE, SETTINGS, TELEMETRY
from streamml.modelserver.events import EventHub
from streamml.modelserver.middleware import api_middleware, protocol_logger
from streamml.modelserver.registry import Registry
from streamml.modelserver.routes import setup_routes
from streamml.modelserver.service import ModelService
from streamml.modelserver.settings import ServerSettings
from streamml.modelserver.storage import Storage
from streamml.modelserver.telemetry import Telemetry

log = logging.getLogger(__name__)

HOUSEKEEPING_SECONDS = 1.0


def create_app(settings: ServerSettings) -> web.Application:
    """Build the app; storage opens (and models load) in the cleanup context at start-up."""
    app = web.Application(
        middlewares=[api_middleware],
        client_max_size=settings.max_body_bytes,
        handler_args={"logger": protocol_logger()},
    )
    hub = EventHub(settings.sse_queue_size)
    registry = Registry(
        pending_ttl=settings.pending_ttl_seconds,
        pending_max=settings.pending_max,
        idempotency_window=settings.idempotency_window,
    )
    storage = Storage(settings.data_dir, synchronous=settings.sync.upper())
    service = ModelService(
        registry,
        storage,
        hub,
        snapshot_every=settings.snapshot_every,
        snapshot_interval=settings.snapshot_interval_seconds,
    )
    app[SETTINGS] = settings
    app[AUTH] = settings.authenticator()
    app[HUB] = hub
    app[SERVICE] = service
    app[TELEMETRY] = Telemetry(service)
    app[READY] = [False]
    setup_routes(app)
    app.cleanup_ctx.append(_storage_lifecycle)
    app.on_shutdown.append(_close_streams)
    return app


async def _storage_lifecycle(app: web.Application) -> AsyncIterator[None]:
    service = app[SERVICE]
    await service.storage.open()
    await service.load()
    app[READY][0] = True
    housekeeping = asyncio.create_task(_housekeeping(service), name="housekeeping")
    log.info("models loaded: %s", ", ".join(service.registry.models) or "none")
    yield
    app[READY][0] = False
    housekeeping.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await housekeeping
    # graceful shutdown: snapshot everything changed, then flush and close
    service.snapshot_dirty(force=True)
    await service.storage.close()
    log.info("storage flushed and closed")


async def _close_streams(app: web.Application) -> None:
    app[HUB].close()


async def _housekeeping(service: ModelService) -> None:
    while True:
        await asyncio.sleep(HOUSEKEEPING_SECONDS)
        try:
            service.registry.pending.expire()
            service.snapshot_dirty()
        except Exception:  # keep serving; the next round retries
            log.exception("housekeeping failed")
