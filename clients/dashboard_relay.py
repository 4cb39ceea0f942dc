"""A relay on 127.0.0.1 that gives a browser one model server's dashboard through another URL.

``streamml dashboard`` points it at the Kubernetes API server's service proxy
(``https://APISERVER/api/v1/namespaces/NS/services/http:NAME:http/proxy``), adding the
kubeconfig's credentials, which the browser never sees: the page at
``http://127.0.0.1:PORT/dashboard/`` then works as if served at the root (its login, its session
cookie, its event streams, streamed as they come: nothing is buffered).

It relays only to its one upstream and only for a browser on this machine's own origin:

- a ``Host`` other than ``127.0.0.1:PORT`` / ``localhost:PORT`` is refused (403; a DNS
  rebinding page cannot use the relay), and so is an ``Origin`` of another site; the
  ``Origin`` is not passed on (the server behind the API server sees another host name);
- the browser's ``Authorization`` and cookies-for-others never reach the API server: the relay
  sets the API server's credentials itself (the API server drops them before the service);
- a path the API server rewrote to its own proxy prefix (links in HTML, redirects) is taken
  back to the root.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

log = logging.getLogger(__name__)

#: RFC 9110 hop-by-hop headers, and what the relay sets itself
_REQUEST_DROPPED = frozenset(
    h.lower()
    for h in (
        "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "TE", "Trailer",
        "Transfer-Encoding", "Upgrade", "Host", "Authorization", "Origin", "Content-Length",
        "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto",
    )
)  # fmt: skip
_RESPONSE_DROPPED = frozenset(
    h.lower()
    for h in (
        "Connection", "Keep-Alive", "Proxy-Authenticate", "Transfer-Encoding", "Upgrade",
        "Trailer", "Content-Length",
    )
)  # fmt: skip


@dataclass(frozen=True)
class Upstream:
    """Where the relay sends every request: ``base`` + the browser's path and query."""

    base: str
    headers: Mapping[str, str] = field(default_factory=dict)
    ssl_context: ssl.SSLContext | None = None

    @property
    def prefix(self) -> str:
        """The base's path (what the API server puts in front of rewritten links)."""
        return urlsplit(self.base).path.rstrip("/")


class DashboardRelay:
    """``async with DashboardRelay(upstream) as relay: relay.url`` serves until the block ends."""

    def __init__(self, upstream: Upstream, port: int = 0) -> None:
        self.upstream = upstream
        self._port = port
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        #: upstream answers being streamed back (event streams stay open until ended)
        self._streams: set[aiohttp.ClientResponse] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> DashboardRelay:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=15)
        self._session = aiohttp.ClientSession(timeout=timeout, auto_decompress=False)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._relay)
        app.on_shutdown.append(self._end_streams)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self._port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _end_streams(self, _app: web.Application) -> None:
        """An open event stream would hold the shutdown for aiohttp's whole grace period (60 s):
        closing its upstream answer ends the relayed stream at once."""
        for answer in list(self._streams):
            answer.close()

    def _own_hosts(self) -> set[str]:
        return {f"127.0.0.1:{self.port}", f"localhost:{self.port}"}

    def _refusal(self, request: web.Request) -> str | None:
        if request.headers.get("Host", "") not in self._own_hosts():
            return "this relay answers only to http://127.0.0.1:PORT (Host header)"
        origin = request.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc not in self._own_hosts():
            return "a page of another site may not use this relay (Origin header)"
        return None

    def upstream_url(self, raw_path_qs: str) -> URL:
        """The upstream URL of a browser path (the API server's own prefix taken off first)."""
        prefix = self.upstream.prefix
        if prefix and (raw_path_qs == prefix or raw_path_qs.startswith(prefix + "/")):
            raw_path_qs = raw_path_qs[len(prefix) :] or "/"
        return URL(self.upstream.base.rstrip("/") + raw_path_qs, encoded=True)

    async def _relay(self, request: web.Request) -> web.StreamResponse:
        refusal = self._refusal(request)
        if refusal is not None:
            return web.json_response({"message": refusal}, status=403)
        assert self._session is not None
        headers = CIMultiDict(
            (k, v) for k, v in request.headers.items() if k.lower() not in _REQUEST_DROPPED
        )
        headers.update(self.upstream.headers)
        body = request.content if request.body_exists else None
        try:
            async with self._session.request(
                request.method,
                self.upstream_url(request.rel_url.raw_path_qs),
                headers=headers,
                data=body,
                allow_redirects=False,
                ssl=self.upstream.ssl_context or True,
            ) as answer:
                return await self._stream_back(request, answer)
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            log.warning("dashboard relay: upstream unreachable: %s", exc)
            return web.json_response({"message": f"upstream unreachable: {exc}"}, status=502)

    async def _stream_back(
        self, request: web.Request, answer: aiohttp.ClientResponse
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=answer.status, reason=answer.reason)
        for key, value in answer.headers.items():
            if key.lower() not in _RESPONSE_DROPPED:
                response.headers.add(key, value)
        location = answer.headers.get("Location")
        if location is not None:
            response.headers["Location"] = self._local_location(location)
        await response.prepare(request)
        self._streams.add(answer)
        try:
            async for chunk in answer.content.iter_any():
                await response.write(chunk)
        except (ConnectionResetError, aiohttp.ClientPayloadError, aiohttp.ClientConnectionError):
            # the browser went away (an EventSource closed), the upstream did, or the relay stops
            return response
        finally:
            self._streams.discard(answer)
        await response.write_eof()
        return response

    def _local_location(self, location: str) -> str:
        """A redirect into the upstream, made a path on the relay."""
        parts = urlsplit(location)
        base = urlsplit(self.upstream.base)
        if parts.netloc and parts.netloc != base.netloc:
            return location  # elsewhere: leave it
        path = parts.path
        prefix = self.upstream.prefix
        if prefix and (path == prefix or path.startswith(prefix + "/")):
            path = path[len(prefix) :] or "/"
        return path + (f"?{parts.query}" if parts.query else "")
