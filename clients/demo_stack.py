"""What the demo runs: control plane, operator (local runtime), watch; and how it all stops.

Every process started here is a descendant of the demo, sampled by a
:class:`~streamml.procs.ProcessTracker` while it runs, so :meth:`Stack.close` stops the
operator gracefully (it stops its model servers), then whatever is left (LAMMPS jobs run in their
own sessions by design), then the control plane. With ``keep_running`` the control plane and
the operator are started detached and recorded in ``demo-state.json`` for ``demo --stop``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streamml.errors import InfrastructureError
from streamml.procs import ProcessTracker
from streamml.pycommand import streamml_command

Say = Callable[[str], None]
STATE_FILE = "demo-state.json"


class WatchThread:
    """``streamml watch`` in a thread of its own (its own event loop), stoppable from outside."""

    def __init__(self, target: Any, out: Path, interval: float) -> None:
        self.target, self.out, self.interval = target, out, interval
        self.recorded = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="streamml-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(timeout=10)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        from streamml.clients.watch import watch

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._ready.set()
        self.recorded, _ = await watch(
            self.target, self.out, interval=self.interval, stop=self._stop, final_poll=True
        )

    def stop(self, timeout: float = 30.0) -> None:
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=timeout)


class Stack:
    def __init__(self, out: Path, *, keep_running: bool, say: Say) -> None:
        self.out = out
        self.keep_running = keep_running
        self.say = say
        self.cluster_dir = out / "cluster"
        self.tracker = ProcessTracker()
        self.cp: Any = None
        self.operator: Any = None  # procs.Daemon
        self._operator_popen: subprocess.Popen[bytes] | None = None
        self._watch: WatchThread | None = None

    # -- start -------------------------------------------------------------------------------

    def start(self) -> None:
        from streamml.testbed.controlplane import ControlPlane
        from streamml.testbed.k8sbuild import ensure_binaries

        self.say("control-plane binaries: building once, then cached (this shows progress)")
        binaries = ensure_binaries(lambda line: self.say(f"  {line}"))
        self.say(f"starting kube-apiserver + etcd v{binaries.version} on 127.0.0.1")
        self.cp = ControlPlane(self.cluster_dir, detached=self.keep_running, binaries=binaries)
        self.cp.start()
        self.sample()
        self.say(f"control plane up at {self.cp.server}")
        self._install_crds()
        self._start_operator()

    def _install_crds(self) -> None:
        from streamml.vocabulary import crdgen

        infos = crdgen.resources()
        self.kubectl("apply", "-f", "-", input="---\n".join(crdgen.render(i) for i in infos))
        for info in infos:
            self.kubectl("wait", "--for=condition=Established", f"crd/{info.crd_name}")
        self.say("CRDs installed: " + ", ".join(i.crd_name for i in infos))

    def _start_operator(self) -> None:
        from streamml import procs

        argv = streamml_command(
            "operator",
            "--local-runtime",
            "--state-dir",
            str(self.out / "operator-state"),
            "--poll-interval",
            "2",
        )
        env = {**self.cp.env, "PYTHONUNBUFFERED": "1"}
        self.operator, self._operator_popen = procs.spawn(
            "operator",
            argv,
            self.out / "logs" / "operator.log",
            detached=self.keep_running,
            env=env,
        )
        self.sample()
        self.say(
            f"operator running (local runtime), pid {self.operator.pid}, log {self.operator.log}"
        )

    # -- use ---------------------------------------------------------------------------------

    def kubectl(self, *args: str, input: str | None = None) -> str:
        result = self.cp.kubectl(*args, input=input)
        return str(result.stdout)

    def apply(self, manifests: str, namespace: str) -> None:
        self.kubectl("apply", "-n", namespace, "-f", "-", input=manifests)

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any]:
        doc = json.loads(self.kubectl("get", kind, name, "-n", namespace, "-o", "json"))
        return doc if isinstance(doc, dict) else {}

    def sample(self) -> None:
        self.tracker.sample()

    def wait_ready(self, name: str, namespace: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        conditions: list[Any] = []
        while time.monotonic() < deadline:
            self.sample()
            status = self.get("streammodel", name, namespace).get("status") or {}
            conditions = status.get("conditions") or []
            true = {c.get("type") for c in conditions if c.get("status") == "True"}
            # what the sweep needs; Ready would also wait for an ingress controller (none here)
            if {"Available", "ModelsReady"} <= true:
                return
            if self.operator is not None and not self.operator.alive():
                raise InfrastructureError(
                    f"the operator exited; its log ends with:\n{self.operator.log_tail()}"
                )
            time.sleep(1.0)
        why = "; ".join(
            f"{c.get('type')}={c.get('status')} ({c.get('reason')}: {c.get('message')})"
            for c in conditions
        )
        raise InfrastructureError(
            f"StreamModel {name} not Ready within {timeout:.0f} s: {why or 'no conditions'}; "
            f"operator log {self.operator.log if self.operator else '-'}"
        )

    def start_watch(self, name: str, namespace: str, out: Path, interval: float) -> None:
        from streamml.clients.watch import target_from_streammodel

        target = target_from_streammodel(name, namespace, str(self.cp.kubeconfig))
        self._watch = WatchThread(target, out, interval)
        self._watch.start()

    def stop_watch(self) -> None:
        if self._watch is not None:
            self._watch.stop()
            self._watch = None

    # -- stop --------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop everything (or record it for ``demo --stop``); a second Ctrl-C cannot cut it."""
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            self.stop_watch()
            if self.keep_running and self.cp is not None and self.operator is not None:
                self._save_state()
                return
            self._stop_everything()
        finally:
            signal.signal(signal.SIGINT, previous)

    def _stop_everything(self) -> None:
        from streamml import procs

        self.tracker.sample()
        if self.operator is not None:
            self.say("stopping the operator (it stops its model server)")
            procs.stop(self.operator, self._operator_popen, grace=20.0)
        # LAMMPS jobs live in sessions of their own; the control plane stops last, in order
        keep = frozenset(d.pid for d in self.cp.daemons) if self.cp is not None else frozenset()
        left = self.tracker.stop_all(grace=5.0, exclude=keep)
        if left:
            self.say(f"stopped {len(left)} leftover process(es): {left}")
        if self.cp is not None:
            self.say("stopping the control plane")
            self.cp.stop()
        self.tracker.stop_all(grace=5.0)
        remaining = self.tracker.alive()
        if remaining:
            self.say(f"WARNING: processes still running: {remaining}")
        else:
            self.say("everything the demo started has stopped")

    def _save_state(self) -> None:
        state = {"cluster_dir": str(self.cluster_dir), "operator": self.operator.to_json()}
        (self.out / STATE_FILE).write_text(json.dumps(state, indent=2))


def stop_kept(state_path: Path, say: Say) -> int:
    """Stop what ``demo --keep-running`` left: the operator (by PID and start time), the cluster."""
    from streamml import procs
    from streamml.testbed.controlplane import STATE_FILE as CP_STATE
    from streamml.testbed.controlplane import ControlPlane

    if not state_path.exists():
        say(f"nothing to stop: no {state_path}")
        return 0
    try:
        state = json.loads(state_path.read_text())
        operator = procs.Daemon.from_json(state["operator"])
        cluster_dir = Path(state["cluster_dir"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InfrastructureError(f"{state_path} is not a demo state file: {exc}") from exc
    if operator.alive():
        say(f"stopping the operator (pid {operator.pid})")
        procs.stop(operator, grace=20.0)
    if (cluster_dir / CP_STATE).exists():
        say("stopping the control plane")
        ControlPlane.attach(cluster_dir).stop()
    state_path.unlink()
    say("stopped")
    return 0
