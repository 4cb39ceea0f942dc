"""The sweep engine: one state machine shared by the operator and ``streamml sweep``.

The engine keeps ``parallelism`` trials in flight on a scheduler, reads each finished trial's
result, retries failures up to ``maxFailures``, runs the held-out trials once training is done,
and keeps a learning curve and the held-out evaluation. Its whole memory is a
:class:`~streamml.vocabulary.sweepstatus.LammpsSweepStatus`, persisted through a
:class:`~streamml.sweep.state.StateStore` (the operator's patches the CR status; the CLI's
writes a JSON file).

Restart safety rests on one ordering: a trial's record (state ``Submitting``, its deterministic
job name) is SAVED before the job is submitted, and the job id is saved right after. A restarted
engine that finds a ``Submitting`` record without an id asks the scheduler for the name
(:meth:`Scheduler.lookup`): found, it adopts the job; not found, it submits under that name
now. A trial is therefore never submitted twice and never forgotten. A submit that finds the
scheduler unreachable (:class:`SchedulerUnavailable`: a Flux instance restarting) leaves the
record ``Submitting`` without an id, and every tick resolves such records the same way once the
scheduler answers again: no failure is counted for an outage.

The plan (the sampled points) is not stored: it is recomputed from the spec (seeded), and a
fingerprint in status detects a spec whose space was edited after the sweep started.

One concept, kept in one module on purpose (longer than ~500 lines): the transitions of a trial
read in order here, and every policy they consult lives in its own room (``sampling``,
``steering``/``acquisition`` for adaptive choices, ``stopping``, ``timelimits``, ``images``,
``jobs``, ``state``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from streamml.errors import SchedulerError, SchedulerUnavailable, SpecError, StreamMLError
from streamml.sweep import images, jobs, stopping, timelimits
from streamml.sweep.sampling import Point, as_vars, fingerprint, plan
from streamml.sweep.schedulers.base import JobRequest, JobState, JobStatus, Scheduler
from streamml.sweep.state import StateStore, stamp
from streamml.sweep.steering import Predictor, Steering
from streamml.vocabulary.conditions import now, set_condition
from streamml.vocabulary.jobresult import JobResult, scrub
from streamml.vocabulary.lammpssweep import LammpsSweepSpec, resolved_targets
from streamml.vocabulary.replies import DriftStats
from streamml.vocabulary.sweepstatus import (
    MAX_DRIFT_NOTES,
    MAX_TRIAL_RECORDS,
    CurvePoint,
    DriftNote,
    HeldOutResult,
    LammpsSweepStatus,
    LearningCurve,
    TrialRecord,
)
from streamml.vocabulary.targets import model_targets

log = logging.getLogger(__name__)

#: states that hold a slot of ``parallelism``
ACTIVE = ("Submitting", "Pending", "Running")
#: states of a trial that is not done yet (a spooled result still has to reach the server)
OPEN = (*ACTIVE, "Spooled")


@dataclass(frozen=True)
class ModelProgress:
    """One model as the server reports it: samples learned, metrics, its drift watch."""

    samples: int
    metrics: dict[str, float]
    drift: DriftStats | None = None


MetricsSource = Callable[[Sequence[str] | None], Awaitable[dict[str, ModelProgress]]]
Redeliver = Callable[[], Awaitable[None]]


class SweepEngine:
    """Drive one sweep. Call :meth:`tick` repeatedly (or :meth:`run`) until it returns True."""

    def __init__(
        self,
        name: str,
        spec: LammpsSweepSpec,
        scheduler: Scheduler,
        store: StateStore,
        ctx: jobs.JobContext,
        *,
        metrics: MetricsSource | None = None,
        redeliver: Redeliver | None = None,
        generation: int | None = None,
        predict: Predictor | None = None,
        held_out: stopping.HeldOutPredict | None = None,
        wall_time: timelimits.Predict | None = None,
    ) -> None:
        self.name = name
        self.spec = spec
        self.scheduler = scheduler
        self.store = store
        self.ctx = ctx
        self.metrics = metrics
        self.redeliver = redeliver
        self.generation = generation
        self.held_out = held_out  # stopWhen: the held-out set predicted again
        self.wall_time = wall_time  # the time-limit model's predictions (predictedTimeLimit)
        self.points: list[Point] = plan(spec)  # SpecError for impossible plans
        #: adaptive sampling: the models choose the training points after the warm-up
        self.steering = Steering.of(spec, predict)
        self.status = LammpsSweepStatus()
        self._loaded = False

    @property
    def total(self) -> int:
        return self.spec.trials + self.spec.test_trials

    @property
    def finished(self) -> bool:
        return self.status.phase in ("Succeeded", "Failed")

    def update_spec(self, spec: LammpsSweepSpec, generation: int | None = None) -> None:
        """Take a new spec (suspend, parallelism, maxFailures, lammps may change; the space may
        not). An edited input (script, files) needs its snapshot prepared again: the drivers
        build a new engine for it (``snapshot.same_input``)."""
        # the operator hands over the spec on every tick: plan again only when the space moved
        points = self.points if _same_space(spec, self.spec) else plan(spec)
        if self._loaded and fingerprint(points) != self.status.plan_fingerprint:
            raise SpecError(
                "parameters, sampling, trials and testTrials cannot change once a sweep started",
                field="parameters",
            )
        self.spec, self.points, self.generation = spec, points, generation

    # -- lifecycle ----------------------------------------------------------------------------

    async def load(self) -> None:
        stored = await self.store.load()
        fp = fingerprint(self.points)
        if stored is None or stored.plan_fingerprint is None:
            # a fresh start (a status without a plan only holds waiting/invalid-spec notes)
            self.status = stored or LammpsSweepStatus()
            self.status.phase = "Pending"
            self.status.plan_fingerprint = fp
            self.status.start_time = self.status.start_time or now()
        else:
            self.status = stored
            if stored.plan_fingerprint != fp:
                raise SpecError(
                    "the sweep's space changed after it started (parameters, sampling, trials"
                    " or testTrials); create a new sweep instead",
                    field="parameters",
                )
        self._loaded = True
        await self._resolve_when_reachable()

    async def _resolve_when_reachable(self) -> bool:
        """Resolve ``Submitting`` records left by an outage; False while the scheduler is down."""
        try:
            await self._resolve_unknown_submissions()
        except SchedulerUnavailable as exc:
            log.info("sweep %s: scheduler unreachable: %s", self.name, exc)
            return False
        return True

    async def run(self, stop: asyncio.Event | None = None, interval: float = 1.0) -> None:
        """Tick until finished or ``stop`` is set."""
        if not self._loaded:
            await self.load()
        while not await self.tick():
            if stop is not None and stop.is_set():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for((stop or asyncio.Event()).wait(), timeout=interval)

    async def tick(self) -> bool:
        """One round: poll, collect results, submit; True once the sweep is over."""
        if not self._loaded:
            await self.load()
        if self.finished:
            return True
        if self.spec.suspend:
            await self._suspend()
            return False
        before = self.status.model_dump_json()
        self.status.phase = "Running"
        set_condition(self.status.conditions, "Suspended", False, "Running")
        set_condition(self.status.conditions, "Ready", True, "Running", "runs in flight")
        reachable = await self._resolve_when_reachable()
        learned = await self._collect()
        if self._failed():  # too many failures
            await self.cancel_all("the sweep failed")
        else:
            learned |= await self._deliver_spooled()
            await self._check_target()  # before submitting: a target reached starts nothing
            if reachable and not self._failed():
                await self._submit_more()
        self._recount()
        if learned:
            await self._update_curve()
        self._finish_if_done()
        self._recount()
        if self.status.model_dump_json() != before:
            await self.store.save(self.status)
        return self.finished

    def _failed(self) -> bool:
        return self.status.phase == "Failed"

    async def cancel_all(self, reason: str = "cancelled") -> int:
        """Cancel every job in flight (delete, suspend, failure); returns how many."""
        count = 0
        for record in self.status.trials:
            if record.state not in ACTIVE:
                continue
            job_id = record.job_id or await self.scheduler.lookup(record.job_name)
            if job_id is not None:
                try:
                    await self.scheduler.cancel(job_id)
                except StreamMLError as exc:
                    log.warning("cancel %s (%s): %s", record.job_name, job_id, exc)
                count += 1
            record.job_id = job_id
            record.state = "Cancelled"
            record.reason = reason
        return count

    # -- steps --------------------------------------------------------------------------------

    async def _resolve_unknown_submissions(self) -> None:
        for record in self.status.trials:
            if record.state == "Submitting" and record.job_id is None:
                job_id = await self.scheduler.lookup(record.job_name)
                if job_id is not None:
                    log.info("sweep %s: adopted job %s (%s)", self.name, record.job_name, job_id)
                    record.job_id = job_id
                    record.state, record.reason = "Pending", None
                    self.status.submitted += 1
                    await self.store.save(self.status)
                else:  # the crash came before the submit: submit it now, under the same name
                    request = self._request(record.id, record.attempt, record.time_limit_seconds)
                    await self._submit(record, request)

    async def _suspend(self) -> None:
        if self.status.phase == "Suspended":
            return
        for record in self.status.trials:
            if record.state in ACTIVE:
                self.status.retry_queue.insert(0, record.id)  # re-run later, not a failure
                self.status.attempts[str(record.id)] = record.attempt
        await self.cancel_all("suspended")
        self.status.phase = "Suspended"
        set_condition(
            self.status.conditions, "Suspended", True, "Suspended", "spec.suspend is true"
        )
        self._recount()
        await self.store.save(self.status)

    async def _collect(self) -> bool:
        """Poll jobs in flight and take the finished ones in; True if training trials learned."""
        active = [r for r in self.status.trials if r.state in ACTIVE and r.job_id]
        if not active:
            return False
        try:
            states = await self.scheduler.poll([r.job_id for r in active if r.job_id])
        except SchedulerError as exc:
            log.warning("sweep %s: poll failed: %s", self.name, exc)
            return False
        learned = False
        for record in active:
            assert record.job_id is not None
            status = states.get(record.job_id, JobStatus(JobState.UNKNOWN, reason="not reported"))
            if not status.state.finished:
                record.state = "Running" if status.state == JobState.RUNNING else "Pending"
                continue
            learned |= self._finish_trial(record, status)
        return learned

    def _finish_trial(self, record: TrialRecord, status: JobStatus) -> bool:
        record.finished_at = stamp()
        result = jobs.read_result(self.ctx, record.job_name, status.output)
        if record.state != "Spooled":  # a redelivered run was counted when it ended
            spent = self.status.core_seconds + stopping.core_seconds(result, self.spec)
            self.status.core_seconds = round(spent, 6)  # no float dust in `kubectl get`
        images.record(self.status, record, result)
        if timelimits.censor(self.spec, self.status, record, result, status):
            return False  # killed at its limit: resubmitted with a larger one, never learned
        target = result.target if result and self._has_every_target(result) else None
        if status.state == JobState.SUCCEEDED and target is not None and result is not None:
            delivered = result.delivered
            record.state = "Succeeded" if delivered else "Spooled"
            self.status.succeeded += delivered
            record.target = target
            record.targets = dict(result.targets) or None
            record.reason = None if delivered else f"server unreachable: {result.error}"
            timelimits.observe(self.spec, self.status, record, result)
            if record.role == "test":
                self.status.test_results = [
                    r for r in self.status.test_results if r.id != record.id
                ] + [
                    HeldOutResult(
                        id=record.id,
                        target=target,
                        predictions=result.finite_predictions(),
                        image_digest=record.image_digest,
                        targets=record.targets,
                        features=stopping.held_out_features(result),
                    )
                ]
            return record.role == "train" and delivered
        reason = (result.error if result else None) or status.reason or f"job {status.state.value}"
        if status.state == JobState.SUCCEEDED:
            reason = "the job succeeded but left no readable result"
        record.state = "Lost" if status.state == JobState.UNKNOWN else "Failed"
        # the job reports LAMMPS' words without the input's; a scheduler's own text (a log's
        # last line) is scrubbed too: no echo of an input file ever reaches a status
        record.reason = scrub(str(reason))[:500]
        self.status.failed += 1
        log.warning("sweep %s: %s failed: %s", self.name, record.job_name, record.reason)
        fatal = images.fatal_code(result)
        if fatal is not None:  # no runtime / no image / no SIF: every retry would fail alike
            self.status.phase = "Failed"
            set_condition(self.status.conditions, "Ready", False, fatal, record.reason)
        elif self.status.failed > self.spec.max_failures:
            self.status.phase = "Failed"
            set_condition(
                self.status.conditions,
                "Ready",
                False,
                "TooManyFailures",
                f"{self.status.failed} failed runs > maxFailures {self.spec.max_failures};"
                f" last: {record.job_name}: {record.reason}",
            )
        else:
            self.status.retry_queue.append(record.id)
            self.status.attempts[str(record.id)] = record.attempt
        return False

    def _has_every_target(self, result: JobResult) -> bool:
        """A sweep with several targets needs each one's value in the result."""
        targets = resolved_targets(self.spec)
        return len(targets) < 2 or all(t.name in result.targets for t in targets)

    async def _deliver_spooled(self) -> bool:
        """Re-send spooled results (the server was down when their jobs ended)."""
        waiting = [r for r in self.status.trials if r.state == "Spooled"]
        if not waiting or self.redeliver is None:
            return False
        try:
            await self.redeliver()
        except StreamMLError as exc:
            log.info("sweep %s: spooled results not delivered yet: %s", self.name, exc)
            return False
        learned = False
        for record in waiting:
            result = jobs.read_result(self.ctx, record.job_name, None)
            if result and result.delivered:
                learned |= self._finish_trial(record, JobStatus(JobState.SUCCEEDED, output=None))
        return learned

    def _next_trial(self) -> int | None:
        if self.spec.stop_when is not None:  # held-out trials first, then up to the target
            return stopping.next_trial(self.status, self.spec)
        queue = self.status.retry_queue
        if queue and (queue[0] < self.spec.trials or not self._training_open()):
            return queue.pop(0)
        nxt = self.status.next_trial
        if nxt >= self.total:
            return None
        if nxt >= self.spec.trials and self._training_open():
            return None  # held-out trials start once every training trial is in
        self.status.next_trial += 1
        return nxt

    def _training_open(self) -> bool:
        if self.status.next_trial < self.spec.trials:
            return True
        if any(i < self.spec.trials for i in self.status.retry_queue):
            return True
        return any(r.role == "train" and r.state in OPEN for r in self.status.trials)

    async def _submit_more(self) -> None:
        slots = self.spec.parallelism - sum(r.state in ACTIVE for r in self.status.trials)
        if self.steering and await self.steering.choose_ahead(self.status, slots):
            await self.store.save(self.status)  # the choices, recorded BEFORE their runs exist
        while sum(r.state in ACTIVE for r in self.status.trials) < self.spec.parallelism:
            position = self.status.next_trial
            trial = self._next_trial()
            if trial is None:
                return
            if self.steering and not self.steering.chosen(trial, self.status):
                self.status.next_trial = position  # the models choose it once the warm-up is in
                return
            attempt = self.status.attempts.get(str(trial), 0) + 1
            self.status.attempts.pop(str(trial), None)
            limit = await timelimits.plan(
                self.spec, self.status, self.wall_time, trial, self._point(trial)
            )
            request = self._request(trial, attempt, limit.seconds)
            record = TrialRecord(
                id=trial,
                role="test" if trial >= self.spec.trials else "train",
                attempt=attempt,
                job_name=request.name,
                params=as_vars(self._point(trial)),
                submitted_at=stamp(),
                time_limit_seconds=limit.seconds,
                predicted_wall_seconds=limit.predicted_wall,
            )
            self.status.trials.append(record)
            self._recount()
            await self.store.save(self.status)  # recorded BEFORE the job exists
            await self._submit(record, request)

    def _request(self, trial: int, attempt: int, time_limit: int | None = None) -> JobRequest:
        return jobs.build_job(
            self.spec,
            self.ctx,
            trial=trial,
            attempt=attempt,
            point=self._point(trial),
            test=trial >= self.spec.trials,
            sweep=self.name,
            time_limit=time_limit,
        )

    def _point(self, trial: int) -> Point:
        if self.steering is None:
            return self.points[trial]
        return self.steering.point(trial, self.status, self.points)  # a recorded choice

    async def _submit(self, record: TrialRecord, request: JobRequest) -> None:
        try:
            if request.workdir is not None:  # shared filesystem: the job writes its result here
                request.workdir.mkdir(parents=True, exist_ok=True)
            record.job_id = await self.scheduler.submit(request)
        except SchedulerUnavailable as exc:  # not a failure: looked up and submitted next tick
            record.reason = scrub(f"waiting for the scheduler: {exc}")[:500]
            await self.store.save(self.status)
            return
        except (SchedulerError, OSError) as exc:
            self._finish_trial(record, JobStatus(JobState.FAILED, reason=f"submit: {exc}"))
            await self.store.save(self.status)
            return
        record.state, record.reason = "Pending", None
        self.status.submitted += 1
        await self.store.save(self.status)  # the id, right after the submit

    async def _update_curve(self) -> None:
        if self.metrics is None:
            return
        try:
            per_model = await self.metrics(self.ctx.models)
        except StreamMLError as exc:
            log.info("sweep %s: metrics not available: %s", self.name, exc)
            return
        learned = min(self.status.succeeded, self.spec.trials)
        curves = {c.model: c for c in self.status.learning_curve}
        owner = model_targets(resolved_targets(self.spec))
        for model, progress in sorted(per_model.items()):
            samples = progress.samples
            metric, value = jobs.headline(progress.metrics)
            curve = curves.get(model)
            if curve is None:
                curve = LearningCurve(model=model, metric=metric, target=owner.get(model))
                self.status.learning_curve.append(curve)
            point = CurvePoint(
                trials=learned,
                samples=samples,
                value=value,
                image_digest=images.current(self.status),
                core_seconds=self.status.core_seconds,
            )
            jobs.add_point(curve.points, point)
            self._note_drift(model, progress.drift, learned)

    async def _check_target(self) -> None:
        """stopWhen: measure the held-out set again when a check is due (module stopping)."""
        training_open = (
            self.status.next_trial < self.total
            or bool(self.status.retry_queue)
            or any(r.role == "train" and r.state in OPEN for r in self.status.trials)
        )
        if self.held_out is None or not stopping.due(self.status, self.spec, training_open):
            return
        try:
            await stopping.check(self.status, self.spec, self.held_out, self.ctx.models)
        except SpecError as exc:  # the server cannot answer for the rule: nothing more to run
            self.status.phase = "Failed"
            message = f"spec.{exc.field}: {exc}" if exc.field else str(exc)
            set_condition(self.status.conditions, "Ready", False, "InvalidSpec", message)
            await self.cancel_all("invalid spec")
        except StreamMLError as exc:
            log.info("sweep %s: held-out check waits for the server: %s", self.name, exc)

    def _note_drift(self, model: str, drift: DriftStats | None, learned: int) -> None:
        """The model's new detections, placed on this sweep's training runs: its scored samples
        before this sweep's runs are the ones it had scored beyond the runs learned so far (every
        run is one scored learn; another teacher meanwhile shifts the placement)."""
        if drift is None or not drift.history:
            return
        notes = self.status.drift
        newest = max((n.detected_at_sample for n in notes if n.model == model), default=0)
        offset = drift.observed - learned
        for detection in drift.history:
            if detection.sample <= newest:
                continue
            first = detection.change_at_sample - offset
            notes.append(
                DriftNote(
                    model=model,
                    detected_at_sample=detection.sample,
                    change_at_sample=detection.change_at_sample,
                    first_trial_after=first if first >= 1 else None,
                    detected_after_trials=max(detection.sample - offset, 0),
                    magnitude=detection.magnitude,
                )
            )
            log.warning(
                "sweep %s: model %s detected drift after %d training runs (since run %s)",
                self.name,
                model,
                max(detection.sample - offset, 0),
                first if first >= 1 else "before this sweep",
            )
        del notes[:-MAX_DRIFT_NOTES]

    def _finish_if_done(self) -> None:
        if self.status.phase == "Failed":
            self._complete()
            return
        busy = any(r.state in OPEN for r in self.status.trials)
        started = self.status.next_trial >= self.total or stopping.stopped(self.status)
        if started and not self.status.retry_queue and not busy:
            stopping.budget_spent(self.status, self.spec)
            self.status.phase = "Succeeded"
            set_condition(self.status.conditions, "Ready", True, "Succeeded", "every run finished")
            self._complete()

    def _complete(self) -> None:
        self.status.completion_time = self.status.completion_time or now()
        set_condition(self.status.conditions, "Complete", True, self.status.phase)

    def _recount(self) -> None:
        s = self.status
        active = [r for r in s.trials if r.state in OPEN]
        s.running = sum(r.state == "Running" for r in active)
        s.pending = self.total - s.succeeded - len(active) - len(s.retry_queue)
        s.progress = f"{s.succeeded}/{self.total}"
        s.runs = stopping.runs(s, self.spec)
        if self.generation is not None:
            s.observed_generation = self.generation
        targets = resolved_targets(self.spec)
        owner = model_targets(targets) or None
        s.evaluation = jobs.evaluate(s.test_results, owner)
        s.evaluation_by_target = jobs.evaluate_by_target(s.evaluation, targets)
        s.evaluation_by_image = images.evaluate_by_image(s.test_results, owner)
        scored = [(e.r2, e.model) for e in s.evaluation if e.r2 is not None]
        if s.evaluation_by_target:  # several targets: the headline is the first target's
            first = s.evaluation_by_target[0]
            s.best_model, s.held_out_r2 = first.best_model, first.held_out_r2
        elif scored:
            r2, model = max(scored)
            # rounded: it is a kubectl column; the evaluation keeps full precision
            s.best_model, s.held_out_r2 = model, round(r2, 4)
        # bounded history: every record in flight, then the newest finished ones
        if len(s.trials) > MAX_TRIAL_RECORDS:
            keep = {id(r) for r in active}
            finished = [r for r in s.trials if id(r) not in keep]
            room = max(MAX_TRIAL_RECORDS - len(active), 0)
            kept = {id(r) for r in finished[len(finished) - room :]} | keep
            s.trials = [r for r in s.trials if id(r) in kept]


def _same_space(a: LammpsSweepSpec, b: LammpsSweepSpec) -> bool:
    """The fields a plan depends on (and only those) are equal."""
    return (a.parameters, a.sampling, a.trials, a.test_trials) == (
        b.parameters,
        b.sampling,
        b.trials,
        b.test_trials,
    )
