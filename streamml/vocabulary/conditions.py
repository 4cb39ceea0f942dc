"""Status conditions of both resources: one model, one rule for their transition times.

Kubernetes API conventions: a condition's ``lastTransitionTime`` changes only when its
``status`` changes; its message is bounded. The sweep engine updates its conditions in place
(:func:`set_condition`); the StreamModel status is recomputed from observations on every pass
(:func:`merge_conditions`, which also orders them and stamps the generation).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

ConditionStatus = Literal["True", "False", "Unknown"]
MAX_MESSAGE = 1000


class Condition(BaseModel):
    """A Kubernetes API convention condition."""

    model_config = ConfigDict(extra="ignore", alias_generator=to_camel, populate_by_name=True)

    type: str = Field(max_length=64)
    status: ConditionStatus
    reason: str = Field(default="", max_length=128)
    message: str = Field(default="", max_length=1024)
    last_transition_time: str | None = Field(default=None, description="RFC 3339")
    observed_generation: int | None = None


@dataclass(frozen=True)
class Observation:
    """One condition as observed now (without a transition time)."""

    type: str
    status: ConditionStatus
    reason: str
    message: str = ""


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def transition(
    before: Condition | None,
    seen: Observation,
    *,
    generation: int | None = None,
    timestamp: str | None = None,
) -> Condition:
    """``seen`` as a condition; it keeps ``before``'s transition time while its status holds."""
    kept = before.last_transition_time if before and before.status == seen.status else None
    return Condition(
        type=seen.type,
        status=seen.status,
        reason=seen.reason,
        message=seen.message[:MAX_MESSAGE],
        last_transition_time=kept or timestamp or now(),
        observed_generation=generation,
    )


def set_condition(
    conditions: list[Condition], type_: str, value: bool, reason: str, message: str = ""
) -> None:
    """Set one condition in ``conditions`` (in place); the others stay as they are."""
    seen = Observation(type_, "True" if value else "False", reason, message)
    for index, cond in enumerate(conditions):
        if cond.type == type_:
            conditions[index] = transition(cond, seen, generation=cond.observed_generation)
            return
    conditions.append(transition(None, seen))


def find(conditions: Iterable[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def parse(raw: Sequence[Any] | None) -> list[Condition]:
    """Conditions as stored (a status read back from the API); unreadable entries are skipped."""
    found = []
    for entry in raw or ():
        if isinstance(entry, Mapping):
            try:
                found.append(Condition.model_validate(entry))
            except ValidationError:
                continue
    return found


def merge_conditions(
    previous: Sequence[Condition],
    observed: Sequence[Observation],
    *,
    generation: int | None,
    order: Sequence[str] = (),
    timestamp: str | None = None,
) -> list[Condition]:
    """The new conditions (exactly ``observed``), sorted by ``order``, others after."""
    old = {c.type: c for c in previous}
    stamp = timestamp or now()
    merged = [
        transition(old.get(o.type), o, generation=generation, timestamp=stamp) for o in observed
    ]
    rank = {name: i for i, name in enumerate(order)}
    return sorted(merged, key=lambda c: rank.get(c.type, len(rank)))


def dump(conditions: Iterable[Condition]) -> list[dict[str, Any]]:
    """As written to a status: camelCase, unset fields absent (the API server drops nulls)."""
    return [c.model_dump(by_alias=True, mode="json", exclude_none=True) for c in conditions]
