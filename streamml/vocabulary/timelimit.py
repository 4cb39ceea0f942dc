"""Predicted time limits: the spec's ``resources.predictedTimeLimit`` and its status.

A sweep that names a model learning the jobs' wall time (the ``job_wall_time`` metric: seconds
from the job program's start, container start included, to the end of LAMMPS) gives each job
the upper bound of that model's prediction as its scheduler time limit, once the sweep has seen
``after`` runs it can score the model on::

    resources:
      timeLimitSeconds: 600             # the user's limit: until the model has seen enough runs
      predictedTimeLimit:
        fromModel: wall-linear          # a model of spec.targets whose metric is job_wall_time
        quantile: 0.95                  # or factor: 2.0 (one of the two)
        minSeconds: 10
        maxSeconds: 3600
        after: 8

The bound of ``quantile`` q is conformal: the prediction times the q-quantile of the ratios
actual/predicted the sweep observed (out of sample: each prediction is made before its run).
A job killed at its limit is censored (its runtime is only known to exceed the limit): it is
never a sample, it is resubmitted with twice its limit (at most ``maxSeconds``) and counted.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from streamml.vocabulary.targets import TargetSpec

#: the metric a time-limit model learns (the whole job's wall time, not LAMMPS' loop)
WALL_METRIC = "job_wall_time"
MAX_LIMIT_SECONDS = 7 * 86400
#: samples (requested, actual) and ratios kept in status
MAX_LIMIT_SAMPLES = 500


class PredictedTimeLimit(BaseModel):
    """``resources.predictedTimeLimit``: where the bound comes from and what clamps it."""

    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True
    )

    from_model: str = Field(
        min_length=1,
        max_length=128,
        description="the model whose prediction bounds each job: it learns a target of "
        "metric job_wall_time (spec.targets)",
    )
    quantile: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="the bound is this quantile of the run time, 0 < q < 1 (conformal: the "
        "prediction times the q-quantile of observed actual/predicted ratios)",
    )
    factor: float | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="instead of quantile: the bound is factor x the prediction (>= 1)",
    )
    min_seconds: int = Field(
        default=1, ge=1, le=MAX_LIMIT_SECONDS, description="the smallest predicted limit"
    )
    max_seconds: int = Field(
        default=86400,
        ge=1,
        le=MAX_LIMIT_SECONDS,
        description="the largest limit (predicted, or grown after a job was killed at its limit)",
    )
    after: int = Field(
        default=8,
        ge=1,
        le=10_000,
        description="runs the sweep must have scored the model on before its bound is used "
        "(until then: timeLimitSeconds)",
    )

    @model_validator(mode="after")
    def _consistent(self) -> PredictedTimeLimit:
        # reported at resources.predictedTimeLimit: the message names the field within it
        if (self.quantile is None) == (self.factor is None):
            raise ValueError("give exactly one of quantile or factor")
        if self.min_seconds > self.max_seconds:
            raise ValueError(
                f"minSeconds: {self.min_seconds} is larger than maxSeconds {self.max_seconds}"
            )
        return self


def check_time_model(
    limit: PredictedTimeLimit | None, targets: Sequence[TargetSpec] | None, features: str
) -> str | None:
    """The first problem of a predicted limit against the sweep's targets (or None): its model
    must be one the sweep teaches the job's wall time to, from the features known before a run."""
    if limit is None:
        return None
    where = "resources.predictedTimeLimit.fromModel"
    for target in targets or ():
        if limit.from_model in (target.models or ()):
            if target.metric != WALL_METRIC:
                return (
                    f"{where}: model {limit.from_model!r} learns target {target.name!r} "
                    f"({target.describe()}); a time limit needs a model of metric {WALL_METRIC}"
                )
            break
    else:
        return (
            f"{where}: model {limit.from_model!r} is not a model of spec.targets; list it under "
            f"a target of metric {WALL_METRIC} (the job's wall time)"
        )
    if features != "vars":
        return (
            "resources.predictedTimeLimit: needs lammps.features vars (a limit is predicted "
            "before the run, when the atom count is not known yet)"
        )
    return None


class LimitSample(BaseModel):
    """One finished job under a time limit: what it asked the scheduler for, what it took."""

    model_config = ConfigDict(extra="ignore", alias_generator=to_camel, populate_by_name=True)

    requested: float = Field(description="the scheduler time limit, seconds")
    actual: float = Field(description="the job's measured wall time (job_wall_time), seconds")
    predicted: bool = Field(description="the limit was predicted (not the user's)")


class TimeLimitStatus(BaseModel):
    """``status.timeLimits``: how well the limits fit (only sweeps with a time limit)."""

    model_config = ConfigDict(extra="ignore", alias_generator=to_camel, populate_by_name=True)

    mode: str = Field(default="user", description="the limit of the newest job: user, predicted")
    predicted_jobs: int = Field(default=0, description="jobs finished under a predicted limit")
    user_jobs: int = Field(default=0, description="jobs finished under the user's limit")
    killed: int = Field(default=0, description="jobs killed at their limit (censored)")
    killed_predicted: int = Field(default=0, description="of them, under a predicted limit")
    resubmitted: int = Field(default=0, description="censored jobs resubmitted, larger limit")
    underestimation_rate: float | None = Field(
        default=None, description="killed / finished, of the jobs under a predicted limit"
    )
    median_requested_over_actual: float | None = Field(
        default=None, description="median limit / wall time of completed predicted-limit jobs"
    )
    median_requested_over_actual_user: float | None = Field(
        default=None, description="the same for the jobs under the user's limit"
    )
    ratios: list[float] = Field(
        default_factory=list,
        description="actual / predicted wall time of the runs scored so far (newest last)",
    )
    censored_ratios: list[float] = Field(
        default_factory=list,
        description="limit / predicted wall time of the runs killed at their limit: their "
        "ratio is larger (the bound counts them above every observed ratio)",
    )
    samples: list[LimitSample] = Field(
        default_factory=list, description="finished jobs: limit and wall time (newest last)"
    )
