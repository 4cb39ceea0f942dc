"""Sampling: reproducible, distinct where possible, train/test disjoint, clear errors."""

from __future__ import annotations

import doctest
import json
from typing import Any

import pytest
from pydantic import ValidationError

from streamml.errors import SpecError
from streamml.sweep import sampling
from streamml.sweep.sampling import as_vars, fingerprint, plan, sample, space_size
from streamml.vocabulary.lammpssweep import LammpsSweepSpec, Parameter

METHODS = ["random", "grid", "latinHypercube"]


def _spec(params: list[dict[str, Any]], trials: int, test: int = 0, **sampling: Any) -> Any:
    return LammpsSweepSpec.model_validate(
        {
            "streamModelRef": {"name": "m"},
            "parameters": params,
            "trials": trials,
            "testTrials": test,
            "sampling": sampling,
        }
    )


CELLS = [{"name": n, "type": "int", "min": 8, "max": 12} for n in ("nx", "ny", "nz")]


def _keys(points: list[dict[str, Any]]) -> list[str]:
    return [json.dumps(p, sort_keys=True) for p in points]


def test_doctests() -> None:
    assert doctest.testmod(sampling).failed == 0


@pytest.mark.parametrize("method", METHODS)
def test_plan_is_reproducible_and_seed_dependent(method: str) -> None:
    a = plan(_spec(CELLS, 30, 10, method=method, seed=3))
    b = plan(_spec(CELLS, 30, 10, method=method, seed=3))
    c = plan(_spec(CELLS, 30, 10, method=method, seed=4))
    assert a == b
    assert fingerprint(a) == fingerprint(b)
    assert a != c
    assert len(a) == 40


@pytest.mark.parametrize("method", METHODS)
def test_points_distinct_and_in_range(method: str) -> None:
    points = plan(_spec(CELLS, 30, 10, method=method, seed=1))
    assert len(set(_keys(points))) == 40  # 125 points in the space: room for all
    for p in points:
        for name in ("nx", "ny", "nz"):
            assert isinstance(p[name], int)
            assert 8 <= p[name] <= 12


@pytest.mark.parametrize("method", ["random", "latinHypercube"])
def test_small_space_train_repeats_but_test_disjoint(method: str) -> None:
    params = [{"name": "nx", "type": "int", "min": 1, "max": 4}]
    points = plan(_spec(params, 10, 2, method=method, seed=9))
    train, test = _keys(points[:10]), _keys(points[10:])
    assert len(set(test)) == 2
    assert not set(train) & set(test)
    assert set(train) == {k for k in _keys([{"nx": v} for v in (1, 2, 3, 4)])} - set(test)


def test_train_and_test_disjoint_large() -> None:
    params = [*CELLS, {"name": "lat", "type": "categorical", "values": ["fcc", "bcc"]}]
    points = plan(_spec(params, 100, 40, seed=5))
    assert not set(_keys(points[:100])) & set(_keys(points[100:]))


def test_grid_covers_whole_grid() -> None:
    params = [
        {"name": "a", "type": "int", "min": 1, "max": 3},
        {"name": "b", "type": "float", "min": 0.0, "max": 1.0, "step": 0.5},
    ]
    points = plan(_spec(params, 6, 3, method="grid"))
    assert sorted(_keys(points)) == sorted(
        _keys([{"a": a, "b": b} for a in (1, 2, 3) for b in (0.0, 0.5, 1.0)])
    )


def test_float_continuous_and_rounded() -> None:
    params = [{"name": "t", "type": "float", "min": 0.5, "max": 1.5}]
    points = sample([Parameter.model_validate(params[0])], 50, method="random", seed=0)
    assert all(0.5 <= p["t"] <= 1.5 for p in points)  # type: ignore[operator]
    assert all(float(as_vars(p)["t"]) == p["t"] for p in points)
    assert space_size([Parameter.model_validate(params[0])]) is None


def test_latin_hypercube_stratifies_each_dimension() -> None:
    p = Parameter(name="t", type="float", min=0.0, max=1.0)
    points = sample([p], 20, method="latinHypercube", seed=2)
    strata = sorted(int(float(x["t"]) * 20) for x in points)
    assert strata == list(range(20))


def test_int_step_and_categorical_values() -> None:
    params = [
        {"name": "n", "type": "int", "min": 2, "max": 10, "step": 4},
        {"name": "c", "type": "categorical", "values": ["x", "y"]},
    ]
    points = plan(_spec(params, 6, 0, seed=0))
    assert {p["n"] for p in points} <= {2, 6, 10}
    assert {p["c"] for p in points} <= {"x", "y"}
    assert len(set(_keys(points))) == 6


