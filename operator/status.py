"""Pure status computation of a StreamModel: its conditions, model summaries, diffs.

The status is built as :class:`~streamml.vocabulary.streammodel.StreamModelStatus` and written
as :func:`status_document`; conditions follow :mod:`streamml.vocabulary.conditions` (a transition
time changes only with the status); ``Ready`` aggregates the others; the status is written only
when something changed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from streamml.vocabulary.conditions import Condition, Observation
from streamml.vocabulary.conditions import dump as dump_conditions
from streamml.vocabulary.modelspec import ModelSpec
from streamml.vocabulary.replies import DriftStats
from streamml.vocabulary.streammodel import BestModel, ModelDrift, ModelStatus, StreamModelStatus

AVAILABLE = "Available"
INGRESS_READY = "IngressReady"
MODELS_READY = "ModelsReady"
READY = "Ready"
#: news about the models' error streams, not about readiness: never part of Ready
DRIFT = "Drift"
CONDITION_ORDER = (READY, AVAILABLE, INGRESS_READY, MODELS_READY, DRIFT)
MAX_METRICS = 12

#: flavor -> (headline metric, lower is better)
HEADLINE: dict[str, tuple[str, bool]] = {
    "regression": ("RMSE", True),
    "binary": ("Accuracy", False),
    "multiclass": ("Accuracy", False),
}


def aggregate_ready(observed: Sequence[Observation]) -> Observation:
    """Ready is True only when every other condition is (Unknown counts as not ready)."""
    for obs in observed:
        if obs.status != "True":
            return Observation(READY, "False", obs.reason, f"{obs.type}: {obs.message}")
    return Observation(READY, "True", "Ready", "the server is available and its models are ready")


@dataclass
class ModelPoll:
    """What the operator learned about one model from the server."""

    name: str
    ready: bool
    samples: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    #: the last drift detection (None: none yet, or drift detection is off for the model)
    drift: ModelDrift | None = None


def _round(value: float) -> float:
    # Six significant digits: enough for a status line, and it keeps the object small.
    return float(f"{value:.6g}")


def clean_metrics(raw: Mapping[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, value in sorted(raw.items())[:MAX_METRICS]:
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(value):
            out[str(name)[:64]] = _round(float(value))
    return out


def best_model(specs: Sequence[ModelSpec], polls: Sequence[ModelPoll]) -> BestModel | None:
    """The model with the best headline metric among those that learned something.

    RMSE and accuracy do not compare: candidates are grouped by headline metric and the largest
    group (the first declared on a tie) decides.
    """
    flavors = {s.name: s.flavor for s in specs}
    order = {s.name: i for i, s in enumerate(specs)}
    groups: dict[str, list[tuple[float, int, BestModel]]] = {}
    for poll in polls:
        headline = HEADLINE.get(flavors.get(poll.name, ""))
        if headline is None or poll.samples == 0:
            continue
        metric, lower_is_better = headline
        value = poll.metrics.get(metric)
        if value is None:
            continue
        score = value if lower_is_better else -value
        entry = BestModel(model=poll.name, metric=metric, value=value)
        groups.setdefault(metric, []).append((score, order[poll.name], entry))
    if not groups:
        return None
    chosen = max(groups.values(), key=lambda g: (len(g), -min(i for _, i, _ in g)))
    return min(chosen, key=lambda c: (c[0], c[1]))[2]


@dataclass(frozen=True)
class ModelsSection:
    """The ``models``, ``modelsReady``, ``samplesLearned`` and ``best`` parts of the status."""

    models: list[ModelStatus]
    models_ready: str
    samples_learned: int
    best: BestModel | None


def models_section(
    specs: Sequence[ModelSpec], polls: Sequence[ModelPoll], held: Mapping[str, str] | None = None
) -> ModelsSection:
    """One entry per declared model; ``held`` maps a model to the spec hash the server holds."""
    by_name = {p.name: p for p in polls}
    entries = []
    for spec in specs:
        poll = by_name.get(spec.name)
        entries.append(
            ModelStatus(
                name=spec.name,
                ready=bool(poll and poll.ready),
                samples=poll.samples if poll else 0,
                metrics=dict(poll.metrics) if poll else {},
                spec_hash=(held or {}).get(spec.name),
                drift=poll.drift if poll else None,
            )
        )
    declared = {s.name for s in specs}
    return ModelsSection(
        models=entries,
        models_ready=f"{sum(1 for e in entries if e.ready)}/{len(specs)}",
        samples_learned=sum(p.samples for p in polls if p.name in declared),
        best=best_model(specs, polls),
    )


def status_document(status: StreamModelStatus) -> dict[str, Any]:
    """The status as written: camelCase; a top-level unset field is null (it clears what was
    there), a condition's or a model's unset field is absent (the API server drops nulls)."""
    doc = status.model_dump(by_alias=True, mode="json", exclude={"conditions", "models"})
    doc["conditions"] = dump_conditions(status.conditions)
    doc["models"] = [
        m.model_dump(by_alias=True, mode="json", exclude_none=True) for m in status.models
    ]
    return doc


def status_patch(current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of ``desired`` whose value differs from ``current`` (empty: write nothing)."""
    current = current or {}
    return {k: v for k, v in desired.items() if current.get(k) != v}


