"""The drift hook's inline path in progressive validation (``ModelState.validate``): a regressor's
float residual goes straight into the watch, without ``_watch``/``error_of``. It must feed the
watch exactly what ``error_of`` gives for each scored learn, single and batch alike, and leave
the other cases (a fork, a non-float prediction) to ``_watch``."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

from river import linear_model, preprocessing

from streamml.modelserver.drift import DriftWatch, error_of
from streamml.modelserver.learning import ModelState, default_metrics
from streamml.vocabulary.modelspec import DriftSettings


class NoPending:
    def take(self, model: str, identifier: str) -> None:
        return None

    def restore(self, model: str, identifier: str, item: Any) -> None:
        raise AssertionError("nothing was taken")


def state(policy: str = "keep") -> ModelState:
    return ModelState(
        name="m",
        flavor="regression",
        model=preprocessing.StandardScaler() | linear_model.LinearRegression(),
        metrics=default_metrics("regression"),
        drift=DriftWatch.from_settings(DriftSettings(warmup=10, policy=policy)),  # type: ignore[arg-type]
    )


def samples(n: int = 400) -> list[tuple[dict[str, float], float]]:
    rng = random.Random(11)
    out = []
    for i in range(n):
        x = rng.uniform(1, 5)
        jump = 40.0 if i >= 150 else 0.0  # a regime change: a detection
        out.append(({"x": x}, 2 * x + rng.gauss(0, 0.05) + jump))
    return out


def watch_state(watch: DriftWatch | None) -> dict[str, Any]:
    """Everything of a watch but the wall-clock time of its detections."""
    assert watch is not None
    data = {f.name: getattr(watch, f.name) for f in dataclasses.fields(watch)}
    data["history"] = [(d.sample, d.change_at, d.magnitude) for d in watch.history]
    return data


def test_single_learns_feed_the_watch_what_error_of_gives() -> None:
    s = state()
    reference = DriftWatch.from_settings(DriftSettings(warmup=10))
    assert reference is not None
    for x, y in samples():
        record = s.learn(x, y)
        assert record is not None and record.prediction is not None
        error = error_of(False, record.ground_truth, record.prediction.value)
        assert error is not None
        reference.observe(error)
    assert s.drift is not None and s.drift.detections >= 1
    assert watch_state(s.drift) == watch_state(reference)


def test_a_batch_detects_as_the_same_single_learns_do() -> None:
    for policy in ("keep", "reset", "fork"):
        single, batch = state(policy), state(policy)
        for x, y in samples():
            single.learn(x, y)
        encoded, duplicates, rejected = batch.learn_many(
            [(x, y, None) for x, y in samples()], NoPending()
        )
        assert len(encoded) == 400 and not duplicates and not rejected
        assert single.drift is not None and single.drift.detections >= 1, policy
        assert watch_state(batch.drift) == watch_state(single.drift), policy
        assert batch.metric_values() == single.metric_values(), policy
        if policy == "fork":
            assert batch.fork is not None and single.fork is not None
            assert batch.fork.to_data() == single.fork.to_data()


class IntModel:
    """A regressor whose predictions are ints (as some of river's may be)."""

    def predict_one(self, x: dict[str, float]) -> int:
        return 3

    def learn_one(self, x: dict[str, float], y: float) -> None:
        return None


def test_a_prediction_that_is_not_a_float_takes_the_general_path() -> None:
    s = state()
    s.model = IntModel()
    reference = DriftWatch.from_settings(DriftSettings(warmup=10))
    assert reference is not None
    for x, y in samples(60):
        record = s.learn(x, y)
        assert record is not None and record.prediction is not None
        assert type(record.prediction.value) is int
        error = error_of(False, y, record.prediction.value)
        assert error is not None
        reference.observe(error)
    assert s.drift is not None and s.drift.observed == 60
    assert watch_state(s.drift) == watch_state(reference)
