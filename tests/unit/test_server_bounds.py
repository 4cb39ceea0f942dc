"""Issue 8, item 2 without a server: the cost model, the memory the server is given, byte-bounded
pending predictions and event buffers that coalesce instead of disconnecting."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamml.errors import CapacityError, SpecError
from streamml.modelserver.capacity import Budget, memory_given
from streamml.modelserver.events import EventHub
from streamml.modelserver.learning import ModelState, SampleError
from streamml.modelserver.pending import PendingPrediction, PendingPredictions, approx_bytes
from streamml.modelserver.records import Prediction
from streamml.modelserver.settings import ServerSettings
from streamml.vocabulary.modelcost import CostLimits, model_cost
from streamml.vocabulary.modelspec import Component, ModelSpec

ROOT = Path(__file__).resolve().parents[2]
LIMITS = CostLimits()


def pipeline(*steps: dict[str, Any]) -> list[Component]:
    return [Component.model_validate(step) for step in steps]


def refused(steps: list[Component], limits: CostLimits = LIMITS) -> str:
    with pytest.raises(SpecError) as caught:
        model_cost(steps, limits)
    return str(caught.value)


BOUNDED = [  # class, parameter, a legal-looking but hostile value, the limit that refuses it
    ("forest.ARFRegressor", "n_models", 51, "max_ensemble_members"),
    ("forest.ARFClassifier", "lambda_value", 100, "max_poisson_lambda"),
    ("feature_extraction.RBFSampler", "n_components", 10**6, "max_components"),
    ("cluster.KMeans", "n_clusters", 5000, "max_components"),
    ("feature_extraction.PolynomialExtender", "degree", 40, "max_polynomial_degree"),
    ("tree.HoeffdingTreeRegressor", "grace_period", 1, "min_grace_period"),
    ("tree.HoeffdingTreeClassifier", "max_depth", 10**6, "max_tree_depth"),
    ("tree.HoeffdingAdaptiveTreeRegressor", "max_size", 1e9, "max_tree_size_mib"),
    ("forest.ARFRegressor", "memory_estimate_period", 10**12, "max_memory_check_period"),
    ("neighbors.KNNRegressor", "n_neighbors", 10**5, "max_neighbors"),
    ("preprocessing.StandardScaler", "window_size", 10**9, "max_window"),
]


@pytest.mark.parametrize(("name", "param", "value", "limit"), BOUNDED)
def test_every_size_parameter_is_bounded(name: str, param: str, value: Any, limit: str) -> None:
    message = refused(pipeline({"class": name, "params": {param: value}}))
    assert f"pipeline[0].{param}" in message and limit in message
    assert str(getattr(LIMITS, limit)) in message


def test_nested_components_are_checked_too() -> None:
    wrapped = {
        "class": "preprocessing.TargetStandardScaler",
        "params": {"regressor": {"class": "forest.ARFRegressor", "params": {"n_models": 500}}},
    }
    message = refused(pipeline(wrapped))
    assert "pipeline[0].regressor.n_models" in message


def test_counts_must_be_positive() -> None:
    message = refused(pipeline({"class": "cluster.KMeans", "params": {"n_clusters": 0}}))
    assert "n_clusters" in message and "at least 1" in message


def test_derived_features_are_bounded() -> None:
    steps = pipeline(
        {"class": "feature_extraction.RBFSampler", "params": {"n_components": 1000}},
        {"class": "feature_extraction.PolynomialExtender", "params": {"degree": 2}},
        {"class": "linear_model.LinearRegression"},
    )
    message = refused(steps)  # 1000 kernel features squared, whatever the input
    assert "pipeline[1] (PolynomialExtender, degree 2)" in message
    assert "max_derived_features=10000" in message
    # an expansion of the inputs alone: accepted, with the inputs capped
    cost = model_cost(steps[1:], LIMITS)
    assert cost.max_features < 150 and cost.derived_features <= LIMITS.max_derived_features


def test_an_expansion_costs_even_when_a_select_follows() -> None:
    steps = pipeline(
        {"class": "feature_extraction.PolynomialExtender", "params": {"degree": 3}},
        {"class": "compose.Select", "params": {"keys": ["a"]}},
        {"class": "linear_model.LinearRegression"},
    )
    assert model_cost(steps, LIMITS).max_features < 40


def test_quadratic_state_is_bounded_by_model_bytes() -> None:
    steps = pipeline({"class": "linear_model.BayesianLinearRegression"})
    small = CostLimits(max_model_bytes=8 * 2**20)
    assert model_cost(steps, small).max_features < model_cost(steps, LIMITS).max_features
    assert model_cost(steps, small).state_bytes <= small.max_model_bytes


def test_the_sample_models_pass_with_room() -> None:
    doc = yaml.safe_load((ROOT / "config/samples/streammodel.yaml").read_text())
    for data in doc["spec"]["models"]:
        spec = ModelSpec.model_validate(data)
        assert model_cost(spec.pipeline, LIMITS).max_features >= 20, spec.name


def test_a_model_refuses_features_beyond_its_bound() -> None:
    from river import linear_model

    state = ModelState("m", "regression", linear_model.LinearRegression(), max_features=3)
    state.learn({"a": 1.0, "b": 2.0}, 1.0)
    state.learn({"a": 1.0, "c": 2.0}, 1.0)
    with pytest.raises(SampleError, match="at most 3 distinct feature names"):
        state.learn({"d": 1.0}, 1.0)
    with pytest.raises(SampleError, match="at most 3 features per sample"):
        state.predict({"a": 1.0, "b": 1.0, "c": 1.0, "e": 1.0})
    assert state.learn_stats.n_calls == 2 and state.known_features == {"a", "b", "c"}
    batch = [({"a": 2.0}, 1.0, None), ({"z": 1.0}, 1.0, None)]
    pending = PendingPredictions(ttl_seconds=9, max_count=9)
    encoded, _, rejected = state.learn_many(batch, pending)
    assert len(encoded) == 1 and rejected[0][0] == 1 and "distinct" in rejected[0][1]


def test_limits_come_from_settings_and_options() -> None:
    settings = ServerSettings(no_auth=True, memory_bytes=2**30, limits={"max_components": 7})
    limits = settings.cost_limits()
    assert limits.max_components == 7
    assert limits.max_model_bytes == 2**30 // 8  # a share of the memory given
    given = ServerSettings(no_auth=True, memory_bytes=2**30, limits={"max_model_bytes": 2**21})
    assert given.cost_limits().max_model_bytes == 2**21


def test_memory_given_reads_the_cgroup(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       8000000 kB\n")
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "memory.max").write_text("536870912\n")
    assert memory_given(v2, meminfo) == 512 * 2**20
    (v2 / "memory.max").write_text("max\n")
    assert memory_given(v2, meminfo) == 8000000 * 1024
    v1 = tmp_path / "v1"
    (v1 / "memory").mkdir(parents=True)
    (v1 / "memory" / "memory.limit_in_bytes").write_text("268435456\n")
    assert memory_given(v1, meminfo) == 256 * 2**20
    (v1 / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # no limit
    assert memory_given(v1, meminfo) == 8000000 * 1024
    budget = Budget(512 * 2**20)
    assert budget.pending_bytes == 64 * 2**20 and budget.sse_client_bytes == 4 * 2**20


def test_pending_predictions_are_bounded_in_bytes() -> None:
    features = {f"f{i}": float(i) for i in range(100)}
    size = approx_bytes(features)
    pending = PendingPredictions(
        ttl_seconds=60, max_count=1000, max_bytes=size * 3, clock=lambda: 0.0
    )
    for i in range(3):
        pending.add(
            "m",
            f"p{i}",
            PendingPrediction(features, Prediction(1.0), 0.0, pending.room_for(features)),
        )
    with pytest.raises(CapacityError, match="pending_max_bytes"):
        pending.room_for(features)
    with pytest.raises(CapacityError):
        pending.room_for_many([{"x": 1.0}] * 2)
    assert pending.take("m", "p0") is not None
    assert pending.room_for(features) == size  # room again
    assert len(pending) == 2 and pending.bytes == 2 * size


def frames(hub_items: list[bytes | None]) -> list[dict[str, Any]]:
    return [json.loads(f.split(b"data: ", 1)[1]) for f in hub_items if f]


async def test_a_batch_larger_than_the_buffer_is_coalesced() -> None:
    hub = EventHub(4, client_bytes=10_000, total_bytes=30_000)
    reader = hub.subscribe("events", None)
    hub.publish_many("events", ({"i": i} for i in range(100)), event="learn")
    got = [await reader.get() for _ in range(5)]
    assert [d.get("i") for d in frames(got)[:4]] == [0, 1, 2, 3]
    assert frames(got)[4] == {"topic": "events", "skipped": 96}
    assert b"event: skipped" in (got[4] or b"")
    hub.publish_many("events", ({"i": i} for i in range(100, 200)), event="learn")  # it read
    assert not reader.dropped and hub.dropped_total == 0 and hub.skipped_total == 96 + 96


async def test_a_client_reading_nothing_is_dropped_at_its_second_gap() -> None:
    hub = EventHub(2, client_bytes=10_000, total_bytes=30_000)
    stuck = hub.subscribe("events", None)
    hub.publish_many("events", ({"i": i} for i in range(10)))
    hub.publish_many("events", ({"i": i} for i in range(10)))
    assert stuck.dropped and hub.dropped_total == 1
    assert await asyncio.wait_for(stuck.get(), 1) is None


def test_stream_clients_are_bounded_by_total_bytes() -> None:
    hub = EventHub(4, client_bytes=10_000, total_bytes=20_000)
    hub.subscribe("events", None)
    hub.subscribe("metrics", None)
    with pytest.raises(CapacityError, match="sse_total_bytes"):
        hub.subscribe("events", None)


def test_a_frame_larger_than_a_client_buffer_is_a_gap_not_a_disconnect() -> None:
    hub = EventHub(4, client_bytes=2_000, total_bytes=20_000)
    reader = hub.subscribe("events", None)
    hub.publish("events", {"blob": "x" * 5_000})
    assert list(reader.frames) == [1] and not reader.dropped


def test_expensive_models_snapshot_with_the_yielding_pickler() -> None:
    import pickle

    from river import compose, forest, linear_model

    from streamml.modelserver.snapshots import load_snapshot, snapshot_blob

    model = forest.ARFRegressor(n_models=3, seed=1)
    state = ModelState("f", "regression", model, max_features=5, heavy=True)
    for i in range(60):
        state.learn({"a": float(i), "b": float(i % 3)}, float(i))
    blob = snapshot_blob(state)
    assert blob[:1] == b"Z" and blob[5:6] == b"P"  # checksummed; plain pickle format inside
    loaded = load_snapshot("f", "regression", blob)
    assert loaded.predict({"a": 3.0, "b": 0.0}) == state.predict({"a": 3.0, "b": 0.0})
    assert loaded.known_features == {"a", "b"} and loaded.max_features == 5 and loaded.heavy
    bayes = ModelState("b", "regression", linear_model.BayesianLinearRegression(), heavy=True)
    bayes.learn({"a": 1.0}, 1.0)  # numpy state: protocol 5 buffers trip the pure pickler
    assert pickle.loads(snapshot_blob(bayes)[6:])["model"].predict_one({"a": 1.0}) is not None
    # an uploaded pickle with a lambda: dill's extensions of the pickler take it; it loads back
    lam = compose.FuncTransformer(lambda x: {"d": 2 * x["x"]}) | linear_model.LinearRegression()
    back = load_snapshot("l", "regression", snapshot_blob(ModelState("l", "regression", lam)))
    assert back.model.transform_one({"x": 2.0}) == {"d": 4.0}


def test_snapshots_without_the_cost_fields_still_load() -> None:
    """A blob written before the cost model (no max_features/known_features/heavy) loads:
    unbounded and treated as expensive."""
    import pickle

    from river import linear_model

    from streamml.modelserver.snapshots import load_snapshot

    state = ModelState("o", "regression", linear_model.LinearRegression())
    state.learn({"a": 1.0}, 1.0)
    payload = {
        "model": state.model,
        "metrics": state.metrics,
        "learn_stats": state.learn_stats,
        "predict_stats": state.predict_stats,
        "seen": state.seen,
    }
    old = b"P" + pickle.dumps(payload)  # the format before checksums and the cost fields
    loaded = load_snapshot("o", "regression", old)
    assert loaded.max_features is None and loaded.known_features == set() and loaded.heavy
    assert loaded.predict({"a": 1.0}) == state.predict({"a": 1.0})
