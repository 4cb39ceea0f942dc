"""What a real node changes on the host, and how it is undone.

- The network namespace the node lives in (``ip netns add``): only ``lo`` with the node address
  as a /32, later the CNI bridge and pod veths. No link out, no default route: nothing the node
  does can leave the machine. ``ip netns del`` removes it and everything in it.
- Host-wide settings kubelet changes (:data:`KUBELET_SYSCTLS`): recorded before, restored after.
- Paths kubelet and containerd create outside their own directories (:data:`GLOBAL_PATHS`):
  removed on teardown only if they did not exist before.
- Mounts under the node's directory (kubelet's rshared binds, token tmpfs, overlays, pod netns
  files): unmounted deepest first.

:func:`snapshot` captures the host (sysctls, mounts, netns list, iptables) for a test to compare.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from streamml import procs
from streamml.errors import InfrastructureError

NETNS = "streamml-node"
NETNS_DIR = Path("/run/netns")
KUBELET_SYSCTLS = ("vm.overcommit_memory", "kernel.panic", "kernel.panic_on_oops")
GLOBAL_PATHS = (
    "/var/log/containers",
    "/var/lib/kubelet/device-plugins",
    "/var/lib/kubelet",
    "/var/lib/cni/results",
    "/var/lib/cni",
    "/run/containerd/s",
    "/run/containerd",
)
#: host settings a node could plausibly touch: the teardown test checks all are as before
WATCHED_SYSCTLS = (
    *KUBELET_SYSCTLS,
    "net.netfilter.nf_conntrack_max",
    "net.netfilter.nf_conntrack_tcp_timeout_established",
    "net.netfilter.nf_conntrack_tcp_timeout_close_wait",
    "net.ipv4.ip_forward",
    "net.ipv4.conf.all.route_localnet",
    "net.bridge.bridge-nf-call-iptables",
)
CGROUP_ROOT = Path("/sys/fs/cgroup")
#: where the node's mounts can appear outside its own directory
MOUNT_SCOPE = (str(NETNS_DIR), *GLOBAL_PATHS, "/var/log/pods")
CGROUP_NAME = "kubepods"


def nsenter(netns: str = NETNS) -> list[str]:
    """The argv prefix that runs a command in the node's network namespace (only that one)."""
    return ["nsenter", f"--net={NETNS_DIR / netns}", "--"]


def _run(argv: list[str]) -> str:
    proc = procs.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise InfrastructureError(f"`{' '.join(argv)}` failed: {proc.stderr.strip()}")
    return str(proc.stdout)


def netns_exists(netns: str = NETNS) -> bool:
    return (NETNS_DIR / netns).exists()


def create_netns(address: str, service_range: str, netns: str = NETNS) -> None:
    """The node's namespace: ``lo`` up with ``address``/32, forwarding on, no route out."""
    if netns_exists(netns):
        raise InfrastructureError(
            f"network namespace {netns} exists: another node is up (`streamml cluster down`)"
        )
    _run(["ip", "netns", "add", netns])
    try:
        inside = ["ip", "-n", netns]
        _run([*inside, "link", "set", "lo", "up"])
        _run([*inside, "addr", "add", f"{address}/32", "dev", "lo"])
        # With no default route the lookup for a ClusterIP fails before kube-proxy's DNAT:
        # route the service range to lo, sourced from the node address (it stays inside).
        _run([*inside, "route", "add", service_range, "dev", "lo", "src", address])
        sysctls = ["net.ipv4.ip_forward=1", "net.bridge.bridge-nf-call-iptables=1"]
        _run([*nsenter(netns), "sysctl", "-q", "-w", *sysctls])
    except BaseException:
        delete_netns(netns)
        raise


def delete_netns(netns: str = NETNS) -> None:
    if netns_exists(netns):
        _run(["ip", "netns", "del", netns])


def netns_dir_state() -> dict[str, bool]:
    """Whether /run/netns exists and is a mount point (``ip netns add`` makes both, once)."""
    mounted = str(NETNS_DIR) in {
        _unescape(line.split()[4]) for line in Path("/proc/self/mountinfo").read_text().splitlines()
    }
    return {"exists": NETNS_DIR.is_dir(), "mounted": mounted}


