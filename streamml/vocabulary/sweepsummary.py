"""What a sweep publishes to its model server for the dashboard: ``PUT /api/sweeps/{name}``.

A small, typed, bounded view of a :class:`~streamml.vocabulary.lammpssweep.LammpsSweepStatus`:
progress counters, the learning curve, the held-out evaluation and the held-out runs (predicted
against actual). Unknown fields are refused, numbers must be finite, every list is capped (and
the server caps the body's bytes too), so a summary costs the server a bounded amount of memory
and disk whoever sends it.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from streamml.vocabulary.lammpssweep import MAX_TEST_TRIALS
from streamml.vocabulary.sweepstatus import MAX_TRIALS

#: a sweep name: a Kubernetes object name (DNS subdomain), as LammpsSweep's metadata.name
SWEEP_NAME = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
MODEL_NAME = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
MAX_MODELS = 32
MAX_CURVE_POINTS = 500
MAX_HELD_OUT = 500
#: most sweeps a server keeps summaries of
MAX_SWEEPS = 32

ModelName = Annotated[str, StringConstraints(pattern=MODEL_NAME)]
Count = Field(default=0, ge=0, le=MAX_TRIALS + MAX_TEST_TRIALS)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class SummaryPoint(_Strict):
    trials: int = Field(ge=0, le=MAX_TRIALS, description="training runs learned so far")
    samples: int = Field(ge=0, description="samples the model had learned")
    value: float | None = Field(default=None, description="headline metric value")


class SummaryCurve(_Strict):
    model: str = Field(pattern=MODEL_NAME)
    metric: str = Field(max_length=32, pattern=r"^[A-Za-z0-9_]+$")
    points: list[SummaryPoint] = Field(default_factory=list, max_length=MAX_CURVE_POINTS)


class SummaryEvaluation(_Strict):
    model: str = Field(pattern=MODEL_NAME)
    n: int = Field(ge=0, le=MAX_TEST_TRIALS)
    mae: float | None = None
    rmse: float | None = None
    r2: float | None = None


class SummaryHeldOut(_Strict):
    id: int = Field(ge=0, le=MAX_TRIALS + MAX_TEST_TRIALS, description="the run's index")
    target: float = Field(description="the measured value (actual)")
    predictions: dict[ModelName, float] = Field(
        default_factory=dict, max_length=MAX_MODELS, description="model -> predicted value"
    )


class SweepSummary(_Strict):
    """A sweep's progress and held-out evaluation, as the dashboard shows them."""

    namespace: str | None = Field(default=None, max_length=63, pattern=MODEL_NAME)
    phase: Literal["Pending", "Waiting", "Running", "Suspended", "Succeeded", "Failed"]
    scheduler: str = Field(default="", max_length=32, pattern=r"^[a-z-]*$")
    target: str = Field(default="", max_length=200, description="what the models learn")
    trials: int = Count
    test_trials: int = Count
    succeeded: int = Count
    failed: int = Field(default=0, ge=0)
    running: int = Count
    pending: int = Count
    best_model: str | None = Field(default=None, pattern=MODEL_NAME)
    held_out_r2: float | None = None
    learning_curve: list[SummaryCurve] = Field(default_factory=list, max_length=MAX_MODELS)
    evaluation: list[SummaryEvaluation] = Field(default_factory=list, max_length=MAX_MODELS)
    held_out: list[SummaryHeldOut] = Field(default_factory=list, max_length=MAX_HELD_OUT)


class StoredSweep(BaseModel):
    """A summary as the server answers it: with its name and when it was received."""

    name: str
    updated: float
    summary: SweepSummary
