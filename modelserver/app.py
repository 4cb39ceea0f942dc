"""The application factory: ``create_app(settings) -> web.Application``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from streamml.modelserver.appkeys import (
    AUTH,
    CREDENTIALS,
    DASHBOARD,
    HUB,
    LIMITS,
    READY,
    SERVICE,
    SETTINGS,
    TELEMETRY,
)
from streamml.modelserver.dashboard import dashboard_lifecycle, make_dashboard
from streamml.modelserver.events import EventHub
from streamml.modelserver.middleware import api_middleware, protocol_logger
from streamml.modelserver.registry import Registry
from streamml.modelserver.rotation import CredentialWatcher
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
    budget = settings.budget()
    hub = EventHub(
        settings.sse_queue_size,
        client_bytes=settings.sse_client_bytes or budget.sse_client_bytes,
        total_bytes=settings.sse_total_bytes or budget.sse_total_bytes,
    )
    registry = Registry(
        pending_ttl=settings.pending_ttl_seconds,
        pending_max=settings.pending_max,
        idempotency_window=settings.idempotency_window,
        pending_max_bytes=settings.pending_max_bytes or budget.pending_bytes,
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
    app[LIMITS] = settings.cost_limits()
    app[AUTH] = settings.authenticator()
    app[HUB] = hub
    app[SERVICE] = service
    app[TELEMETRY] = Telemetry(service)
    app[READY] = [False]
    auth = app[AUTH]
    app[CREDENTIALS] = (
        None
        if auth is None
        else CredentialWatcher(
            auth, token_file=settings.auth_token_file, read_token_file=settings.auth_read_token_file
        )
    )
    app[DASHBOARD] = make_dashboard(app)
    setup_routes(app)
    app.cleanup_ctx.append(_storage_lifecycle)
    app.cleanup_ctx.append(dashboard_lifecycle)
    app.cleanup_ctx.append(_credential_lifecycle)
    app.on_shutdown.append(_close_streams)
    return app


async def _storage_lifecycle(app: web.Application) -> AsyncIterator[None]:
    service = app[SERVICE]
    await service.storage.open()
    await service.load()
    app[READY][0] = True
    housekeeping = asyncio.create_task(_housekeeping(service), name="housekeeping")
    log.info("models loaded: %s", ", ".join(service.registry.models) or "none")
    limits = app[LIMITS]
    log.info(
        "limits: %d bytes of memory given; pending predictions %d bytes, event streams %d "
        "bytes (%d per client), a model's state %d bytes, %d derived features",
        app[SETTINGS].budget().memory,
        service.registry.pending.max_bytes or 0,
        app[HUB].total_bytes,
        app[HUB].client_bytes,
        limits.max_model_bytes,
        limits.max_derived_features,
    )
    yield
    app[READY][0] = False
    housekeeping.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await housekeeping
    # graceful shutdown: snapshot everything changed, then flush and close
    await service.snapshot_dirty(force=True)
    await service.storage.close()
    service.workers.close()
    log.info("storage flushed and closed")


async def _credential_lifecycle(app: web.Application) -> AsyncIterator[None]:
    watcher = app[CREDENTIALS]
    task = None if watcher is None else asyncio.create_task(watcher.run(), name="credentials")
    yield
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _close_streams(app: web.Application) -> None:
    app[HUB].close()


async def _housekeeping(service: ModelService) -> None:
    while True:
        await asyncio.sleep(HOUSEKEEPING_SECONDS)
        try:
            service.registry.pending.expire()
            await service.snapshot_dirty()
        except Exception:  # keep serving; the next round retries
            log.exception("housekeeping failed")
