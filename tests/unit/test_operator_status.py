"""Status computation: conditions, availability, model summaries, spec validation messages."""

from __future__ import annotations

import json
from typing import Any

import pytest

from streamml.errors import SpecError
from streamml.operator import reconcile as rc
from streamml.operator import status as st
from streamml.operator.kube import KubeError, _error
from streamml.operator.settings import OperatorSettings
from streamml.vocabulary.conditions import (
    Condition,
    ConditionStatus,
    Observation,
    merge_conditions,
)
from streamml.vocabulary.conditions import dump as dump_conditions
from streamml.vocabulary.modelspec import ModelSpec
from streamml.vocabulary.streammodel import BestModel, StreamModelStatus


def obs(kind: str, status: ConditionStatus, reason: str = "R") -> Observation:
    return Observation(kind, status, reason, "m")


def merge(
    previous: list[Condition] | None, observed: list[Observation], **kw: Any
) -> list[Condition]:
    return merge_conditions(previous or [], observed, order=st.CONDITION_ORDER, **kw)


def test_transition_time_changes_only_on_transitions() -> None:
    first = merge(None, [obs("Available", "False")], generation=1, timestamp="T1")
    assert first[0].last_transition_time == "T1"
    same = merge(first, [obs("Available", "False", "Other")], generation=2, timestamp="T2")
    assert same[0].last_transition_time == "T1"
    assert same[0].reason == "Other" and same[0].observed_generation == 2
    flipped = merge(same, [obs("Available", "True")], generation=2, timestamp="T3")
    assert flipped[0].last_transition_time == "T3"


def test_ready_aggregates_and_orders() -> None:
    parts = [obs("ModelsReady", "True"), obs("Available", "False", "Starting")]
    ready = st.aggregate_ready(parts)
    assert (ready.status, ready.reason) == ("False", "Starting")
    assert st.aggregate_ready([obs("Available", "True")]).status == "True"
    assert st.aggregate_ready([obs("Available", "Unknown")]).status == "False"
    merged = merge(None, [*parts, ready], generation=None, timestamp="T")
    assert [c.type for c in merged] == ["Ready", "Available", "ModelsReady"]
    assert "observedGeneration" not in dump_conditions(merged)[0]


def test_the_status_is_written_as_its_model() -> None:
    """Top-level unset fields are null (they clear the old value); nested ones are absent."""
    specs = [_model("a")]
    section = st.models_section(specs, [st.ModelPoll("a", True, 3, {"RMSE": 1.0})], {"a": "h"})
    status = StreamModelStatus(
        observed_generation=2,
        conditions=merge(None, [obs("Ready", "True")], generation=None, timestamp="T"),
        models=section.models,
        models_ready=section.models_ready,
        samples_learned=section.samples_learned,
        best=section.best,
    )
    doc = st.status_document(status)
    assert doc["url"] is None and doc["observedGeneration"] == 2
    assert doc["conditions"] == [
        {"type": "Ready", "status": "True", "reason": "R", "message": "m",
         "lastTransitionTime": "T"}
    ]  # fmt: skip
    assert doc["models"] == [
        {"name": "a", "ready": True, "samples": 3, "metrics": {"RMSE": 1.0}, "specHash": "h"}
    ]
    assert doc["best"] == {"model": "a", "metric": "RMSE", "value": 1.0}
    assert StreamModelStatus.model_validate(doc) == status


def test_status_patch_writes_only_changes() -> None:
    current = {"url": None, "replicas": 1, "conditions": [{"type": "Ready"}]}
    assert st.status_patch(current, dict(current)) == {}
    assert st.status_patch(current, {**current, "replicas": 0}) == {"replicas": 0}
    assert st.status_patch(None, {"url": "u"}) == {"url": "u"}


def _model(name: str, flavor: str = "regression") -> ModelSpec:
    return ModelSpec.model_validate(
        {"name": name, "flavor": flavor, "pipeline": [{"class": "stats.Mean"}]}
    )


def test_models_section_best_and_bounds() -> None:
    specs = [_model("a"), _model("b"), _model("c"), _model("k", "binary")]
    polls = [
        st.ModelPoll("a", True, 10, {"RMSE": 3.0, "MAE": 2.0}),
        st.ModelPoll("b", True, 10, {"RMSE": 1.5}),
        st.ModelPoll("c", True, 0, {"RMSE": 0.1}),  # learned nothing: not a candidate
        st.ModelPoll("k", True, 5, {"Accuracy": 0.9}),
        st.ModelPoll("gone", True, 99, {"RMSE": 0.0}),  # not declared any more
    ]
    section = st.models_section(specs, polls)
    assert section.best == BestModel(model="b", metric="RMSE", value=1.5)
    assert section.models_ready == "4/4"
    assert section.samples_learned == 25
    assert [m.name for m in section.models] == ["a", "b", "c", "k"]
    assert st.models_section(specs, []).models_ready == "0/4"
    assert st.models_section(specs, []).best is None


