"""The operator against a real kube-apiserver + etcd + controller-manager (no kubelet).

The operator runs as a real process; the tests read everything back through our kubectl. Where a
kubelet would report pods Ready, the test does it through the pod status subresource.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamml.testbed.controlplane import ControlPlane
from tests.integration.operator_support import (
    ROOT,
    OperatorProcess,
    condition,
    get_json,
    install_crds,
    play_kubelet,
    wait_for,
)

SAMPLE = yaml.safe_load((ROOT / "config" / "samples" / "streammodel.yaml").read_text())
NAME = SAMPLE["metadata"]["name"]
OWNED = ("deployment", "service", "secret", "pvc", "ingress")


@pytest.fixture(scope="module")
def crds(control_plane: ControlPlane) -> ControlPlane:
    install_crds(control_plane)
    return control_plane


@pytest.fixture
def operator(crds: ControlPlane, k8s_namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    with OperatorProcess(crds.kubeconfig, tmp_path, "--namespace", k8s_namespace) as proc:
        yield proc


def apply(cp: ControlPlane, namespace: str, doc: dict[str, Any], check: bool = True) -> Any:
    return cp.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(doc), check=check)


def sm(cp: ControlPlane, namespace: str, name: str = NAME) -> dict[str, Any] | None:
    found = get_json(cp, "streammodel", name, "-n", namespace)
    return found if isinstance(found, dict) else None


def owned_objects(cp: ControlPlane, ns: str, name: str = NAME) -> dict[str, dict[str, Any]]:
    names = {
        "deployment": name,
        "service": name,
        "secret": f"{name}-auth",
        "pvc": f"{name}-data",
        "ingress": name,
    }
    found = {}
    for kind, obj_name in names.items():
        obj = get_json(cp, kind, obj_name, "-n", ns)
        if obj is not None:
            found[kind] = obj
    return found


def wait_status(cp: ControlPlane, ns: str, kind: str, status: str, name: str = NAME) -> dict:
    def check() -> dict[str, Any] | None:
        obj = sm(cp, ns, name)
        cond = condition(obj, kind)
        return obj if cond and cond["status"] == status else None

    return wait_for(check, f"{kind}={status} on {ns}/{name}")


def make_ready(cp: ControlPlane, ns: str, name: str = NAME) -> dict[str, Any]:
    play_kubelet(cp, ns, name)
    ingress = {"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}}
    if get_json(cp, "ingress", name, "-n", ns) is not None:
        cp.kubectl(
            "patch", "ingress", name, "-n", ns, "--subresource=status", "--type=merge",
            "-p", json.dumps(ingress),
        )  # fmt: skip
    return wait_status(cp, ns, "Ready", "True", name)


def test_sample_becomes_objects_status_and_columns(
    crds: ControlPlane, k8s_namespace: str, operator: OperatorProcess
) -> None:
    cp, ns = crds, k8s_namespace
    apply(cp, ns, SAMPLE)
    objects = wait_for(
        lambda: (o := owned_objects(cp, ns)) and len(o) == len(OWNED) and o, "owned objects"
    )
    uid = sm(cp, ns)["metadata"]["uid"]  # type: ignore[index]
    for kind, obj in objects.items():
        [ref] = obj["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == (
            "StreamModel",
            NAME,
            uid,
            True,
        ), kind
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "streamml-operator"
    # server-side apply, one field manager
    dep = get_json(cp, "deployment", NAME, "-n", ns, "--show-managed-fields")
    managers = {(m["manager"], m["operation"]) for m in dep["metadata"]["managedFields"]}
    assert ("streamml-operator", "Apply") in managers
    pod = objects["deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/readyz"
    secret = objects["secret"]
    assert set(secret["data"]) == {"username", "token"}

    # No kubelet: not available yet, and it says why.
    obj = wait_status(cp, ns, "Available", "False")
    assert condition(obj, "Ready")["status"] == "False"  # type: ignore[index]
    status = obj["status"]
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    assert status["address"] == f"http://{NAME}.{ns}.svc:80"
    assert status["authSecretName"] == f"{NAME}-auth"
    assert status["url"] == "http://lammps-time.models.example.org/"
    assert status["dashboardUrl"] == "http://lammps-time.models.example.org/dashboard/"
    assert status["modelsReady"] == f"0/{len(SAMPLE['spec']['models'])}"
    # This operator never contacts in-cluster addresses: it says the models are unverified.
    assert condition(obj, "ModelsReady")["reason"] == "NotVerified"  # type: ignore[index]

    obj = make_ready(cp, ns)
    assert condition(obj, "Available")["status"] == "True"  # type: ignore[index]
    assert condition(obj, "IngressReady")["status"] == "True"  # type: ignore[index]
    assert obj["status"]["replicas"] == 1
    # the status timer (every second here) writes nothing while nothing changes
    time.sleep(1.5)
    settled = sm(cp, ns)["metadata"]["resourceVersion"]  # type: ignore[index]
    time.sleep(3)
    assert sm(cp, ns)["metadata"]["resourceVersion"] == settled  # type: ignore[index]

    # printer columns through kubectl, by short name and by category
    table = cp.kubectl("get", "sm", "-n", ns).stdout.splitlines()
    header = table[0].split()
    assert header[:4] == ["NAME", "READY", "URL", "MODELS"]
    assert "SAMPLES" in header and "BEST" in header and "DASHBOARD" in header and "AGE" in header
    row = table[1].split()
    assert row[0] == NAME and row[1] == "True"
    assert row[2] == "http://lammps-time.models.example.org/"
    at = table[0].index("DASHBOARD")  # columns of unset fields are blank: find it by position
    assert table[1][at:].split()[0] == "http://lammps-time.models.example.org/dashboard/"
    assert cp.kubectl("get", "streamml", "-n", ns).stdout.count(NAME) >= 1

    events = get_json(cp, "events", "-n", ns, "--field-selector", f"involvedObject.name={NAME}")
    reasons = {e["reason"] for e in events["items"]}
    assert "ReadyTrue" in reasons


def test_spec_update_rolls_or_not_and_scale(
    crds: ControlPlane, k8s_namespace: str, operator: OperatorProcess
) -> None:
    cp, ns = crds, k8s_namespace
    apply(cp, ns, SAMPLE)
    before = wait_for(lambda: get_json(cp, "deployment", NAME, "-n", ns), "deployment")
    annotation = "streamml.io/config-hash"
    old_hash = before["spec"]["template"]["metadata"]["annotations"][annotation]

    # a models-only change: no rollout (models go through the server API)
    doc = copy.deepcopy(SAMPLE)
    doc["spec"]["models"] = doc["spec"]["models"][:2]
    apply(cp, ns, doc)
    wait_for(lambda: (o := sm(cp, ns)) and o["status"].get("modelsReady") == "0/2", "models update")
    same = get_json(cp, "deployment", NAME, "-n", ns)
    assert same["metadata"]["generation"] == before["metadata"]["generation"]

    # a server change: the pod template changes, so the Deployment rolls
    doc["spec"]["server"]["resources"]["limits"]["memory"] = "2Gi"
    apply(cp, ns, doc)

    def rolled() -> dict[str, Any] | None:
        dep = get_json(cp, "deployment", NAME, "-n", ns)
        new = dep["spec"]["template"]["metadata"]["annotations"][annotation]
        return dep if new != old_hash else None

    dep = wait_for(rolled, "rollout")
    assert dep["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] == {
        "memory": "2Gi"
    }
    obj = wait_for(
        lambda: (o := sm(cp, ns)) and o["status"].get("observedGeneration") == 3 and o,
        "observedGeneration 3",
    )
    assert obj["metadata"]["generation"] == 3

    # the scale subresource drives spec.server.replicas
    cp.kubectl("scale", "streammodel", NAME, "-n", ns, "--replicas=0")
    wait_for(lambda: get_json(cp, "deployment", NAME, "-n", ns)["spec"]["replicas"] == 0, "scale 0")
    wait_for(
        lambda: (c := condition(sm(cp, ns), "Available")) and c["reason"] == "ScaledToZero",
        "ScaledToZero",
    )

    # disabling the ingress deletes it
    doc["spec"]["ingress"]["enabled"] = False
    doc["spec"]["server"]["replicas"] = 0
    apply(cp, ns, doc)
    wait_for(lambda: get_json(cp, "ingress", NAME, "-n", ns) is None, "ingress deleted")
    wait_for(lambda: (o := sm(cp, ns)) and o["status"].get("url") is None, "url cleared")


def test_delete_removes_everything(
    crds: ControlPlane, k8s_namespace: str, operator: OperatorProcess
) -> None:
    cp, ns = crds, k8s_namespace
    apply(cp, ns, SAMPLE)
    wait_for(lambda: len(owned_objects(cp, ns)) == len(OWNED), "owned objects")
    cp.kubectl("delete", "streammodel", NAME, "-n", ns, "--wait=true", "--timeout=60s")

    # The garbage collector (kube-controller-manager) follows the owner references. It learns
    # about a new CRD at its next discovery resync (30 s). A PVC then only gets its deletion
    # timestamp: its pvc-protection finalizer belongs to a controller that needs a kubelet.
    def collected() -> bool:
        left = owned_objects(cp, ns)
        pvc = left.pop("pvc", None)
        return not left and (pvc is None or bool(pvc["metadata"].get("deletionTimestamp")))

    wait_for(collected, "garbage collection", timeout=150)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"spec": {"server": {"replicas": 3}}}, "replicas"),
        ({"spec": {"server": {"port": 80}}}, "port"),
        ({"spec": {"ingress": {"enabled": True, "tlsSecretName": "x"}}}, "tlsSecretName"),
        ({"spec": {"models": [{"name": "Bad_Name", "pipeline": [{"class": "a.B"}]}]}}, "name"),
        ({"spec": {"models": [{"name": "m", "pipeline": []}]}}, "pipeline"),
        (
            {
                "spec": {
                    "models": [{"name": "m", "flavor": "astrology", "pipeline": [{"class": "a.B"}]}]
                }
            },
            "flavor",
        ),
        ({"spec": {"server": {"resources": {"limits": {"memory": "$(rm -rf /)"}}}}}, "memory"),
        ({"metadata": {"name": "x" * 60}}, "metadata.name"),
        (
            {"spec": {"models": [{"name": "m", "pipeline": [{"class": "stats.Mean"}]}] * 2}},
            "Duplicate",
        ),
    ],
)
def test_api_server_rejects_invalid_specs(
    crds: ControlPlane, k8s_namespace: str, change: dict[str, Any], message: str
) -> None:
    doc: dict[str, Any] = {"apiVersion": "streamml.io/v1alpha1", "kind": "StreamModel",
                           "metadata": {"name": "invalid"}, "spec": {}}  # fmt: skip
    for key, value in change.items():
        doc[key].update(value)
    result = apply(crds, k8s_namespace, doc, check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert sm(crds, k8s_namespace, doc["metadata"]["name"]) is None


def test_invalid_spec_reported_in_status_without_retry_loop(
    crds: ControlPlane, k8s_namespace: str, operator: OperatorProcess
) -> None:
    cp, ns = crds, k8s_namespace
    hostile = {
        "apiVersion": "streamml.io/v1alpha1",
        "kind": "StreamModel",
        "metadata": {"name": "hostile"},
        "spec": {
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
        },
    }
    apply(cp, ns, hostile)  # params are free-form for the API server; the operator checks them
    obj = wait_status(cp, ns, "Ready", "False", "hostile")
    ready = condition(obj, "Ready")
    assert ready["reason"] == "InvalidSpec"  # type: ignore[index]
    assert "spec.models[0].pipeline[0].params.optimizer.class" in ready["message"]  # type: ignore[index]
    assert get_json(cp, "deployment", "hostile", "-n", ns) is None  # nothing built from it
    # no retry loop: after a few poll intervals, the object has not been written again
    version = obj["metadata"]["resourceVersion"]
    time.sleep(4)
    assert sm(cp, ns, "hostile")["metadata"]["resourceVersion"] == version  # type: ignore[index]
    events = get_json(cp, "events", "-n", ns, "--field-selector", "involvedObject.name=hostile")
    assert sum(e.get("count", 1) for e in events["items"] if e["reason"] == "InvalidSpec") == 1

    # fixing the spec recovers
    hostile["spec"]["models"][0]["pipeline"][0]["params"] = {"intercept_lr": 0.1}
    apply(cp, ns, hostile)
    wait_for(lambda: get_json(cp, "deployment", "hostile", "-n", ns), "deployment after fix")
    obj = wait_for(
        lambda: (
            (c := condition(sm(cp, ns, "hostile"), "Ready"))
            and c["reason"] != "InvalidSpec"
            and sm(cp, ns, "hostile")
        ),
        "recovered",
    )
    assert obj["status"]["observedGeneration"] == 2


def test_missing_referenced_secret_then_created(
    crds: ControlPlane, k8s_namespace: str, operator: OperatorProcess
) -> None:
    cp, ns = crds, k8s_namespace
    doc = {"apiVersion": "streamml.io/v1alpha1", "kind": "StreamModel",
           "metadata": {"name": "byo"},
           "spec": {"server": {"auth": {"secretName": "my-creds"}}}}  # fmt: skip
    apply(cp, ns, doc)
    obj = wait_status(cp, ns, "Ready", "False", "byo")
    assert condition(obj, "Ready")["reason"] == "AuthSecretMissing"  # type: ignore[index]
    assert "my-creds" in condition(obj, "Ready")["message"]  # type: ignore[index]
    cp.kubectl(
        "create", "secret", "generic", "my-creds", "-n", ns,
        "--from-literal=username=u", "--from-literal=token=t0123456789",
    )  # fmt: skip
    wait_for(lambda: get_json(cp, "deployment", "byo", "-n", ns), "deployment", timeout=90)
    assert get_json(cp, "secret", "byo-auth", "-n", ns) is None  # nothing generated
    obj = wait_for(
        lambda: (o := sm(cp, ns, "byo")) and o["status"].get("authSecretName") == "my-creds" and o,
        "authSecretName",
    )


def test_operator_restart_changes_nothing(
    crds: ControlPlane, k8s_namespace: str, tmp_path: Path
) -> None:
    cp, ns = crds, k8s_namespace
    with OperatorProcess(cp.kubeconfig, tmp_path, "--namespace", ns):
        apply(cp, ns, SAMPLE)
        wait_for(lambda: len(owned_objects(cp, ns)) == len(OWNED), "owned objects")
        before_obj = make_ready(cp, ns)
        time.sleep(2)  # let the status timer settle
        before_obj = sm(cp, ns)
        before = {k: o["metadata"]["resourceVersion"] for k, o in owned_objects(cp, ns).items()}
    token_before = get_json(cp, "secret", f"{NAME}-auth", "-n", ns)["data"]["token"]

    with OperatorProcess(cp.kubeconfig, tmp_path, "--namespace", ns):
        # a second object proves the new operator has listed and handled the namespace
        probe = copy.deepcopy(SAMPLE)
        probe["metadata"]["name"] = "probe"
        apply(cp, ns, probe)
        wait_for(lambda: (o := sm(cp, ns, "probe")) and o.get("status", {}).get("conditions"),
                 "probe handled")  # fmt: skip
        time.sleep(3)  # several status polls
        after_obj = sm(cp, ns)
        after = {k: o["metadata"]["resourceVersion"] for k, o in owned_objects(cp, ns).items()}

    assert after == before  # no object rewritten
    assert get_json(cp, "secret", f"{NAME}-auth", "-n", ns)["data"]["token"] == token_before
    assert before_obj is not None and after_obj is not None

    def times(obj: dict[str, Any]) -> dict[str, tuple[str, str]]:
        return {
            c["type"]: (c["status"], c["lastTransitionTime"]) for c in obj["status"]["conditions"]
        }

    assert times(after_obj) == times(before_obj)  # no flapping
    assert after_obj["status"] == before_obj["status"]
    secrets = get_json(cp, "secrets", "-n", ns, "-l", f"app.kubernetes.io/instance={NAME}")
    assert len(secrets["items"]) == 1  # no duplicates
    deployments = get_json(cp, "deployments", "-n", ns, "-l", f"app.kubernetes.io/instance={NAME}")
    assert len(deployments["items"]) == 1


def test_operator_works_with_least_privilege_rbac(
    crds: ControlPlane, k8s_namespace: str, tmp_path: Path
) -> None:
    cp, ns = crds, k8s_namespace
    role = yaml.safe_load((ROOT / "config" / "rbac" / "role.yaml").read_text())
    role["metadata"]["name"] = f"streamml-operator-{ns}"
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": f"streamml-operator-{ns}"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": role["metadata"]["name"]},
        "subjects": [{"kind": "ServiceAccount", "name": "streamml-operator", "namespace": ns}],
    }  # fmt: skip
    lease_rbac = list(yaml.safe_load_all((ROOT / "config" / "rbac" / "leader_election.yaml")
                                         .read_text()))  # fmt: skip
    for doc in lease_rbac:  # the Lease lives in the (only) watched namespace
        doc["metadata"]["namespace"] = ns
        for subject in doc.get("subjects", []):
            subject["namespace"] = ns
    listing = {"apiVersion": "v1", "kind": "List", "items": [role, binding, *lease_rbac]}
    cp.kubectl("apply", "-f", "-", input=json.dumps(listing))
    try:
        kubeconfig = cp.service_account_kubeconfig(ns, "streamml-operator")
        # the restricted identity really is restricted
        denied = cp.kubectl("get", "secrets", "-n", ns, kubeconfig=kubeconfig, check=False)
        assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()
        for verb, what in [("list", "secrets"), ("create", "pods"), ("delete", "deployments"),
                           ("get", "nodes"), ("create", "pods/exec"), ("delete", "secrets"),
                           ("create", "clusterrolebindings")]:  # fmt: skip
            can = cp.kubectl("auth", "can-i", verb, what, "-n", ns, kubeconfig=kubeconfig,
                             check=False)  # fmt: skip
            assert can.stdout.strip() == "no", (verb, what)
        with OperatorProcess(kubeconfig, tmp_path, "--namespace", ns) as proc:
            apply(cp, ns, SAMPLE)
            wait_for(lambda: len(owned_objects(cp, ns)) == len(OWNED), "owned objects")
            make_ready(cp, ns)
            cp.kubectl("scale", "streammodel", NAME, "-n", ns, "--replicas=0")
            wait_for(
                lambda: (c := condition(sm(cp, ns), "Available")) and c["reason"] == "ScaledToZero",
                "ScaledToZero",
            )
            log = proc.log()
        assert "Forbidden" not in log and "forbidden" not in log, log[-3000:]
    finally:
        cp.kubectl("delete", "clusterrolebinding", binding["metadata"]["name"], check=False)
        cp.kubectl("delete", "clusterrole", role["metadata"]["name"], check=False)


def test_config_base_and_samples_apply(crds: ControlPlane, k8s_namespace: str) -> None:
    """``kubectl apply -k config/`` installs the operator; every sample passes the schemas."""
    cp = crds
    cp.kubectl("apply", "--server-side", "--force-conflicts", "-k", str(ROOT / "config"))
    try:
        dep = get_json(cp, "deployment", "streamml-operator", "-n", "streamml-system")
        assert dep["spec"]["replicas"] == 1
        assert dep["spec"]["strategy"]["type"] == "Recreate"
        pod = dep["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == "streamml-operator"
        assert pod["securityContext"]["runAsNonRoot"] is True
        binding = get_json(cp, "clusterrolebinding", "streamml-operator")
        assert binding["subjects"][0]["namespace"] == "streamml-system"
        can = cp.kubectl(
            "auth", "can-i", "patch", "streammodels/status", "-n", k8s_namespace,
            "--as=system:serviceaccount:streamml-system:streamml-operator",
        )  # fmt: skip
        assert can.stdout.strip() == "yes"
    finally:
        cp.kubectl("delete", "clusterrolebinding,clusterrole", "streamml-operator", check=False)
        cp.kubectl("delete", "namespace", "streamml-system", "--wait=false", check=False)
    samples = cp.kubectl(
        "apply", "--dry-run=server", "-n", k8s_namespace, "-f", str(ROOT / "config" / "samples")
    )
    assert "streammodel.streamml.io/lammps-time created (server dry run)" in samples.stdout
