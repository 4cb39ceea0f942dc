"""The LammpsSweep's status: what the sweep engine records of its trials and what they taught.

Status parts are mutable (the engine updates them in place) and ignore unknown keys, so a status
written by a newer release still loads. The spec is :mod:`streamml.vocabulary.lammpssweep`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from streamml.vocabulary.conditions import Condition
from streamml.vocabulary.stopping import MAX_HELD_OUT_CHECKS, HeldOutCheck
from streamml.vocabulary.timelimit import TimeLimitStatus

#: the most training runs a sweep may have (``spec.trials``); bounds ``status.chosen`` too
MAX_TRIALS = 10_000
#: the status keeps at most this many trial records (all in-flight ones plus the latest finished)
MAX_TRIAL_RECORDS = 200
#: points kept per model in the learning curve (older points are thinned, never the last one)
MAX_CURVE_POINTS = 100

Phase = Literal["Pending", "Waiting", "Running", "Suspended", "Succeeded", "Failed"]
TrialRole = Literal["train", "test"]
#: Spooled: the run succeeded but its result waits in the spool for the server to come back
TrialState = Literal[
    "Submitting", "Pending", "Running", "Spooled", "Succeeded", "Failed", "Cancelled", "Lost"
]


class _Record(BaseModel):
    """Status parts: mutable (the sweep engine updates them in place), unknown keys ignored."""

    model_config = ConfigDict(extra="ignore", alias_generator=to_camel, populate_by_name=True)


class TrialRecord(_Record):
    """One attempt of one trial. Written BEFORE the job is submitted (state Submitting)."""

    id: int = Field(ge=0, description="index in the sweep's plan")
    role: TrialRole
    attempt: int = Field(ge=1)
    job_name: str
    job_id: str | None = None
    state: TrialState = "Submitting"
    reason: str | None = None
    params: dict[str, str] = Field(default_factory=dict)
    target: float | None = None
    image_digest: str | None = Field(
        default=None, description="sha256 of the container image the trial ran in"
    )
    targets: dict[str, float] | None = Field(
        default=None, description="every target's value (several targets; target is the first)"
    )
    submitted_at: str | None = Field(
        default=None, description="RFC 3339 (ms): recorded, just before the job was submitted"
    )
    finished_at: str | None = Field(
        default=None, description="RFC 3339 (ms): its end observed (learned, spooled or failed)"
    )
    time_limit_seconds: int | None = Field(
        default=None, description="the scheduler time limit of a predicted (or grown) limit"
    )
    predicted_wall_seconds: float | None = Field(
        default=None, description="the time-limit model's wall time prediction at submission"
    )
    wall_seconds: float | None = Field(default=None, description="the job's measured wall time")
    censored: bool | None = Field(
        default=None, description="killed at its time limit: its runtime exceeds the limit"
    )


class CurvePoint(_Record):
    trials: int = Field(description="training runs learned so far")
    samples: int = Field(description="samples the model has learned (server's count)")
    value: float | None = Field(default=None, description="headline metric value")
    image_digest: str | None = Field(
        default=None, description="the container image of the newest trial learned"
    )
    core_seconds: float | None = Field(
        default=None, description="simulation core-seconds spent so far (every run)"
    )


class LearningCurve(_Record):
    model: str
    metric: str
    target: str | None = Field(default=None, description="the target it learns (several)")
    points: list[CurvePoint] = Field(default_factory=list)


class HeldOutResult(_Record):
    id: int
    target: float
    predictions: dict[str, float] = Field(default_factory=dict)
    image_digest: str | None = None
    targets: dict[str, float] | None = Field(
        default=None, description="every target's value (several targets; target is the first)"
    )
    features: dict[str, int | float | str] | None = Field(
        default=None, description="what the models saw (stopWhen: re-predicted at each check)"
    )


class Evaluation(_Record):
    model: str
    n: int
    mae: float | None = Field(default=None, alias="MAE")
    rmse: float | None = Field(default=None, alias="RMSE")
    r2: float | None = Field(default=None, alias="R2")
    mape: float | None = Field(
        default=None, alias="MAPE", description="mean absolute percentage error (%)"
    )


class ImageEvaluation(_Record):
    """The held-out evaluation of the test runs made in one container image."""

    image_digest: str
    evaluation: list[Evaluation] = Field(default_factory=list)


class TargetEvaluation(_Record):
    """The held-out evaluation of one target's models (a sweep with several targets)."""

    target: str
    evaluation: list[Evaluation] = Field(default_factory=list)
    best_model: str | None = None
    held_out_r2: float | None = Field(default=None, alias="heldOutR2")


#: drift notes kept in a sweep's status
MAX_DRIFT_NOTES = 32


