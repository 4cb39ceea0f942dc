"""`NodeCluster.stop` (what `streamml cluster down` runs) leaves the host as it found it.

Its own node (after test_node.py's is gone): start, run a pod (so kubelet mounts volumes, makes
cgroups and kube-proxy writes iptables rules), stop, and compare the host with a snapshot taken
before: kubelet's host sysctls, the mount table, the list of network namespaces, the host's
iptables, kubelet's cgroups.
"""

from __future__ import annotations

from streamml.testbed import nodehost
from streamml.testbed.node import NodeCluster
from streamml.testbed.nodeimages import TINYHTTP_IMAGE


def test_stop_restores_the_host(node_host: None) -> None:
    node = NodeCluster()
    scope = (str(node.workdir), *nodehost.MOUNT_SCOPE)
    before = nodehost.snapshot(scope)
    try:
        node.start()
        node.kubectl(
            "run",
            "probe",
            f"--image={TINYHTTP_IMAGE}",
            "--image-pull-policy=Never",
            "--",
            "serve",
            "8080",
        )
        node.kubectl("wait", "pod/probe", "--for=condition=Ready", "--timeout=120s")
        during = nodehost.snapshot(scope)
        assert nodehost.NETNS in during.netns
        assert during.mounts - before.mounts  # kubelet and containerd did mount things
    finally:
        node.stop()
    after = nodehost.snapshot(scope)
    assert after.sysctls == before.sysctls
    assert after.mounts == before.mounts
    assert after.netns == before.netns
    assert after.iptables == before.iptables
    assert after.cgroups == before.cgroups
    assert not node.workdir.exists()
