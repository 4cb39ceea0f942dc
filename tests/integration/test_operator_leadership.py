"""Exactly one active operator: two real ``streamml operator`` processes on one real API server.

The first takes the Lease and reconciles; the second stays live but handles nothing (its log has
no handler run at all). Killed with SIGKILL, the first stops renewing; the second takes over only
after the Lease has expired on its own clock, and reconciles what the first left. An operator
whose Lease is taken from it exits at once; a stopped one releases the Lease.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from streamml.operator.leadership import LOST_EXIT_CODE
from streamml.testbed.controlplane import ControlPlane
from tests.integration.operator_support import OperatorProcess, get_json, install_crds, wait_for

LEASE_SECONDS = 4
HANDLED = "Handler 'reconcile' succeeded"


@pytest.fixture(scope="module")
def crds(control_plane: ControlPlane) -> ControlPlane:
    install_crds(control_plane)
    return control_plane


def operator(cp: ControlPlane, ns: str, tmp_path: Path, identity: str) -> OperatorProcess:
    env = {
        "STREAMML_LEADER_ELECTION__IDENTITY": identity,
        "STREAMML_LEADER_ELECTION__NAMESPACE": ns,
        "STREAMML_LEADER_ELECTION__NAME": "streamml-operator",
        "STREAMML_LEADER_ELECTION__LEASE_DURATION": str(LEASE_SECONDS),
        "STREAMML_LEADER_ELECTION__RENEW_DEADLINE": "3",
        "STREAMML_LEADER_ELECTION__RETRY_PERIOD": "0.5",
    }
    return OperatorProcess(cp.kubeconfig, tmp_path, "--namespace", ns, env=env)


@pytest.fixture
def pair(crds: ControlPlane, k8s_namespace: str, tmp_path: Path) -> Iterator[list[OperatorProcess]]:
    procs = [operator(crds, k8s_namespace, tmp_path, name) for name in ("op-a", "op-b")]
    try:
        yield procs
    finally:
        for proc in procs:
            proc.stop()


def lease(cp: ControlPlane, ns: str) -> dict[str, Any]:
    found = get_json(cp, "lease", "streamml-operator", "-n", ns)
    return dict((found or {}).get("spec") or {})


def create_models(cp: ControlPlane, ns: str, *names: str) -> None:
    items = [{"apiVersion": "streamml.io/v1alpha1", "kind": "StreamModel",
              "metadata": {"name": n}, "spec": {}} for n in names]  # fmt: skip
    listing = {"apiVersion": "v1", "kind": "List", "items": items}
    cp.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(listing))


def deployed(cp: ControlPlane, ns: str, *names: str) -> bool:
    return all(get_json(cp, "deployment", n, "-n", ns) is not None for n in names)


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_only_the_lease_holder_reconciles_and_the_standby_takes_over(
    crds: ControlPlane, k8s_namespace: str, pair: list[OperatorProcess]
) -> None:
    cp, ns = crds, k8s_namespace
    first, second = pair
    first.start()
    wait_for(lambda: lease(cp, ns).get("holderIdentity") == "op-a", "op-a holds the Lease")
    second.start()  # live (its liveness endpoint answers) but waiting
    wait_for(lambda: "standby: Lease" in second.log(), "op-b waits for the Lease")
    create_models(cp, ns, "one", "two", "three")
    wait_for(lambda: deployed(cp, ns, "one", "two", "three"), "objects from op-a")
    wait_for(lambda: first.log().count(HANDLED) >= 3, "op-a reconciled three")
    assert second.log().count("Handler '") == 0, second.log()[-3000:]
    assert lease(cp, ns)["holderIdentity"] == "op-a"

    first.kill()  # SIGKILL by PID: no release, the Lease must expire
    last = lease(cp, ns)
    assert last["holderIdentity"] == "op-a"
    create_models(cp, ns, "four")
    taken = wait_for(
        lambda: (s := lease(cp, ns)).get("holderIdentity") == "op-b" and s, "op-b takes over"
    )
    wait_for(lambda: deployed(cp, ns, "four"), "objects from op-b")
    assert taken["leaseTransitions"] == 1
    # never before op-a's Lease had expired: no moment with two active operators
    waited = (_time(taken["acquireTime"]) - _time(last["renewTime"])).total_seconds()
    assert waited >= LEASE_SECONDS, taken
    assert second.log().count(HANDLED) >= 1
    assert second.process is not None and second.process.poll() is None

    second.stop()  # SIGTERM: it gives the Lease up for the next one
    assert second.process.returncode == 0
    assert not lease(cp, ns).get("holderIdentity")


def test_an_operator_whose_lease_is_taken_exits_at_once(
    crds: ControlPlane, k8s_namespace: str, pair: list[OperatorProcess]
) -> None:
    cp, ns = crds, k8s_namespace
    first, _ = pair
    first.start()
    wait_for(lambda: lease(cp, ns).get("holderIdentity") == "op-a", "op-a holds the Lease")
    stolen = {"spec": {"holderIdentity": "someone-else"}}  # a merge patch: no precondition
    cp.kubectl("patch", "lease", "streamml-operator", "-n", ns, "--type=merge",
               "-p", json.dumps(stolen))  # fmt: skip
    assert first.process is not None
    wait_for(lambda: first.process.poll() is not None, "op-a exits")  # type: ignore[union-attr]
    assert first.process.returncode == LOST_EXIT_CODE
    assert "leadership lost" in first.log()
    assert lease(cp, ns)["holderIdentity"] == "someone-else"
