"""The drift watch (``modelserver/drift.py``) and its hook in progressive validation: deterministic
given a stream, silent during its warm-up, one-sided (an error drop is not drift), one outlier is
not drift, the ``reset`` and ``fork`` policies, durability in the snapshot and across a log
replay."""

from __future__ import annotations

import pickle
import random
import zlib

import pytest
from pydantic import ValidationError
from river import linear_model, preprocessing

from streamml.modelserver.drift import DriftWatch, error_of
from streamml.modelserver.learning import ModelState, default_metrics
from streamml.modelserver.records import LearnRecord
from streamml.modelserver.snapshots import load_snapshot, snapshot_blob
from streamml.vocabulary.modelspec import DriftSettings, ModelSpec
from streamml.vocabulary.wire import DeclarativeModelRequest


def errors(
    seed: int, n: int, *, scale_after: float = 1.0, change: int | None = None
) -> list[float]:
    """|N(0, 1)| errors, multiplied by ``scale_after`` from index ``change`` on."""
    rng = random.Random(seed)
    return [
        abs(rng.gauss(0.0, 1.0)) * (scale_after if change is not None and i >= change else 1.0)
        for i in range(n)
    ]


def detections(watch: DriftWatch, stream: list[float]) -> list[int]:
    return [i + 1 for i, e in enumerate(stream) if watch.observe(e)]


def watch(**settings: object) -> DriftWatch:
    made = DriftWatch.from_settings(DriftSettings.model_validate(settings))
    assert made is not None
    return made


def test_the_same_stream_gives_the_same_detections() -> None:
    stream = errors(3, 400, scale_after=6.0, change=200)
    a, b = watch(), watch()
    assert detections(a, stream) == detections(b, stream)

    def key(w: DriftWatch) -> list[tuple[int, int, float]]:
        return [(d.sample, d.change_at, d.magnitude) for d in w.history]

    assert key(a) == key(b)
    assert a.detections >= 1


def test_a_jump_of_the_error_is_detected_soon_after_it() -> None:
    for seed in range(5):
        w = watch()
        found = detections(w, errors(seed, 300, scale_after=6.0, change=150))
        assert found, seed
        assert 150 < found[0] <= 150 + 20  # bounded delay
        last = w.history[0]
        assert 140 <= last.change_at <= 160  # the estimated change point is near the true one (151)
        assert last.magnitude > 3  # errors several times the warm-up's


def test_no_alarm_on_a_steady_stream() -> None:
    for seed in range(10):
        assert detections(watch(), errors(seed, 2000)) == [], seed


def test_an_error_drop_is_not_drift() -> None:
    """One-sided: errors that fall to a tenth (the model got better) raise nothing, while the
    mirror image (errors rising tenfold) does."""
    for seed in range(5):
        assert detections(watch(), errors(seed, 400, scale_after=0.1, change=100)) == []
        assert detections(watch(), errors(seed, 400, scale_after=10.0, change=100)) != []


def test_one_outlier_is_not_drift() -> None:
    stream = errors(1, 300)
    stream[150] = 1e6  # one run slowed by someone else's load
    assert detections(watch(), stream) == []


def test_nothing_is_detected_during_the_warm_up() -> None:
    """The warm-up's errors are the unit: a stream bad from the start is the reference; a jump
    inside the warm-up is not seen; a jump after it is."""
    w = watch(warmup=50)
    assert detections(w, errors(2, 300, scale_after=20.0, change=10)) == []
    assert not w.history and w.armed
    w = watch(warmup=50)
    found = detections(w, errors(2, 300, scale_after=20.0, change=60))
    assert found and found[0] > 60


def test_a_detection_rearms_the_watch_on_the_new_regime() -> None:
    w = watch(warmup=20)
    found = detections(w, errors(4, 600, scale_after=8.0, change=200))
    assert len(found) == 1  # the new level is the new reference: no alarm after alarm
    assert w.armed and w.observed == 600


