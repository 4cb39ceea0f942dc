"""Pure status computation: conditions with honest transition times, model summaries, diffs.

Kubernetes API conventions: a condition's ``lastTransitionTime`` changes only when its ``status``
changes; ``Ready`` aggregates the others; the status is written only when something changed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from streamml.vocabulary.modelspec import ModelSpec

AVAILABLE = "Available"
INGRESS_READY = "IngressReady"
MODELS_READY = "ModelsReady"
READY = "Ready"
CONDITION_ORDER = (READY, AVAILABLE, INGRESS_READY, MODELS_READY)
MAX_METRICS = 12
MAX_MESSAGE = 1000

#: flavor -> (headline metric, lower is better)
HEADLINE: dict[str, tuple[str, bool]] = {
    "regression": ("RMSE", True),
    "binary": ("Accuracy", False),
    "multiclass": ("Accuracy", False),
}


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Observation:
    """One condition as observed now (without a transition time)."""

    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str = ""


def merge_conditions(
    previous: Sequence[Mapping[str, Any]] | None,
    observed: Sequence[Observation],
    *,
    generation: int | None,
    timestamp: str | None = None,
) -> list[dict[str, Any]]:
    """The new conditions list; keeps a condition's transition time while its status holds."""
    old = {str(c.get("type")): c for c in previous or () if isinstance(c, Mapping)}
    stamp = timestamp or now()
    merged = []
    for obs in observed:
        before = old.get(obs.type)
        keep = before is not None and before.get("status") == obs.status
        when = before.get("lastTransitionTime") if keep and before is not None else None
        entry: dict[str, Any] = {
            "type": obs.type,
            "status": obs.status,
            "reason": obs.reason,
            "message": obs.message[:MAX_MESSAGE],
            "lastTransitionTime": when or stamp,
        }
        if generation is not None:
            entry["observedGeneration"] = generation
        merged.append(entry)
    rank = {name: i for i, name in enumerate(CONDITION_ORDER)}
    return sorted(merged, key=lambda c: rank.get(c["type"], len(rank)))


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


def samples_from_stats(stats: Mapping[str, Any]) -> int:
    learn = stats.get("learn")
    if isinstance(learn, Mapping):
        calls = learn.get("n_calls")
        if isinstance(calls, int) and calls >= 0:
            return calls
    return 0


def best_model(specs: Sequence[ModelSpec], polls: Sequence[ModelPoll]) -> dict[str, Any] | None:
    """The model with the best headline metric among those that learned something.

    RMSE and accuracy do not compare: candidates are grouped by headline metric and the largest
    group (the first declared on a tie) decides.
    """
    flavors = {s.name: s.flavor for s in specs}
    order = {s.name: i for i, s in enumerate(specs)}
    groups: dict[str, list[tuple[float, int, dict[str, Any]]]] = {}
    for poll in polls:
        headline = HEADLINE.get(flavors.get(poll.name, ""))
        if headline is None or poll.samples == 0:
            continue
        metric, lower_is_better = headline
        value = poll.metrics.get(metric)
        if value is None:
            continue
        score = value if lower_is_better else -value
        entry = {"model": poll.name, "metric": metric, "value": value}
        groups.setdefault(metric, []).append((score, order[poll.name], entry))
    if not groups:
        return None
    chosen = max(groups.values(), key=lambda g: (len(g), -min(i for _, i, _ in g)))
    return min(chosen, key=lambda c: (c[0], c[1]))[2]


def models_section(specs: Sequence[ModelSpec], polls: Sequence[ModelPoll]) -> dict[str, Any]:
    """``models``, ``modelsReady``, ``samplesLearned`` and ``best`` for the status."""
    by_name = {p.name: p for p in polls}
    entries = []
    for spec in specs:
        poll = by_name.get(spec.name)
        entries.append(
            {
                "name": spec.name,
                "ready": bool(poll and poll.ready),
                "samples": poll.samples if poll else 0,
                "metrics": dict(poll.metrics) if poll else {},
            }
        )
    ready = sum(1 for e in entries if e["ready"])
    return {
        "models": entries,
        "modelsReady": f"{ready}/{len(specs)}",
        "samplesLearned": sum(p.samples for p in polls if p.name in {s.name for s in specs}),
        "best": best_model(specs, polls),
    }


def status_patch(current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of ``desired`` whose value differs from ``current`` (empty: write nothing)."""
    current = current or {}
    return {k: v for k, v in desired.items() if current.get(k) != v}
