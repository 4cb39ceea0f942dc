"""The local control plane is a real Kubernetes API: schemas, subresources, RBAC, GC, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from streamml import procs
from streamml.pycommand import streamml_command
from streamml.testbed.controlplane import ControlPlane, KubectlError
from streamml.testbed.k8sbuild import kubernetes_version

pytestmark = [pytest.mark.integration, pytest.mark.controlplane]

GROUP = "widgets.test.streamml.io"
CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"widgets.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {
                                    "size": {"type": "integer", "minimum": 1, "default": 3},
                                    "color": {"type": "string", "enum": ["red", "blue"]},
                                },
                            },
                            "status": {
                                "type": "object",
                                "properties": {"phase": {"type": "string"}},
                            },
                        },
                    }
                },
            }
        ],
    },
}


def _eventually(check: Callable[[], bool], timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.25)
    return check()


def _get(cp: ControlPlane, *args: str) -> dict[str, object]:
    return dict(json.loads(cp.kubectl("get", *args, "-o", "json").stdout))


def test_api_server_is_ready_on_loopback(control_plane: ControlPlane) -> None:
    assert control_plane.server.startswith("https://127.0.0.1:")
    assert control_plane.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"
    assert control_plane.with_controller_manager
    namespaces = control_plane.kubectl("get", "namespaces", "-o", "name").stdout.split()
    assert "namespace/default" in namespaces and "namespace/kube-system" in namespaces


def test_kubectl_matches_the_server_version(control_plane: ControlPlane) -> None:
    versions = json.loads(control_plane.kubectl("version", "-o", "json").stdout)
    expected = f"v{kubernetes_version()}"
    assert versions["clientVersion"]["gitVersion"] == expected
    assert versions["serverVersion"]["gitVersion"] == expected
    # `env` puts our kubectl first on PATH
    found = subprocess.run(
        ["bash", "-c", "command -v kubectl"],
        env=control_plane.env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(found.stdout.strip()) == control_plane.binaries.kubectl


def test_crd_schema_defaults_prunes_and_keeps_status_separate(
    control_plane: ControlPlane, k8s_namespace: str
) -> None:
    cp, ns = control_plane, k8s_namespace
    cp.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(CRD))
    cp.kubectl("wait", "--for=condition=Established", f"crd/widgets.{GROUP}", "--timeout=60s")

    def widget(name: str, spec: dict[str, object], **extra: object) -> str:
        body = {"apiVersion": f"{GROUP}/v1", "kind": "Widget", "metadata": {"name": name}}
        return json.dumps({**body, "spec": spec, **extra})

    # Unknown fields: rejected by strict field validation, pruned when validation is off.
    strict = cp.kubectl(
        "create", "-n", ns, "-f", "-", check=False, input=widget("strict", {"bogus": 1})
    )
    assert strict.returncode != 0 and "bogus" in strict.stderr
    cp.kubectl(
        "create",
        "-n",
        ns,
        "--validate=false",
        "-f",
        "-",
        input=widget("w", {"bogus": 1}, status={"phase": "Forged"}),
    )
    obj = _get(cp, "widget", "w", "-n", ns)
    spec = obj["spec"]
    assert spec == {"size": 3}  # defaulted, `bogus` pruned
    assert "status" not in obj  # status is a subresource: ignored on create

    # Schema violations are refused with the field named.
    bad_specs: list[dict[str, object]] = [{"size": 0}, {"color": "green"}, {"size": "big"}]
    for bad in bad_specs:
        result = cp.kubectl("create", "-n", ns, "-f", "-", check=False, input=widget("bad", bad))
        assert result.returncode != 0
        assert f"spec.{next(iter(bad))}" in result.stderr

    # Status is written only through its subresource and does not bump the generation.
    generation = obj["metadata"]["generation"]  # type: ignore[index]
    cp.kubectl(
        "patch", "widget", "w", "-n", ns, "--subresource=status", "--type=merge",
        "-p", '{"status": {"phase": "Ready", "extra": "pruned"}}',
    )  # fmt: skip
    obj = _get(cp, "widget", "w", "-n", ns)
    assert obj["status"] == {"phase": "Ready"}
    assert obj["metadata"]["generation"] == generation  # type: ignore[index]
    cp.kubectl("patch", "widget", "w", "-n", ns, "--type=merge", "-p", '{"spec": {"size": 5}}')
    obj = _get(cp, "widget", "w", "-n", ns)
    assert obj["metadata"]["generation"] == generation + 1  # type: ignore[index]
    assert obj["status"] == {"phase": "Ready"}


def test_rbac_denies_what_a_restricted_user_was_not_granted(
    control_plane: ControlPlane, k8s_namespace: str
) -> None:
    cp, ns = control_plane, k8s_namespace
    alice = cp.user_kubeconfig("alice", ("testers",))
    denied = cp.kubectl("get", "configmaps", "-n", ns, kubeconfig=alice, check=False)
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()
    assert 'User "alice"' in denied.stderr

    cp.kubectl("create", "role", "read-cm", "-n", ns, "--verb=get,list", "--resource=configmaps")
    cp.kubectl("create", "rolebinding", "read-cm", "-n", ns, "--role=read-cm", "--group=testers")
    assert _eventually(
        lambda: cp.kubectl("get", "cm", "-n", ns, kubeconfig=alice, check=False).returncode == 0
    )
    # granted: read in this namespace; not granted: write here, read elsewhere, secrets
    for args in (
        ("create", "configmap", "x", "-n", ns),
        ("get", "configmaps", "-n", "default"),
        ("get", "secrets", "-n", ns),
    ):
        result = cp.kubectl(*args, kubeconfig=alice, check=False)
        assert result.returncode != 0 and "forbidden" in result.stderr.lower(), args


def test_service_account_token_is_subject_to_rbac(
    control_plane: ControlPlane, k8s_namespace: str
) -> None:
    cp, ns = control_plane, k8s_namespace
    sa = cp.service_account_kubeconfig(ns, "operator")
    whoami = json.loads(cp.kubectl("auth", "whoami", "-o", "json", kubeconfig=sa).stdout)
    assert whoami["status"]["userInfo"]["username"] == f"system:serviceaccount:{ns}:operator"
    assert cp.kubectl("get", "pods", kubeconfig=sa, check=False).returncode != 0
    cp.kubectl("create", "role", "pods", "-n", ns, "--verb=list", "--resource=pods")
    cp.kubectl(
        "create", "rolebinding", "pods", "-n", ns, "--role=pods", f"--serviceaccount={ns}:operator"
    )
    assert _eventually(
        lambda: cp.kubectl("get", "pods", kubeconfig=sa, check=False).returncode == 0
    )
    create = cp.kubectl("create", "configmap", "x", kubeconfig=sa, check=False)
    assert create.returncode != 0 and "forbidden" in create.stderr.lower()
    can_i = cp.kubectl("auth", "can-i", "delete", "pods", kubeconfig=sa, check=False)
    assert can_i.stdout.strip() == "no"


def test_garbage_collector_deletes_owned_objects(
    control_plane: ControlPlane, k8s_namespace: str
) -> None:
    cp, ns = control_plane, k8s_namespace
    cp.kubectl("create", "configmap", "owner", "-n", ns)
    uid = _get(cp, "configmap", "owner", "-n", ns)["metadata"]["uid"]  # type: ignore[index]
    child = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "child",
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}
            ],
        },
    }
    cp.kubectl("create", "-n", ns, "-f", "-", input=json.dumps(child))
    cp.kubectl("delete", "configmap", "owner", "-n", ns)
    assert _eventually(
        lambda: cp.kubectl("get", "configmap", "child", "-n", ns, check=False).returncode != 0
    ), "the garbage collector did not delete the owned ConfigMap"


def test_deployment_gets_a_replicaset(control_plane: ControlPlane, k8s_namespace: str) -> None:
    cp, ns = control_plane, k8s_namespace
    cp.kubectl("create", "deployment", "web", "-n", ns, "--image=example.invalid/web:1")

    def replicaset_owned_by_web() -> bool:
        items = json.loads(cp.kubectl("get", "rs", "-n", ns, "-o", "json").stdout)["items"]
        return any(
            ref["kind"] == "Deployment" and ref["name"] == "web"
            for rs in items
            for ref in rs["metadata"].get("ownerReferences", [])
        )

    assert _eventually(replicaset_owned_by_web)


def test_python_clients_accept_the_kubeconfigs(
    control_plane: ControlPlane, k8s_namespace: str
) -> None:
    # The operator (kopf) and tests use the official client with these files as they are.
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    admin = client.CoreV1Api(config.new_client_from_config(str(control_plane.kubeconfig)))
    names = [ns.metadata.name for ns in admin.list_namespace().items]
    assert k8s_namespace in names
    sa = control_plane.service_account_kubeconfig(k8s_namespace, "reader")
    restricted = client.CoreV1Api(config.new_client_from_config(str(sa)))
    with pytest.raises(ApiException) as info:
        restricted.list_namespaced_secret(k8s_namespace)
    assert info.value.status == 403


def test_kubectl_errors_carry_the_message(control_plane: ControlPlane) -> None:
    with pytest.raises(KubectlError, match="not found") as info:
        control_plane.kubectl("get", "namespace", "no-such-namespace-here")
    assert info.value.result.returncode != 0
    with pytest.raises(KubectlError):
        control_plane.kubectl("apply", "-f", "-", input="{not: [valid")


def _cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    argv = [*streamml_command(), "cluster", *args]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def _gone(pid: int) -> bool:
    return not procs.running(pid)


def test_cluster_cli_up_env_status_down(control_plane: ControlPlane, tmp_path: Path) -> None:
    state = tmp_path / "cluster"
    missing = _cli("env", "--state-dir", str(state), check=False)
    assert missing.returncode == 2 and "cluster up" in missing.stderr

    _cli("up", "--state-dir", str(state), "--no-controller-manager")
    try:
        recorded = json.loads((state / "state.json").read_text())
        pids = [d["pid"] for d in recorded["daemons"]]
        assert [d["name"] for d in recorded["daemons"]] == ["etcd", "kube-apiserver"]
        assert "already up" in _cli("up", "--state-dir", str(state)).stderr
        assert _cli("status", "--state-dir", str(state)).stdout.count("running") == 2

        env = _cli("env", "--state-dir", str(state)).stdout
        shell = subprocess.run(
            ["bash", "-c", f"{env}\nkubectl version -o json"],
            capture_output=True,
            text=True,
            check=True,
            env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)},
        )
        assert json.loads(shell.stdout)["serverVersion"]["gitVersion"] == f"v{kubernetes_version()}"
        kubeconfig = yaml.safe_load((state / "kubeconfig").read_text())
        assert kubeconfig["clusters"][0]["cluster"]["server"] == recorded["server"]
    finally:
        _cli("down", "--state-dir", str(state))
    assert all(_gone(pid) for pid in pids)
    assert not state.exists()
    assert "no control plane" in _cli("down", "--state-dir", str(state)).stderr


def test_cluster_cli_refuses_a_state_dir_that_is_a_file(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    result = _cli("up", "--state-dir", str(not_a_dir), check=False)
    assert result.returncode == 2
    assert "not a directory" in result.stderr.lower()
    assert "Traceback" not in result.stderr


def test_cluster_cli_reports_a_corrupt_state_file(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text("{ this is not json")
    result = _cli("status", "--state-dir", str(tmp_path), check=False)
    assert result.returncode == 2
    assert "unreadable control-plane state" in result.stderr
    assert "Traceback" not in result.stderr


def test_stop_leaves_no_process_and_no_files(control_plane: ControlPlane) -> None:
    cp = ControlPlane(with_controller_manager=True, binaries=control_plane.binaries).start()
    pids = [d.pid for d in cp.daemons]
    workdir = cp.workdir
    assert len(pids) == 3 and cp.running()
    assert cp.kubectl("get", "serviceaccount", "default").returncode == 0
    cp.stop()
    assert all(_gone(pid) for pid in pids)
    assert not workdir.exists()
    assert not cp.running()


def test_service_range_holds_more_than_a_slash_24(
    control_plane: ControlPlane, k8s_namespace: str
) -> None:
    """Hundreds of StreamModels each own a Service: the range is a /16, not a /24 (254 IPs).
    A Service asking for an address past the first 256 is inside it."""
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "far", "namespace": k8s_namespace},
        "spec": {"clusterIP": "10.0.200.7", "ports": [{"port": 80}]},
    }
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(service))
    stored = json.loads(
        control_plane.kubectl("get", "service", "far", "-n", k8s_namespace, "-o", "json").stdout
    )
    assert stored["spec"]["clusterIP"] == "10.0.200.7"
