"""The learning core without HTTP: progressive validation, stats, identifiers, pending, replay."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import orjson
import pytest
from river import linear_model, metrics, preprocessing

from streamml.errors import NotFoundError, SpecError
from streamml.modelserver.callstats import CallStats, human_duration
from streamml.modelserver.learning import ModelState, SampleError, Taken, default_metrics
from streamml.modelserver.pending import PendingPrediction, PendingPredictions
from streamml.modelserver.records import LearnRecord, Prediction
from streamml.modelserver.registry import PredictionIds, Registry

X = [{"x": 8, "y": 16, "z": 8}, {"x": 8, "y": 8, "z": 16}, {"x": 8, "y": 14, "z": 8}]
Y = [120.0, 150.0, 124.0]


def regression(name: str = "lin") -> ModelState:
    model = preprocessing.StandardScaler() | linear_model.LinearRegression(intercept_lr=0.1)
    return ModelState(name, "regression", model, default_metrics("regression"))


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (1950828, "1ms950μs828ns"),
        (851788, "851μs788ns"),
        (0, "0ns"),
        (155002, "155μs2ns"),
        (2_000_000_005, "2s5ns"),
    ],
)
def test_human_duration(ns: int, text: str) -> None:
    assert human_duration(ns) == text


def test_call_stats_shape() -> None:
    stats = CallStats()
    stats.record(1000)
    stats.record(3000)
    data = stats.to_data()
    assert data["n_calls"] == 2 and data["mean_duration"] == 2000
    assert data["mean_duration_human"] == "2μs"
    assert 1000 < data["ewm_duration"] < 3000


def test_progressive_validation_matches_river() -> None:
    state = regression()
    reference = preprocessing.StandardScaler() | linear_model.LinearRegression(intercept_lr=0.1)
    mae = metrics.MAE()
    for x, y in zip(X, Y, strict=True):
        mae.update(y, reference.predict_one(x))  # predict first, then learn
        reference.learn_one(x, y)
        assert state.learn(x, y) is not None
    assert state.metric_values()["MAE"] == pytest.approx(mae.get())
    assert set(state.metric_values()) == {"MAE", "RMSE", "SMAPE", "R2"}
    assert state.predict(X[0]).value == pytest.approx(reference.predict_one(X[0]))
    assert state.learn_stats.n_calls == 3


def test_zero_prediction_counts() -> None:
    state = ModelState("z", "regression", linear_model.LinearRegression(), [metrics.MAE()])
    state.learn({"x": 1.0}, 4.0)  # an untrained linear model predicts exactly 0.0
    assert state.metric_values()["MAE"] == 4.0


def test_bad_samples_change_nothing() -> None:
    state = regression()
    with pytest.raises(SampleError, match="lin"):
        state.learn({"x": "eight"}, 1.0)
    with pytest.raises(SampleError, match="ground_truth"):
        state.learn({"x": 1}, None)
    with pytest.raises(SampleError, match="finite"):
        state.learn({"x": 1}, float("nan"))
    assert state.learn_stats.n_calls == 0
    assert state.metric_values()["MAE"] == 0.0


def test_identifiers_are_idempotent_within_the_window() -> None:
    registry = Registry(pending_ttl=60, pending_max=10, idempotency_window=2)
    state = registry.models["lin"] = regression()
    assert registry.learn(state, X[0], Y[0], "a") is not None
    assert registry.learn(state, X[0], Y[0], "a") is None
    registry.learn(state, X[1], Y[1], "b")
    registry.learn(state, X[2], Y[2], "c")  # window of 2: "a" is forgotten
    assert list(state.seen) == ["b", "c"]
    assert state.learn_stats.n_calls == 3


def test_label_joins_the_stored_prediction() -> None:
    registry = Registry(pending_ttl=60, pending_max=10, idempotency_window=100)
    state = registry.models["lin"] = regression()
    registry.learn(state, X[0], Y[0])
    value, identifier = registry.predict(state, X[1], None)
    assert len(identifier) == 36
    record = registry.label(state, identifier, Y[1])
    assert record is not None and record.prediction == Prediction(value)
    assert registry.label(state, identifier, Y[1]) is None  # already learned
    with pytest.raises(NotFoundError):
        registry.label(state, "unknown", 1.0)


def test_pending_predictions_bounded_by_count_and_age() -> None:
    now = [1000.0]
    pending = PendingPredictions(ttl_seconds=10, max_count=3, clock=lambda: now[0])
    for i in range(5):
        pending.add("m", str(i), PendingPrediction({}, Prediction(1.0), now[0]))
    assert len(pending) == 3 and pending.take("m", "0") is None
    now[0] += 11
    assert pending.take("m", "4") is None  # expired
    pending.add("m", "new", PendingPrediction({}, Prediction(1.0), now[0]))
    assert pending.expire() == 2  # "2" and "3"
    assert len(pending) == 1 and pending.take("m", "new") is not None


def test_replay_reproduces_state() -> None:
    live = regression()
    records = [live.learn(x, y, f"id{i}") for i, (x, y) in enumerate(zip(X, Y, strict=True))]
    encoded = orjson.dumps([r.encode() for r in records if r is not None])
    replayed = regression()
    for item in orjson.loads(encoded):
        replayed.replay(LearnRecord.decode(item))
    assert replayed.metric_values() == live.metric_values()
    assert replayed.learn_stats == live.learn_stats
    assert replayed.seen == live.seen
    assert replayed.predict(X[0]) == live.predict(X[0])


def test_classifier_probabilities_survive_the_log() -> None:
    model = linear_model.LogisticRegression()
    state = ModelState("clf", "binary", model, default_metrics("binary"))
    for i in range(20):
        state.learn({"x": float(i)}, i % 2 == 0)
    prediction = state.predict({"x": 3.0})
    assert isinstance(prediction.value, bool) and prediction.proba
    decoded = Prediction.decode(orjson.loads(orjson.dumps(prediction.encode())))
    assert decoded == prediction
    assert set(state.metric_values()) == {"Accuracy", "LogLoss", "Precision", "Recall", "F1"}


def test_registry_targets() -> None:
    registry = Registry(pending_ttl=60, pending_max=10, idempotency_window=100)
    with pytest.raises(NotFoundError):
        registry.targets(None, None)
    registry.models["a"] = regression("a")
    registry.models["b"] = regression("b")
    assert [s.name for s in registry.targets(None, None)] == ["a", "b"]
    assert [s.name for s in registry.targets(None, ["b", "b"])] == ["b"]
    with pytest.raises(SpecError):
        registry.targets("a", ["b"])
    with pytest.raises(NotFoundError, match="'c'"):
        registry.targets("c", None)


def test_list_predictions_and_clusterers() -> None:
    assert Prediction.decode(orjson.loads(orjson.dumps(Prediction([1, 2]).encode()))) == Prediction(
        [1, 2]
    )
    from river import cluster

    state = ModelState("k", "cluster", cluster.KMeans(n_clusters=2, seed=1), [])
    assert state.learn({"x": 1.0}, 5.0) is not None  # the target is ignored, not an error
    assert isinstance(state.predict({"x": 1.0}).value, int)


def test_huge_values_do_not_break_metrics_or_replay() -> None:
    state = regression()
    records = [state.learn({"x": 1.0}, 1e300), state.learn({"x": 2.0}, -1e300)]
    encoded, _, rejected = state.learn_many(
        [({"x": 3.0}, 1e300, None)], PendingPredictions(ttl_seconds=1, max_count=1)
    )
    assert not rejected and len(encoded) == 1
    replayed = regression()
    for record in [*records, LearnRecord.decode(encoded[0])]:
        assert record is not None
        replayed.replay(record)
    assert replayed.learn_stats.n_calls == 3
    assert replayed.metric_values().keys() == state.metric_values().keys()


def test_prediction_ids_are_distinct_version_4_uuids_across_pool_refills() -> None:
    ids = PredictionIds()
    made = [ids() for _ in range(3 * PredictionIds.POOL_BYTES // 16 + 7)]
    assert len(set(made)) == len(made)
    for text in made[:: len(made) // 50]:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


@pytest.mark.parametrize("before", [0, 1, 5])
@pytest.mark.parametrize("count", [1, 2, 37])
def test_record_many_equals_single_records(before: int, count: int) -> None:
    one, many = CallStats(), CallStats()
    for ns in range(1_000, 1_000 + 333 * before, 333):
        one.record(ns)
        many.record(ns)
    for _ in range(count):
        one.record(4_321)
    many.record_many(4_321, count)
    assert (many.n_calls, many.total_ns, many.ewm_ns) == (one.n_calls, one.total_ns, one.ewm_ns)


def classifier() -> ModelState:
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    return ModelState("clf", "binary", model, default_metrics("binary"))


@pytest.mark.parametrize(
    ("make", "ys"), [(regression, Y), (classifier, [True, False, True])], ids=["reg", "binary"]
)
def test_learn_many_without_metrics_learns_only_and_replays_the_same(
    make: Callable[[], ModelState], ys: list[object]
) -> None:
    state = make()
    pending = PendingPredictions(ttl_seconds=60, max_count=10)
    state.learn_many([(X[0], ys[0], None)], pending)  # scored: the metrics move
    scored = state.metric_values()
    model_before = state.predict(X[1])
    waiting = state.predict(X[2])
    pending.add(state.name, "p-1", PendingPrediction(X[2], waiting, pending.clock()))
    encoded, duplicates, rejected = state.learn_many(
        [(x, y, f"b-{i}") for i, (x, y) in enumerate(zip(X, ys, strict=True))]
        + [(X[2], ys[2], "p-1")],
        pending,
        update_metrics=False,
    )
    assert (len(encoded), duplicates, rejected) == (4, 0, [])
    assert state.metric_values() == scored  # even the labelled prediction is not scored
    assert state.learn_stats.n_calls == 5
    assert state.predict(X[1]) != model_before
    assert pending.take(state.name, "p-1") is None  # the waiting prediction was used up
    replayed = make()
    replayed.learn_many([(X[0], ys[0], None)], PendingPredictions(ttl_seconds=1, max_count=1))
    for item in encoded:
        replayed.replay(LearnRecord.decode(orjson.loads(orjson.dumps(item))))
    assert replayed.metric_values() == scored
    assert replayed.predict(X[1]) == state.predict(X[1])


def test_regressors_predict_plain_floats_so_their_labels_are_accepted() -> None:
    # PARegressor returns numpy.float64: its stored prediction was refused at label time
    model = linear_model.PARegressor(C=0.01, mode=2, eps=0.1, learn_intercept=False)
    state = ModelState("pa", "regression", model, default_metrics("regression"))
    registry = Registry(pending_ttl=60, pending_max=10, idempotency_window=100)
    for x, y in zip(X, Y, strict=True):
        registry.learn(state, x, y)
    value, identifier = registry.predict(state, X[0], None)
    assert type(value) is float
    encoded, _, _ = state.learn_many([(X[1], Y[1], None)], registry.pending)
    assert type(encoded[0][2]) is float
    assert registry.label(state, identifier, 130.0) is not None


def test_a_models_own_non_finite_prediction_is_not_blamed_on_the_client() -> None:
    state = ModelState("lin", "regression", linear_model.LinearRegression(), [])
    state.metrics = default_metrics("regression")
    state.model.learn_one({"x": 1e308}, 1.0)  # past the wire's bounds: weights are inf/NaN now
    registry = Registry(pending_ttl=60, pending_max=10, idempotency_window=100)
    _, identifier = registry.predict(state, {"x": 1.0}, None)
    record = registry.label(state, identifier, 1.0)
    assert record is not None and record.prediction is not None
    assert record.prediction.value is None  # not scored, not an error
    with pytest.raises(SampleError, match="prediction must be a finite number"):
        registry.learn(state, {"x": 1.0}, 1.0, prediction=float("nan"))  # the client's own


def test_a_refused_label_or_learn_leaves_the_waiting_prediction() -> None:
    state = regression()
    registry = Registry(pending_ttl=60, pending_max=10, idempotency_window=100)
    _, first = registry.predict(state, X[0], None)
    with pytest.raises(SampleError):
        registry.label(state, first, "abc")
    with pytest.raises(SampleError):
        registry.learn(state, X[0], "abc", first)
    encoded, _, rejected = state.learn_many([(X[0], "abc", first)], registry.pending)
    assert not encoded and rejected
    taken: Taken = []
    assert registry.label(state, first, 120.0, taken) is not None
    assert len(taken) == 1
