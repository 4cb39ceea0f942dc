"""The stop rule of a sweep (``spec.stopWhen``) and its cost accounting, for the engine.

With ``stopWhen`` the held-out trials run first (plan positions ``trials..trials+testTrials-1``
are submitted before ``0..trials-1``): their features and measured targets are the fixed
reference set. Every ``checkEvery`` training runs learned the engine asks the server to predict
that set again (one ``/api/predict/batch/`` per model), writes the predictions into
``status.testResults`` (so ``status.evaluation``, ``bestModel`` and ``heldOutR2`` are those of
the newest check), scores them and appends a :class:`HeldOutCheck`. Once the target has held for
``consecutive`` checks in a row the sweep stops submitting (runs in flight finish and are
counted) with ``status.runsToTarget`` and condition ``TargetReached=True``; a sweep that spends
its ``trials`` first ends with ``TargetReached=False``, reason ``BudgetExhausted``.

Core-seconds: a run costs its CPU seconds (``cpu_time`` = loop time x LAMMPS' CPU use, per
rank) times its MPI ranks; a log without the CPU use costs its loop time x the CPUs it held.
Every finished attempt counts once (a failed one too, when it left a log): it was spent.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from streamml.errors import SpecError
from streamml.sweep import jobs
from streamml.vocabulary.conditions import set_condition
from streamml.vocabulary.jobresult import JobResult, finite
from streamml.vocabulary.lammpssweep import LammpsSweepSpec, resolved_targets
from streamml.vocabulary.stopping import MAX_HELD_OUT_CHECKS, HeldOutCheck, StopWhen
from streamml.vocabulary.sweepstatus import Evaluation, LammpsSweepStatus
from streamml.vocabulary.targets import model_targets

#: (models to ask, or None for every model on the server; samples) -> model -> predictions,
#: None for a model that is no regression (its predictions are labels: no R², no error)
HeldOutPredict = Callable[
    [Sequence[str] | None, Sequence[Mapping[str, Any]]],
    Awaitable[dict[str, list[Any] | None]],
]
CONDITION = "TargetReached"


def trial_at(spec: LammpsSweepSpec, position: int) -> int:
    """The plan index submitted at ``position``: the held-out trials first, then training."""
    tests = spec.test_trials
    return spec.trials + position if position < tests else position - tests


def training_cursor(status: LammpsSweepStatus, spec: LammpsSweepSpec) -> int:
    """The plan index of the next training trial not started yet (``status.next_trial`` counts
    plan positions; with stopWhen the held-out positions come first)."""
    if spec.stop_when is None:
        return status.next_trial
    return max(status.next_trial - spec.test_trials, 0)


def next_trial(status: LammpsSweepStatus, spec: LammpsSweepSpec) -> int | None:
    """The next trial of a stopWhen sweep (retries first); None once stopped or all started."""
    if stopped(status):
        return None
    if status.retry_queue:
        return status.retry_queue.pop(0)
    if status.next_trial >= spec.trials + spec.test_trials:
        return None
    status.next_trial += 1
    return trial_at(spec, status.next_trial - 1)


def stopped(status: LammpsSweepStatus) -> bool:
    return status.runs_to_target is not None


def core_seconds(result: JobResult | None, spec: LammpsSweepSpec) -> float:
    """What one finished attempt cost in simulation core-seconds (module docstring)."""
    if result is None:
        return 0.0
    ranks = spec.lammps.mpi_procs
    cpu = finite(result.metrics.get("cpu_time"))
    if cpu is not None and cpu >= 0:
        return cpu * ranks
    loop = finite(result.metrics.get("loop_time"))
    if loop is not None and loop >= 0:
        return loop * max(spec.resources.cpus, ranks)
    return 0.0


def held_out_features(result: JobResult) -> dict[str, int | float | str]:
    """The features a held-out run's models saw, kept to predict it again."""
    return {k: v for k, v in result.features.items() if v is not None}


def training_learned(status: LammpsSweepStatus) -> int:
    """Training runs learned: every delivered run that is not a held-out one."""
    return max(status.succeeded - len(status.test_results), 0)


def due(status: LammpsSweepStatus, spec: LammpsSweepSpec, training_open: bool) -> bool:
    """A check is due: every held-out run is in, and ``checkEvery`` more training runs learned
    since the last check (or training is over and its last runs were not checked yet)."""
    rule = spec.stop_when
    if rule is None or stopped(status) or len(status.test_results) < spec.test_trials:
        return False
    learned = training_learned(status)
    last = status.held_out_checks[-1].trials if status.held_out_checks else 0
    if learned == 0 or learned == last:
        return False
    return learned - last >= rule.check_every or not training_open


