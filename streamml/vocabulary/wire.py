"""Request and response bodies of the model server's HTTP API, shared by the server and clients.

The riverapi-compatible endpoints keep the old server's shapes (``{"model", "features",
"ground_truth"}`` and so on); the extensions (fan-out, idempotent identifiers, batches,
declarative models) add optional fields or new endpoints and never change an old shape.
Every request model forbids unknown fields: a typo is a 400 naming the field, not a silent no-op.
"""

from __future__ import annotations

from math import isfinite
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, WithJsonSchema

from streamml.vocabulary.modelspec import MODEL_NAME_PATTERN, Component, Flavor

#: Largest number of samples one batch request may carry (the body-size limit applies too).
MAX_BATCH_SAMPLES = 10_000
MAX_FEATURES = 1_000
#: JSON integers beyond 64 bits cannot be stored or echoed back (and overflow floats)
MAX_INT = 2**63 - 1
#: Largest magnitude of a number in a sample. Beyond it the models' own arithmetic leaves double
#: precision: one learn of 1e308 turns a linear model's weights into inf/NaN for good, and the
#: trees' variance statistics (fourth powers) overflow from about 1e77 (measured on every
#: regressor of the allow-list); scientific quantities stay far below it.
MAX_MAGNITUDE = 1e50


_too_large = f"is too large in magnitude (at most {MAX_MAGNITUDE:g})"


def _number_problem(value: float) -> str:
    return "is not a finite number" if not isfinite(value) else _too_large


ModelName = Annotated[str, Field(pattern=MODEL_NAME_PATTERN, max_length=63)]
Identifier = Annotated[str, Field(min_length=1, max_length=200)]


def check_features(features: dict[str, Any]) -> dict[str, Any]:
    """Feature values must be finite numbers, booleans, short strings or null (NaN/inf refused).

    A hand-written check rather than a pydantic union: it runs once per sample on the hot path,
    is several times faster and names the offending feature plainly.
    """
    if len(features) > MAX_FEATURES:
        raise ValueError(f"at most {MAX_FEATURES} features per sample")
    for name, value in features.items():
        if not name or len(name) > 200:
            raise ValueError("feature names must have 1 to 200 characters")
        kind = type(value)
        if kind is float:
            if not -MAX_MAGNITUDE <= value <= MAX_MAGNITUDE:  # also refuses NaN
                raise ValueError(f"feature {name!r} {_number_problem(value)}")
        elif kind is int:
            if not -MAX_INT <= value <= MAX_INT:
                raise ValueError(f"feature {name!r} is out of the 64-bit integer range")
        elif kind is bool or value is None:
            continue
        elif kind is str:
            if len(value) > 1_000:
                raise ValueError(f"feature {name!r} is longer than 1000 characters")
        else:
            raise ValueError(f"feature {name!r} must be a number, boolean, string or null")
    return features


def check_target(value: Any) -> Any:
    """A target is a finite number, a boolean or a class label string."""
    kind = type(value)
    if kind is float and not -MAX_MAGNITUDE <= value <= MAX_MAGNITUDE:  # also refuses NaN
        raise ValueError("must be a finite number" if not isfinite(value) else _too_large)
    if kind not in (float, int, bool, str):
        raise ValueError("must be a number, boolean or string")
    if kind is str and len(value) > 1_000:
        raise ValueError("is longer than 1000 characters")
    if kind is int and not -MAX_INT <= value <= MAX_INT:
        raise ValueError("is out of the 64-bit integer range")
    return value


_NUMBER_SCHEMA = {"type": "number", "minimum": -MAX_MAGNITUDE, "maximum": MAX_MAGNITUDE}
_FEATURES_SCHEMA = {
    "type": "object",
    "maxProperties": MAX_FEATURES,
    "propertyNames": {"minLength": 1, "maxLength": 200},
    "additionalProperties": {
        "anyOf": [
            _NUMBER_SCHEMA,
            {"type": "boolean"},
            {"type": "string", "maxLength": 1_000},
            {"type": "null"},
        ]
    },
}
_TARGET_SCHEMA = {
    "anyOf": [_NUMBER_SCHEMA, {"type": "boolean"}, {"type": "string", "maxLength": 1_000}]
}

