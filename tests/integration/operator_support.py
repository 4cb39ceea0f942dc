"""Helpers for tests and the benchmark that run ``streamml operator`` on a real control plane.

- :func:`install_crds`: apply ``crds/`` and wait until the API server serves them.
- :class:`OperatorProcess`: the operator as a real process (``python -m streamml.cli operator``)
  on a kubeconfig, with a liveness endpoint on a free loopback port; stopped by PID.
- :func:`wait_for`: poll a condition with a deadline (a failure names what it waited for).
- :func:`play_kubelet`: no kubelet runs, so mark the Deployment's pods Ready the way a kubelet
  would (pod status subresource); the controllers then make the Deployment available.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from streamml.procs import free_port
from streamml.pycommand import streamml_command
from streamml.testbed.controlplane import ControlPlane

ROOT = Path(__file__).parents[2]
T = TypeVar("T")


def wait_for(
    check: Callable[[], T | None], what: str, timeout: float = 60.0, interval: float = 0.25
) -> T:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except Exception as exc:  # a transient kubectl failure: keep polling
            last = exc
            value = None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last})")


def install_crds(cp: ControlPlane) -> None:
    cp.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    for crd in ("streammodels.streamml.io", "lammpssweeps.streamml.io"):
        cp.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{crd}")


def get_json(cp: ControlPlane, *args: str, kubeconfig: Path | None = None) -> Any:
    result = cp.kubectl("get", *args, "-o", "json", check=False, kubeconfig=kubeconfig)
    if result.returncode != 0:
        return None
    return json.loads(result.stdout)


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return None


class OperatorProcess:
    """``streamml operator`` as a child process; its log is kept for failure messages."""

    def __init__(
        self,
        kubeconfig: Path,
        log_dir: Path,
        *args: str,
        env: dict[str, str] | None = None,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_dir / f"operator-{time.monotonic_ns()}.log"
        self.port = free_port()
        self.args = list(args)
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")},
            "KUBECONFIG": str(kubeconfig),
            "STREAMML_STATUS_POLL_INTERVAL": "1",
            "STREAMML_CONTACT_SERVERS": "false",
            # a killed operator's successor waits out the Lease: keep that short in tests
            "STREAMML_LEADER_ELECTION__LEASE_DURATION": "5",
            "STREAMML_LEADER_ELECTION__RENEW_DEADLINE": "4",
            "STREAMML_LEADER_ELECTION__RETRY_PERIOD": "0.5",
            **(env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, timeout: float = 120.0) -> OperatorProcess:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    *streamml_command(),
                    "operator",
                    "--liveness",
                    f"http://127.0.0.1:{self.port}/healthz",
                    *self.args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=ROOT,
            )

        def alive() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"operator exited early:\n{self.log()[-4000:]}")
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.port}/healthz", timeout=2
                ) as reply:
                    return bool(reply.status == 200)
            except OSError:
                return False

        deadline = time.monotonic() + timeout
        while not alive():
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"operator not live:\n{self.log()[-4000:]}")
            time.sleep(0.2)
        return self

    def kill(self) -> None:
        """SIGKILL: no clean-up at all (a crashed operator)."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> OperatorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def play_kubelet(cp: ControlPlane, namespace: str, name: str) -> None:
    """Make the StreamModel's server pods Ready (what a kubelet would report)."""
    selector = f"app.kubernetes.io/instance={name},app.kubernetes.io/name=streamml-server"

    def pods() -> list[dict[str, Any]] | None:
        listing = get_json(cp, "pods", "-n", namespace, "-l", selector)
        items = (listing or {}).get("items") or []
        return [p for p in items if not p["metadata"].get("deletionTimestamp")] or None

    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for pod in wait_for(pods, f"pods of {namespace}/{name}"):
        status = {
            "status": {
                "phase": "Running",
                "conditions": [
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                    {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                    {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                    {"type": "Ready", "status": "True", "lastTransitionTime": now},
                ],
            }
        }
        cp.kubectl(
            "patch", "pod", pod["metadata"]["name"], "-n", namespace,
            "--subresource=status", "--type=merge", "-p", json.dumps(status),
        )  # fmt: skip
