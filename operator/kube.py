"""The operator's writes to the API server: server-side apply and a few reads.

One small wrapper over the official client's asyncio flavour (``kubernetes.aio``). Server-side
apply with one field manager makes every write idempotent: applying the same manifest twice
changes nothing (not even ``resourceVersion``).
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

from streamml.errors import ConflictError, SpecError, StreamMLError
from streamml.sweep import access

FIELD_MANAGER = "streamml-operator"

#: (apiVersion, kind) -> (path prefix, plural)
_PATHS: dict[tuple[str, str], tuple[str, str]] = {
    ("v1", "Secret"): ("/api/v1", "secrets"),
    ("v1", "PersistentVolumeClaim"): ("/api/v1", "persistentvolumeclaims"),
    ("v1", "Service"): ("/api/v1", "services"),
    ("apps/v1", "Deployment"): ("/apis/apps/v1", "deployments"),
    ("networking.k8s.io/v1", "Ingress"): ("/apis/networking.k8s.io/v1", "ingresses"),
    ("streamml.io/v1alpha1", "StreamModel"): ("/apis/streamml.io/v1alpha1", "streammodels"),
    ("coordination.k8s.io/v1", "Lease"): ("/apis/coordination.k8s.io/v1", "leases"),
}


class KubeError(StreamMLError):
    """The API server refused a request (``status`` is its HTTP status, ``reason`` the
    ``reason`` of its Status reply, e.g. ``Forbidden``, and ``detail`` its own message)."""

    def __init__(self, message: str, *, status: int, reason: str = "", detail: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.detail = detail or message


def _path(api_version: str, kind: str, namespace: str, name: str | None = None) -> str:
    prefix, plural = _PATHS[(api_version, kind)]
    base = f"{prefix}/namespaces/{namespace}/{plural}"
    return f"{base}/{name}" if name else base


class Kube:
    """A small async facade over ``kubernetes.aio`` for the objects the operator owns.

    The client connects lazily on first use, inside the running event loop (its connection
    pool is an aiohttp session bound to that loop).
    """

    def __init__(self, pool_size: int = 32) -> None:
        self._pool_size = pool_size
        self._api: Any = None
        self._lock = asyncio.Lock()

    async def _client(self) -> Any:
        async with self._lock:
            if self._api is None:
                from kubernetes.aio import client, config

                configuration = client.Configuration()
                in_cluster = (
                    "KUBERNETES_SERVICE_HOST" in os.environ and "KUBECONFIG" not in os.environ
                )
                if in_cluster:
                    config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
                else:
                    await config.load_kube_config(  # type: ignore[no-untyped-call]
                        config_file=os.environ.get("KUBECONFIG"),
                        client_configuration=configuration,
                    )
                configuration.connection_pool_maxsize = self._pool_size
                self._api = client.ApiClient(configuration)
            return self._api

    async def close(self) -> None:
        if self._api is not None:
            await self._api.close()
            self._api = None

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        api = await self._client()
        method, url, headers, body, _ = await api.param_serialize(
            method,
            path,
            query_params=query or [],
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
        )
        response = await api.call_api(method, url, header_params=headers, body=body)
        raw = await response.read()
        if response.status >= 400:
            raise _error(response.status, raw)
        try:
            result = json.loads(raw) if raw else {}
        except ValueError:
            return {}
        return result if isinstance(result, dict) else {}

    async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply (forcing conflicts: the operator owns these fields)."""
        meta = manifest["metadata"]
        path = _path(manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"])
        query = [("fieldManager", FIELD_MANAGER), ("force", "true")]
        return await self._call(
            "PATCH", path, body=manifest, query=query, content_type="application/apply-patch+yaml"
        )

    async def get(
        self, api_version: str, kind: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        try:
            return await self._call("GET", _path(api_version, kind, namespace, name))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    async def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Create; :class:`ConflictError` when it exists (never overwrites, e.g. a token)."""
        meta = manifest["metadata"]
        path = _path(manifest["apiVersion"], manifest["kind"], meta["namespace"])
        try:
            return await self._call("POST", path, body=manifest)
        except KubeError as exc:
            if exc.status == 409:
                raise ConflictError(f"{manifest['kind']} {meta['name']} already exists") from exc
            raise

    async def replace(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Update (PUT) at the manifest's ``resourceVersion``: :class:`ConflictError` when the
        object changed meanwhile (optimistic concurrency, e.g. a Lease)."""
        meta = manifest["metadata"]
        path = _path(manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"])
        try:
            return await self._call("PUT", path, body=manifest)
        except KubeError as exc:
            if exc.status == 409:
                raise ConflictError(f"{manifest['kind']} {meta['name']} changed meanwhile") from exc
            raise

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        """Delete; False when it was already gone."""
        try:
            await self._call("DELETE", _path(api_version, kind, namespace, name))
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise
        return True


def _error(status: int, raw: bytes) -> StreamMLError:
    reason = ""
    try:
        reply = json.loads(raw)
        message, reason = str(reply.get("message", "")), str(reply.get("reason") or "")
    except (ValueError, AttributeError):
        message = raw[:500].decode(errors="replace")
    if status == 422:
        return SpecError(message)
    return KubeError(
        f"API server: {status} {message}", status=status, reason=reason, detail=message
    )


def decode_secret(secret: dict[str, Any]) -> dict[str, str]:
    """The Secret's data, base64-decoded; :class:`~streamml.sweep.access.SecretMalformed`
    naming the key when a value does not decode."""
    name = (secret.get("metadata") or {}).get("name", "?")
    return access.decode_secret(secret.get("data"), f"Secret {name!r}")
