"""Declarative model specs: river models described as data, never as code.

A model is a named pipeline of river components taken from an allow-list, each with validated
constructor parameters; a parameter may itself be a component (an optimizer, a learning-rate
schedule, a loss)::

    {"name": "poly-linear", "flavor": "regression",
     "pipeline": [
        {"class": "feature_extraction.PolynomialExtender",
         "params": {"degree": 3, "interaction_only": true}},
        {"class": "preprocessing.StandardScaler"},
        {"class": "linear_model.LinearRegression",
         "params": {"intercept_lr": 0.1,
                    "optimizer": {"class": "optim.SGD", "params": {"lr": 0.01}}}}]}

The same format is what the model server accepts over HTTP (``POST /api/model/<flavor>/<name>/``
with a JSON body) and what a ``StreamModel`` resource carries in ``spec.models``. This module only
describes the shape; the model server resolves the names to river classes and checks parameters
against their signatures.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator
from typing_extensions import TypeAliasType

Flavor = Literal["regression", "binary", "multiclass", "cluster", "custom"]
FLAVORS: tuple[Flavor, ...] = ("regression", "binary", "multiclass", "cluster", "custom")

#: The river classes that a declarative spec may name, as ``module.Class`` relative to ``river``.
#: Nothing here executes user code: no FuncTransformer, no custom callables.
ALLOWED_COMPONENTS: frozenset[str] = frozenset(
    {
        # preprocessing
        "preprocessing.StandardScaler",
        "preprocessing.AdaptiveStandardScaler",
        "preprocessing.MinMaxScaler",
        "preprocessing.MaxAbsScaler",
        "preprocessing.RobustScaler",
        "preprocessing.Normalizer",
        "preprocessing.OneHotEncoder",
        "preprocessing.TargetStandardScaler",
        # feature engineering
        "feature_extraction.PolynomialExtender",
        "feature_extraction.RBFSampler",
        "compose.Select",
        "compose.Discard",
        # linear models
        "linear_model.LinearRegression",
        "linear_model.PARegressor",
        "linear_model.BayesianLinearRegression",
        "linear_model.LogisticRegression",
        "linear_model.Perceptron",
        "linear_model.PAClassifier",
        "linear_model.ALMAClassifier",
        "linear_model.SoftmaxRegression",
        # trees, neighbours, ensembles, baselines
        "tree.HoeffdingTreeRegressor",
        "tree.HoeffdingAdaptiveTreeRegressor",
        "tree.HoeffdingTreeClassifier",
        "tree.HoeffdingAdaptiveTreeClassifier",
        "forest.ARFRegressor",
        "forest.ARFClassifier",
        "neighbors.KNNRegressor",
        "neighbors.KNNClassifier",
        "naive_bayes.GaussianNB",
        "dummy.StatisticRegressor",
        "cluster.KMeans",
        # optimisation building blocks (used as parameters)
        "optim.SGD",
        "optim.Adam",
        "optim.AdaGrad",
        "optim.RMSProp",
        "optim.Momentum",
        "optim.NesterovMomentum",
        "optim.schedulers.Constant",
        "optim.schedulers.InverseScaling",
        "optim.schedulers.Optimal",
        "optim.losses.Squared",
        "optim.losses.Absolute",
        "optim.losses.Huber",
        "optim.losses.Log",
        "optim.losses.Hinge",
        "optim.losses.CrossEntropy",
        "optim.initializers.Zeros",
        "optim.initializers.Constant",
        "optim.initializers.Normal",
        "stats.Mean",
        "stats.Var",
    }
)

MAX_PIPELINE_STEPS = 16
MODEL_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"

#: a spec is stored as JSON, which holds integers of at most 64 bits
MAX_PARAM_INT = 2**63 - 1


def _check_storable(value: Any, key: str) -> None:
    if type(value) is int and not -MAX_PARAM_INT - 1 <= value <= MAX_PARAM_INT:
        raise ValueError(f"parameter {key!r} is out of the 64-bit integer range")
    if isinstance(value, list):
        for item in value:
            _check_storable(item, key)


if TYPE_CHECKING:  # mypy cannot follow a recursive TypeAliasType; pydantic needs one
    ParamValue = Any
else:
    ParamValue = TypeAliasType(
        "ParamValue",
        Union[bool, int, float, str, list["ParamValue"], "Component", None],
    )


class Component(BaseModel):
    """One river object: a class from :data:`ALLOWED_COMPONENTS` and its parameters."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    class_name: str = Field(
        alias="class",
        min_length=3,
        max_length=100,
        pattern=r"^[a-z_]+(\.[a-z_]+)*\.[A-Za-z_][A-Za-z0-9_]*$",
        description="river class as module.Class, e.g. preprocessing.StandardScaler",
    )
    params: dict[str, ParamValue] = Field(
        default_factory=dict,
        description="constructor keyword arguments; a value may itself be a component",
    )

    @field_validator("class_name")
    @classmethod
    def _allowed(cls, value: str) -> str:
        if value not in ALLOWED_COMPONENTS:
            raise ValueError(f"river class {value!r} is not on the allow-list")
        return value

    @field_validator("params")
    @classmethod
    def _storable(cls, params: dict[str, Any]) -> dict[str, Any]:
        for key, value in params.items():
            _check_storable(value, key)
        return params

    def to_data(self) -> dict[str, Any]:
        """The JSON form (``{"class": ..., "params": ...}``)."""
        return self.model_dump(by_alias=True, exclude_defaults=False)


