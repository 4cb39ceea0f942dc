"""Reply bodies of the model server's HTTP API: what the server documents (its OpenAPI document,
``modelserver/openapi.py``) and what the client returns (``streamml/client/api.py``), from one
set of models.

A reply model ignores fields it does not know (pydantic's default), so a newer server may add
fields without breaking an older client; the request models (``wire.py``) forbid them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, RootModel


class ErrorReply(BaseModel):
    """Every error: 4xx for the caller's mistakes, 5xx only for the server's own failures."""

    message: str


class ServiceInfo(BaseModel):
    id: str
    status: str
    name: str
    description: str
    documentationUrl: str
    storage: str
    river_version: str
    version: str


class TokenReply(BaseModel):
    token: str
    expires_in: int
    issued_at: str


class CreatedReply(BaseModel):
    name: str


class ModelsReply(BaseModel):
    models: list[str]


class LearnResult(BaseModel):
    learned: bool
    duplicate: bool
    error: str | None = None


class LearnReply(BaseModel):
    model: str | None = None
    results: dict[str, LearnResult]


class RejectedSample(BaseModel):
    """A well-formed sample of a batch that a model could not use (the others were learned)."""

    index: int
    message: str


class BatchLearnResult(BaseModel):
    learned: int
    duplicates: int
    rejected: list[RejectedSample] | None = Field(
        None, description="the first 100 samples the model refused (absent when none)"
    )


class BatchLearnReply(BaseModel):
    results: dict[str, BatchLearnResult]


class PredictReply(BaseModel):
    model: str
    prediction: Any
    identifier: str


class BatchPrediction(BaseModel):
    prediction: Any
    #: None with ``uncertainty`` (the prediction waits for no label)
    identifier: str | None
    #: the predictive standard deviation (``uncertainty``; None: the model has no distribution)
    std: float | None = None


class BatchPredictReply(BaseModel):
    model: str
    predictions: list[BatchPrediction]


class LabelReply(BaseModel):
    model: str
    identifier: str
    learned: bool
    duplicate: bool


class MetricsReply(RootModel[dict[str, float | None]]):
    """The progressive-validation metrics by name (null while a metric is undefined)."""


class CallStats(BaseModel):
    n_calls: int
    mean_duration: int
    mean_duration_human: str
    ewm_duration: int
    ewm_duration_human: str


class DriftDetection(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    sample: int = Field(description="the scored sample (1-based) that completed the detection")
    change_at_sample: int = Field(
        alias="changeAtSample",
        description="Page-Hinkley's estimate of the first scored sample of the new regime",
    )
    time: float = Field(
        description="when the server applied that sample (Unix seconds; when it replayed it, "
        "for a detection re-found in the learn log after a restart)"
    )
    magnitude: float = Field(
        description="the mean error since the change, in units of the warm-up's mean error"
    )


class DriftStats(BaseModel):
    """A model's drift watch (absent when drift detection is off for it)."""

    policy: str = Field(description="keep | reset | fork")
    warmup: int
    threshold: float
    delta: float
    observed: int = Field(description="scored samples seen by the watch")
    armed: bool = Field(description="False while warming up (at the start, after a detection)")
    detections: int
    last: DriftDetection | None = None
    history: list[DriftDetection] = Field(default_factory=list, description="the newest 16")


class ForkStats(BaseModel):
    """Policy ``fork``: the model as it was at the last detection against the fresh one, each
    scored on the samples since (same metrics as the model's)."""

    model_config = ConfigDict(populate_by_name=True)

    since_sample: int = Field(alias="sinceSample", description="the detection's sample")
    samples: int = Field(description="samples scored on both since")
    before: dict[str, float | None] = Field(description="the frozen model's metrics since")
    fresh: dict[str, float | None] = Field(description="the served (fresh) model's metrics since")


class StatsReply(BaseModel):
    predict: CallStats
    learn: CallStats
    drift: DriftStats | None = None
    fork: ForkStats | None = None


class DeletedReply(BaseModel):
    deleted: str


class QuarantineReply(BaseModel):
    """A stored model that could not be loaded (held out of serving until it is deleted)."""

    kind: str = Field(description="snapshot | log | no-snapshot | no-definition")
    reason: str = Field(description="the file, the row and what is wrong")
    log_rows: int = Field(description="learn-log rows of the model held back")


class HealthReply(BaseModel):
    status: str = Field(description='"ok" (healthz), "ready" or "degraded" (readyz)')
    quarantined: dict[str, QuarantineReply] | None = Field(
        None, description="readyz when degraded: the quarantined models"
    )
    findings: list[str] | None = Field(
        None, description="readyz when degraded: problems of the data dir (a WAL that lost commits)"
    )


class OriginCount(BaseModel):
    """The samples of one origin value: how many, and the first and last sample index (the
    model's learn count after the sample: the ``samples`` axis of its history)."""

    value: str
    count: int
    first: int
    last: int


class OriginSpan(BaseModel):
    count: int
    first: int
    last: int


class ProvenanceReply(BaseModel):
    """``GET /api/provenance/{model}``: the model's samples by origin. Without ``?by=`` only
    ``samples``, ``samples_with_provenance`` and ``keys`` (each key's number of distinct
    values); with it the split (``values``, the most frequent first)."""

    model: str
    samples: int
    samples_with_provenance: int
    keys: dict[str, int] = Field(default_factory=dict)
    #: samples whose key was not indexed (past the index's bound of distinct keys)
    unindexed_keys: dict[str, int] = Field(default_factory=dict)
    key: str | None = None
    values: list[OriginCount] = Field(default_factory=list)
    distinct: int | None = None
    #: more distinct values than ``?limit=`` (the rarest left out)
    truncated: bool | None = None
    #: samples with a provenance but none under ``key``
    without_key: int | None = None
    #: samples whose value came after the index's bound of distinct values
    other: OriginSpan | None = None
