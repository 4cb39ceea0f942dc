"""``streamml operator --local-runtime`` end to end: a StreamModel becomes a live local server.

Real control plane, real operator process, real ``streamml serve`` child process, real HTTP.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest

from streamml.client.api import ModelServerClient
from streamml.testbed.controlplane import ControlPlane
from tests.integration.operator_support import (
    OperatorProcess,
    condition,
    get_json,
    install_crds,
    wait_for,
)

MODELS = [
    {
        "name": "linear",
        "pipeline": [
            {"class": "preprocessing.StandardScaler"},
            {"class": "linear_model.LinearRegression", "params": {"intercept_lr": 0.1}},
        ],
    },
    {"name": "bayesian", "pipeline": [{"class": "linear_model.BayesianLinearRegression"}]},
]


def _sm(cp: ControlPlane, ns: str, name: str) -> dict[str, Any] | None:
    found = get_json(cp, "streammodel", name, "-n", ns)
    return found if isinstance(found, dict) else None


def _ready(cp: ControlPlane, ns: str, name: str) -> dict[str, Any] | None:
    obj = _sm(cp, ns, name)
    cond = condition(obj, "Ready")
    return obj if cond and cond["status"] == "True" else None


def test_local_runtime_serves_learns_and_cleans_up(
    control_plane: ControlPlane, k8s_namespace: str, tmp_path: Path
) -> None:
    cp, ns = control_plane, k8s_namespace
    install_crds(cp)
    state = tmp_path / "state"
    with OperatorProcess(
        cp.kubeconfig, tmp_path, "--namespace", ns, "--local-runtime", "--state-dir", str(state)
    ) as proc:
        doc = {
            "apiVersion": "streamml.io/v1alpha1",
            "kind": "StreamModel",
            "metadata": {"name": "local"},
            "spec": {"models": MODELS, "server": {"storage": {"type": "Ephemeral"}}},
        }
        cp.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(doc))
        obj = wait_for(lambda: _ready(cp, ns, "local"), "Ready", timeout=150)
        status = obj["status"]
        address = status["address"]
        assert address.startswith("http://127.0.0.1:")
        assert status["dashboardUrl"] == address + "/dashboard/"
        assert status["modelsReady"] == "2/2"
        assert condition(obj, "ModelsReady")["reason"] == "ModelsCreated"  # type: ignore[index]
        # the Kubernetes objects are written too
        assert get_json(cp, "deployment", "local", "-n", ns) is not None

        secret = get_json(cp, "secret", status["authSecretName"], "-n", ns)
        user = base64.b64decode(secret["data"]["username"]).decode()
        token = base64.b64decode(secret["data"]["token"]).decode()

        async def learn() -> list[str]:
            async with ModelServerClient(address, username=user, token=token) as client:
                for i in range(10):
                    await client.learn({"nx": 4 + i, "ny": 8, "nz": 8}, 100.0 + 7 * i)
                return await client.models()

        assert sorted(asyncio.run(learn())) == ["bayesian", "linear"]
        obj = wait_for(
            lambda: (o := _sm(cp, ns, "local")) and o["status"].get("samplesLearned") == 20 and o,
            "samples in status",
        )
        models = {m["name"]: m for m in obj["status"]["models"]}
        assert models["linear"]["samples"] == 10
        assert models["linear"]["metrics"]["RMSE"] > 0
        assert obj["status"]["best"]["metric"] == "RMSE"
        table = cp.kubectl("get", "sm", "local", "-n", ns).stdout
        assert "20" in table.splitlines()[1].split()

        # unauthenticated callers are refused by the server the operator started
        async def anonymous() -> Exception | None:
            async with ModelServerClient(address) as client:
                try:
                    await client.models()
                except Exception as exc:
                    return exc
            return None

        assert anonymous_error_is_auth(asyncio.run(anonymous()))

        # delete: the operator stops the server and removes its data
        server_dir = state / ns / "local"
        assert server_dir.exists()
        cp.kubectl("delete", "streammodel", "local", "-n", ns, "--timeout=60s")
        wait_for(lambda: not server_dir.exists(), "state removed")

        async def gone() -> bool:
            async with ModelServerClient(address, timeout=2.0) as client:
                return not await client.ready()

        assert wait_for(lambda: asyncio.run(gone()), "server stopped")
        assert "Traceback" not in proc.log(), proc.log()[-3000:]


def anonymous_error_is_auth(exc: Exception | None) -> bool:
    from streamml.errors import AuthError

    return isinstance(exc, AuthError)


@pytest.mark.skipif(not hasattr(os, "kill"), reason="POSIX only")
def test_local_runtime_restarts_a_dead_server(
    control_plane: ControlPlane, k8s_namespace: str, tmp_path: Path
) -> None:
    cp, ns = control_plane, k8s_namespace
    install_crds(cp)
    with OperatorProcess(
        cp.kubeconfig, tmp_path, "--namespace", ns, "--local-runtime", "--state-dir",
        str(tmp_path / "state"),
    ):  # fmt: skip
        doc = {
            "apiVersion": "streamml.io/v1alpha1",
            "kind": "StreamModel",
            "metadata": {"name": "phoenix"},
            "spec": {"models": MODELS[1:]},
        }
        cp.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(doc))
        obj = wait_for(lambda: _ready(cp, ns, "phoenix"), "Ready", timeout=150)
        ready_since = condition(obj, "Ready")["lastTransitionTime"]  # type: ignore[index]
        address = obj["status"]["address"]
        port = int(address.rsplit(":", 1)[1])
        pid = _pid_listening(port)
        os.kill(pid, 9)  # a server process this test's operator started
        # it goes down (Ready False) and comes back (Ready True, a later transition)
        wait_for(
            lambda: (
                (o := _ready(cp, ns, "phoenix"))
                and condition(o, "Ready")["lastTransitionTime"] != ready_since  # type: ignore[index]
                and o
            ),
            "Ready again after a restart",
            timeout=150,
        )


def _pid_listening(port: int) -> int:
    """The PID of the process that listens on 127.0.0.1:port (from /proc, no tools needed)."""
    inode = None
    for table in ("/proc/net/tcp",):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state = fields[1], fields[3]
            if state == "0A" and int(local.split(":")[1], 16) == port:
                inode = fields[9]
    assert inode is not None, f"nothing listens on {port}"
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            for fd in (pid_dir / "fd").iterdir():
                if os.readlink(fd) == f"socket:[{inode}]":
                    return int(pid_dir.name)
        except OSError:
            continue
    raise AssertionError(f"no process owns the socket on port {port}")
