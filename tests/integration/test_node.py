"""A real node: pods from a local image run, Services resolve and balance, Ingress and PVCs work.

One node for the module (``node_cluster``): kubelet + containerd + runc + CNI + kube-proxy, CoreDNS,
Traefik and the local-volume provisioner, in the project's own network namespace. The workload is
``streamml.local/tinyhttp:1`` (a static C responder built locally, imported without a registry).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest
import yaml

from streamml.testbed.node import NodeCluster
from streamml.testbed.nodeflags import NODE_NAME, STORAGE_CLASS
from streamml.testbed.nodeimages import TINYHTTP_IMAGE

REPLICAS = 3


def _apply(node: NodeCluster, namespace: str, *docs: dict[str, object]) -> None:
    node.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(docs))


def _web(node: NodeCluster, namespace: str) -> None:
    labels = {"app": "web"}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": REPLICAS,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": 2,
                    "containers": [
                        {
                            "name": "web",
                            "image": TINYHTTP_IMAGE,
                            "imagePullPolicy": "Never",
                            "args": ["serve", "8080"],
                            "ports": [{"containerPort": 8080}],
                            "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                        }
                    ],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    _apply(node, namespace, deployment, service)
    node.kubectl("rollout", "status", "deployment/web", "-n", namespace, "--timeout=120s")


def _pods(node: NodeCluster, namespace: str) -> list[str]:
    out = node.kubectl("get", "pods", "-n", namespace, "-l", "app=web", "-o", "name").stdout
    return [line.split("/", 1)[1] for line in out.split()]


def test_node_is_ready(node_cluster: NodeCluster) -> None:
    node = json.loads(node_cluster.kubectl("get", "node", NODE_NAME, "-o", "json").stdout)
    ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
    assert ready == "True"
    assert node["status"]["addresses"][0]["address"] == "10.250.0.1"


def test_deployment_of_a_local_image_becomes_ready(
    node_cluster: NodeCluster, node_namespace: str
) -> None:
    _web(node_cluster, node_namespace)
    pods = _pods(node_cluster, node_namespace)
    assert len(pods) == REPLICAS
    out = node_cluster.kubectl("logs", "-n", node_namespace, pods[0], check=False)
    assert out.returncode == 0, out.stderr  # logs through the kubelet (InternalIP)


def test_service_resolves_by_dns_name_in_a_pod_and_balances(
    node_cluster: NodeCluster, node_namespace: str
) -> None:
    _web(node_cluster, node_namespace)
    client = _pods(node_cluster, node_namespace)[0]
    name = f"web.{node_namespace}.svc"
    seen: set[str] = set()
    for _ in range(30):
        out = node_cluster.kubectl(
            "exec", "-n", node_namespace, client, "--", "/tinyhttp", "get", name, "80"
        ).stdout
        seen.add(out.rsplit("pod=", 1)[1].strip())
    assert seen <= set(_pods(node_cluster, node_namespace))
    assert len(seen) >= 2  # 30 requests over 3 replicas: one alone is ~1e-10 likely


def test_cluster_dns_answers_only_for_the_cluster(
    node_cluster: NodeCluster, node_namespace: str
) -> None:
    _web(node_cluster, node_namespace)
    client = _pods(node_cluster, node_namespace)[0]
    out = node_cluster.kubectl(
        "exec",
        "-n",
        node_namespace,
        client,
        "--",
        "/tinyhttp",
        "get",
        "example.com",
        "80",
        check=False,
    )
    assert out.returncode != 0
    assert "resolve example.com" in out.stderr  # REFUSED by CoreDNS: nothing is forwarded


def test_ingress_routes_to_the_service_from_the_host_relay(
    node_cluster: NodeCluster, node_namespace: str
) -> None:
    if not node_cluster.with_ingress:
        pytest.skip("Traefik not built: streamml cluster build --node")
    _web(node_cluster, node_namespace)
    path = f"/{node_namespace}"
    ingress = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": "web"},
        "spec": {
            "rules": [
                {
                    "http": {
                        "paths": [
                            {
                                "path": path,
                                "pathType": "Prefix",
                                "backend": {"service": {"name": "web", "port": {"number": 80}}},
                            }
                        ]
                    }
                }
            ]
        },
    }
    _apply(node_cluster, node_namespace, ingress)
    got = node_cluster.kubectl(
        "get", "ingress", "web", "-n", node_namespace, "-o", "jsonpath={.spec.ingressClassName}"
    ).stdout
    assert got == "traefik"  # the default IngressClass
    url = f"{node_cluster.ingress_url}{path}"
    assert url.startswith("http://127.0.0.1:")
    body = ""
    for _ in range(120):  # Traefik picks the Ingress up from its watch
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                body = response.read().decode()
                break
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    assert body.startswith("pod=web-")


def test_a_pvc_of_the_default_class_binds_and_is_released(
    node_cluster: NodeCluster, node_namespace: str
) -> None:
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    _apply(node_cluster, node_namespace, claim)
    node_cluster.kubectl(
        "wait",
        "pvc/data",
        "-n",
        node_namespace,
        "--for=jsonpath={.status.phase}=Bound",
        "--timeout=60s",
    )
    pvc = json.loads(
        node_cluster.kubectl("get", "pvc/data", "-n", node_namespace, "-o", "json").stdout
    )
    assert pvc["spec"]["storageClassName"] == STORAGE_CLASS
    volume = pvc["spec"]["volumeName"]
    directory = node_cluster.node_dir / "volumes" / volume
    assert directory.is_dir()
    node_cluster.kubectl("delete", "pvc/data", "-n", node_namespace)
    node_cluster.kubectl("wait", f"pv/{volume}", "--for=delete", "--timeout=60s")
    assert not directory.exists()
