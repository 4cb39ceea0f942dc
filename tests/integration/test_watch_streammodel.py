"""``streamml watch --streammodel``: URL and credentials come from the CR's status and Secret.

The StreamModel's status is written by the test itself (through the status subresource, as the
operator would), pointing at a real server process; no operator is needed to test this path.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

import pytest

from streamml.pycommand import streamml_command
from streamml.testbed.controlplane import ControlPlane
from streamml.vocabulary import crdgen
from tests.fixtures.server import ServerProcess


@pytest.fixture(scope="module")
def crds_installed(control_plane: ControlPlane) -> None:
    manifests = "---\n".join(crdgen.render(info) for info in crdgen.resources())
    control_plane.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=manifests)
    for info in crdgen.resources():
        control_plane.kubectl("wait", "--for=condition=Established", f"crd/{info.crd_name}")


def streammodel_with_status(
    cp: ControlPlane, ns: str, name: str, status: dict[str, object]
) -> None:
    body = {
        "apiVersion": "streamml.io/v1alpha1",
        "kind": "StreamModel",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"models": []},
    }
    cp.kubectl("apply", "-f", "-", input=json.dumps(body))
    cp.kubectl(
        "patch", "streammodel", name, "-n", ns, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": status}),
    )  # fmt: skip


def _secret(cp: ControlPlane, ns: str, name: str, username: str, token: str) -> None:
    data = {
        k: base64.b64encode(v.encode()).decode()
        for k, v in (("username", username), ("token", token))
    }
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": ns},
        "data": data,
    }
    cp.kubectl("apply", "-f", "-", input=json.dumps(body))


def _watch(cp: ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")}
    return subprocess.run(
        [
            *streamml_command(),
            "watch",
            "--kubeconfig",
            str(cp.kubeconfig),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


@pytest.mark.usefixtures("crds_installed")
def test_watch_reads_address_and_secret_from_the_streammodel(
    control_plane: ControlPlane, k8s_namespace: str, model_server: ServerProcess, tmp_path: Path
) -> None:
    assert model_server.username and model_server.token
    _secret(control_plane, k8s_namespace, "lt-auth", model_server.username, model_server.token)
    streammodel_with_status(
        control_plane,
        k8s_namespace,
        "lt",
        {"address": model_server.url, "authSecretName": "lt-auth"},
    )
    create = subprocess.run(
        ["curl", "-sf", "-u", f"{model_server.username}:{model_server.token}",
         "-H", "Content-Type: application/json",
         "-d", '{"pipeline": [{"class": "linear_model.BayesianLinearRegression"}]}',
         f"{model_server.url}/api/model/regression/bayes/"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert create.returncode == 0, create.stderr
    out = tmp_path / "watch"
    result = _watch(
        control_plane, "--streammodel", "lt", "--namespace", k8s_namespace, "--count", "1",
        "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = (out / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("time,model,samples")
    assert [line.split(",")[1:3] for line in lines[1:]] == [["bayes", "0"]]


@pytest.mark.usefixtures("crds_installed")
def test_watch_explains_a_streammodel_that_is_not_usable(
    control_plane: ControlPlane, k8s_namespace: str, tmp_path: Path
) -> None:
    missing = _watch(
        control_plane, "--streammodel", "nope", "--namespace", k8s_namespace, "--out", str(tmp_path)
    )
    assert missing.returncode == 2
    assert f"StreamModel {k8s_namespace}/nope (or its Secret) not found" in missing.stderr

    streammodel_with_status(control_plane, k8s_namespace, "pending", {})
    pending = _watch(
        control_plane,
        "--streammodel",
        "pending",
        "--namespace",
        k8s_namespace,
        "--out",
        str(tmp_path),
    )
    assert pending.returncode == 2
    assert "has no status.address yet" in pending.stderr

    streammodel_with_status(
        control_plane, k8s_namespace, "nosecret",
        {"address": "http://127.0.0.1:9", "authSecretName": "absent"},
    )  # fmt: skip
    nosecret = _watch(
        control_plane,
        "--streammodel",
        "nosecret",
        "--namespace",
        k8s_namespace,
        "--out",
        str(tmp_path),
    )
    assert nosecret.returncode == 2 and "not found" in nosecret.stderr

    bad_config = _watch(
        control_plane,
        "--streammodel",
        "x",
        "--kubeconfig",
        str(tmp_path / "none"),
        "--out",
        str(tmp_path),
    )
    assert bad_config.returncode == 2 and "cannot load kubeconfig" in bad_config.stderr