def test_errors_of_each_flavor() -> None:
    assert error_of(False, 3.0, 1.5) == 1.5
    assert error_of(False, 3.0, None) is None
    assert error_of(True, "a", "a") == 0.0
    assert error_of(True, "a", "b") == 1.0
    assert error_of(False, 1e308, -1e308) is None  # overflows to inf: not scorable


# -- in the model state -----------------------------------------------------------------------


def state(policy: str = "keep", warmup: int = 10) -> ModelState:
    return ModelState(
        name="m",
        flavor="regression",
        model=preprocessing.StandardScaler() | linear_model.LinearRegression(),
        metrics=default_metrics("regression"),
        drift=DriftWatch.from_settings(DriftSettings(warmup=warmup, policy=policy)),  # type: ignore[arg-type]
    )


def stream(n: int = 300, change: int = 150) -> list[tuple[dict[str, float], float]]:
    rng = random.Random(7)
    out = []
    for i in range(n):
        x = rng.uniform(1, 5)
        out.append(({"x": x}, 2 * x + rng.gauss(0, 0.05) + (40.0 if i >= change else 0.0)))
    return out


def test_a_served_model_detects_a_jump_of_its_target() -> None:
    s = state()
    for x, y in stream():
        s.learn(x, y)
    assert s.drift is not None and s.drift.detections >= 1
    assert s.drift.history[0].sample > 150
    assert s.stats()["drift"]["detections"] == s.drift.detections
    assert "drift" not in s.metric_values()  # the riverapi metrics stay numbers only


def test_the_reset_policy_restarts_the_model_from_a_fresh_copy() -> None:
    s = state("reset")
    before = s.model
    for x, y in stream(n=160):
        s.learn(x, y)
        if s.drift is not None and s.drift.detections:
            break
    assert s.drift is not None and s.drift.detections == 1
    assert s.model is not before
    assert s.model["StandardScaler"].counts == {}  # nothing learned since the reset
    kept = state("keep")
    for x, y in stream(n=s.drift.observed):
        kept.learn(x, y)
    assert kept.model["StandardScaler"].counts["x"] == s.drift.observed


def test_the_fork_policy_keeps_the_old_model_frozen_and_scores_both() -> None:
    s = state("fork")
    data = stream()
    learned = 0
    while s.drift is not None and not s.drift.detections:
        s.learn(*data[learned])
        learned += 1
    assert s.drift is not None and s.fork is not None
    at = s.drift.observed
    assert s.fork.sample == at and s.fork.samples == 0
    old = s.fork.before
    assert old["StandardScaler"].counts["x"] == at  # it learned up to the detection
    assert s.model["StandardScaler"].counts == {}  # the served one starts afresh
    probe = {"x": 3.0}
    frozen = old.predict_one(probe)
    for x, y in data[learned : learned + 60]:
        s.learn(x, y)
    assert old.predict_one(probe) == frozen and old["StandardScaler"].counts["x"] == at
    assert s.model["StandardScaler"].counts["x"] == 60
    assert s.fork.samples == 60 and s.stats()["fork"]["samples"] == 60
    # scored on the same 60 new-regime samples (y 40 higher): the old model is the worse
    before, fresh = s.fork.to_data()["before"], s.fork.to_data()["fresh"]
    assert before["MAE"] is not None and fresh["MAE"] is not None
    assert before["MAE"] > 35 > fresh["MAE"]
    # the model's own metrics go on over its whole stream (mostly the old regime), as with
    # keep and reset
    assert s.metric_values()["MAE"] not in (before["MAE"], fresh["MAE"])