def carry_over(old: list[Mapping[str, Any]]) -> tuple[list[ModelPoll], dict[str, str]]:
    """Last known samples/metrics (not ready) while the server cannot be asked."""
    polls = [
        ModelPoll(
            str(m.get("name")),
            False,
            int(m.get("samples") or 0),
            clean_metrics(m.get("metrics") or {}),
            stored_drift(m.get("drift")),
        )
        for m in old
    ]
    held = {str(m.get("name")): str(m["specHash"]) for m in old if m.get("specHash")}
    return polls, held


def announce(
    before: list[Condition], after: list[Condition], emit: Callable[[str, str, str], None]
) -> None:
    old = {c.type: c.status for c in before}
    if not old:
        return  # the first status is not a transition (and 100 new objects need no 300 events)
    for cond in after:
        if old.get(cond.type) == cond.status:
            continue
        if cond.type not in (READY, AVAILABLE, MODELS_READY):
            continue
        # a warning when something that worked stops working; anything else is news
        kind = "Warning" if old.get(cond.type) == "True" else "Normal"
        emit(kind, f"{cond.type}{cond.status}", f"{cond.reason}: {cond.message}")


# -- drift ---------------------------------------------------------------------------------------


def model_drift(stats: DriftStats | None) -> ModelDrift | None:
    """The status form of a model's drift watch as the server reports it (None: no detection)."""
    if stats is None or stats.last is None or not stats.detections:
        return None
    last = stats.last
    when = datetime.fromtimestamp(last.time, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return ModelDrift(
        detections=stats.detections,
        sample=last.sample,
        change_at_sample=last.change_at_sample,
        time=when,
        magnitude=_round(last.magnitude) if math.isfinite(last.magnitude) else 0.0,
    )


def stored_drift(raw: Any) -> ModelDrift | None:
    """A model's drift as a status read back holds it (unreadable: None)."""
    if not isinstance(raw, Mapping):
        return None
    try:
        return ModelDrift.model_validate(raw)
    except ValidationError:
        return None


def drift_observation(polls: Sequence[ModelPoll]) -> Observation:
    """``Drift``: True while any model has detected drift (the newest detection first)."""
    drifted = sorted((p for p in polls if p.drift), key=lambda p: p.drift.time, reverse=True)  # type: ignore[union-attr]
    if not drifted:
        return Observation(DRIFT, "False", "NoDrift", "no model has detected drift")
    parts = [f"{p.name}: {_drift_line(p.drift)}" for p in drifted if p.drift]
    return Observation(DRIFT, "True", "DriftDetected", "; ".join(parts))


def _drift_line(drift: ModelDrift) -> str:
    return (
        f"drift at sample {drift.sample} (since sample {drift.change_at_sample}, error x"
        f"{drift.magnitude:g}) at {drift.time}, {drift.detections} detection(s)"
    )


def announce_drift(
    old: Sequence[Mapping[str, Any]],
    polls: Sequence[ModelPoll],
    emit: Callable[[str, str, str], None],
) -> None:
    """One Warning event per model whose detection count grew since the last status."""
    before = {str(m.get("name")): stored_drift(m.get("drift")) for m in old}
    for poll in polls:
        if poll.drift is None:
            continue
        previous = before.get(poll.name)
        if previous is not None and previous.detections >= poll.drift.detections:
            continue
        emit("Warning", "DriftDetected", f"model {poll.name}: {_drift_line(poll.drift)}")
