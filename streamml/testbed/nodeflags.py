"""Command lines and configuration files of a real node's daemons (pure builders).

Everything runs inside the node's network namespace (:mod:`streamml.testbed.netns`): the node
address :data:`NODE_IP` lives on that namespace's ``lo``, pods on its CNI bridge. Listeners are on
the node address or the namespace's own 127.0.0.1; nothing routes out of it (no default route,
CNI ``ipMasq: false``). The facts behind each setting are in docs/node.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from streamml.testbed.k8sflags import SERVICE_ACCOUNT_ISSUER, SERVICE_CLUSTER_IP_RANGE

NODE_NAME = "streamml-node"
NODE_IP = "10.250.0.1"
APISERVER_PORT = 6443
INGRESS_PORT = 80
#: etcd on the namespace's own loopback (the namespace is fresh: fixed ports cannot collide)
ETCD_CLIENT_PORT, ETCD_PEER_PORT = 2379, 2380
POD_CIDR = "10.244.0.0/24"
CLUSTER_DOMAIN = "cluster.local"
CNI_BIN_DIR = "/usr/lib/cni"
INGRESS_CLASS = "traefik"
STORAGE_CLASS = "streamml-local"
PROVISIONER = "streamml.io/local-path"


def apiserver_node_flags(pki_dir: Path, etcd_url: str) -> list[str]:
    """What a real node needs of kube-apiserver, on top of :func:`k8sflags.apiserver_argv`."""
    p = pki_dir
    return [
        f"--etcd-servers={etcd_url}",
        f"--bind-address={NODE_IP}",
        # not 127.0.0.1: pods reach the `kubernetes` Service through this address
        f"--advertise-address={NODE_IP}",
        f"--secure-port={APISERVER_PORT}",
        "--authorization-mode=Node,RBAC",
        "--enable-admission-plugins=NodeRestriction",
        f"--kubelet-client-certificate={p / 'apiserver-kubelet-client.crt'}",
        f"--kubelet-client-key={p / 'apiserver-kubelet-client.key'}",
        f"--kubelet-certificate-authority={p / 'ca.crt'}",
        # else exec/logs look the node up by host name through DNS, which does not know it
        "--kubelet-preferred-address-types=InternalIP",
    ]


def controller_manager_node_argv(binary: Path, pki_dir: Path, kubeconfig: Path) -> list[str]:
    return [
        str(binary),
        f"--kubeconfig={kubeconfig}",
        # the default set: endpointslice (Services get endpoints), root-ca-cert-publisher (token
        # volumes), job, node lifecycle, PV binder, ... as on any cluster
        "--controllers=*",
        "--use-service-account-credentials=true",
        f"--service-account-private-key-file={pki_dir / 'sa.key'}",
        f"--root-ca-file={pki_dir / 'ca.crt'}",
        f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        "--leader-elect=false",
        "--bind-address=127.0.0.1",
        "--secure-port=0",
        "--v=1",
    ]


def scheduler_argv(binary: Path, kubeconfig: Path) -> list[str]:
    return [
        str(binary),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--leader-elect=false",
        "--bind-address=127.0.0.1",
        "--v=1",
    ]


def containerd_config(root: Path, state: Path, socket: Path, cni_conf_dir: Path) -> str:
    """containerd 1.6 TOML: own root/state/socket, CRI with the local pause image."""
    from streamml.testbed.nodeimages import PAUSE_IMAGE

    return f"""version = 2
root = "{root}"
state = "{state}"
[grpc]
  address = "{socket}"
[ttrpc]
  address = "{socket}.ttrpc"
[debug]
  level = "warn"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # sandboxes ask for oom_score_adj -998, which needs CAP_SYS_RESOURCE (this VM lacks it)
  restrict_oom_score_adj = true
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  SystemdCgroup = false
[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "{CNI_BIN_DIR}"
  conf_dir = "{cni_conf_dir}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"
"""


def cni_conflist(ipam_dir: Path) -> str:
    """A bridge network for the pods; no masquerade (nothing may leave the namespace)."""
    doc = {
        "cniVersion": "0.4.0",
        "name": "streamml",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(ipam_dir),
                    "ranges": [[{"subnet": POD_CIDR}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}, "snat": False},
        ],
    }
    return json.dumps(doc, indent=2)


def kubelet_config(pki_dir: Path, resolv_conf: Path, pod_logs: Path) -> str:
    doc: dict[str, Any] = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": NODE_IP,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki_dir / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "tlsCertFile": str(pki_dir / "kubelet-serving.crt"),
        "tlsPrivateKeyFile": str(pki_dir / "kubelet-serving.key"),
        "cgroupDriver": "cgroupfs",
        "failSwapOn": False,
        "failCgroupV1": False,
        "oomScoreAdj": 0,
        "clusterDNS": [NODE_IP],
        "clusterDomain": CLUSTER_DOMAIN,
        # names only the cluster DNS: a pod's resolver never learns the host's (outside) servers
        "resolvConf": str(resolv_conf),
        "podLogsDir": str(pod_logs),
        "podCIDR": POD_CIDR,
        "healthzBindAddress": "127.0.0.1",
        "readOnlyPort": 0,
        "serializeImagePulls": False,
        "imageGCHighThresholdPercent": 100,
        "evictionHard": {
            "memory.available": "1Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
        },
        "evictionPressureTransitionPeriod": "10s",
        "makeIPTablesUtilChains": True,
        "protectKernelDefaults": False,
        "localStorageCapacityIsolation": True,
    }
    return yaml.safe_dump(doc, sort_keys=False)


def kubelet_argv(
    binary: Path, config: Path, kubeconfig: Path, root_dir: Path, socket: Path
) -> list[str]:
    return [
        str(binary),
        f"--config={config}",
        f"--kubeconfig={kubeconfig}",
        f"--root-dir={root_dir}",
        f"--cert-dir={root_dir / 'pki'}",
        f"--container-runtime-endpoint=unix://{socket}",
        f"--node-ip={NODE_IP}",
        f"--hostname-override={NODE_NAME}",
        "--v=1",
    ]


def kube_proxy_config(kubeconfig: Path) -> str:
    doc = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": NODE_NAME,
        "bindAddress": NODE_IP,
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        "clusterCIDR": POD_CIDR,
        "nodePortAddresses": [f"{NODE_IP}/32"],
        "iptables": {"localhostNodePorts": False, "masqueradeAll": False},
        # 0: leave the conntrack sysctls (some host-wide) alone
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
    }
    return yaml.safe_dump(doc, sort_keys=False)


def corefile(kubeconfig: Path, context: str) -> str:
    """CoreDNS: the cluster's zones only; no forward (other names get REFUSED)."""
    zones = f"{CLUSTER_DOMAIN} in-addr.arpa ip6.arpa"
    return f"""{zones} {{
    bind {NODE_IP}
    errors
    health 127.0.0.1:8180
    ready 127.0.0.1:8181
    kubernetes {zones} {{
        kubeconfig {kubeconfig} {context}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 30
    loadbalance
}}
"""


def traefik_argv(binary: Path) -> list[str]:
    return [
        str(binary),
        "--global.checknewversion=false",
        "--global.sendanonymoususage=false",
        f"--entrypoints.web.address={NODE_IP}:{INGRESS_PORT}",
        "--entrypoints.traefik.address=127.0.0.1:9000",
        "--ping=true",
        "--ping.entrypoint=traefik",
        "--providers.kubernetesingress=true",
        f"--providers.kubernetesingress.ingressendpoint.ip={NODE_IP}",
        "--log.level=INFO",
    ]


__all__ = ["SERVICE_ACCOUNT_ISSUER"]