def test_metric_cleaning_is_bounded_and_finite() -> None:
    raw: dict[str, Any] = {f"m{i:02d}": i + 0.123456789 for i in range(40)}
    raw["bad"] = float("nan")
    raw["none"] = None
    raw["flag"] = True
    cleaned = st.clean_metrics(raw)
    assert len(cleaned) <= st.MAX_METRICS
    assert all(isinstance(v, float) for v in cleaned.values())
    assert cleaned["m00"] == 0.123457


def test_validation_names_the_field() -> None:
    hostile = {
        "models": [
            {
                "name": "m",
                "pipeline": [
                    {
                        "class": "linear_model.LinearRegression",
                        "params": {"optimizer": {"class": "os.system", "params": {}}},
                    }
                ],
            }
        ]
    }
    with pytest.raises(SpecError) as info:
        rc.validate(hostile)
    assert info.value.field == "spec.models[0].pipeline[0].params.optimizer.class"
    assert "allow-list" in str(info.value)
    with pytest.raises(SpecError) as info:
        rc.validate({"server": {"replicas": 7}})
    assert info.value.field == "spec.server.replicas"
    assert rc.validate({}).server.replicas == 1


def _deployment(generation: int, **status: int) -> dict[str, Any]:
    return {"metadata": {"generation": generation}, "status": status}


@pytest.mark.parametrize(
    ("deployment", "desired", "expected"),
    [
        (None, 1, ("False", "DeploymentMissing")),
        (_deployment(1), 0, ("False", "ScaledToZero")),
        (_deployment(2, observedGeneration=1, updatedReplicas=1), 1, ("False", "RollingOut")),
        (
            _deployment(1, observedGeneration=1, updatedReplicas=1),
            1,
            ("False", "ReplicasUnavailable"),
        ),
        (
            _deployment(1, observedGeneration=1, updatedReplicas=1, availableReplicas=1),
            1,
            ("True", "MinimumReplicasAvailable"),
        ),
    ],
)
def test_availability_from_deployment_status(
    deployment: dict[str, Any] | None, desired: int, expected: tuple[str, str]
) -> None:
    observation, _, _ = rc.deployment_available(deployment, desired)
    assert (observation.status, observation.reason) == expected


def test_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("STREAMML_NAMESPACES", "a, b")
    settings = OperatorSettings()
    assert settings.namespaces == ["a", "b"] and not settings.clusterwide
    assert settings.reach_servers is False  # outside a cluster: never contact Services
    assert OperatorSettings(local_runtime=True).reach_servers is True
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    assert OperatorSettings().reach_servers is True
    assert OperatorSettings(contact_servers=False).reach_servers is False
    with pytest.raises(ValueError, match="status_poll_interval"):
        OperatorSettings(status_poll_interval=0)


def test_refusals_get_a_reason_and_a_capped_doubling_delay() -> None:
    cases = {
        (403, 'services "m" is forbidden: exceeded quota: q, requested: services=1'): (
            "QuotaExceeded"
        ),
        (403, 'admission webhook "deny.example.org" denied the request: no'): "AdmissionDenied",
        (403, "ValidatingAdmissionPolicy 'p' with binding 'b' denied request"): "AdmissionDenied",
        (500, "Internal error occurred: failed to allocate a serviceIP: range is full"): (
            "ServiceIPsExhausted"
        ),
        (403, 'deployments.apps "m" is forbidden: User "op" cannot patch resource'): "Forbidden",
        (503, "etcdserver: request timed out"): "APIServerError",
    }
    for (code, message), reason in cases.items():
        raw = json.dumps({"kind": "Status", "message": message, "reason": "Forbidden"}).encode()
        error = _error(code, raw)
        assert isinstance(error, KubeError) and error.detail == message
        assert rc.refusal_reason(error) == reason, message
    settings = OperatorSettings(retry_delay=5, retry_max_delay=60)
    delays = [rc.retry_delay(settings, n) for n in range(7)]
    assert delays == [5, 10, 20, 40, 60, 60, 60]
    assert rc.retry_delay(settings, 10_000) == 60
