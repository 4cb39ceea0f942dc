"""Learns, labels and batches: applied in memory in order per model, then committed in order.

The seam between the event loop and the models' threads (``workers``): a write that runs on a
model's thread holds that model's write lock (``workers.locked``) from before its in-flight
check until its ops are submitted; the thread only computes, and the bookkeeping (in-flight
identifiers, taken predictions, sequence numbers, submit) happens on the loop in the one step
after the thread returns. A cheap model's single write runs inline, with no await at all between
check, apply and submit, when its thread is idle and its lock free.

An error reply means "not applied": a request every target refused is a 400 and logs nothing; a
failure half-way (a bug) reverts the models it reached (``Commits.abort``); a write applied to a
model that a failed commit restored meanwhile is refused (``Commits.refuse_stale``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from streamml.errors import SpecError
from streamml.modelserver.commits import Commits, dumps
from streamml.modelserver.events import EventHub, publish_learns
from streamml.modelserver.learning import ModelState, Taken
from streamml.modelserver.pending import TakenPredictions
from streamml.modelserver.records import LearnRecord
from streamml.modelserver.registry import Join, Registry
from streamml.modelserver.storage import Op
from streamml.modelserver.workers import ModelWorkers

Sample = tuple[dict[str, Any], Any, str | None]
#: one learn: features, ground truth, identifier, prediction, truths (per model), provenance
OneSample = tuple[
    dict[str, Any], Any, str | None, Any, Mapping[str, Any] | None, dict[str, str] | None
]
Results = dict[str, dict[str, Any]]
Learned = list[tuple[ModelState, LearnRecord]]


class Learns:
    def __init__(
        self, registry: Registry, workers: ModelWorkers, commits: Commits, hub: EventHub
    ) -> None:
        self.registry = registry
        self.workers = workers
        self.commits = commits
        self.hub = hub

    def _inline(self, targets: list[ModelState]) -> bool:
        """Every target is cheap, its thread idle and its write lock free: apply right here."""
        workers = self.workers
        return all(
            not s.heavy and workers.idle(s.name) and workers.unlocked(s.name) for s in targets
        )

    # -- one sample ----------------------------------------------------------------------------

    async def learn(
        self,
        features: dict[str, Any],
        ground_truth: Any,
        *,
        model: str | None = None,
        models: list[str] | None = None,
        identifier: str | None = None,
        prediction: Any = None,
        truths: Mapping[str, Any] | None = None,
        provenance: dict[str, str] | None = None,
    ) -> Results:
        """One sample on one model, a subset, or all of them; the per-model results.
        ``truths``: each model's own ground truth instead of ``ground_truth`` (several targets
        of one run, one commit: an error reply still means that nothing was applied);
        ``provenance``: where the sample came from (each model logs and indexes it)."""
        sample = (features, ground_truth, identifier, prediction, truths, provenance or None)
        targets = self.registry.targets(model, models)
        commits = self.commits
        inflight = commits.inflight
        waits = identifier is not None and any((s.name, identifier) in inflight for s in targets)
        if not waits and self._inline(targets):  # the hot path: no await until the commit
            learnt = await self._learn_each(targets, sample, inline=True)
            future = commits.submit(learnt[1])
        else:
            async with self.workers.locked([state.name for state in targets]):
                names = {state.name for state in targets}
                if identifier is not None:
                    await commits.settled([(n, identifier) for n in names])
                targets = [s for s in self.registry.targets(model, models) if s.name in names]
                learnt = await self._learn_each(targets, sample, inline=False)
                future = commits.submit(learnt[1])
        results, _, learned, taken = learnt
        keys = [] if identifier is None else [(state.name, identifier) for state, _ in learned]
        await commits.wait(future, keys, taken)
        for state, record in learned:
            publish_learns(self.hub, state, [record], "learn")
        return results

    async def _learn_each(
        self, targets: list[ModelState], sample: OneSample, *, inline: bool
    ) -> tuple[Results, list[Op], Learned, Taken]:
        """Each target's part: ``inline`` right here (no await at all), else on the model's
        thread when it must be, with the targets' write locks held. A target that refuses the
        sample is listed with its reason; when all refuse, a SpecError (nothing was applied).
        A failure that is not the sample's (a bug, or cancelled mid-apply) reverts every
        target (abort marker). The ops are built in the step that returns them."""
        features, ground_truth, identifier, prediction, truths, provenance = sample
        results: Results = {}
        learned: Learned = []
        errors: list[str] = []
        taken: Taken = []
        registry = self.registry
        try:
            for state in targets:
                truth = ground_truth if truths is None else truths[state.name]
                try:
                    join = registry.join(state, features, truth, identifier, prediction, provenance)
                    record = await self._applied(state, join, taken, inline=inline)
                except SpecError as exc:
                    results[state.name] = {"learned": False, "duplicate": False, "error": str(exc)}
                    errors.append(str(exc))
                    continue
                if record is None:
                    results[state.name] = {"learned": False, "duplicate": True}
                else:
                    results[state.name] = {"learned": True, "duplicate": False}
                    learned.append((state, record))
        except BaseException:
            self.commits.abort([state.name for state in targets])
            raise
        if not inline:
            self.commits.refuse_stale([state for state, _ in learned], taken)
        if errors and len(errors) == len(targets):  # a partial refusal is not an error
            raise SpecError(errors[0] if len(errors) == 1 else "; ".join(errors))
        return results, self.commits.log_ops(learned), learned, taken

    async def _applied(
        self, state: ModelState, join: Join, taken: Taken, *, inline: bool
    ) -> LearnRecord | None:
        """:meth:`Registry.applied`, ``inline`` or with the model's part on its thread (when it
        must be): the waiting prediction it took is settled back here, on the loop."""
        registry = self.registry
        if inline:
            return registry.applied(state, join, taken)
        call = self.workers.call(state.name, not state.heavy, registry.apply, state, join)
        try:
            record = await call
        except BaseException:
            registry.settle(state, join, taken, ok=False)
            raise
        registry.settle(state, join, taken, ok=True)
        return record

    # -- labels --------------------------------------------------------------------------------

    async def label(self, model: str, identifier: str, label: Any) -> bool:
        """The late truth of an earlier prediction; False when it was already learned."""
        commits = self.commits
        state = self.registry.get(model)
        if (model, identifier) not in commits.inflight and self._inline([state]):  # no await
            record, future, taken = await self._label(state, identifier, label, inline=True)
        else:
            async with self.workers.locked([model]):
                await commits.settled([(model, identifier)])
                state = self.registry.get(model)
                record, future, taken = await self._label(state, identifier, label, inline=False)
        if record is None:
            return False
        await commits.wait(future, [(model, identifier)], taken)
        publish_learns(self.hub, state, [record], "label")
        return True

    async def _label(
        self, state: ModelState, identifier: str, label: Any, *, inline: bool
    ) -> tuple[LearnRecord | None, asyncio.Future[None] | None, Taken]:
        """The label's learn, applied and submitted (with the write lock held when not
        ``inline``); a failure that is not the label's (a bug) reverts the model."""
        taken: Taken = []
        join = self.registry.take_label(state, identifier, label)
        if join is None:
            return None, None, taken
        try:
            record = await self._applied(state, join, taken, inline=inline)
        except SpecError:
            raise
        except BaseException:
            self.commits.abort([state.name])
            raise
        if not inline and record is not None:
            self.commits.refuse_stale([state], taken)
        ops = self.commits.log_ops([(state, record)]) if record is not None else []
        return record, self.commits.submit(ops), taken

    # -- batches -------------------------------------------------------------------------------

    async def learn_batch(
        self,
        samples: list[Sample],
        *,
        model: str | None = None,
        models: list[str] | None = None,
        update_metrics: bool = True,
        provenance: dict[str, str] | None = None,
    ) -> Results:
        """Many samples in one commit per model. A sample a model rejects is skipped and
        listed under ``rejected`` (index and reason); the others are learned. Only when no
        model could learn any sample is it an error. Never learned on the event loop (it may
        take seconds to minutes): each model's part runs on its thread, under the write locks
        of all targets, and all ops are submitted together after the last one. ``provenance``:
        the origin of every sample."""
        provenance = provenance or None
        registry, commits = self.registry, self.commits
        targets = registry.targets(model, models)
        names = {state.name for state in targets}
        results: Results = {}
        learned: list[tuple[ModelState, list[list[Any]]]] = []
        taken: Taken = []
        async with self.workers.locked(list(names)):
            await commits.settled([(n, i) for n in names for _, _, i in samples if i is not None])
            targets = [s for s in registry.targets(model, models) if s.name in names]
            bodies: list[tuple[str, bytes]] = []
            reasons: list[str] = []
            accepted = 0
            for state in targets:
                encoded, body, result = await self._batch_part(
                    state, samples, (update_metrics, provenance), targets, taken
                )
                results[state.name] = result
                accepted += result["learned"] + result["duplicates"]
                if "rejected" in result:
                    first = result["rejected"][0]
                    reasons.append(f"samples[{first['index']}]: {first['message']}")
                if encoded:
                    bodies.append((state.name, body))
                    learned.append((state, encoded))
            commits.refuse_stale([state for state, _ in learned], taken)
            if not accepted and reasons:
                raise SpecError("; ".join(reasons[:3]), field="samples")
            ops: list[Op] = [("log", commits.storage.next_seq(), n, body) for n, body in bodies]
            future = commits.submit(ops)
        keys = [(s.name, item[4]) for s, encoded in learned for item in encoded if item[4]]
        await commits.wait(future, keys, taken)
        if self.hub.watched():
            for state, encoded in learned:
                records = [LearnRecord.decode(item) for item in encoded]
                publish_learns(self.hub, state, records, "learn")
        return results

    async def _batch_part(
        self,
        state: ModelState,
        samples: list[Sample],
        how: tuple[bool, dict[str, str] | None],
        targets: list[ModelState],
        taken: Taken,
    ) -> tuple[list[list[Any]], bytes, dict[str, Any]]:
        """One model's part of a batch on its thread; its predictions are taken and the unused
        ones put back here, on the loop."""
        pending = self.registry.pending
        joined = pending.take_many(state.name, (i for _, _, i in samples), state.seen)
        consumed: Taken = []
        try:
            encoded, body, duplicates, rejected = await self.workers.run(
                state.name, self._learn_many, state, samples, joined, how, consumed
            )
        except Exception:
            for name, identifier, item in consumed:
                pending.restore(name, identifier, item)
            self.commits.abort([s.name for s in targets])
            raise
        finally:
            for (name, identifier), item in joined.unused():
                pending.restore(name, identifier, item)
        taken.extend(consumed)
        result: dict[str, Any] = {"learned": len(encoded), "duplicates": duplicates}
        if rejected:
            result["rejected"] = [{"index": i, "message": m} for i, m in rejected[:100]]
        return encoded, body, result

    def _learn_many(
        self,
        state: ModelState,
        samples: list[Sample],
        joined: TakenPredictions,
        how: tuple[bool, dict[str, str] | None],
        consumed: Taken,
    ) -> tuple[list[list[Any]], bytes, int, list[tuple[int, str]]]:
        """The model's part of a batch, and its log record (encoded here, off the loop);
        ``how``: (update the metrics, the samples' provenance)."""
        update_metrics, provenance = how
        encoded, duplicates, rejected = state.learn_many(
            samples,
            joined,
            update_metrics=update_metrics,
            taken=consumed,
            window=self.registry.idempotency_window,
            provenance=provenance,
        )
        return encoded, dumps(encoded) if encoded else b"", duplicates, rejected