Features = Annotated[
    dict[str, Any], AfterValidator(check_features), WithJsonSchema(_FEATURES_SCHEMA)
]
Target = Annotated[Any, AfterValidator(check_target), WithJsonSchema(_TARGET_SCHEMA)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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


class DeclarativeModelRequest(_Request):
    """Body of ``POST /api/model/<flavor>/<name>/`` with ``Content-Type: application/json``."""

    pipeline: list[Component] = Field(min_length=1, max_length=16)
    flavor: Flavor | None = Field(default=None, description="if given, must match the URL")


class LearnRequest(_Request):
    """One sample for one model (``model``), a subset (``models``) or all models (neither)."""

    model: ModelName | None = None
    models: list[ModelName] | None = Field(default=None, max_length=1_000)
    features: Features
    ground_truth: Target | None = None
    prediction: Target | None = None
    identifier: Identifier | None = None


class LearnResult(BaseModel):
    learned: bool
    duplicate: bool
    error: str | None = None


class LearnReply(BaseModel):
    model: str | None = None
    results: dict[str, LearnResult]


class LearnSample(_Request):
    features: Features
    ground_truth: Target | None = None
    identifier: Identifier | None = None


class BatchLearnRequest(_Request):
    model: ModelName | None = None
    models: list[ModelName] | None = Field(default=None, max_length=1_000)
    samples: list[LearnSample] = Field(min_length=1, max_length=MAX_BATCH_SAMPLES)


class BatchLearnEnvelope(_Request):
    """What the server validates with pydantic on ``/api/learn/batch/``; the samples are then
    checked by :func:`learn_samples` (the same rules as :class:`LearnSample`, ~10x faster)."""

    model: ModelName | None = None
    models: list[ModelName] | None = Field(default=None, max_length=1_000)
    samples: list[Any] = Field(min_length=1, max_length=MAX_BATCH_SAMPLES)
    update_metrics: StrictBool = Field(
        default=True,
        description="progressive validation: predict each sample and update the metrics before "
        "learning it (the default, as a single learn does). false learns only and leaves the "
        "metrics as they were, e.g. to backfill results collected before the server ran",
    )


_SAMPLE_KEYS = frozenset(LearnSample.model_fields)


def learn_samples(raw: list[Any]) -> list[tuple[dict[str, Any], Any, str | None]]:
    """Validate batch samples by hand (the batch hot path); ValueError names the sample."""
    samples: list[tuple[dict[str, Any], Any, str | None]] = []
    append = samples.append
    for index, item in enumerate(raw):
        try:
            if type(item) is not dict:
                raise ValueError("must be an object with 'features'")
            if not item.keys() <= _SAMPLE_KEYS:
                raise ValueError(f"unknown field(s) {sorted(item.keys() - _SAMPLE_KEYS)}")
            features = item.get("features")
            if type(features) is not dict:
                raise ValueError("features: an object of feature values is required")
            check_features(features)
            ground_truth = item.get("ground_truth")
            if ground_truth is not None:
                try:
                    check_target(ground_truth)
                except ValueError as exc:
                    raise ValueError(f"ground_truth: {exc}") from None
            identifier = item.get("identifier")
            if identifier is not None and (
                type(identifier) is not str or not 1 <= len(identifier) <= 200
            ):
                raise ValueError("identifier: must be a string of 1 to 200 characters")
        except ValueError as exc:
            raise ValueError(f"samples[{index}]: {exc}") from None
        append((features, ground_truth, identifier))
    return samples


class BatchLearnResult(BaseModel):
    learned: int
    duplicates: int
    rejected: list[dict[str, Any]] | None = None


class BatchLearnReply(BaseModel):
    results: dict[str, BatchLearnResult]


class PredictRequest(_Request):
    model: ModelName
    features: Features
    identifier: Identifier | None = None


class PredictReply(BaseModel):
    model: str
    prediction: Any
    identifier: str


class PredictSample(_Request):
    features: Features
    identifier: Identifier | None = None


class BatchPredictRequest(_Request):
    model: ModelName
    samples: list[PredictSample] = Field(min_length=1, max_length=MAX_BATCH_SAMPLES)


class BatchPrediction(BaseModel):
    prediction: Any
    identifier: str


class BatchPredictReply(BaseModel):
    model: str
    predictions: list[BatchPrediction]


class LabelRequest(_Request):
    """Joins a late ground truth to an earlier prediction (by its identifier)."""

    model: ModelName
    identifier: Identifier
    label: Target


class ModelQuery(_Request):
    """The JSON body riverapi sends on ``GET /api/metrics/`` and ``GET /api/stats/``."""

    model: ModelName


class CallStats(BaseModel):
    n_calls: int
    mean_duration: int
    mean_duration_human: str
    ewm_duration: int
    ewm_duration_human: str


class StatsReply(BaseModel):
    predict: CallStats
    learn: CallStats


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
