"""``streamml dashboard --streammodel NAME``: a StreamModel's live dashboard in a local browser.

Reads the StreamModel through the Kubernetes API server (``--kubeconfig``, else ``KUBECONFIG``,
else ``~/.kube/config``, as ``watch --streammodel`` does) and prints a URL on 127.0.0.1:

- a server on this machine already (the operator's local runtime: ``status.address`` is a
  loopback URL): its own ``/dashboard/``, nothing to relay;
- a server in the cluster: a relay on ``127.0.0.1:--port`` (:mod:`.dashboard_relay`) through
  the API server's service proxy to the StreamModel's Service (``services/proxy``, as
  ``kubectl proxy`` uses), with the kubeconfig's credentials. No port-forward: the service proxy
  needs no node access (``pods/portforward``) and survives a restarted pod. It runs until
  Ctrl-C (or ``--duration`` seconds).

The page asks for the model server's own credentials (a login form; the read-only one is
enough): the kubeconfig's credentials reach the API server only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import math
import os
import signal
import ssl
import sys
from typing import Any
from urllib.parse import urlsplit

from streamml.errors import AuthError, ConfigurationError, NotFoundError

SERVICE_PORT_NAME = "http"  # operator/builders.py: the Service's one port


def is_local(address: str | None) -> bool:
    """Whether ``address`` is a loopback URL (the local runtime's server)."""
    host = urlsplit(address or "").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def service_proxy_base(api_host: str, namespace: str, name: str) -> str:
    """The API server's proxy URL of the StreamModel's Service (no trailing slash)."""
    path = f"/api/v1/namespaces/{namespace}/services/http:{name}:{SERVICE_PORT_NAME}/proxy"
    return api_host.rstrip("/") + path


def _api_client(kubeconfig: str | None) -> Any:
    from kubernetes import config

    try:
        return config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    except Exception as exc:  # the kubernetes loader raises bare exceptions of many kinds
        where = kubeconfig or "(default)"
        raise ConfigurationError(f"cannot load kubeconfig {where}: {exc}") from exc


def read_streammodel(api: Any, name: str, namespace: str) -> dict[str, Any]:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    from streamml.vocabulary.resource import GROUP, VERSION

    try:
        obj: Any = client.CustomObjectsApi(api).get_namespaced_custom_object(
            GROUP, VERSION, namespace, "streammodels", name
        )
    except ApiException as exc:
        if exc.status == 404:
            raise NotFoundError(f"StreamModel {namespace}/{name} not found") from exc
        raise ConfigurationError(f"API server refused: {exc.status} {exc.reason}") from exc
    return dict(obj)


def upstream_of(api: Any, namespace: str, name: str) -> Any:
    """The relay's upstream: the service proxy, with the kubeconfig's TLS and credentials."""
    from streamml.clients.dashboard_relay import Upstream

    conf = api.configuration
    context = ssl.create_default_context(cafile=conf.ssl_ca_cert or None)
    if not conf.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if conf.cert_file:
        context.load_cert_chain(conf.cert_file, conf.key_file)
    headers: dict[str, str] = {}
    bearer = conf.get_api_key_with_prefix("authorization")
    if bearer:
        headers["Authorization"] = bearer
    return Upstream(service_proxy_base(conf.host, namespace, name), headers, context)


async def probe(relay: Any) -> tuple[int, str]:
    """One ``GET /readyz`` through the relay: (status, the API server's or server's message)."""
    import aiohttp

    async with (
        aiohttp.ClientSession() as session,
        session.get(relay.url + "/readyz") as answer,
    ):
        text = await answer.text()
        with contextlib.suppress(ValueError):
            text = str((await answer.json(content_type=None)).get("message", text))
        return answer.status, text.strip()[:300]


async def serve(upstream: Any, port: int, duration: float | None, ref: str) -> int:
    from streamml.clients.dashboard_relay import DashboardRelay
    from streamml.vocabulary.streammodel import dashboard_url

    async with DashboardRelay(upstream, port) as relay:
        status, message = await probe(relay)
        if status in (401, 403):
            raise AuthError(
                f"the API server refused to proxy to service {ref} ({status}: {message}); the "
                "kubeconfig's user needs `get` and `create` on services/proxy in its namespace"
            )
        if status != 200:
            print(f"warning: the server is not reachable yet ({status}: {message})", flush=True)
        print(f"dashboard: {dashboard_url(relay.url)}", flush=True)
        print(f"(relayed through the API server to service {ref}; Ctrl-C stops)", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), duration)
    return 0


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--streammodel", metavar="NAME", required=True, help="the StreamModel")
    parser.add_argument("--namespace", default="default", help="namespace of the StreamModel")
    parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"))
    parser.add_argument(
        "--port", type=int, default=0, help="local port of the relay (default: a free one)"
    )
    parser.add_argument("--duration", type=float, help="stop the relay after this many seconds")


def run(args: argparse.Namespace) -> int:
    from streamml.vocabulary.streammodel import dashboard_url

    if not 0 <= args.port <= 65535:
        raise ConfigurationError("--port must be 0..65535")
    if args.duration is not None and not (args.duration > 0 and math.isfinite(args.duration)):
        raise ConfigurationError("--duration must be a positive number of seconds")
    ref = f"{args.namespace}/{args.streammodel}"
    api = _api_client(args.kubeconfig)
    try:
        status = read_streammodel(api, args.streammodel, args.namespace).get("status") or {}
        address = status.get("address")
        if is_local(address):
            print(f"dashboard: {dashboard_url(address)}")
            print(f"(StreamModel {ref} is served on this machine: nothing to relay)")
            return 0
        upstream = upstream_of(api, args.namespace, args.streammodel)
        return asyncio.run(serve(upstream, args.port, args.duration, ref))
    except OSError as exc:
        print(f"streamml dashboard: error: {exc}", file=sys.stderr)
        return 1
    finally:
        api.close()
