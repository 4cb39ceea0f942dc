"""Drift as the operator and the sweep engine report it: the StreamModel's ``Drift`` condition and
``DriftDetected`` event (once per new detection), the model digest unchanged for a spec without
drift settings, and the sweep status placing each detection on its training runs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from streamml.operator import status as st
from streamml.operator.reconcile import model_hash
from streamml.sweep.engine import ModelProgress, SweepEngine
from streamml.sweep.jobs import JobContext
from streamml.sweep.state import FileStore
from streamml.vocabulary.lammpssweep import LammpsSweepSpec
from streamml.vocabulary.modelspec import ModelSpec
from streamml.vocabulary.replies import DriftStats


def drift_stats(detections: list[tuple[int, int, float]], observed: int = 100) -> DriftStats:
    history = [
        {"sample": s, "changeAtSample": c, "time": 1_790_000_000.0 + s, "magnitude": m}
        for s, c, m in detections
    ]
    return DriftStats.model_validate(
        {
            "policy": "keep",
            "warmup": 20,
            "threshold": 25.0,
            "delta": 0.5,
            "observed": observed,
            "armed": True,
            "detections": len(history),
            "last": history[-1] if history else None,
            "history": history,
        }
    )


def test_no_detection_is_no_drift_in_status() -> None:
    assert st.model_drift(None) is None
    assert st.model_drift(drift_stats([])) is None
    obs = st.drift_observation([st.ModelPoll("a", True, 5)])
    assert (obs.type, obs.status, obs.reason) == ("Drift", "False", "NoDrift")


def test_a_detection_is_the_drift_condition_naming_model_when_and_magnitude() -> None:
    drift = st.model_drift(drift_stats([(60, 52, 4.25)]))
    assert drift is not None
    assert (drift.detections, drift.sample, drift.change_at_sample) == (1, 60, 52)
    assert drift.time.endswith("Z") and drift.magnitude == 4.25
    polls = [st.ModelPoll("quiet", True, 80), st.ModelPoll("cost", True, 80, {}, drift)]
    obs = st.drift_observation(polls)
    assert (obs.status, obs.reason) == ("True", "DriftDetected")
    assert "cost" in obs.message and "sample 60" in obs.message and drift.time in obs.message
    assert "x4.25" in obs.message and "quiet" not in obs.message
    # it is news, not readiness: Ready is computed without it
    section = st.models_section([ModelSpec.model_validate(m) for m in specs()], polls)
    assert section.models[1].drift == drift
    assert st.carry_over([m.model_dump(by_alias=True) for m in section.models])[0][1].drift == drift


def specs() -> list[dict[str, Any]]:
    pipeline = [{"class": "linear_model.LinearRegression"}]
    return [{"name": "quiet", "pipeline": pipeline}, {"name": "cost", "pipeline": pipeline}]


def test_an_event_once_per_new_detection() -> None:
    events: list[tuple[str, str, str]] = []

    def emit(kind: str, reason: str, message: str) -> None:
        events.append((kind, reason, message))

    one = st.model_drift(drift_stats([(60, 52, 4.0)]))
    two = st.model_drift(drift_stats([(60, 52, 4.0), (130, 121, 3.0)]))
    polled = [st.ModelPoll("cost", True, 80, {}, one)]
    st.announce_drift([], polled, emit)
    assert [(k, r) for k, r, _ in events] == [("Warning", "DriftDetected")]
    assert "model cost" in events[0][2]
    seen = [{"name": "cost", "drift": one.model_dump(by_alias=True) if one else None}]
    st.announce_drift(seen, polled, emit)  # the same detection polled again: no new event
    assert len(events) == 1
    st.announce_drift(seen, [st.ModelPoll("cost", True, 150, {}, two)], emit)
    assert len(events) == 2 and "sample 130" in events[1][2]


def test_the_model_digest_of_a_spec_without_drift_settings_is_unchanged() -> None:
    """Declared before drift settings existed, a model keeps its digest (the operator would
    otherwise delete and recreate every model on upgrade); with settings, it changes."""
    data = {
        "name": "m",
        "flavor": "regression",
        "pipeline": [{"class": "linear_model.LinearRegression"}],
    }
    spec = ModelSpec.model_validate(data)
    before = spec.model_dump(mode="json", by_alias=True, exclude={"name", "drift"})
    old_digest = hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()[:16]
    assert model_hash(spec) == old_digest
    assert model_hash(ModelSpec.model_validate({**data, "drift": {"warmup": 30}})) != old_digest


# -- the sweep status -----------------------------------------------------------------------------


def engine(tmp_path: Path) -> SweepEngine:
    spec = LammpsSweepSpec.model_validate(
        {
            "streamModelRef": {"name": "sm"},
            "parameters": [{"name": "nx", "type": "int", "min": 4, "max": 8}],
            "trials": 40,
            "scheduler": {"type": "local"},
        }
    )
    ctx = JobContext(server="http://127.0.0.1:1", workdir=tmp_path, identity="t", models=None)
    return SweepEngine("s", spec, None, FileStore(tmp_path / "state.json"), ctx)  # type: ignore[arg-type]


async def test_the_sweep_places_each_detection_on_its_training_runs(tmp_path: Path) -> None:
    """The model had scored 10 samples before this sweep: its sample 45 is the sweep's run 35."""
    polls: list[dict[str, ModelProgress]] = [
        {"cost": ModelProgress(30, {"MAE": 1.0}, drift_stats([], observed=30))},
        {"cost": ModelProgress(48, {"MAE": 2.0}, drift_stats([(45, 41, 5.0)], observed=48))},
        {"cost": ModelProgress(50, {"MAE": 2.0}, drift_stats([(45, 41, 5.0)], observed=50))},
    ]
    e = engine(tmp_path)

    async def metrics(_: object) -> dict[str, ModelProgress]:
        return polls.pop(0)

    e.metrics = metrics
    for succeeded in (20, 38, 40):
        e.status.succeeded = succeeded
        await e._update_curve()
    assert len(e.status.drift) == 1  # polled twice, noted once
    note = e.status.drift[0]
    assert (note.model, note.detected_at_sample, note.change_at_sample) == ("cost", 45, 41)
    assert (note.detected_after_trials, note.first_trial_after) == (35, 31)
    assert note.magnitude == 5.0
    dumped = e.status.model_dump(by_alias=True, mode="json")["drift"][0]
    assert {"detectedAtSample", "firstTrialAfter", "changeAtSample"} <= set(dumped)