class DriftNote(_Record):
    """A model's drift detection as the sweep saw it, placed on the sweep's training runs (the
    learning curve's ``trials`` axis: runs learned, counted from 1 in the order learned)."""

    model: str
    detected_at_sample: int = Field(description="the model's scored sample that completed it")
    change_at_sample: int = Field(description="the estimated first sample of the new regime")
    first_trial_after: int | None = Field(
        default=None,
        description="the first training run (in learning order) of the new regime; null when "
        "the change precedes this sweep",
    )
    detected_after_trials: int = Field(description="training runs learned when it was seen")
    magnitude: float = Field(description="mean error since the change, in warm-up error units")


#: adaptive decisions kept with their scores in a sweep's status (the newest; ``chosen`` keeps all)
MAX_DECISION_NOTES = 32


class Decision(_Record):
    """One choice of an adaptive sweep, recorded before its run was submitted."""

    trial: int = Field(ge=0, description="the trial it chose the point of")
    candidate: int = Field(ge=0, description="the point's index in the candidate pool")
    score: float | None = Field(default=None, description="its acquisition score")
    uncertainty: float | None = Field(default=None, description="the models' uncertainty")
    cost: float | None = Field(default=None, description="the predicted cost (per cost)")
    basis: str = Field(
        default="sigma",
        description="sigma (predictive standard deviation), disagreement (spread of the models' "
        "predictions) or distance (no usable prediction: the farthest candidate)",
    )
    learned: int = Field(default=0, description="training runs learned when it was made")


class LammpsSweepStatus(_Record):
    phase: Phase = "Pending"
    observed_generation: int | None = None
    progress: str = Field(default="0/0", description="finished runs / all runs")
    submitted: int = Field(default=0, description="jobs submitted (every attempt counts)")
    running: int = 0
    succeeded: int = 0
    failed: int = Field(default=0, description="failed attempts")
    pending: int = Field(default=0, description="runs not started yet")
    start_time: str | None = None
    completion_time: str | None = None
    conditions: list[Condition] = Field(default_factory=list)
    plan_fingerprint: str | None = Field(default=None, description="hash of the sampled plan")
    identity: str | None = Field(
        default=None, description="prefix of the trials' learn identifiers (CLI runs)"
    )
    next_trial: int = Field(default=0, description="next index of the plan to start")
    retry_queue: list[int] = Field(default_factory=list, description="trials to run again")
    attempts: dict[str, int] = Field(
        default_factory=dict, description="attempts so far of trials that were retried"
    )
    trials: list[TrialRecord] = Field(default_factory=list)
    learning_curve: list[LearningCurve] = Field(default_factory=list)
    test_results: list[HeldOutResult] = Field(default_factory=list)
    evaluation: list[Evaluation] = Field(default_factory=list)
    image_digests: list[str] = Field(
        default_factory=list, description="container images the trials ran in, in order seen"
    )
    evaluation_by_image: list[ImageEvaluation] = Field(default_factory=list)
    best_model: str | None = None
    held_out_r2: float | None = Field(default=None, alias="heldOutR2")
    evaluation_by_target: list[TargetEvaluation] = Field(
        default_factory=list,
        description="per target (several targets; bestModel and heldOutR2 are the first's)",
    )
    drift: list[DriftNote] = Field(
        default_factory=list,
        max_length=MAX_DRIFT_NOTES,
        description="drift the models detected while this sweep taught them (the newest)",
    )
    time_limits: TimeLimitStatus | None = Field(
        default=None, description="how the jobs' time limits fit their runs (with a limit)"
    )
    core_seconds: float = Field(
        default=0.0,
        description="simulation core-seconds spent: every finished run's CPU seconds x MPI "
        "ranks (its loop time x CPUs when the log lacks the CPU use)",
    )
    runs: str | None = Field(default=None, description="training runs learned / the trials budget")
    runs_to_target: int | None = Field(
        default=None, description="training runs learned when stopWhen's target held"
    )
    held_out: str | None = Field(
        default=None, description="the stop metric's latest held-out value against its target"
    )
    held_out_checks: list[HeldOutCheck] = Field(
        default_factory=list,
        max_length=MAX_HELD_OUT_CHECKS,
        description="each re-measurement on the held-out runs (stopWhen)",
    )
    chosen: list[int] = Field(
        default_factory=list,
        max_length=MAX_TRIALS,
        description="adaptive: the candidate-pool index of each training run after the warm-up,"
        " in trial order, recorded before its run is submitted (a restart replays them)",
    )
    decisions: list[Decision] = Field(
        default_factory=list,
        max_length=MAX_DECISION_NOTES,
        description="adaptive: the newest decisions with their scores",
    )
