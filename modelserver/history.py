"""Each model's metrics over time, bounded and durable, sampled off the learn path.

Every ``history_interval_seconds`` the sampler looks at each model: when its learn count moved
since its last point, it takes one point (time, samples learned, every metric) into the model's
ring of at most ``history_points`` points (the oldest falls out), and writes the round's points
in one transaction of ``dashboard.sqlite3`` on its own thread. A learn never waits for it and
never pays for it: the sampler reads what the learns left (one ``metric_values()`` per changed
model per interval). A point is durable at most one interval after the learns it shows; a
kill -9 loses at most that interval.

A model deleted loses its history; a new model under an old name starts a new one (the history
remembers each model's creation time, read from the models' own file with a read-only
connection of this module). A quarantined model keeps its history.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from streamml.modelserver.dashstore import DashboardStore, NewPoint, Point
from streamml.modelserver.registry import Registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelInfo:
    """What the dashboard shows of a model besides its numbers (from the models' file)."""

    flavor: str
    origin: str
    spec: str | None
    created: float | None


def read_model_info(database: Path) -> dict[str, ModelInfo]:
    """The models' definitions, through a read-only connection (WAL lets it read beside the
    server's writer)."""
    try:
        conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return {}
    try:
        rows = conn.execute("SELECT name, flavor, origin, spec, created FROM models").fetchall()
    except sqlite3.Error as exc:
        log.warning("dashboard: cannot read the model definitions: %s", exc)
        return {}
    finally:
        conn.close()
    return {
        name: ModelInfo(flavor, origin, spec, created)
        for name, flavor, origin, spec, created in rows
    }


def _parsed(spec: str | None) -> Any:
    """The stored spec as JSON (it was written as JSON by ``ModelService.create``)."""
    if spec is None:
        return None
    try:
        return orjson.loads(spec)
    except orjson.JSONDecodeError:
        return None


class History:
    def __init__(
        self, registry: Registry, store: DashboardStore, database: Path, *, points: int
    ) -> None:
        self.registry = registry
        self.store = store
        self.database = database
        self.points = points
        self.rings: dict[str, deque[Point]] = {}
        self.created: dict[str, float | None] = {}
        self.info: dict[str, ModelInfo] = {}
        #: id() of each model's state at the last look (a change: deleted+created, restored)
        self._states: dict[str, int] = {}
        self.rounds = 0

    async def load(self) -> None:
        stored = await self.store.load_history()
        for name, (created, points) in stored.items():
            self.rings[name] = deque(points, maxlen=self.points)
            self.created[name] = created
        await self._refresh_info()

    async def _refresh_info(self) -> None:
        self.info = await asyncio.to_thread(read_model_info, self.database)
        self._states = {name: id(state) for name, state in self.registry.models.items()}

    def ring(self, name: str) -> deque[Point] | None:
        return self.rings.get(name)

    async def sample(self, now: float | None = None) -> int:
        """One round: a point for each model that learned since its last one; returns how many."""
        models = self.registry.models
        if {n: id(s) for n, s in models.items()} != self._states:
            await self._refresh_info()
        when = time.time() if now is None else now
        forget = {
            name
            for name in self.rings
            if (name not in models and name not in self.registry.quarantined)
            or (name in self.info and self.info[name].created != self.created.get(name))
        }
        for name in forget:
            self.rings.pop(name, None)
            self.created.pop(name, None)
        new: list[NewPoint] = []
        for name, state in list(models.items()):
            samples = state.learn_stats.n_calls
            ring = self.rings.get(name)
            last = ring[-1] if ring else None
            if samples == 0 or (last is not None and last.samples == samples):
                continue
            if ring is None:
                ring = self.rings[name] = deque(maxlen=self.points)
                info = self.info.get(name)
                self.created[name] = info.created if info else None
            point = Point((last.seq if last else 0) + 1, when, samples, state.metric_values())
            ring.append(point)
            new.append(NewPoint(name, self.created[name], point))
        if new or forget:
            await self.store.write_history(new, forget)
        self.rounds += 1
        return len(new)

    async def run(self, interval: float) -> None:
        failing = False
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sample()
            except Exception as exc:  # keep serving; the next round samples again
                if not failing:  # once per streak, not once per interval
                    log.error("dashboard: cannot write the metrics history: %s", exc)
                failing = True
            else:
                if failing:
                    log.info("dashboard: the metrics history is written again")
                failing = False

    async def final(self) -> None:
        """The last round at shutdown (graceful stop: nothing learned is left out)."""
        with contextlib.suppress(Exception):
            await self.sample()

    def overview(self, name: str) -> dict[str, Any]:
        ring = self.rings.get(name)
        info = self.info.get(name)
        return {
            "origin": info.origin if info else None,
            "spec": _parsed(info.spec) if info else None,
            "points": len(ring) if ring else 0,
            "last_seq": ring[-1].seq if ring else 0,
        }
