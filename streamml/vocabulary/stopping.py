"""A sweep's stop rule (``spec.stopWhen``) and the status it leaves (``status.heldOutChecks``).

A sweep with ``stopWhen`` runs its held-out (test) trials FIRST, then re-measures the models on
them every ``checkEvery`` training runs learned (one batch predict per model), and stops
submitting once the target has held for ``consecutive`` checks in a row::

    stopWhen:
      metric: R2          # R2 (held-out R² >= threshold) or MAPE / MAE / RMSE (<= threshold)
      threshold: 0.9      # MAPE in percent
      model: poly-bayes   # optional: default the best model of the check
      checkEvery: 5       # training runs learned between two checks
      consecutive: 1      # checks in a row the target must hold

``trials`` is then the budget ceiling: a sweep that spends it without reaching the target
ends ``Succeeded`` with condition ``TargetReached=False`` (reason ``BudgetExhausted``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic.alias_generators import to_camel

StopMetric = Literal["R2", "MAPE", "MAE", "RMSE"]
#: metrics where larger is better (the others are errors: smaller is better)
HIGHER_IS_BETTER: frozenset[str] = frozenset({"R2"})
#: held-out checks kept in status (older ones are thinned, never the newest)
MAX_HELD_OUT_CHECKS = 100
MODEL_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"


class StopWhen(BaseModel):
    """Stop submitting once the held-out metric reaches ``threshold``."""

    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True
    )

    metric: StopMetric = Field(
        default="R2", description="R2: held-out R² >= threshold; MAPE (%), MAE, RMSE: <= threshold"
    )
    threshold: float = Field(
        allow_inf_nan=False, ge=-1e15, le=1e15, description="the target value of the metric"
    )
    model: str | None = Field(
        default=None,
        pattern=MODEL_PATTERN,
        description="the model whose metric counts (default: the best model of each check)",
    )
    check_every: int = Field(
        default=5, ge=1, le=10_000, description="training runs learned between two checks"
    )
    consecutive: int = Field(
        default=1, ge=1, le=100, description="checks in a row the target must hold"
    )

    @field_validator("threshold")
    @classmethod
    def _sane(cls, value: float, info: ValidationInfo) -> float:
        metric = info.data.get("metric", "R2")
        if metric == "R2" and value > 1:
            raise ValueError("R² is at most 1")
        if metric != "R2" and value < 0:
            raise ValueError(f"{metric} is never negative")
        return value

    def holds(self, value: float) -> bool:
        """The target holds for this value of the metric."""
        if self.metric in HIGHER_IS_BETTER:
            return value >= self.threshold
        return value <= self.threshold

    def describe(self) -> str:
        sign = ">=" if self.metric in HIGHER_IS_BETTER else "<="
        unit = "%" if self.metric == "MAPE" else ""
        return f"{self.metric} {sign} {self.threshold:g}{unit}"


class HeldOutCheck(BaseModel):
    """One re-measurement of the models on the held-out runs (a sweep with ``stopWhen``)."""

    model_config = ConfigDict(extra="ignore", alias_generator=to_camel, populate_by_name=True)

    trials: int = Field(description="training runs learned at the check")
    metric: str | None = Field(default=None, description="the stop metric (R2, MAPE, MAE, RMSE)")
    core_seconds: float = Field(description="simulation core-seconds spent so far")
    model: str | None = Field(default=None, description="the model that counts (best or named)")
    value: float | None = Field(default=None, description="its value of the stop metric")
    values: dict[str, float] = Field(
        default_factory=dict, description="every model's value of the stop metric"
    )
    holds: bool = Field(default=False, description="the target held at this check")


def check_stop_model(rule: StopWhen | None, flavors: dict[str, str], where: str) -> str | None:
    """``stopWhen.model`` is a model of ``where`` (name -> flavor) whose flavor has the metric
    (every stop metric is a regression's); the problem as ``FIELD: message``, or None."""
    if rule is None:
        return None
    if rule.model is not None:
        flavor = flavors.get(rule.model)
        if flavor is None:
            return (
                f"stopWhen.model: model {rule.model!r} is not a model of {where}"
                f" (it has {', '.join(flavors) or 'none'})"
            )
        if flavor != "regression":
            return (
                f"stopWhen.metric: {rule.metric} is a regression metric; model"
                f" {rule.model!r} is a {flavor} model"
            )
    elif flavors and "regression" not in flavors.values():
        return f"stopWhen.metric: {rule.metric} needs a regression model; {where} has none"
    return None
