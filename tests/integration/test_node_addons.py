"""The node's network namespace, relays, cluster DNS and storage, without kubelet.

``NodeCluster(with_kubelet=False)``: the control plane inside the namespace (API server on the node
address, Node,RBAC, every default controller), containerd with the local images, CoreDNS and the
local-volume provisioner; the host talks to it through the 127.0.0.1 relay only. Runs as soon as
CoreDNS is built (test_node.py also needs kubelet). Then the teardown must leave the host as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest
import yaml

from streamml.pycommand import python_code
from streamml.testbed import nodebuild, nodeflags, nodehost
from streamml.testbed.node import NodeCluster

pytestmark = [pytest.mark.integration, pytest.mark.node]
Control = tuple[NodeCluster, nodehost.HostSnapshot, tuple[str, ...]]

#: a DNS A query from inside the namespace: prints "RCODE ANSWERS LAST-A-RECORD"
_QUERY = """
import socket, struct, sys
name, server = sys.argv[1], sys.argv[2]
q = struct.pack(">HHHHHH", 7, 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\\0\\0\\1\\0\\1"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
s.sendto(q, (server, 53))
r = s.recv(4096)
answers = struct.unpack(">H", r[6:8])[0]
print(r[3] & 15, answers, socket.inet_ntoa(r[-4:]) if answers else "-")
"""


def _dns(name: str) -> tuple[int, int, str]:
    argv = [*nodehost.nsenter(), *python_code(_QUERY, name, nodeflags.NODE_IP)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60).stdout
    rcode, answers, address = out.split()
    return int(rcode), int(answers), address


@pytest.fixture(scope="module")
def control_node() -> Iterator[Control]:
    if os.geteuid() != 0 or shutil.which("socat") is None or shutil.which("containerd") is None:
        pytest.skip("needs root, socat and containerd")
    if not nodebuild.coredns_target().complete():
        pytest.skip("CoreDNS not built: streamml cluster build --node")
    node = NodeCluster(with_kubelet=False, with_ingress=False)
    scope = (str(node.workdir), *nodehost.MOUNT_SCOPE)
    before = nodehost.snapshot(scope)
    with node:
        yield node, before, scope


def test_the_api_is_reached_only_through_the_loopback_relay(control_node: Control) -> None:
    node, _, _ = control_node
    assert node.server.startswith("https://127.0.0.1:")
    assert node.kubectl("get", "--raw", "/readyz").stdout == "ok"
    endpoints = json.loads(node.kubectl("get", "endpoints", "kubernetes", "-o", "json").stdout)
    assert endpoints["subsets"][0]["addresses"][0]["ip"] == nodeflags.NODE_IP
    # nothing routes out of the namespace: no default route, only lo's own addresses
    routes = subprocess.run(
        ["ip", "-n", nodehost.NETNS, "route", "show", "default"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert routes == ""
    links = subprocess.run(
        ["ip", "-n", nodehost.NETNS, "-o", "link", "show"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert [line.split(":")[1].strip() for line in links] == ["lo"]  # no CNI bridge: no pods


def test_service_names_resolve_and_nothing_else_does(control_node: Control) -> None:
    node, _, _ = control_node
    node.kubectl("create", "service", "clusterip", "web", "--tcp=80:8080")
    ip = node.kubectl("get", "service", "web", "-o", "jsonpath={.spec.clusterIP}").stdout
    assert _dns("web.default.svc.cluster.local") == (0, 1, ip)
    assert _dns("kubernetes.default.svc.cluster.local") == (0, 1, "10.0.0.1")
    assert _dns("nosuch.default.svc.cluster.local")[0] == 3  # NXDOMAIN
    assert _dns("example.com")[0] == 5  # REFUSED: no forwarding to the host's resolvers


def test_a_claim_of_the_default_class_binds_and_its_volume_goes_with_it(
    control_node: Control,
) -> None:
    node, _, _ = control_node
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    node.kubectl("apply", "-f", "-", input=yaml.safe_dump(claim))
    node.kubectl("wait", "pvc/data", "--for=jsonpath={.status.phase}=Bound", "--timeout=180s")
    volume = node.kubectl("get", "pvc/data", "-o", "jsonpath={.spec.volumeName}").stdout
    directory = node.node_dir / "volumes" / volume
    assert directory.is_dir()
    node.kubectl("delete", "pvc/data")
    node.kubectl("wait", f"pv/{volume}", "--for=delete", "--timeout=180s")
    assert not directory.exists()


def test_containers_are_killed_and_the_host_restored_on_stop(control_node: Control) -> None:
    node, before, scope = control_node
    for name in ("c1", "c2"):
        node.ctr("run", "-d", "streamml.local/tinyhttp:1", name, "/tinyhttp", "serve", "8091")
    tasks = node.ctr("tasks", "ls").stdout.splitlines()[1:]
    pids = [int(line.split()[1]) for line in tasks]
    assert len(pids) == 2
    assert nodehost.snapshot(scope).mounts - before.mounts  # container root file systems
    node.stop()
    after = nodehost.snapshot(scope)
    assert after == before
    assert not any(os.path.exists(f"/proc/{pid}") for pid in pids)
    assert not node.workdir.exists()
