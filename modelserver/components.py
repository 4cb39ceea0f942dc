"""Declarative specs to river objects, and river objects to the old server's model JSON.

Only classes on :data:`~streamml.vocabulary.modelspec.ALLOWED_COMPONENTS` are ever imported;
parameters are checked against the constructor's signature (name and, where the annotation can be
resolved, type) before anything is constructed, so a mistake is a :class:`SpecError` naming the
class and the parameter.
"""

from __future__ import annotations

import importlib
import inspect
import types
import typing
from functools import cache, reduce
from typing import Any

from streamml.errors import SpecError, UnknownComponentError
from streamml.vocabulary.modelspec import ALLOWED_COMPONENTS, Component

#: what each flavor needs from the estimator, decided at creation: every flavor is learned (one
#: learn or a fan-out batch calls ``learn_one`` on every model), so even ``custom`` needs it; the
#: old server asked nothing of ``custom`` and then failed every learn with a 500
FLAVOR_METHODS: dict[str, tuple[str, ...]] = {
    "regression": ("learn_one", "predict_one"),
    "binary": ("learn_one", "predict_proba_one"),
    "multiclass": ("learn_one", "predict_proba_one"),
    "cluster": ("learn_one", "predict_one"),
    "custom": ("learn_one",),
}


#: classes whose work per sample the cost model cannot bound tightly (trees grow and try
#: splits, ensembles multiply that, neighbours and kernels scan their state): never on the loop
HEAVY_PREFIXES: tuple[str, ...] = ("tree.", "forest.", "neighbors.", "cluster.")
HEAVY_CLASSES: frozenset[str] = frozenset({"feature_extraction.RBFSampler"})


def is_heavy(pipeline: list[Component]) -> bool:
    """True when any component, nested ones included, is expensive per sample."""

    def heavy(component: Component) -> bool:
        name = component.class_name
        if name.startswith(HEAVY_PREFIXES) or name in HEAVY_CLASSES:
            return True
        values = component.params.values()
        nested = [v for value in values for v in (value if isinstance(value, list) else [value])]
        return any(heavy(v) for v in nested if isinstance(v, Component))

    return any(heavy(step) for step in pipeline)


@cache
def river_class(dotted: str) -> type:
    """``optim.SGD`` -> ``river.optim.SGD`` (allow-listed names only)."""
    if dotted not in ALLOWED_COMPONENTS:
        raise UnknownComponentError(
            f"river class {dotted!r} is not on the allow-list", field=dotted
        )
    module_name, _, class_name = dotted.rpartition(".")
    module = importlib.import_module(f"river.{module_name}")
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type):
        raise UnknownComponentError(f"river has no class {dotted!r}", field=dotted)
    return cls


@cache
def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls.__init__)  # type: ignore[misc]
    except Exception:  # unresolvable annotations: fall back to checking names only
        return {}


def _accepts(annotation: Any, value: Any) -> bool:
    """Best-effort isinstance against an annotation; unknown constructs accept."""
    if annotation is Any or annotation is inspect.Parameter.empty:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(arg, value) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is float:
        return type(value) in (int, float)
    if annotation is int:
        return type(value) is int
    if origin is not None:
        annotation = origin
    if isinstance(annotation, type):
        try:
            return isinstance(value, annotation)
        except TypeError:
            return True
    return True


#: Unannotated parameters whose integer default stands for a real number (river writes
#: ``alpha=1``); every other unannotated int default is a count and stays int-only.
_REAL_WITH_INT_DEFAULT: frozenset[tuple[str, str]] = frozenset(
    {
        ("linear_model.BayesianLinearRegression", "alpha"),
        ("linear_model.BayesianLinearRegression", "beta"),
        ("linear_model.SoftmaxRegression", "l2"),
        ("linear_model.ALMAClassifier", "p"),
        ("cluster.KMeans", "mu"),
        ("cluster.KMeans", "sigma"),
        ("cluster.KMeans", "p"),
        ("preprocessing.Normalizer", "order"),
    }
)


