"""``config/`` is a kustomize base: it renders with OUR kubectl and a real API server accepts it."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamml.testbed.controlplane import ControlPlane
from streamml.testbed.k8sbuild import ensure_binaries
from streamml.vocabulary import crdgen

# The rendering uses the control plane build's kubectl.
pytestmark = [pytest.mark.integration, pytest.mark.controlplane]

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "streamml-system"
CLUSTER_SCOPED = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    kubectl = ensure_binaries().kubectl
    result = subprocess.run(
        [str(kubectl), "kustomize", str(ROOT / "config")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def test_renders_the_crds_exactly_as_generated(rendered: list[dict[str, Any]]) -> None:
    crds = {d["metadata"]["name"]: d for d in rendered if d["kind"] == "CustomResourceDefinition"}
    assert set(crds) == {info.crd_name for info in crdgen.resources()}
    for info in crdgen.resources():
        expected = crdgen.crd(info)
        got = crds[info.crd_name]
        assert got["spec"] == expected["spec"], f"config/crd is stale for {info.kind}"


def test_every_object_is_labelled_and_namespaced(rendered: list[dict[str, Any]]) -> None:
    kinds = {d["kind"] for d in rendered}
    assert {"Namespace", "ServiceAccount", "Deployment"} <= kinds
    assert kinds & {"Role", "ClusterRole"}
    for doc in rendered:
        meta = doc["metadata"]
        assert meta.get("labels", {}).get("app.kubernetes.io/part-of") == "streamml", meta
        if doc["kind"] not in CLUSTER_SCOPED:
            assert meta.get("namespace") == NAMESPACE, (doc["kind"], meta)
    deployment = next(d for d in rendered if d["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    pod = deployment["spec"]["template"]["spec"]
    accounts = {d["metadata"]["name"] for d in rendered if d["kind"] == "ServiceAccount"}
    assert pod["serviceAccountName"] in accounts


def test_the_api_server_accepts_the_rendered_base(control_plane: ControlPlane) -> None:
    # Server-side dry run: schema, defaulting and admission of every object, nothing persisted.
    # The namespace must exist for a dry run of the objects inside it.
    if control_plane.kubectl("get", "namespace", NAMESPACE, check=False).returncode != 0:
        control_plane.kubectl("create", "namespace", NAMESPACE)
    result = control_plane.kubectl(
        "apply", "--dry-run=server", "-k", str(ROOT / "config"), check=False
    )
    assert result.returncode == 0, result.stderr
    assert "deployment.apps/" in result.stdout and "(server dry run)" in result.stdout