def restore_netns_dir(before: dict[str, bool]) -> None:
    """Undo the /run/netns bind mount and directory if the first ``ip netns add`` made them."""
    if not NETNS_DIR.is_dir() or any(NETNS_DIR.iterdir()):
        return  # another namespace lives there now: leave it
    now = netns_dir_state()
    if now["mounted"] and not before.get("mounted", True):
        procs.run(["umount", str(NETNS_DIR)], capture_output=True, check=False)
    if not before.get("exists", True) and not netns_dir_state()["mounted"]:
        with contextlib.suppress(OSError):
            NETNS_DIR.rmdir()


def read_sysctls(names: tuple[str, ...] = KUBELET_SYSCTLS) -> dict[str, str]:
    """Current values of ``names`` (those this kernel has)."""
    paths = {n: Path("/proc/sys", *n.split(".")) for n in names}
    return {n: p.read_text().strip() for n, p in paths.items() if p.exists()}


def restore_sysctls(values: dict[str, str]) -> None:
    for name, value in values.items():
        path = Path("/proc/sys", *name.split("."))
        if path.read_text().strip() != value:
            path.write_text(value + "\n")


def existing_paths(paths: tuple[str, ...] = GLOBAL_PATHS) -> list[str]:
    return [p for p in paths if os.path.lexists(p)]


def remove_created_paths(existed_before: list[str], paths: tuple[str, ...] = GLOBAL_PATHS) -> None:
    """Remove each of ``paths`` that did not exist before the node started (deepest first)."""
    import shutil

    for path in sorted(paths, key=len, reverse=True):
        if path not in existed_before and os.path.lexists(path):
            shutil.rmtree(path, ignore_errors=True)


def mounts_under(root: Path) -> list[str]:
    """Mount points at or below ``root``, deepest first (from /proc/self/mountinfo)."""
    prefix = str(root.resolve())
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = _unescape(line.split()[4])
        if point == prefix or point.startswith(prefix + "/"):
            points.append(point)
    return sorted(points, key=lambda p: p.count("/"), reverse=True)


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def unmount_all(root: Path) -> None:
    """Unmount everything under ``root`` (repeatedly: a mount may be stacked several times)."""
    for _ in range(5):
        points = mounts_under(root)
        if not points:
            return
        for point in points:
            if procs.run(["umount", point], capture_output=True, check=False).returncode:
                procs.run(["umount", "-l", point], capture_output=True, check=False)
    left = mounts_under(root)
    if left:
        raise InfrastructureError(f"could not unmount {left[:5]}")


def cgroups_present() -> list[str]:
    """The controller hierarchies that have a ``kubepods`` cgroup now."""
    return sorted(str(c) for c in CGROUP_ROOT.glob(f"*/{CGROUP_NAME}"))


def remove_cgroups(existed_before: list[str]) -> None:
    """rmdir the ``kubepods`` trees kubelet made (leaves first); empty cgroups only."""
    for top in cgroups_present():
        if top in existed_before:
            continue
        dirs = sorted((p for p in Path(top).rglob("*") if p.is_dir()), key=lambda p: len(p.parts))
        for path in [*reversed(dirs), Path(top)]:
            with contextlib.suppress(OSError):
                path.rmdir()


@dataclass(frozen=True)
class HostSnapshot:
    """What the node must leave as it found it."""

    sysctls: dict[str, str]
    mounts: frozenset[str]
    netns: frozenset[str]
    iptables: str
    cgroups: tuple[str, ...]


def snapshot(scope: tuple[str, ...] = ()) -> HostSnapshot:
    """The host now; ``scope`` limits the mounts compared to those at or under these paths
    (other users of a shared machine mount things of their own meanwhile)."""
    prefixes = tuple(str(Path(p)) for p in scope)
    mounts = frozenset(
        point
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if (point := _unescape(line.split()[4]))
        and (not prefixes or any(point == p or point.startswith(p + "/") for p in prefixes))
    )
    netns = frozenset(p.name for p in NETNS_DIR.iterdir()) if NETNS_DIR.is_dir() else frozenset()
    sysctls = read_sysctls(WATCHED_SYSCTLS)
    return HostSnapshot(sysctls, mounts, netns, _iptables(), tuple(cgroups_present()))


def _iptables() -> str:
    proc = procs.run(["iptables-save"], capture_output=True, text=True, check=False)
    lines = [
        re.sub(r"\[\d+:\d+\]", "", line)
        for line in proc.stdout.splitlines()
        if not line.startswith("#")
    ]
    return "\n".join(lines)
