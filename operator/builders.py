"""Pure manifest builders: a validated StreamModel spec in, Kubernetes object dicts out.

Nothing here talks to the API server; :mod:`streamml.operator.reconcile` sends what these return.
Every object carries the owner reference (garbage collection on delete) and the same labels;
a claim with ``reclaimPolicy: Retain`` is the exception (:mod:`streamml.operator.retention`).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Any

from streamml.operator import retention
from streamml.vocabulary.streammodel import STREAMMODEL, StreamModelSpec

MANAGER = "streamml-operator"
SERVER_UID = 10001
DATA_DIR = "/data"
AUTH_DIR = "/var/run/secrets/streamml"
CONFIG_HASH_ANNOTATION = "streamml.io/config-hash"
SERVER_COMMAND = ("streamml", "serve")


@dataclass(frozen=True)
class Owner:
    """The StreamModel that owns the objects being built."""

    name: str
    namespace: str
    uid: str

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": STREAMMODEL.api_version,
            "kind": STREAMMODEL.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def selector_labels(owner: Owner) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "streamml-server",
        "app.kubernetes.io/instance": owner.name,
    }


def labels(owner: Owner) -> dict[str, str]:
    return {
        **selector_labels(owner),
        "app.kubernetes.io/component": "model-server",
        "app.kubernetes.io/part-of": "streamml",
        "app.kubernetes.io/managed-by": MANAGER,
    }


def selector_string(owner: Owner) -> str:
    return ",".join(f"{k}={v}" for k, v in selector_labels(owner).items())


def _metadata(owner: Owner, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": labels(owner),
        "ownerReferences": [owner.reference()],
    }


def auth_secret_name(owner: Owner, spec: StreamModelSpec) -> str:
    return spec.server.auth.secret_name or f"{owner.name}-auth"


def pvc_name(owner: Owner) -> str:
    return f"{owner.name}-data"


def new_token() -> str:
    return secrets.token_urlsafe(32)


def secret(owner: Owner, spec: StreamModelSpec, token: str) -> dict[str, Any]:
    """The generated credentials Secret (only when the spec references none)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(owner, auth_secret_name(owner, spec)),
        "type": "Opaque",
        "stringData": {"username": spec.server.auth.username, "token": token},
    }


def pvc(owner: Owner, spec: StreamModelSpec) -> dict[str, Any] | None:
    storage = spec.server.storage
    if storage.type != "PersistentVolumeClaim":
        return None
    body: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": storage.size}},
    }
    if storage.storage_class_name:
        body["storageClassName"] = storage.storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": retention.claim_metadata(
            _metadata(owner, pvc_name(owner)), owner, storage.reclaim_policy
        ),
        "spec": body,
    }


def config_hash(owner: Owner, spec: StreamModelSpec, image: str) -> str:
    """Changes exactly when the pod template must roll (models are updated through the API)."""
    material = {
        # the reclaim policy changes the claim, never the pod
        "server": spec.server.model_dump(
            mode="json", by_alias=True, exclude={"storage": {"reclaim_policy"}}
        ),
        "image": image,
        "secret": auth_secret_name(owner, spec),
    }
    digest = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()
    return digest[:16]


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def deployment(owner: Owner, spec: StreamModelSpec, image: str) -> dict[str, Any]:
    """The server Deployment: non-root, read-only root fs, probes, credentials from the Secret.

    One manifest as one literal (a pure builder; longer than ~60 lines on purpose: split, the
    Deployment would no longer read as the YAML it becomes).
    """
    server = spec.server
    data_volume: dict[str, Any] = (
        {"persistentVolumeClaim": {"claimName": pvc_name(owner)}}
        if server.storage.type == "PersistentVolumeClaim"
        else {"emptyDir": {"sizeLimit": server.storage.size}}
    )
    container = {
        "name": "server",
        "image": image,
        "imagePullPolicy": server.image_pull_policy,
        "command": list(SERVER_COMMAND),
        "args": [
            "--host",
            "0.0.0.0",  # inside the pod: the Service is the only way in
            "--port",
            str(server.port),
            "--data-dir",
            DATA_DIR,
            "--auth-user",
            "$(STREAMML_AUTH_USER)",
            "--auth-token-file",
            f"{AUTH_DIR}/token",
        ],
        "env": [
            {
                "name": "STREAMML_AUTH_USER",
                "valueFrom": {
                    "secretKeyRef": {"name": auth_secret_name(owner, spec), "key": "username"}
                },
            }
        ],
        "ports": [{"name": "http", "containerPort": server.port, "protocol": "TCP"}],
        "readinessProbe": _probe("/readyz", 5, 3),
        "livenessProbe": _probe("/healthz", 10, 6),
        "startupProbe": _probe("/healthz", 2, 60),
        "resources": server.resources.model_dump(mode="json"),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "data", "mountPath": DATA_DIR},
            {"name": "auth", "mountPath": AUTH_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - an emptyDir, not the host's /tmp
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(owner, owner.name),
        "spec": {
            "replicas": server.replicas,
            # One writer per data volume: never two servers on the same models, even briefly.
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": selector_labels(owner)},
            "template": {
                "metadata": {
                    "labels": labels(owner),
                    "annotations": {CONFIG_HASH_ANNOTATION: config_hash(owner, spec, image)},
                },
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": SERVER_UID,
                        "runAsGroup": SERVER_UID,
                        "fsGroup": SERVER_UID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": [
                        {"name": "data", **data_volume},
                        {
                            "name": "auth",
                            "secret": {
                                "secretName": auth_secret_name(owner, spec),
                                "defaultMode": 0o440,
                                "items": [{"key": "token", "path": "token"}],
                            },
                        },
                        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
                    ],
                },
            },
        },
    }


def service(owner: Owner, spec: StreamModelSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(owner, owner.name),
        "spec": {
            "type": spec.service.type,
            "selector": selector_labels(owner),
            "ports": [
                {"name": "http", "port": spec.service.port, "targetPort": "http", "protocol": "TCP"}
            ],
        },
    }


def ingress(owner: Owner, spec: StreamModelSpec) -> dict[str, Any] | None:
    conf = spec.ingress
    if not conf.enabled:
        return None
    rule: dict[str, Any] = {
        "http": {
            "paths": [
                {
                    "path": conf.path,
                    "pathType": "Prefix",
                    "backend": {
                        "service": {"name": owner.name, "port": {"number": spec.service.port}}
                    },
                }
            ]
        }
    }
    if conf.host:
        rule["host"] = conf.host
    body: dict[str, Any] = {"rules": [rule]}
    if conf.class_name:
        body["ingressClassName"] = conf.class_name
    if conf.tls_secret_name and conf.host:
        body["tls"] = [{"hosts": [conf.host], "secretName": conf.tls_secret_name}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": _metadata(owner, owner.name),
        "spec": body,
    }


def service_address(owner: Owner, spec: StreamModelSpec) -> str:
    """The in-cluster base URL (a DNS name: never a cluster IP)."""
    return f"http://{owner.name}.{owner.namespace}.svc:{spec.service.port}"


def ingress_url(spec: StreamModelSpec, load_balancer_host: str | None) -> str | None:
    conf = spec.ingress
    host = conf.host or load_balancer_host
    if not conf.enabled or not host:
        return None
    scheme = "https" if conf.tls_secret_name else "http"
    return f"{scheme}://{host}{conf.path}"
