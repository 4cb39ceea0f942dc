"""Command lines of the control-plane daemons (pure builders; the ControlPlane spawns them).

Every listener is on 127.0.0.1; the API server authenticates by client certificate or
ServiceAccount token only (no anonymous requests) and authorizes with RBAC.
"""

from __future__ import annotations

from pathlib import Path

#: allocation range for Service cluster IPs: addresses are written into objects, never contacted.
#: A /16 (65,534 Services): a /24 ran out at 254, leaving the 255th StreamModel without a Service.
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/16"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
#: controllers worth running without a kubelet: owner-reference GC, Deployment -> ReplicaSet,
#: namespace deletion, the default ServiceAccount of each namespace, ResourceQuota usage (the
#: quota admission refuses everything a quota covers until this controller has counted). Not the
#: Job controller: tests set Job status themselves and must not race a controller doing the same.
CONTROLLERS = (
    "garbage-collector-controller",
    "deployment-controller",
    "replicaset-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "resourcequota-controller",
)


def etcd_argv(binary: Path, data_dir: Path, client_port: int, peer_port: int) -> list[str]:
    client_url = f"http://127.0.0.1:{client_port}"
    peer_url = f"http://127.0.0.1:{peer_port}"
    return [
        str(binary),
        "--name=streamml",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={client_url}",
        f"--advertise-client-urls={client_url}",
        f"--listen-peer-urls={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster=streamml={peer_url}",
        "--initial-cluster-state=new",
        # a throwaway store: fsync would only slow every write on a shared disk
        "--unsafe-no-fsync",
        "--log-level=warn",
    ]


def apiserver_argv(binary: Path, pki_dir: Path, etcd_url: str, port: int) -> list[str]:
    p = pki_dir
    return [
        str(binary),
        f"--etcd-servers={etcd_url}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={port}",
        f"--cert-dir={p}",
        f"--tls-cert-file={p / 'apiserver.crt'}",
        f"--tls-private-key-file={p / 'apiserver.key'}",
        f"--client-ca-file={p / 'ca.crt'}",
        "--authorization-mode=RBAC",
        "--anonymous-auth=false",
        f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
        f"--service-account-key-file={p / 'sa.pub'}",
        f"--service-account-signing-key-file={p / 'sa.key'}",
        "--profiling=false",
        "--v=1",
    ]


def controller_manager_argv(binary: Path, pki_dir: Path, kubeconfig: Path) -> list[str]:
    return [
        str(binary),
        f"--kubeconfig={kubeconfig}",
        # each controller acts as its own ServiceAccount with the bootstrap RBAC roles
        "--use-service-account-credentials=true",
        f"--service-account-private-key-file={pki_dir / 'sa.key'}",
        f"--root-ca-file={pki_dir / 'ca.crt'}",
        f"--controllers={','.join(CONTROLLERS)}",
        "--leader-elect=false",
        "--bind-address=127.0.0.1",
        "--secure-port=0",  # no health endpoint needed, so no port to collide on
        "--concurrent-gc-syncs=5",
        "--v=1",
    ]