def test_replaying_the_log_on_a_snapshot_reproduces_the_detections() -> None:
    """The snapshot holds the watch; the records after it, replayed, find the same detections at
    the same samples (and, with ``reset``, leave the same model)."""
    for policy in ("keep", "reset", "fork"):
        live = state(policy)
        data = stream()
        records: list[LearnRecord] = []
        blob = b""
        for i, (x, y) in enumerate(data):
            if i == 100:
                blob = snapshot_blob(live)
            record = live.learn(x, y)
            assert record is not None
            if i >= 100:
                records.append(LearnRecord.decode(record.encode()))
        replayed = load_snapshot("m", "regression", blob)
        for record in records:
            replayed.replay(record)
        assert live.drift is not None and replayed.drift is not None
        assert live.drift.detections >= 1
        key = [(d.sample, d.change_at, d.magnitude) for d in live.drift.history]
        assert [(d.sample, d.change_at, d.magnitude) for d in replayed.drift.history] == key
        probe = {"x": 3.0}
        assert replayed.model.predict_one(probe) == live.model.predict_one(probe)
        if policy == "fork":
            assert live.fork is not None and replayed.fork is not None
            assert replayed.fork.to_data() == live.fork.to_data()
            assert replayed.fork.before.predict_one(probe) == live.fork.before.predict_one(probe)


def test_a_snapshot_from_before_drift_detection_loads_with_a_fresh_watch() -> None:
    s = state()
    payload = {"model": s.model, "metrics": s.metrics, "learn_stats": s.learn_stats,
               "predict_stats": s.predict_stats, "seen": s.seen}  # fmt: skip
    inner = b"P" + pickle.dumps(payload)
    old = b"Z" + zlib.crc32(inner).to_bytes(4, "big") + inner
    loaded = load_snapshot("m", "regression", old)
    assert loaded.drift is not None and loaded.drift.observed == 0
    assert loaded.drift.warmup == DriftSettings().warmup


def test_switched_off_there_is_no_watch_and_no_stats_field() -> None:
    assert DriftWatch.from_settings(DriftSettings(enabled=False)) is None
    s = state()
    s.drift = None
    for x, y in stream(n=50):
        s.learn(x, y)
    assert "drift" not in s.stats()


# -- the settings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("drift", "field"),
    [
        ({"warmup": "20"}, "warmup"),
        ({"warmup": 2}, "warmup"),
        ({"warmup": 20.5}, "warmup"),
        ({"threshold": 0}, "threshold"),
        ({"threshold": float("nan")}, "threshold"),
        ({"threshold": "25"}, "threshold"),
        ({"delta": -1}, "delta"),
        ({"policy": "split"}, "policy"),
        ({"enabled": "yes"}, "enabled"),
        ({"window": 5}, "window"),
    ],
)
def test_bad_drift_settings_are_refused_naming_the_field(
    drift: dict[str, object], field: str
) -> None:
    body = {"pipeline": [{"class": "linear_model.LinearRegression"}], "drift": drift}
    with pytest.raises(ValidationError) as caught:
        DeclarativeModelRequest.model_validate(body)
    assert caught.value.errors()[0]["loc"][:2] == ("drift", field)
    with pytest.raises(ValidationError):
        ModelSpec.model_validate({"name": "m", **body})


def test_the_inlined_test_detects_exactly_where_rivers_page_hinkley_does() -> None:
    """The watch inlines river.drift.PageHinkley(mode="up") for cost: same stream (in units of a
    warm-up whose errors were all 1.0, capped as the watch caps them), same first detection."""
    from river.drift import PageHinkley

    for seed in range(8):
        for threshold, delta in ((25.0, 0.5), (10.0, 0.1), (50.0, 0.0)):
            w = watch(warmup=10, threshold=threshold, delta=delta)
            for _ in range(10):
                w.observe(1.0)
            ph = PageHinkley(min_instances=1, delta=delta, threshold=threshold, mode="up")
            stream = errors(seed, 400, scale_after=4.0, change=150 + 10 * seed)
            ours = next((i for i, e in enumerate(stream) if w.observe(e)), None)
            cap = threshold / 2
            theirs = None
            for i, e in enumerate(stream):
                ph.update(min(e, cap))
                if ph.drift_detected:
                    theirs = i
                    break
            assert ours == theirs, (seed, threshold, delta)
            assert ours is not None
