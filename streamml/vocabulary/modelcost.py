"""What a declarative model may cost, decided from its spec before anything is built.

Every size-like parameter of an allow-listed river class has a bound (:class:`CostLimits`, which
the model server fills from its settings), and so do the sizes a pipeline derives from them: the
features a ``PolynomialExtender`` makes out of its inputs, an ``RBFSampler``'s weights, the
quadratic state of ``BayesianLinearRegression``, a k-means' centres. The derived sizes depend on
how many distinct input features the model will see, which a spec does not say; so the cost model
answers with the largest number of distinct input feature names for which every derived size stays
within its limit (:attr:`ModelCost.max_features`), and the server refuses a sample that would take
a model past it. A spec that breaks a limit even with one input feature, or a parameter beyond its
bound, is a :class:`~streamml.errors.SpecError` naming the parameter and the limit.

Estimates are upper bounds of the state a model keeps (bytes of Python objects, roughly), not
measurements; trees manage their own memory (river's ``max_size``), which is bounded here too.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from streamml.errors import SpecError
from streamml.vocabulary.modelspec import Component

#: rough bytes of one float held in a river dict or list (key/slot, float object, overhead)
BYTES_PER_VALUE = 100


class CostLimits(BaseModel):
    """The bounds the cost model enforces (the model server's settings hold them)."""

    model_config = ConfigDict(frozen=True)

    max_derived_features: int = Field(10_000, ge=1, description="features a pipeline may make")
    max_model_bytes: int = Field(256 * 2**20, ge=2**20, description="estimated state per model")
    max_polynomial_degree: int = Field(5, ge=1, description="PolynomialExtender.degree")
    max_components: int = Field(
        1_000, ge=1, description="RBFSampler.n_components and KMeans.n_clusters"
    )
    max_ensemble_members: int = Field(50, ge=1, description="a forest's n_models")
    max_tree_depth: int = Field(50, ge=1, description="a tree's max_depth, when given")
    min_grace_period: int = Field(10, ge=1, description="samples between a tree's split tries")
    max_tree_size_mib: float = Field(500.0, gt=0, description="a tree's max_size (MiB)")
    max_memory_check_period: int = Field(
        2_000_000, ge=1, description="a tree's memory_estimate_period"
    )
    max_poisson_lambda: float = Field(10.0, gt=0, description="a forest's lambda_value")
    max_neighbors: int = Field(100, ge=1, description="KNN n_neighbors")
    max_window: int = Field(100_000, ge=1, description="a scaler's window_size")


@dataclass(frozen=True)
class ModelCost:
    """The largest input a model may see, and what it then costs."""

    #: distinct input feature names the model may ever learn from (and features per sample)
    max_features: int
    derived_features: int
    state_bytes: int


# -- bounds on parameters ------------------------------------------------------------------------

_TREES = (
    "tree.HoeffdingTreeRegressor",
    "tree.HoeffdingAdaptiveTreeRegressor",
    "tree.HoeffdingTreeClassifier",
    "tree.HoeffdingAdaptiveTreeClassifier",
)
_FORESTS = ("forest.ARFRegressor", "forest.ARFClassifier")
_SCALERS = (
    "preprocessing.StandardScaler",
    "preprocessing.MinMaxScaler",
    "preprocessing.MaxAbsScaler",
)

#: (class, parameter) -> (limit name, True for an upper bound / False for a lower one)
_BOUNDS: dict[tuple[str, str], tuple[str, bool]] = {
    ("feature_extraction.PolynomialExtender", "degree"): ("max_polynomial_degree", True),
    ("feature_extraction.RBFSampler", "n_components"): ("max_components", True),
    ("cluster.KMeans", "n_clusters"): ("max_components", True),
    ("neighbors.KNNRegressor", "n_neighbors"): ("max_neighbors", True),
    ("neighbors.KNNClassifier", "n_neighbors"): ("max_neighbors", True),
    **{(name, "window_size"): ("max_window", True) for name in _SCALERS},
    **{(name, "n_models"): ("max_ensemble_members", True) for name in _FORESTS},
    **{(name, "lambda_value"): ("max_poisson_lambda", True) for name in _FORESTS},
    **{
        (name, param): bound
        for name in (*_TREES, *_FORESTS)
        for param, bound in (
            ("max_depth", ("max_tree_depth", True)),
            ("grace_period", ("min_grace_period", False)),
            ("max_size", ("max_tree_size_mib", True)),
            ("memory_estimate_period", ("max_memory_check_period", True)),
        )
    },
}
#: counts that must be at least 1 whatever the limits say
_POSITIVE = frozenset(
    {"degree", "n_components", "n_clusters", "n_neighbors", "window_size", "n_models"}
)


def check_bounds(component: Component, limits: CostLimits, where: str) -> None:
    """Every bounded parameter of ``component`` and of the components nested in it."""
    name = component.class_name
    for key, value in component.params.items():
        field = f"{where}.{key}"
        if isinstance(value, Component):
            check_bounds(value, limits, field)
            continue
        if isinstance(value, list):
            for item in value:
                if isinstance(item, Component):
                    check_bounds(item, limits, field)
            continue
        if type(value) not in (int, float):
            continue  # None (river's "no limit" default where it has one) and wrong types:
            # the signature check in the server reports those
        if key in _POSITIVE and value < 1:
            raise SpecError(f"{field}: {name}.{key} must be at least 1 (got {value})", field=field)
        bound = _BOUNDS.get((name, key))
        if bound is None:
            continue
        limit_name, upper = bound
        limit = getattr(limits, limit_name)
        if (upper and value > limit) or (not upper and value < limit):
            word = "at most" if upper else "at least"
            raise SpecError(
                f"{field}: {name}.{key} must be {word} {limit} on this server (got {value}; "
                f"server limit {limit_name})",
                field=field,
            )


# -- derived sizes -------------------------------------------------------------------------------


@dataclass
class _Flow:
    """What flows out of a pipeline prefix for ``inputs`` distinct input features."""

    width: int
    state: int = 0
    #: the widest any step makes it (a Select after an expansion does not undo its cost)
    peak: int = 0
    #: the step that made the peak, for messages
    source: str = "the input features"

    def widen(self, width: int, source: str) -> None:
        self.width = width
        if width > self.peak:
            self.peak, self.source = width, source


def _param(component: Component, key: str, default: object) -> object:
    return component.params.get(key, default)


def _int(component: Component, key: str, default: int) -> int:
    value = _param(component, key, default)
    return value if type(value) is int else default


def _polynomial(component: Component, flow: _Flow, where: str) -> None:
    degree = max(1, _int(component, "degree", 2))
    w = flow.width
    if _param(component, "interaction_only", False) is True:
        width = sum(math.comb(w, k) for k in range(1, min(degree, w) + 1))
    else:
        width = math.comb(w + degree, degree) - 1
    width += 1 if _param(component, "include_bias", False) is True else 0
    flow.widen(width, f"{where} (PolynomialExtender, degree {degree})")


def _rbf(component: Component, flow: _Flow, where: str) -> None:
    # river's RBFSampler makes one feature per input and component ((i, j) -> cos(...)) and
    # keeps one weight for each
    n = max(1, _int(component, "n_components", 100))
    flow.state += flow.width * n * BYTES_PER_VALUE
    flow.widen(flow.width * n, f"{where} (RBFSampler, n_components {n})")


def _select(component: Component, flow: _Flow, where: str) -> None:
    keys = _param(component, "keys", [])
    count = len(keys) if isinstance(keys, list) else 1
    flow.width = min(flow.width, count)


def _bayesian(component: Component, flow: _Flow, where: str) -> None:
    # precision and covariance matrices of float64, grown to at most twice the features seen
    flow.state += 2 * (2 * flow.width) ** 2 * 8


def _kmeans(component: Component, flow: _Flow, where: str) -> None:
    flow.state += max(1, _int(component, "n_clusters", 5)) * flow.width * BYTES_PER_VALUE


def _knn(component: Component, flow: _Flow, where: str) -> None:
    flow.state += 50 * flow.width * BYTES_PER_VALUE  # river's default search window of 50


def _windowed(component: Component, flow: _Flow, where: str) -> None:
    window = _param(component, "window_size", None)
    per_feature = window if type(window) is int else 4
    flow.state += flow.width * per_feature * BYTES_PER_VALUE


def _linear(component: Component, flow: _Flow, where: str) -> None:
    flow.state += flow.width * BYTES_PER_VALUE * 4  # weights and optimiser state


def _nested(component: Component, flow: _Flow, where: str) -> None:
    """A wrapper (TargetStandardScaler) costs what the estimator it wraps costs."""
    for key, value in component.params.items():
        if isinstance(value, Component):
            _step(value, flow, f"{where}.{key}")


_STEPS: dict[str, Callable[[Component, _Flow, str], None]] = {
    "feature_extraction.PolynomialExtender": _polynomial,
    "feature_extraction.RBFSampler": _rbf,
    "compose.Select": _select,
    "linear_model.BayesianLinearRegression": _bayesian,
    "cluster.KMeans": _kmeans,
    "neighbors.KNNRegressor": _knn,
    "neighbors.KNNClassifier": _knn,
    "preprocessing.TargetStandardScaler": _nested,
    **{name: _windowed for name in _SCALERS},
}


def _step(component: Component, flow: _Flow, where: str) -> None:
    _STEPS.get(component.class_name, _linear)(component, flow, where)


def _flow(pipeline: list[Component], inputs: int) -> _Flow:
    flow = _Flow(width=inputs, peak=inputs)
    for i, component in enumerate(pipeline):
        _step(component, flow, f"pipeline[{i}]")
    return flow


def _fits(flow: _Flow, limits: CostLimits) -> bool:
    return flow.peak <= limits.max_derived_features and flow.state <= limits.max_model_bytes


def model_cost(pipeline: list[Component], limits: CostLimits) -> ModelCost:
    """Check every bound; the largest input the pipeline may see within the limits."""
    for i, component in enumerate(pipeline):
        check_bounds(component, limits, f"pipeline[{i}]")
    smallest = _flow(pipeline, 1)
    if smallest.peak > limits.max_derived_features:
        raise SpecError(
            f"{smallest.source} makes {smallest.peak} features out of its input (server limit "
            f"max_derived_features={limits.max_derived_features})",
            field="pipeline",
        )
    if smallest.state > limits.max_model_bytes:
        raise SpecError(
            f"this pipeline would hold about {smallest.state} bytes of state even for one input "
            f"feature (server limit max_model_bytes={limits.max_model_bytes})",
            field="pipeline",
        )
    low, high = 1, limits.max_derived_features  # every derived size grows with the inputs
    while low < high:
        middle = (low + high + 1) // 2
        if _fits(_flow(pipeline, middle), limits):
            low = middle
        else:
            high = middle - 1
    flow = _flow(pipeline, low)
    return ModelCost(max_features=low, derived_features=flow.peak, state_bytes=flow.state)
