"""Declarative specs to river objects; river objects to the old server's model JSON."""

from __future__ import annotations

from typing import Any

import pytest
from river import compose, linear_model, preprocessing

from streamml.errors import SpecError
from streamml.modelserver.components import build_component, build_pipeline, model_json
from streamml.vocabulary.modelspec import Component


def spec(*steps: dict[str, Any]) -> list[Component]:
    return [Component.model_validate(step) for step in steps]


def test_pipeline_with_nested_optimizer_and_feature_engineering() -> None:
    model = build_pipeline(
        spec(
            {"class": "feature_extraction.PolynomialExtender", "params": {"degree": 2}},
            {"class": "preprocessing.StandardScaler"},
            {
                "class": "linear_model.LinearRegression",
                "params": {
                    "intercept_lr": 0.1,
                    "optimizer": {"class": "optim.SGD", "params": {"lr": 0.05}},
                },
            },
        ),
        "regression",
    )
    assert isinstance(model, compose.Pipeline)
    data = model_json(model)
    assert list(data) == ["PolynomialExtender", "StandardScaler", "LinearRegression"]
    assert data["LinearRegression"]["optimizer"] == [
        "SGD",
        {"lr": ["Constant", {"learning_rate": 0.05}]},
    ]
    model.learn_one({"x": 1.0, "y": 2.0}, 3.0)
    assert isinstance(model.predict_one({"x": 1.0, "y": 2.0}), float)


def test_model_json_matches_the_prototype() -> None:
    model = preprocessing.StandardScaler() | linear_model.LinearRegression(intercept_lr=0.1)
    data = model_json(model)
    assert data["StandardScaler"]["with_std"] is True
    assert data["LinearRegression"] == {
        "optimizer": ["SGD", {"lr": ["Constant", {"learning_rate": 0.01}]}],
        "loss": ["Squared"],
        "l2": 0.0,
        "l1": 0.0,
        "intercept_init": 0.0,
        "intercept_lr": ["Constant", {"learning_rate": 0.1}],
        "clip_gradient": 1000000000000.0,
        "initializer": ["Zeros"],
    }
    assert model_json(linear_model.PARegressor(C=0.01)) == {
        "PARegressor": {"C": 0.01, "mode": 1, "eps": 0.1, "learn_intercept": True}
    }


@pytest.mark.parametrize(
    ("step", "words"),
    [
        (
            {"class": "linear_model.LinearRegression", "params": {"lr": 1}},
            ["linear_model.LinearRegression", "'lr'"],
        ),
        (
            {"class": "linear_model.LinearRegression", "params": {"l2": "big"}},
            ["'l2'", "wrong type"],
        ),
        ({"class": "linear_model.LinearRegression", "params": {"optimizer": 0.1}}, ["'optimizer'"]),
        ({"class": "preprocessing.StandardScaler", "params": {"with_std": "yes"}}, ["with_std"]),
        (
            {
                "class": "linear_model.LinearRegression",
                "params": {"optimizer": {"class": "optim.SGD", "params": {"lr": "fast"}}},
            },
            ["optim.SGD", "'lr'"],
        ),
        ({"class": "feature_extraction.PolynomialExtender", "params": {"degree": 1.5}}, ["degree"]),
        ({"class": "preprocessing.StandardScaler"}, ["predict_one"]),
    ],
)
def test_bad_specs_name_class_and_parameter(step: dict[str, Any], words: list[str]) -> None:
    with pytest.raises(SpecError) as info:
        build_pipeline(spec(step), "regression")
    for word in words:
        assert word in str(info.value)


def test_only_allow_listed_classes() -> None:
    with pytest.raises(ValueError, match="allow-list"):
        Component.model_validate({"class": "compose.FuncTransformer"})
    with pytest.raises(ValueError, match="allow-list"):
        Component.model_validate(
            {
                "class": "linear_model.LinearRegression",
                "params": {"optimizer": {"class": "os.system"}},
            }
        )


def test_flavor_needs() -> None:
    with pytest.raises(SpecError, match="predict_proba_one"):
        build_pipeline(spec({"class": "linear_model.LinearRegression"}), "binary")
    with pytest.raises(SpecError, match="flavor"):
        build_pipeline(spec({"class": "linear_model.LinearRegression"}), "teapot")
    assert build_pipeline(spec({"class": "linear_model.LogisticRegression"}), "binary")


def test_variadic_parameters() -> None:
    select = build_component(
        Component.model_validate({"class": "compose.Select", "params": {"keys": ["x", "y"]}})
    )
    assert select.transform_one({"x": 1, "y": 2, "z": 3}) == {"x": 1, "y": 2}


def test_real_valued_parameters_with_integer_defaults_take_floats() -> None:
    # river writes BayesianLinearRegression(alpha=1, beta=1): real numbers, not counts.
    model = build_pipeline(
        spec({"class": "linear_model.BayesianLinearRegression", "params": {"alpha": 0.01}}),
        "regression",
    )
    model.learn_one({"x": 1.0}, 2.0)
    assert isinstance(model.predict_one({"x": 1.0}), float)
    # ...while a count with an integer default stays an integer.
    with pytest.raises(SpecError, match="degree"):
        build_pipeline(
            spec(
                {"class": "feature_extraction.PolynomialExtender", "params": {"degree": 2.0}},
                {"class": "linear_model.LinearRegression"},
            ),
            "regression",
        )