async def check(
    status: LammpsSweepStatus,
    spec: LammpsSweepSpec,
    predict: HeldOutPredict,
    models: Sequence[str] | None,
) -> HeldOutCheck:
    """Predict the held-out set again, score it, record the check (SpecError naming
    ``stopWhen.model`` / ``stopWhen.metric`` when the server cannot answer for the rule)."""
    rule = spec.stop_when
    assert rule is not None
    tests = sorted(status.test_results, key=lambda r: r.id)
    samples = [{"features": dict(r.features or {})} for r in tests]
    answers = await predict(models, samples)
    numeric = _check_answers(rule, answers, len(tests))
    for i, result in enumerate(tests):
        result.predictions = {m: y for m, ys in numeric.items() if (y := finite(ys[i])) is not None}
    owner = model_targets(resolved_targets(spec)) or None
    scored = score(jobs.evaluate(tests, owner), rule.metric)
    first = _first_target_models(spec)
    if first is not None:
        scored = {m: v for m, v in scored.items() if m in first}
    model, value = pick(rule, scored)
    entry = HeldOutCheck(
        trials=training_learned(status),
        metric=rule.metric,
        core_seconds=status.core_seconds,
        model=model,
        value=value,
        values={m: v for m, v in sorted(scored.items())},
        holds=value is not None and rule.holds(value),
    )
    record(status, spec, entry)
    return entry


def _check_answers(
    rule: StopWhen, answers: Mapping[str, list[Any] | None], n: int
) -> dict[str, list[Any]]:
    """The regression models' answers; SpecError when the rule's model is not among them."""
    if rule.model is not None and rule.model not in answers:
        served = ", ".join(sorted(answers)) or "none"
        raise SpecError(
            f"model {rule.model!r} is not on the model server (it has {served})",
            field="stopWhen.model",
        )
    numeric = {
        m: ys
        for m, ys in answers.items()
        if ys is not None and len(ys) == n and all(finite(y) is not None for y in ys)
    }
    wanted = [rule.model] if rule.model is not None else sorted(answers)
    if wanted and not any(m in numeric for m in wanted):
        raise SpecError(
            f"{rule.metric} is a regression metric: {', '.join(wanted)} predicts no numbers"
            " (not a regression model)",
            field="stopWhen.metric",
        )
    return numeric


def _first_target_models(spec: LammpsSweepSpec) -> set[str] | None:
    """Several targets: the best model is the first target's (as ``bestModel`` is)."""
    targets = resolved_targets(spec)
    if len(targets) < 2:
        return None
    return set(targets[0].models or ())


def score(evaluation: Sequence[Evaluation], metric: str) -> dict[str, float]:
    """Each model's value of ``metric`` (models without one are left out)."""

    def value_of(e: Evaluation) -> float | None:
        return {"R2": e.r2, "MAPE": e.mape, "MAE": e.mae, "RMSE": e.rmse}[metric]

    out: dict[str, float] = {}
    for e in evaluation:
        value = value_of(e)
        if value is not None and math.isfinite(value):
            out[e.model] = value
    return out


def pick(rule: StopWhen, scored: Mapping[str, float]) -> tuple[str | None, float | None]:
    """The model that counts: the named one, else the best of this check."""
    if rule.model is not None:
        return rule.model, scored.get(rule.model)
    if not scored:
        return None, None
    sign = 1.0 if rule.metric == "R2" else -1.0
    best = max(sorted(scored), key=lambda m: sign * scored[m])
    return best, scored[best]


def record(status: LammpsSweepStatus, spec: LammpsSweepSpec, entry: HeldOutCheck) -> None:
    """Append the check; stop once the target held ``consecutive`` checks in a row."""
    rule = spec.stop_when
    assert rule is not None
    checks = status.held_out_checks
    checks.append(entry)
    if len(checks) > MAX_HELD_OUT_CHECKS:  # thin the old ones, keep the newest
        checks[:] = [*checks[:-1:2], checks[-1]]
    status.held_out = summary(rule, entry.value)
    streak = 0
    for past in reversed(checks):
        if not past.holds:
            break
        streak += 1
    if entry.holds and streak >= rule.consecutive:
        status.runs_to_target = entry.trials
        status.retry_queue.clear()
        set_condition(
            status.conditions,
            CONDITION,
            True,
            "TargetReached",
            f"{entry.model} held-out {rule.metric} {entry.value:.4g} ({rule.describe()}) after"
            f" {entry.trials} training runs, {entry.core_seconds:.1f} core-seconds",
        )
    else:
        set_condition(
            status.conditions,
            CONDITION,
            False,
            "Measuring",
            f"held-out {rule.metric} {_fmt(entry.value)} after {entry.trials} training runs;"
            f" target {rule.describe()}",
        )


def budget_spent(status: LammpsSweepStatus, spec: LammpsSweepSpec) -> None:
    """The sweep ended without reaching the target: say so."""
    rule = spec.stop_when
    if rule is None or stopped(status):
        return
    last = status.held_out_checks[-1] if status.held_out_checks else None
    set_condition(
        status.conditions,
        CONDITION,
        False,
        "BudgetExhausted",
        f"{training_learned(status)} of {spec.trials} training runs learned; held-out"
        f" {rule.metric} {_fmt(last.value if last else None)}, target {rule.describe()}",
    )


def summary(rule: StopWhen, value: float | None) -> str:
    """The kubectl column: ``R2 0.871/>=0.9``."""
    return f"{rule.metric} {_fmt(value)}/{rule.describe().split(' ', 1)[1].replace(' ', '')}"


def runs(status: LammpsSweepStatus, spec: LammpsSweepSpec) -> str:
    """Training runs learned against the budget (``trials``)."""
    learned = training_learned(status) if spec.stop_when else min(status.succeeded, spec.trials)
    return f"{learned}/{spec.trials}"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"
