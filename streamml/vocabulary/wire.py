"""Request bodies of the model server's HTTP API, and the fast hand-checked paths that mirror
them (the replies are in ``replies.py``); shared by the server, its OpenAPI document and clients.

The riverapi-compatible endpoints keep the old server's shapes (``{"model", "features",
"ground_truth"}`` and so on); the extensions (fan-out, idempotent identifiers, batches,
declarative models) add optional fields or new endpoints and never change an old shape.
Every request model forbids unknown fields: a typo is a 400 naming the field, not a silent no-op.
"""

from __future__ import annotations

import re
from collections.abc import Container
from math import isfinite
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    WithJsonSchema,
    model_validator,
)

from streamml.vocabulary.modelspec import MODEL_NAME_PATTERN, Component, DriftSettings, Flavor

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

# -- provenance: where a learned sample came from ------------------------------------------------

#: the keys a job knows (``streamml run-lammps`` sends those it has); others are extra keys
PROVENANCE_KEYS = ("sweep", "trial", "attempt", "image_digest", "lammps_version", "host")
#: extra keys besides the known ones (a site's own labels: cluster, partition, ...)
MAX_PROVENANCE_EXTRA = 4
MAX_PROVENANCE_VALUE = 200
PROVENANCE_KEY = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


def check_provenance(value: Any) -> dict[str, str]:
    """A sample's origin: string values of 1 to 200 printable characters under the known keys
    (:data:`PROVENANCE_KEYS`) and at most :data:`MAX_PROVENANCE_EXTRA` others (lowercase
    names). Bounded because every value is kept in the learn log and the model's origin index."""
    if type(value) is not dict:
        raise ValueError("must be an object of string values")
    extra = 0
    for key, text in value.items():
        if key not in PROVENANCE_KEYS:
            if PROVENANCE_KEY.fullmatch(key) is None:
                raise ValueError(
                    f"key {key[:40]!r} must be lowercase letters, digits and '_' (at most 32)"
                )
            extra += 1
            if extra > MAX_PROVENANCE_EXTRA:
                raise ValueError(
                    f"at most {MAX_PROVENANCE_EXTRA} keys besides {', '.join(PROVENANCE_KEYS)}"
                )
        if type(text) is not str or not 1 <= len(text) <= MAX_PROVENANCE_VALUE:
            raise ValueError(f"{key!r} must be a string of 1 to {MAX_PROVENANCE_VALUE} characters")
        if not text.isprintable():
            raise ValueError(f"{key!r} must be printable text (no control characters)")
    return value


