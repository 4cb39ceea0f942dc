"""Predictive spread: a regression's prediction with its predictive standard deviation.

A model whose last step has a predictive distribution (river's ``BayesianLinearRegression``:
``predict_one(x, with_dist=True)`` gives a normal distribution with ``mu`` and ``sigma``) answers
with both; any other model with its plain prediction and no standard deviation. This is what an
adaptive sweep asks about its candidates (``POST /api/predict/batch/`` with
``"uncertainty": true``): looks, not predictions waiting for labels, so nothing is kept.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

from streamml.modelserver.learning import ModelState, SampleError


def final_step(model: Any) -> Any:
    """The estimator at the end of a pipeline (the model itself when it is none)."""
    steps = getattr(model, "steps", None)
    if isinstance(steps, dict) and steps:
        return list(steps.values())[-1]
    return model


def has_distribution(model: Any) -> bool:
    """Whether ``predict_one`` takes ``with_dist`` at the pipeline's end (a river Pipeline
    hands keyword arguments on to its last step)."""
    predict = getattr(final_step(model), "predict_one", None)
    if predict is None:
        return False
    try:
        return "with_dist" in inspect.signature(predict).parameters
    except (TypeError, ValueError):
        return False


def spreads(state: ModelState, samples: list[dict[str, Any]]) -> list[tuple[Any, float | None]]:
    """Each sample's (prediction, predictive standard deviation or None), the model's kind
    looked up once for the batch; SampleError for unusable input (nothing is kept either way)."""
    if state.flavor != "regression" or not has_distribution(state.model):
        return [(state.predict(features).value, None) for features in samples]
    return [_with_dist(state, features) for features in samples]


def _with_dist(state: ModelState, features: dict[str, Any]) -> tuple[Any, float | None]:
    if state.max_features is not None and len(features) > state.max_features:
        state.predict(features)  # its refusal, word for word
    try:
        dist = state.model.predict_one(features, with_dist=True)
        mu, sigma = float(dist.mu), float(dist.sigma)
    except Exception as exc:  # river's error about this input
        raise SampleError(f"model {state.name!r} cannot use these features: {exc}") from exc
    return (mu if math.isfinite(mu) else None), (sigma if math.isfinite(sigma) else None)
