"""``spec.server.storage.reclaimPolicy`` against a real kube-apiserver + kube-controller-manager.

The control plane runs the real garbage collector, so "Retain keeps the claim" is observed after
the GC has removed every other owned object, not inferred from the manifests.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from streamml.operator.retention import CLAIMED_BY
from streamml.testbed.controlplane import ControlPlane
from tests.integration.operator_support import OperatorProcess, condition, get_json, wait_for
from tests.integration.test_operator_controlplane import (  # the same sample and helpers
    NAME,
    OWNED,
    SAMPLE,
    apply,
    crds,
    owned_objects,
    sm,
)

__all__ = ["crds"]  # a module fixture, imported for the tests below
PVC = f"{NAME}-data"


def with_policy(policy: str) -> dict[str, Any]:
    doc = copy.deepcopy(SAMPLE)
    doc["spec"].setdefault("server", {}).setdefault("storage", {})["reclaimPolicy"] = policy
    return doc


def claim(cp: ControlPlane, ns: str) -> dict[str, Any] | None:
    found = get_json(cp, "pvc", PVC, "-n", ns)
    return found if isinstance(found, dict) else None


def claimed_by(cp: ControlPlane, ns: str, uid: str) -> dict[str, Any] | None:
    found = claim(cp, ns)
    meta = (found or {}).get("metadata") or {}
    return found if (meta.get("annotations") or {}).get(CLAIMED_BY) == uid else None


@pytest.fixture
def operator(crds: ControlPlane, k8s_namespace: str, tmp_path: Path) -> Any:
    with OperatorProcess(crds.kubeconfig, tmp_path, "--namespace", k8s_namespace) as proc:
        yield proc


def test_retained_claim_outlives_its_streammodel_and_is_adopted(
    crds: ControlPlane, k8s_namespace: str, operator: OperatorProcess
) -> None:
    cp, ns = crds, k8s_namespace
    apply(cp, ns, with_policy("Retain"))
    wait_for(lambda: len(owned_objects(cp, ns)) == len(OWNED), "owned objects")
    first_uid = sm(cp, ns)["metadata"]["uid"]  # type: ignore[index]
    kept = wait_for(lambda: claimed_by(cp, ns, first_uid), "the claim names its StreamModel")
    assert "ownerReferences" not in kept["metadata"]
    claim_uid = kept["metadata"]["uid"]
    for kind, obj in owned_objects(cp, ns).items():  # everything else is still owned
        if kind != "pvc":
            assert obj["metadata"]["ownerReferences"][0]["uid"] == first_uid, kind

    cp.kubectl("delete", "streammodel", NAME, "-n", ns, "--wait=true", "--timeout=60s")

    def collected() -> dict[str, Any] | None:
        left = owned_objects(cp, ns)
        return left if set(left) == {"pvc"} else None

    # the real garbage collector removed the rest (it finds a new CRD within 30 s) ...
    left = wait_for(collected, "garbage collection of everything but the claim", timeout=150)
    # ... and left the claim alone
    assert left["pvc"]["metadata"]["uid"] == claim_uid
    assert not left["pvc"]["metadata"].get("deletionTimestamp")

    # A new StreamModel of the same name adopts the same claim (not a new one).
    apply(cp, ns, with_policy("Retain"))
    second_uid = wait_for(lambda: (o := sm(cp, ns)) and o["metadata"]["uid"], "new StreamModel")
    assert second_uid != first_uid
    adopted = wait_for(lambda: claimed_by(cp, ns, second_uid), "the claim adopted")
    assert adopted["metadata"]["uid"] == claim_uid
    assert "ownerReferences" not in adopted["metadata"]
    deployment = wait_for(lambda: get_json(cp, "deployment", NAME, "-n", ns), "Deployment")
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == PVC


def test_switching_policy_moves_the_owner_reference(
    crds: ControlPlane, k8s_namespace: str, operator: OperatorProcess
) -> None:
    cp, ns = crds, k8s_namespace
    apply(cp, ns, SAMPLE)  # Delete, as before this field existed
    uid = wait_for(lambda: (o := sm(cp, ns)) and o["metadata"]["uid"], "StreamModel")

    def owner_refs() -> list[Any] | None:
        found = claim(cp, ns)
        return None if found is None else found["metadata"].get("ownerReferences") or []

    refs = wait_for(owner_refs, "claim")
    assert [(r["uid"], r["controller"], r["blockOwnerDeletion"]) for r in refs] == [
        (uid, True, True)
    ]
    apply(cp, ns, with_policy("Retain"))
    wait_for(lambda: claimed_by(cp, ns, uid) and owner_refs() == [], "owner reference removed")
    apply(cp, ns, with_policy("Delete"))
    wait_for(lambda: [r["uid"] for r in owner_refs() or []] == [uid], "owner reference back")
    annotations = claim(cp, ns)["metadata"].get("annotations") or {}  # type: ignore[index]
    assert CLAIMED_BY not in annotations


@pytest.mark.parametrize("holder", ["foreign", "live-streammodel"])
def test_claim_not_adopted_from_a_foreign_or_live_holder(
    crds: ControlPlane, k8s_namespace: str, operator: OperatorProcess, holder: str
) -> None:
    cp, ns = crds, k8s_namespace
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    expected = "StorageConflict"
    if holder == "live-streammodel":
        other = {"apiVersion": "streamml.io/v1alpha1", "kind": "StreamModel",
                 "metadata": {"name": "other"}, "spec": {}}  # fmt: skip
        apply(cp, ns, other)
        other_uid = wait_for(lambda: (o := sm(cp, ns, "other")) and o["metadata"]["uid"], "other")
        labels = {"app.kubernetes.io/managed-by": "streamml-operator",
                  "app.kubernetes.io/instance": "other"}  # fmt: skip
        annotations = {CLAIMED_BY: other_uid}
        expected = "StorageInUse"
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": PVC, "labels": labels, "annotations": annotations},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    cp.kubectl("create", "-n", ns, "-f", "-", input=json.dumps(pvc))
    before = claim(cp, ns)
    apply(cp, ns, with_policy("Retain"))

    def refused() -> dict[str, Any] | None:
        cond = condition(sm(cp, ns), "Ready")
        return cond if cond and cond["reason"] == expected else None

    cond = wait_for(refused, f"Ready=False {expected}")
    assert cond["status"] == "False" and PVC in cond["message"]
    # nothing was written: the claim is as it was, and no pod template mounts it
    assert claim(cp, ns)["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]  # type: ignore[index]
    assert get_json(cp, "deployment", NAME, "-n", ns) is None


def test_local_runtime_keeps_retained_data_for_the_next_streammodel(
    crds: ControlPlane, k8s_namespace: str, tmp_path: Path
) -> None:
    """In the local runtime the data dir plays the claim: Retain keeps it, and the models."""
    import asyncio
    import base64

    from streamml.client.api import ModelServerClient

    cp, ns = crds, k8s_namespace
    state = tmp_path / "state"
    mean = {"class": "dummy.StatisticRegressor", "params": {"statistic": {"class": "stats.Mean"}}}
    spec = {"models": [{"name": "mean", "pipeline": [mean]}],
            "server": {"storage": {"reclaimPolicy": "Retain"}}}  # fmt: skip
    doc = {"apiVersion": "streamml.io/v1alpha1", "kind": "StreamModel",
           "metadata": {"name": "kept"}, "spec": spec}  # fmt: skip

    def ready() -> dict[str, Any] | None:
        obj = sm(cp, ns, "kept")
        cond = condition(obj, "Ready")
        return obj if cond and cond["status"] == "True" else None

    with OperatorProcess(
        cp.kubeconfig, tmp_path, "--namespace", ns, "--local-runtime", "--state-dir", str(state)
    ):
        apply(cp, ns, doc)
        status = wait_for(ready, "Ready", timeout=150)["status"]
        secret = get_json(cp, "secret", status["authSecretName"], "-n", ns)
        user, token = (base64.b64decode(secret["data"][k]).decode() for k in ("username", "token"))

        async def learn() -> None:
            async with ModelServerClient(status["address"], username=user, token=token) as c:
                for i in range(7):
                    await c.learn({"nx": 4 + i}, 10.0 + i, identifier=f"run-{i}")

        asyncio.run(learn())
        wait_for(lambda: (o := sm(cp, ns, "kept")) and o["status"].get("samplesLearned") == 7,
                 "samples in status")  # fmt: skip
        cp.kubectl("delete", "streammodel", "kept", "-n", ns, "--timeout=60s")
        wait_for(lambda: sm(cp, ns, "kept") is None, "deleted")
        assert (state / ns / "kept").is_dir()  # the data stays

        apply(cp, ns, doc)  # the next StreamModel of that name serves the same models
        wait_for(ready, "Ready again", timeout=150)
        obj = wait_for(
            lambda: (o := sm(cp, ns, "kept")) and o["status"].get("samplesLearned") == 7 and o,
            "the retained samples in the new status",
        )
        assert obj["status"]["models"][0]["samples"] == 7
