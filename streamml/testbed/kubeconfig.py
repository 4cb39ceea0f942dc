"""Kubeconfig documents for the local control plane (pure builders, credentials embedded).

Everything is inline (``*-data``) so a kubeconfig is one self-contained file that can be copied
into a Secret or handed to another process.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml

from streamml.files import write_atomic

CLUSTER = "streamml-local"


def _b64(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def kubeconfig(
    server: str,
    ca_cert: bytes,
    user: str,
    *,
    client_cert: bytes | None = None,
    client_key: bytes | None = None,
    token: str | None = None,
    namespace: str | None = None,
) -> dict[str, Any]:
    """A kubeconfig with one cluster, one user (client certificate or bearer token), one context."""
    if (client_cert is None) != (client_key is None):
        raise ValueError("a client certificate needs its key")
    if (client_cert is None) == (token is None):
        raise ValueError("give either a client certificate or a token")
    credentials: dict[str, str] = (
        {"token": token}
        if token is not None
        else {
            "client-certificate-data": _b64(client_cert or b""),
            "client-key-data": _b64(client_key or b""),
        }
    )
    context: dict[str, str] = {"cluster": CLUSTER, "user": user}
    if namespace:
        context["namespace"] = namespace
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CLUSTER,
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_cert)},
            }
        ],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": user, "context": context}],
        "current-context": user,
        "preferences": {},
    }


def write(path: Path, document: dict[str, Any]) -> Path:
    """Write a kubeconfig readable by its owner only (it holds credentials)."""
    return write_atomic(path, yaml.safe_dump(document, sort_keys=False), private=True)
