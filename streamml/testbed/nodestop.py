"""Tear a node down and leave the host as it was (see :mod:`streamml.testbed.nodehost`).

Order matters: the daemons started after containerd (kubelet first of all, so that it restarts
nothing) stop first; then every container task is killed through containerd and deleted (its
shim exits with it); then containerd, the scheduler, the controller manager, the API server
before etcd, the relays. Then mounts, cgroups, created paths, the namespace, the sysctls.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

from streamml import procs
from streamml.testbed import nodehost

if TYPE_CHECKING:
    from streamml.testbed.node import NodeCluster

logger = logging.getLogger(__name__)


def teardown(node: NodeCluster) -> None:
    names = [d.name for d in node.daemons]
    if "containerd" in names:
        after = names[names.index("containerd") + 1 :]
        _stop_named(node, after)
        if any(d.name == "containerd" and d.alive() for d in node.daemons):
            _kill_tasks(node)
        _stop_named(node, ["containerd"])
    _kill_shims(node.containerd_socket)
    for daemon in reversed(list(node.daemons)):
        procs.stop(daemon, node._popens.get(daemon.pid))
    node.daemons, node._popens = [], {}
    _restore_host(node)


def _stop_named(node: NodeCluster, names: list[str]) -> None:
    for daemon in reversed([d for d in node.daemons if d.name in names]):
        procs.stop(daemon, node._popens.get(daemon.pid))
        node.daemons.remove(daemon)


def _kill_tasks(node: NodeCluster) -> None:
    """Kill and delete every container of the node (pods outlive kubelet otherwise)."""
    listing = node.ctr("tasks", "ls", check=False).stdout.splitlines()[1:]
    tasks = [(line.split()[0], int(line.split()[1])) for line in listing if len(line.split()) >= 2]
    for task_id, _pid in tasks:
        node.ctr("tasks", "kill", "-a", "-s", "SIGKILL", task_id, check=False)
    deadline = time.monotonic() + 10
    for task_id, pid in tasks:
        while (info := procs.read_proc(pid)) is not None and time.monotonic() < deadline:
            if info.state == "Z":
                break
            time.sleep(0.05)
        node.ctr("tasks", "delete", "-f", task_id, check=False)
    for container in node.ctr("containers", "ls", "-q", check=False).stdout.split():
        node.ctr("containers", "delete", container, check=False)


def _kill_shims(socket: Path) -> None:
    """SIGKILL containerd shims still serving our containerd (found by its socket argument)."""
    marker = f"\0-address\0{socket}\0".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"containerd-shim" in cmdline.split(b"\0", 1)[0] and marker in cmdline + b"\0":
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)
                logger.info("killed leftover shim %s", entry.name)


def _restore_host(node: NodeCluster) -> None:
    before = node.host_before
    if not before:
        return  # this object never created the namespace (it may belong to another node)
    try:
        nodehost.unmount_all(node.node_dir)
        nodehost.remove_cgroups(list(before.get("cgroups", [])))
        if "paths" in before:
            nodehost.remove_created_paths(list(before["paths"]))
        for name in ("node", "relay"):
            shutil.rmtree(node.workdir / name, ignore_errors=True)
    finally:
        nodehost.delete_netns()
        nodehost.restore_netns_dir(dict(before.get("netns_dir", {})))
        nodehost.restore_sysctls(dict(before.get("sysctls", {})))
        node.host_before = {}  # done: a second stop must not touch a namespace made since
