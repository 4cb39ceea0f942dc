"""Writes made durable in the order they were applied: submitting ops to storage, waiting for
their group commit, and the learns still in flight meanwhile.

Every mutation is applied in memory first and queued to storage in the order it was applied; the
caller awaits the commit before replying. While a learn's commit runs, its (model, identifier)
is *in flight*: a resend under the same identifier waits for that outcome instead of being told
"duplicate" too early. A commit that fails has already returned the models it touched to their
durable state (``ModelService.restore_durable``, the storage's failure hook) when its callers
hear of it; here the waiting predictions they took are put back. All of this runs on the event
loop only.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson

from streamml.modelserver.events import jsonable
from streamml.modelserver.learning import ModelState, Taken
from streamml.modelserver.records import LearnRecord
from streamml.modelserver.registry import Registry
from streamml.modelserver.storage import Op, Storage, StorageError

log = logging.getLogger(__name__)

Key = tuple[str, str]


def dumps(data: Any) -> bytes:
    """JSON as the learn log and the model definitions store it."""
    encoded: bytes = orjson.dumps(data, default=jsonable, option=orjson.OPT_NON_STR_KEYS)
    return encoded


class Commits:
    """The storage queue as the model service uses it, and the learns in flight."""

    def __init__(self, registry: Registry, storage: Storage) -> None:
        self.registry = registry
        self.storage = storage
        #: (model, identifier) of learns applied in memory whose commit has not finished
        self.inflight: dict[Key, asyncio.Future[None]] = {}

    def submit(self, ops: list[Op]) -> asyncio.Future[None] | None:
        return self.storage.submit(ops) if ops else None

    async def commit(self, ops: list[Op]) -> None:
        await self.wait(self.submit(ops))

    def log_ops(self, learned: list[tuple[ModelState, LearnRecord]]) -> list[Op]:
        """One learn-log op per applied learn, numbered in the order they were applied."""
        return [
            ("log", self.storage.next_seq(), state.name, dumps([record.encode()]))
            for state, record in learned
        ]

    async def wait(
        self,
        future: asyncio.Future[None] | None,
        keys: list[Key] | None = None,
        taken: Taken | None = None,
    ) -> None:
        """Wait for the commit of submitted ops; meanwhile ``keys`` are in flight. When it
        fails, the models are already back to their durable state and the ``taken``
        predictions wait again."""
        if future is None:
            return
        inflight = self.inflight
        for key in keys or ():
            inflight[key] = future
        try:
            await future
        except StorageError:
            for name, identifier, item in taken or ():
                self.registry.pending.restore(name, identifier, item)
            raise
        finally:
            for key in keys or ():
                if inflight.get(key) is future:
                    del inflight[key]

    async def settled(self, keys: list[Key]) -> None:
        """Return once no learn under these (model, identifier) keys is in flight (their
        outcome is their callers' to report; a resend may start a new one meanwhile)."""
        inflight = self.inflight
        while inflight:
            waits = {inflight[key] for key in keys if key in inflight}
            if not waits:
                return
            await asyncio.wait(waits)

    def abort(self, names: list[str]) -> None:
        """A request failed half-way (a bug, not the client's input): what it applied is not
        logged, so these models must return to their durable state, which the storage does
        (after committing everything queued before) by failing this marker."""
        log.error("a request failed while applying to %s; reverting them", ", ".join(names))
        self.storage.submit([("abort", name) for name in names], wait=False)

    def refuse_stale(self, applied: list[ModelState], taken: Taken) -> None:
        """Back on the loop after a model's thread: when a failed commit restored one of these
        models meanwhile, the write was applied on top of the failed state (to an object no
        longer served). It fails like the writes queued behind the failure: the waiting
        predictions go back, and the models it did reach are reverted (abort marker)."""
        models = self.registry.models
        stale = [state.name for state in applied if models.get(state.name) is not state]
        if not stale:
            return
        for name, identifier, item in taken:
            self.registry.pending.restore(name, identifier, item)
        current = [state.name for state in applied if models.get(state.name) is state]
        if current:
            self.abort(current)
        raise StorageError(
            f"model {', '.join(stale)} returned to its durable state after a failed write "
            "while this request was being applied: nothing was applied (retry)"
        )