@pytest.mark.parametrize(
    ("params", "trials", "test", "method", "field"),
    [
        ([{"name": "n", "type": "int", "min": 1, "max": 2}], 1, 2, "random", "testTrials"),
        ([{"name": "n", "type": "int", "min": 1, "max": 2}], 3, 0, "grid", "trials"),
        (
            [{"name": "f", "type": "float", "min": 0, "max": 1}],
            3,
            0,
            "grid",
            "parameters[0].step",
        ),
        (
            [{"name": "f", "type": "float", "min": 0, "max": 1, "step": 1e-9}],
            3,
            0,
            "grid",
            "parameters[0].step",
        ),
    ],
)
def test_impossible_plans_name_the_field(
    params: list[dict[str, Any]], trials: int, test: int, method: str, field: str
) -> None:
    with pytest.raises(SpecError) as info:
        plan(_spec(params, trials, test, method=method))
    assert info.value.field == field


@pytest.mark.parametrize(
    "bad",
    [
        {"parameters": []},
        {"parameters": [{"name": "n", "type": "int", "min": 3, "max": 1}]},
        {"parameters": [{"name": "n", "type": "int", "min": 1.5, "max": 3}]},
        {"parameters": [{"name": "n", "type": "categorical", "values": []}]},
        {"parameters": [{"name": "n", "type": "categorical", "values": ["a", "a"]}]},
        {"parameters": [{"name": "n", "type": "int"}]},
        {"parameters": [{"name": "bad name", "type": "int", "min": 1, "max": 2}]},
        {"trials": -1},
        {"trials": 0},
        {"testTrials": -3},
        {"parallelism": 0},
        {"maxFailures": -1},
        {"scheduler": {"type": "pbs"}},
        {"scheduler": {"type": "slurm-rest"}},
        {"sampling": {"method": "sobol"}},
        {"bogus": 1},
    ],
)
def test_invalid_specs_rejected_by_schema(bad: dict[str, Any]) -> None:
    doc: dict[str, Any] = {
        "streamModelRef": {"name": "m"},
        "parameters": CELLS,
        "trials": 3,
    }
    doc.update(bad)
    with pytest.raises(ValidationError):
        LammpsSweepSpec.model_validate(doc)


# ---- huge ranges: drawn, never listed (issue 8, item 4) ------------------------------------


@pytest.mark.parametrize("method", ["random", "latinHypercube"])
def test_a_hundred_million_wide_int_range_is_drawn_not_listed(method: str) -> None:
    params = [{"name": "n", "type": "int", "min": 1, "max": 1e8}]
    points = plan(_spec(params, 40, 10, method=method, seed=3))
    assert points == plan(_spec(params, 40, 10, method=method, seed=3))  # seeded
    assert len(set(_keys(points))) == 50
    assert all(isinstance(p["n"], int) and 1 <= p["n"] <= 10**8 for p in points)
    assert space_size([Parameter.model_validate(params[0])]) == 10**8


def test_ten_thousand_trials_from_a_three_million_range_make_no_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Counted, not timed: the old code built the 3e6-element list once per drawn value."""
    built: list[int] = []

    def counting_range(*args: int) -> range:
        r = range(*args)
        built.append(len(r))
        return r

    monkeypatch.setattr(sampling, "range", counting_range, raising=False)
    params = [{"name": "n", "type": "int", "min": 0, "max": 3e6}]
    points = plan(_spec(params, 9_000, 1_000, method="random", seed=1))
    assert len(points) == 10_000 and len(set(_keys(points))) == 10_000
    assert max(built, default=0) <= 10_000  # nothing the size of the space was ever built


def test_huge_float_span_with_a_tiny_step_does_not_overflow() -> None:
    param = {"name": "t", "type": "float", "min": -1e15, "max": 1e15, "step": 1e-300}
    size = space_size([Parameter.model_validate(param)])
    assert size is not None and size > 10**315  # exact, no float overflow
    for method in ("random", "latinHypercube"):
        points = plan(_spec([param], 20, 5, method=method, seed=2))
        assert all(-1e15 <= float(p["t"]) <= 1e15 for p in points)
    with pytest.raises(SpecError) as info:  # a grid of that is still refused, naming the step
        plan(_spec([param], 20, 5, method="grid"))
    assert info.value.field == "parameters[0].step"


def test_a_large_grid_is_strided_without_enumerating() -> None:
    params = [{"name": n, "type": "int", "min": 0, "max": 57} for n in ("a", "b", "c")]
    points = plan(_spec(params, 100, 0, method="grid"))  # 195,112 points, 100 taken
    assert len(set(_keys(points))) == 100 and points[0] == {"a": 0, "b": 0, "c": 0}


@pytest.mark.parametrize(
    ("param", "field"),
    [
        ({"name": "n", "type": "int", "min": 0, "max": float("inf")}, "max"),
        ({"name": "n", "type": "int", "min": float("-inf"), "max": 3}, "min"),
        ({"name": "t", "type": "float", "min": float("nan"), "max": 3}, "min"),
        ({"name": "t", "type": "float", "min": 0, "max": 1, "step": float("nan")}, "step"),
        ({"name": "n", "type": "int", "min": 0, "max": 1e300}, "max"),
        ({"name": "t", "type": "float", "min": -1.7e308, "max": 1.7e308}, "min"),
    ],
)
def test_non_finite_and_absurd_bounds_are_refused_naming_the_field(
    param: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as info:
        _spec([param], 3)
    locs = [e["loc"] for e in info.value.errors()]
    assert ("parameters", 0, field) in locs, locs
