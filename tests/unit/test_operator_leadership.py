"""Leader election's pure parts: which Lease, where, and the settings' order of durations."""

from __future__ import annotations

import pytest

from streamml.operator.leadership import lease_name, lease_namespaces
from streamml.operator.settings import LeaderElectionSettings, OperatorSettings


def test_one_lease_per_scope(monkeypatch: pytest.MonkeyPatch) -> None:
    conf = LeaderElectionSettings()
    assert lease_name(conf, []) == "streamml-operator"
    scoped = lease_name(conf, ["b", "a"])
    assert scoped.startswith("streamml-operator-") and scoped == lease_name(conf, ["a", "b"])
    assert scoped != lease_name(conf, ["a"])
    assert lease_name(LeaderElectionSettings(name="mine"), ["a"]) == "mine"


def test_lease_namespace_prefers_the_pods_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    conf = LeaderElectionSettings()
    # a local cluster-wide operator meets the in-cluster one's Lease in streamml-system
    assert lease_namespaces(conf, []) == ["streamml-system", "default"]
    assert lease_namespaces(conf, ["science", "other"]) == ["science"]
    monkeypatch.setenv("POD_NAMESPACE", "ops")
    assert lease_namespaces(conf, ["science"]) == ["ops"]
    assert lease_namespaces(LeaderElectionSettings(namespace="x"), []) == ["x"]


def test_settings_keep_the_durations_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMML_LEADER_ELECTION__LEASE_DURATION", "4")
    monkeypatch.setenv("STREAMML_LEADER_ELECTION__RENEW_DEADLINE", "3")
    monkeypatch.setenv("STREAMML_LEADER_ELECTION__RETRY_PERIOD", "0.5")
    conf = OperatorSettings().leader_election
    assert (conf.lease_duration, conf.renew_deadline, conf.retry_period) == (4, 3, 0.5)
    assert conf.enabled
    with pytest.raises(ValueError, match="renew_deadline < lease_duration"):
        LeaderElectionSettings(lease_duration=5, renew_deadline=5)