#: the defaults of :class:`DriftSettings` (a 5x jump of the error is detected in ~5 samples;
#: benchmarks/drift_bench.py measures delay and false alarms on real LAMMPS runs)
DRIFT_WARMUP = 20
DRIFT_THRESHOLD = 25.0
DRIFT_DELTA = 0.5


class DriftSettings(BaseModel):
    """How a served model watches its own error stream for drift (a one-sided Page-Hinkley test
    on the absolute residual of progressive validation, or the 0/1 error of a classifier, in
    units of the error it made at the end of its warm-up; see ``modelserver/drift.py``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(default=True, strict=True, description="watch this model for drift")
    warmup: int = Field(
        default=DRIFT_WARMUP,
        ge=4,
        le=1_000_000,
        strict=True,
        description="scored samples before the test is armed (again after each detection); "
        "the mean error of the warm-up's second half is the unit of the test",
    )
    threshold: float = Field(
        default=DRIFT_THRESHOLD,
        gt=0,
        le=1e6,
        strict=True,
        allow_inf_nan=False,
        description="Page-Hinkley threshold (lambda), in units of the warm-up's mean error",
    )
    delta: float = Field(
        default=DRIFT_DELTA,
        ge=0,
        le=1e6,
        strict=True,
        allow_inf_nan=False,
        description="Page-Hinkley tolerance (delta): a rise of the error smaller than this, "
        "in units of the warm-up's mean error, is not drift",
    )
    policy: Literal["keep", "reset", "fork"] = Field(
        default="keep",
        description="at a detection: keep learning, reset (the model restarts learning from "
        "a fresh copy of its pipeline), or fork (reset, and the model as it was is kept, frozen, "
        "scored beside the fresh one on every later sample: the stats reply's fork)",
    )


class ModelDefinition(BaseModel):
    """What a declarative model is, without its name: the body of a model-upload request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    flavor: Flavor = Field(default="regression", description="what the model predicts")
    pipeline: list[Component] = Field(
        min_length=1,
        max_length=MAX_PIPELINE_STEPS,
        description="river components applied in order; the last one is the estimator",
    )
    drift: DriftSettings | None = Field(
        default=None,
        description="drift detection on the model's error stream (absent: on, with defaults)",
    )


class ModelSpec(ModelDefinition):
    """A named declarative model, as listed in a StreamModel's ``spec.models``."""

    name: str = Field(
        pattern=MODEL_NAME_PATTERN,
        max_length=63,
        description="model name on the server (a DNS label)",
    )


Component.model_rebuild()
