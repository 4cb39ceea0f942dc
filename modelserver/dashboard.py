"""The dashboard's server side: its state (history, sweep summaries, logins), its lifecycle,
and its data API.

- ``GET /api/dashboard/models``: every model with flavor, origin, spec, samples, metrics and
  how much history it has (one call draws the page's table);
- ``GET /api/history/{model}?since=SEQ&limit=N``: the model's history points after ``since``
  (default: all), oldest first, at most ``limit`` (default and maximum: ``history_points``);
- ``GET /api/sweeps`` and ``GET|PUT|DELETE /api/sweeps/{name}``: the summaries sweeps publish
  (``streamml.vocabulary.sweepsummary``); PUT needs the write credential.

Reads need any credential (the read-only one, or a dashboard session); the middleware enforces it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp import web
from pydantic import ValidationError

from streamml.errors import ConflictError, NotFoundError, SpecError
from streamml.modelserver.appkeys import DASHBOARD, SERVICE, SETTINGS
from streamml.modelserver.dashstore import DashboardStore
from streamml.modelserver.history import History
from streamml.modelserver.sessions import LoginLimiter
from streamml.modelserver.views import checked_name, reply
from streamml.vocabulary.sweepsummary import MAX_SWEEPS, SWEEP_NAME, StoredSweep, SweepSummary

log = logging.getLogger(__name__)

#: the largest ``since`` accepted (a JSON-safe integer)
MAX_SEQ = 2**53


@dataclass
class Dashboard:
    store: DashboardStore
    history: History
    sweeps: dict[str, StoredSweep] = field(default_factory=dict)
    logins: LoginLimiter = field(default_factory=LoginLimiter)


def make_dashboard(app: web.Application) -> Dashboard:
    settings = app[SETTINGS]
    service = app[SERVICE]
    store = DashboardStore(
        settings.data_dir, synchronous=settings.sync.upper(), keep=settings.history_points
    )
    history = History(service.registry, store, service.storage.path, points=settings.history_points)
    return Dashboard(store, history)


async def dashboard_lifecycle(app: web.Application) -> AsyncIterator[None]:
    """After the models' storage opened (it holds the data dir's lock): open, load, sample."""
    dashboard = app[DASHBOARD]
    await dashboard.store.open()
    await dashboard.history.load()
    for name, (updated, body) in (await dashboard.store.load_sweeps()).items():
        try:
            dashboard.sweeps[name] = StoredSweep(
                name=name, updated=updated, summary=SweepSummary.model_validate_json(body or "")
            )
        except ValidationError:
            log.warning("dashboard: the stored summary of sweep %s is unreadable; dropped", name)
    sampler = asyncio.create_task(
        dashboard.history.run(app[SETTINGS].history_interval_seconds), name="history"
    )
    yield
    sampler.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sampler
    await dashboard.history.final()
    await dashboard.store.close()


# -- query parameters ------------------------------------------------------------------------


def _int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    values = request.query.getall(name, [])
    if not values:
        return default
    if len(values) > 1:
        raise SpecError(f"query parameter {name!r} is given {len(values)} times", field=name)
    text = values[0]
    if not (text.isascii() and text.isdigit() and len(text) <= 16):
        raise SpecError(
            f"query parameter {name!r} must be a whole number from {low} to {high}", field=name
        )
    value = int(text)
    if not low <= value <= high:
        raise SpecError(f"query parameter {name!r} must be from {low} to {high}", field=name)
    return value


def _only_params(request: web.Request, *known: str) -> None:
    unknown = sorted(set(request.query) - set(known))
    if unknown:
        raise SpecError(
            f"unknown query parameter {unknown[0][:40]!r} (known: {', '.join(known) or 'none'})",
            field=unknown[0][:40],
        )


# -- views ---------------------------------------------------------------------------------------


async def models_overview(request: web.Request) -> web.Response:
    _only_params(request)
    service = request.app[SERVICE]
    history = request.app[DASHBOARD].history
    models = []
    for name, state in service.registry.models.items():
        models.append(
            {
                "name": name,
                "flavor": state.flavor,
                "samples": state.learn_stats.n_calls,
                "predictions": state.predict_stats.n_calls,
                "metrics": state.metric_values(),
                **history.overview(name),
            }
        )
    quarantined = [
        {"name": name, "kind": q.kind, "reason": q.reason}
        for name, q in service.registry.quarantined.items()
    ]
    return reply(
        {
            "models": models,
            "quarantined": quarantined,
            "history_points": request.app[SETTINGS].history_points,
        }
    )


async def model_history(request: web.Request) -> web.Response:
    name = checked_name(request.match_info["model"])
    _only_params(request, "since", "limit")
    keep = request.app[SETTINGS].history_points
    since = _int_param(request, "since", 0, 0, MAX_SEQ)
    limit = _int_param(request, "limit", keep, 1, keep)
    ring = request.app[DASHBOARD].history.ring(name)
    registry = request.app[SERVICE].registry
    if ring is None and name not in registry.models and name not in registry.quarantined:
        raise NotFoundError(f"model {name!r} not found")
    points = [p for p in ring or () if p.seq > since][:limit]
    return reply(
        {
            "model": name,
            "points": [p.to_data() for p in points],
            "last_seq": ring[-1].seq if ring else 0,
            "max_points": keep,
        }
    )


def _sweep_name(request: web.Request) -> str:
    name = request.match_info["name"]
    if not re.match(SWEEP_NAME, name):
        raise SpecError(
            f"invalid sweep name {name[:80]!r}: a Kubernetes object name (lowercase letters, "
            "digits, '-' and '.')",
            field="name",
        )
    return name


async def list_sweeps(request: web.Request) -> web.Response:
    _only_params(request)
    sweeps = request.app[DASHBOARD].sweeps
    return reply({"sweeps": [s.model_dump(mode="json") for s in sweeps.values()]})


async def get_sweep(request: web.Request) -> web.Response:
    name = _sweep_name(request)
    stored = request.app[DASHBOARD].sweeps.get(name)
    if stored is None:
        raise NotFoundError(f"no summary of sweep {name!r} was published")
    return reply(stored.model_dump(mode="json"))


async def put_sweep(request: web.Request) -> web.Response:
    name = _sweep_name(request)
    settings = request.app[SETTINGS]
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(
            text=f"expected Content-Type application/json, got {request.content_type!r}"
        )
    if request.content_length is not None and request.content_length > settings.sweep_bytes:
        raise web.HTTPRequestEntityTooLarge(settings.sweep_bytes, request.content_length)
    body = await request.content.read(settings.sweep_bytes + 1)
    if len(body) > settings.sweep_bytes:
        raise web.HTTPRequestEntityTooLarge(settings.sweep_bytes, len(body))
    summary = SweepSummary.model_validate_json(body)
    dashboard = request.app[DASHBOARD]
    if name not in dashboard.sweeps and len(dashboard.sweeps) >= MAX_SWEEPS:
        raise ConflictError(
            f"the server keeps at most {MAX_SWEEPS} sweep summaries: DELETE /api/sweeps/NAME "
            "of one that is over"
        )
    updated = time.time()
    await dashboard.store.put_sweep(name, updated, summary.model_dump_json())
    created = name not in dashboard.sweeps
    dashboard.sweeps[name] = StoredSweep(name=name, updated=updated, summary=summary)
    return reply({"name": name, "updated": updated}, status=201 if created else 200)


async def delete_sweep(request: web.Request) -> web.Response:
    name = _sweep_name(request)
    dashboard = request.app[DASHBOARD]
    if name not in dashboard.sweeps:
        raise NotFoundError(f"no summary of sweep {name!r} was published")
    await dashboard.store.put_sweep(name, time.time(), None)
    del dashboard.sweeps[name]
    return reply({"deleted": name})