def _default_accepts(default: Any, value: Any, *, real: bool = False) -> bool:
    """When there is no annotation, a scalar default says what kind of value is expected."""
    if default is inspect.Parameter.empty or default is None or value is None:
        return True
    if type(default) is bool:
        return type(value) is bool
    if type(default) is int:
        return type(value) is int or (real and type(value) is float)
    if type(default) is float:
        return type(value) in (int, float)
    if type(default) is str:
        return type(value) is str
    return True


def build_component(component: Component, where: str = "pipeline") -> Any:
    """Construct one river object; nested components in ``params`` are built first."""
    cls = river_class(component.class_name)
    name = component.class_name
    signature = inspect.signature(cls)
    hints = _hints(cls)
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for key, raw in component.params.items():
        param = signature.parameters.get(key)
        if param is None or param.kind is inspect.Parameter.VAR_KEYWORD:
            allowed = ", ".join(p for p in signature.parameters if p != "self") or "none"
            raise SpecError(
                f"{name} has no parameter {key!r} (parameters: {allowed})", field=f"{where}.{key}"
            )
        value = _build_value(raw, f"{where}.{name}.{key}")
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            if not isinstance(value, list):
                raise SpecError(f"{name}.{key} must be a list", field=f"{where}.{key}")
            args.extend(value)
            continue
        annotation = hints.get(key, inspect.Parameter.empty)
        ok = _accepts(annotation, value) if annotation is not inspect.Parameter.empty else True
        real = (name, key) in _REAL_WITH_INT_DEFAULT
        if not ok or not _default_accepts(param.default, value, real=real):
            expected = (
                annotation if annotation is not inspect.Parameter.empty else type(param.default)
            )
            raise SpecError(
                f"{name}: parameter {key!r} has the wrong type "
                f"({type(value).__name__}, expected {_type_name(expected)})",
                field=f"{where}.{key}",
            )
        kwargs[key] = value
    try:
        return cls(*args, **kwargs)
    except (TypeError, ValueError, AssertionError, KeyError) as exc:
        raise SpecError(f"{name}: invalid parameters: {exc}", field=where) from exc


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) or str(annotation)
    return text.replace("river.", "")


def _build_value(raw: Any, where: str) -> Any:
    if isinstance(raw, Component):
        return build_component(raw, where)
    if isinstance(raw, list):
        return [_build_value(item, where) for item in raw]
    return raw


def build_pipeline(pipeline: list[Component], flavor: str) -> Any:
    """The river model for a declarative pipeline, checked against the flavor's needs."""
    steps = [build_component(step, f"pipeline[{i}]") for i, step in enumerate(pipeline)]
    try:
        model = reduce(lambda left, right: left | right, steps)
    except (TypeError, ValueError) as exc:
        raise SpecError(
            f"these components do not form a pipeline: {exc}", field="pipeline"
        ) from exc
    check_flavor(model, flavor)
    return model


def check_flavor(model: Any, flavor: str) -> None:
    if flavor not in FLAVOR_METHODS:
        raise SpecError(
            f"unknown flavor {flavor!r} (flavors: {', '.join(FLAVOR_METHODS)})", field="flavor"
        )
    for method in FLAVOR_METHODS[flavor]:
        if not callable(getattr(model, method, None)):
            raise SpecError(
                f"a {flavor} model needs {method}(); {type(model).__name__} has none",
                field="pipeline",
            )


def model_json(model: Any) -> dict[str, Any]:
    """The old server's model JSON: per pipeline step, the step's parameters; a nested river
    object is ``[ClassName, {params}]`` (or ``[ClassName]`` without parameters)."""
    steps = getattr(model, "steps", None)
    if isinstance(steps, dict):
        return {str(name): _params(step) for name, step in steps.items()}
    return {type(model).__name__: _params(model)}


def _params(obj: Any) -> Any:
    get_params = getattr(obj, "_get_params", None)
    if not callable(get_params):
        return {}
    try:
        params = get_params()
    except Exception:  # a user-uploaded object may not follow river's protocol
        return {}
    if isinstance(getattr(obj, "steps", None), dict):
        return {str(k): _jsonable(v) for k, v in params.items()}
    return {str(k): _jsonable(v) for k, v in params.items()}


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], type):
        cls, params = value
        encoded = {str(k): _jsonable(v) for k, v in params.items()} if params else None
        return [cls.__name__, encoded] if encoded else [cls.__name__]
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return repr(value)
