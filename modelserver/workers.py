"""Where a model's work runs: on the event loop when it is small, else on the model's own thread.

Learning a batch, or anything on an expensive model (a tree, a forest, neighbours, a kernel
sampler, an uploaded pickle), can take from milliseconds to minutes of pure-Python work. Run on
the event loop it would stop ``/healthz``, ``/readyz`` and every other model for that long, so it
runs on a thread that belongs to the model: one thread per model keeps that model's operations in
the order they were submitted (learns, predicts, labels and snapshots alike), while the event loop
goes on serving everything else. river holds the GIL while it computes; CPython hands it to a
waiting thread every switch interval, and the event loop waits for it several times per request
(wake-up, read, handler, write), so the server sets the interval to :data:`SWITCH_INTERVAL`
(1 ms instead of 5 ms: measured /healthz p50 26 ms -> see BENCHMARKS.md, while a tree learned a
batch). The shorter interval costs nothing while only one thread wants the GIL.

Only the model's own state is touched on its thread. Everything shared (pending predictions,
storage queue and sequence numbers, event fan-out) stays on the event loop, before or after.
A small operation on a cheap model whose thread is idle runs inline, as before: nothing can be
ahead of it, and a thread hop would cost the hot path ~10%.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

#: seconds between forced GIL hand-offs (``sys.setswitchinterval``) while a model's thread computes
SWITCH_INTERVAL = 0.001


#: how much nicer (``nice``) than the event loop an expensive model's thread runs: when the CPU
#: is short, the kernel runs the loop first once it holds the GIL (Linux nices threads one by
#: one). Cheap models' batches keep the loop's priority: under a busy machine a nice thread gets
#: a small share of the CPU, which halved their batch throughput (measured).
WORKER_NICENESS = 10


def share_the_gil() -> None:
    """Let the event loop take the GIL from a computing model thread within 1 ms."""
    sys.setswitchinterval(SWITCH_INTERVAL)


def _nicer() -> None:
    # not Linux, or not allowed: the same priority then
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WORKER_NICENESS)


class ModelWorkers:
    """One single-thread executor per model, created the first time it is needed, and one
    write lock per model (see :meth:`locked`)."""

    def __init__(self) -> None:
        self._executors: dict[str, ThreadPoolExecutor] = {}
        self._queued: dict[str, int] = {}
        self._heavy: set[str] = set()
        self._locks: dict[str, asyncio.Lock] = {}

    def unlocked(self, name: str) -> bool:
        """No write of this model is between its apply and its submit."""
        lock = self._locks.get(name)
        return lock is None or not lock.locked()

    @contextlib.asynccontextmanager
    async def locked(self, names: list[str]) -> AsyncIterator[None]:
        """Hold the write locks of these models (taken in name order: no deadlock between two
        fan-outs). A write holds them from before its apply until its ops are submitted, so
        that per model the storage queue has the writes (and snapshots) in the order they were
        applied, even when the apply ran on the model's thread with the loop going on."""
        async with contextlib.AsyncExitStack() as stack:
            for name in sorted(set(names)):
                await stack.enter_async_context(self._locks.setdefault(name, asyncio.Lock()))
            yield

    def expensive(self, name: str) -> None:
        """This model's thread runs nicer than the loop (a cheap model's batches do not)."""
        self._heavy.add(name)

    def idle(self, name: str) -> bool:
        """Nothing of this model is running or waiting on its thread."""
        return not self._queued.get(name)

    def busy_models(self) -> set[str]:
        return {name for name, count in self._queued.items() if count}

    async def run(self, name: str, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the model's thread, after everything submitted for it before."""
        executor = self._executors.get(name)
        if executor is None:
            executor = ThreadPoolExecutor(
                max_workers=1,
                thread_name_prefix=f"model-{name}",
                initializer=_nicer if name in self._heavy else None,
            )
            self._executors[name] = executor
        self._queued[name] = self._queued.get(name, 0) + 1
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)
        finally:
            left = self._queued.get(name)
            if left:
                self._queued[name] = left - 1

    async def call(self, name: str, inline: bool, fn: Callable[..., T], *args: Any) -> T:
        """Inline when the caller says the work is small and the model's thread is idle."""
        if inline and self.idle(name):
            return fn(*args)
        return await self.run(name, fn, *args)

    async def drain(self, name: str) -> None:
        """Wait until everything submitted for the model so far has run."""
        if not self.idle(name):
            await self.run(name, _nothing)

    def forget(self, name: str) -> None:
        """The model is gone: let its thread end once its queue is empty."""
        executor = self._executors.pop(name, None)
        self._queued.pop(name, None)
        lock = self._locks.get(name)
        if lock is not None and not lock.locked():
            del self._locks[name]
        self._heavy.discard(name)
        if executor is not None:
            executor.shutdown(wait=False)

    def close(self) -> None:
        for name in list(self._executors):
            self.forget(name)


def _nothing() -> None:
    return None