_PROVENANCE_VALUE_SCHEMA = {"type": "string", "minLength": 1, "maxLength": MAX_PROVENANCE_VALUE}
_PROVENANCE_SCHEMA = {
    "type": "object",
    "description": "where the sample came from; kept in the learn log and the model's origin "
    "index (GET /api/provenance/{model})",
    "properties": {key: _PROVENANCE_VALUE_SCHEMA for key in PROVENANCE_KEYS},
    "maxProperties": len(PROVENANCE_KEYS) + MAX_PROVENANCE_EXTRA,
    "propertyNames": {"pattern": PROVENANCE_KEY.pattern},
    "additionalProperties": _PROVENANCE_VALUE_SCHEMA,
}
Provenance = Annotated[
    dict[str, Any], AfterValidator(check_provenance), WithJsonSchema(_PROVENANCE_SCHEMA)
]
Target = Annotated[Any, AfterValidator(check_target), WithJsonSchema(_TARGET_SCHEMA)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeclarativeModelRequest(_Request):
    """Body of ``POST /api/model/<flavor>/<name>/`` with ``Content-Type: application/json``."""

    pipeline: list[Component] = Field(min_length=1, max_length=16)
    flavor: Flavor | None = Field(default=None, description="if given, must match the URL")
    drift: DriftSettings | None = Field(
        default=None,
        description="drift detection on the model's error stream (absent: on, with defaults)",
    )


class LearnRequest(_Request):
    """One sample for one model (``model``), a subset (``models``) or all models (neither)."""

    model: ModelName | None = None
    models: list[ModelName] | None = Field(default=None, max_length=1_000)
    features: Features
    ground_truth: Target | None = None
    prediction: Target | None = None
    identifier: Identifier | None = None
    provenance: Provenance | None = None


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
    provenance: Provenance | None = Field(
        default=None, description="the origin of every sample of the batch"
    )


class PredictRequest(_Request):
    model: ModelName
    features: Features
    identifier: Identifier | None = None


class PredictSample(_Request):
    features: Features
    identifier: Identifier | None = None


class BatchPredictRequest(_Request):
    model: ModelName
    samples: list[PredictSample] = Field(min_length=1, max_length=MAX_BATCH_SAMPLES)
    uncertainty: StrictBool = Field(
        default=False,
        description="an extension: each prediction also gets its predictive standard deviation "
        "(std; null when the model has no predictive distribution), and none waits for a label "
        "(identifier null). riverapi never sends it, so its replies are unchanged",
    )


class LabelRequest(_Request):
    """Joins a late ground truth to an earlier prediction (by its identifier)."""

    model: ModelName
    identifier: Identifier
    label: Target


class ModelQuery(_Request):
    """The JSON body riverapi sends on ``GET /api/metrics/`` and ``GET /api/stats/``."""

    model: ModelName


# -- the fast hand-checked paths ------------------------------------------------------------------
#
# The learn and predict hot paths check their bodies by hand: pydantic was ~9% of a request, and
# one pydantic model per sample ~10x the cost of a batch's checks. Each function below mirrors one
# schema above, field by field and in the schema's order (unknown fields last, as pydantic reports
# them), and gives the same verdict: it accepts what the schema accepts (with the same values) and
# refuses what it refuses, naming the same field (``loc[0]`` of pydantic's first error).
# tests/unit/test_wire_fast_paths.py feeds both the same corpus and requires just that. The single
# learn and predict fall back to the schema on a refusal, so their error replies are pydantic's;
# a batch reports the fast path's own message, naming ``samples[i]`` and the field.

_NAME = re.compile(MODEL_NAME_PATTERN)
_LEARN_KEYS = frozenset(LearnRequest.model_fields)
_PREDICT_KEYS = frozenset(PredictRequest.model_fields)
_SAMPLE_KEYS = frozenset(LearnSample.model_fields)

#: what :func:`fast_learn` returns: model, models, features, ground_truth, prediction, identifier,
#: provenance
LearnValues = tuple[
    str | None, list[str] | None, dict[str, Any], Any, Any, str | None, dict[str, str] | None
]
#: what :func:`fast_predict` returns: model, features, identifier
PredictValues = tuple[str, dict[str, Any], str | None]
#: what :func:`learn_samples` returns per sample: features, ground_truth, identifier
SampleValues = tuple[dict[str, Any], Any, str | None]


class FieldError(ValueError):
    """A body a fast path refuses; ``field`` is the top-level field at fault ("" for the body
    itself), as pydantic's ``loc[0]`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _name(field: str, value: Any, served: Container[str]) -> str:
    """A :data:`ModelName`; a name the server serves passed this check when it was created."""
    if type(value) is str and value in served:
        return value
    if type(value) is not str or len(value) > 63 or _NAME.fullmatch(value) is None:
        raise FieldError(field, f"{field}: must be a model name (a DNS label)")
    return value


def _names(value: Any) -> None:
    if type(value) is not list or len(value) > 1_000:
        raise FieldError("models", "models: must be a list of at most 1000 model names")
    for name in value:
        _name("models", name, ())


def _features(value: Any) -> dict[str, Any]:
    if type(value) is not dict:
        raise FieldError("features", "features: an object of feature values is required")
    try:
        return check_features(value)
    except ValueError as exc:
        raise FieldError("features", str(exc)) from None


def _target(field: str, value: Any) -> None:
    try:
        check_target(value)
    except ValueError as exc:
        raise FieldError(field, f"{field}: {exc}") from None


def _identifier(value: Any) -> None:
    if type(value) is not str or not 1 <= len(value) <= 200:
        raise FieldError("identifier", "identifier: must be a string of 1 to 200 characters")


def _object(data: Any) -> dict[str, Any]:
    if type(data) is not dict:
        raise FieldError("", "must be an object with 'features'")
    return data


def _no_unknown(data: dict[str, Any], keys: frozenset[str]) -> None:
    if not data.keys() <= keys:
        unknown = [key for key in data if key not in keys]
        raise FieldError(unknown[0], f"unknown field(s) {sorted(unknown)}")


def fast_learn(data: Any, served: Container[str] = ()) -> LearnValues:
    """:class:`LearnRequest`, checked by hand (``served``: names known to be valid)."""
    get = _object(data).get
    model, models = get("model"), get("models")
    if model is not None:
        _name("model", model, served)
    if models is not None:
        _names(models)
    features = _features(get("features"))
    ground_truth, prediction, identifier = get("ground_truth"), get("prediction"), get("identifier")
    if ground_truth is not None:
        _target("ground_truth", ground_truth)
    if prediction is not None:
        _target("prediction", prediction)
    if identifier is not None:
        _identifier(identifier)
    provenance = get("provenance")
    if provenance is not None:
        try:
            check_provenance(provenance)
        except ValueError as exc:
            raise FieldError("provenance", f"provenance: {exc}") from None
    _no_unknown(data, _LEARN_KEYS)
    return model, models, features, ground_truth, prediction, identifier, provenance


def fast_predict(data: Any, served: Container[str] = ()) -> PredictValues:
    """:class:`PredictRequest`, checked by hand (``served``: names known to be valid)."""
    get = _object(data).get
    model = _name("model", get("model"), served)
    features = _features(get("features"))
    identifier = get("identifier")
    if identifier is not None:
        _identifier(identifier)
    _no_unknown(data, _PREDICT_KEYS)
    return model, features, identifier


def fast_sample(item: Any) -> SampleValues:
    """One :class:`LearnSample`, checked by hand."""
    get = _object(item).get
    features = _features(get("features"))
    ground_truth, identifier = get("ground_truth"), get("identifier")
    if ground_truth is not None:
        _target("ground_truth", ground_truth)
    if identifier is not None:
        _identifier(identifier)
    _no_unknown(item, _SAMPLE_KEYS)
    return features, ground_truth, identifier


def learn_samples(raw: list[Any]) -> list[SampleValues]:
    """The samples of a batch (:func:`fast_sample` each); ValueError naming ``samples[i]``."""
    samples: list[SampleValues] = []
    append = samples.append
    for index, item in enumerate(raw):
        try:
            append(fast_sample(item))
        except FieldError as exc:
            raise ValueError(f"samples[{index}]: {exc}") from None
    return samples


# -- several targets of one sample (POST /api/learn/targets/) ------------------------------------


class TargetGroup(_Request):
    """One target of a sample: its value, learned by its models."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$", description="the target's name")
    models: list[ModelName] = Field(min_length=1, max_length=1_000)
    ground_truth: Target


class TargetsLearnRequest(_Request):
    """One sample (one trial) with several targets, each learned by its own models, under one
    identifier: each (model, identifier) learns once however often the request is re-sent."""

    features: Features
    identifier: Identifier
    targets: list[TargetGroup] = Field(min_length=1, max_length=64)
    provenance: Provenance | None = None

    @model_validator(mode="after")
    def _disjoint(self) -> TargetsLearnRequest:
        seen: dict[str, str] = {}
        names: set[str] = set()
        for i, group in enumerate(self.targets):
            if group.name in names:
                raise ValueError(f"targets[{i}].name: {group.name!r} is given twice")
            names.add(group.name)
            for model in group.models:
                if model in seen:
                    raise ValueError(
                        f"targets[{i}].models: model {model!r} also learns target {seen[model]!r}"
                    )
                seen[model] = group.name
        return self
