"""One middleware for every request: authentication, telemetry, and errors as JSON.

One function instead of three keeps the per-request overhead low. Domain errors map to HTTP
statuses here; anything unexpected is logged and becomes a 500 with a generic message.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from pydantic import ValidationError

from streamml.errors import (
    AuthError,
    CapacityError,
    ConflictError,
    NotFoundError,
    StreamMLError,
)
from streamml.modelserver import sessions
from streamml.modelserver.appkeys import AUTH, SETTINGS, TELEMETRY
from streamml.modelserver.auth import READ, Authenticator
from streamml.modelserver.registry import ModelQuarantinedError
from streamml.modelserver.storage import StorageError

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: paths that never need credentials (service info, the handshake itself, operations)
PUBLIC_PATHS = frozenset(
    {
        "/api/",
        "/api/auth/token/",
        "/api/auth/token",
        "/api/openapi.json",
        "/healthz",
        "/readyz",
        "/metrics",
        # the dashboard's way in: a link page, the login form, and static assets (no data)
        "/",
        "/dashboard",
        "/dashboard/login",
        "/dashboard/logout",
        "/dashboard/dashboard.js",
        "/dashboard/dashboard.css",
    }
)
#: methods a read-only credential (and every dashboard session) may use
READ_METHODS = frozenset({"GET", "HEAD"})
DASHBOARD_PREFIX = "/dashboard/"


class _OneLineProtocolErrors(logging.Filter):
    """A request aiohttp cannot parse (a header over 8190 bytes, a bad request line) is the
    client's mistake: one WARNING line naming the kind of error, never a traceback, and never
    the request's text, which may hold credentials."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg = "refused a request from %s that cannot be parsed: %s (HTTP %s)"
            record.args = (remote, type(error).__name__, error.code)
            record.exc_info = record.exc_text = None
            record.levelno = min(record.levelno, logging.WARNING)
            record.levelname = logging.getLevelName(record.levelno)
        return True


def protocol_logger() -> logging.Logger:
    """The logger for aiohttp's request handler (``handler_args``): parse errors in one line."""
    logger = logging.getLogger("streamml.modelserver.http")
    if not any(isinstance(f, _OneLineProtocolErrors) for f in logger.filters):
        logger.addFilter(_OneLineProtocolErrors())
    return logger


class ForbiddenError(AuthError):
    """Authenticated or not, this action is not allowed (403)."""


def authorize(request: web.Request, auth: Authenticator) -> None:
    """The request's credential: an Authorization header (either role), else a dashboard
    session cookie (read-only). A read-only credential may only read (GET, HEAD)."""
    header = request.headers.get("Authorization")
    if header is not None:
        if auth.check_header(header) is READ and request.method not in READ_METHODS:
            raise ForbiddenError(
                "this credential is read-only: it may watch (GET), not learn, predict, label, "
                "create or delete"
            )
        return
    cookie = request.cookies.get(sessions.COOKIE)
    if cookie is None:
        raise AuthError("authentication required")
    if request.method not in READ_METHODS:
        raise ForbiddenError(
            "a dashboard session is read-only: writes need an Authorization header"
        )
    sessions.check(auth, cookie)


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps({"message": message}),
        content_type="application/json",
        headers=headers,
    )


def validation_message(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "json_invalid":
            return f"malformed JSON body: {message}"
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts[:5]) or "invalid request"


#: a Host header fit to be echoed: a DNS name or IPv4 address, or a bracketed IPv6, with a port
_HOST = re.compile(r"^([A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(:[0-9]{1,5})?$")


def _base_url(request: web.Request) -> str:
    """The server's URL as the client should reach it, never unchecked client text.

    ``--public-url`` when set (behind a proxy); else the request's own scheme and Host when the
    Host is well formed (``X-Forwarded-Proto`` counts only as ``http`` or ``https``); else the
    address the server listens on.
    """
    settings = request.app[SETTINGS]
    if settings.public_url:
        return settings.public_url
    forwarded = request.headers.get("X-Forwarded-Proto", "").strip().lower()
    scheme = forwarded if forwarded in ("http", "https") else request.scheme
    host = request.headers.get("Host", "")
    if not _HOST.match(host):
        listen = f"[{settings.host}]" if ":" in settings.host else settings.host
        host = f"{listen}:{settings.port}"
    return f"{scheme}://{host}"


def base_path(request: web.Request) -> str:
    """The path the server is served under (``--public-url``'s path; "" at the root)."""
    public = request.app[SETTINGS].public_url
    if not public:
        return ""
    rest = public.split("://", 1)[1]
    return rest[rest.find("/") :] if "/" in rest else ""


def challenge(request: web.Request) -> dict[str, str]:
    """riverapi's ``Www-Authenticate``: where to fetch a token, and for which service."""
    base = _base_url(request)
    return {"Www-Authenticate": f'realm="{base}/api/auth/token",service="{base}"'}


#: domain errors -> HTTP status, most specific first (ForbiddenError is an AuthError)
ERROR_STATUS: tuple[tuple[type[StreamMLError], int], ...] = (
    (ForbiddenError, 403),
    (AuthError, 401),
    (NotFoundError, 404),
    (ConflictError, 409),
    (CapacityError, 429),
    (StorageError, 503),
    (ModelQuarantinedError, 503),
)


def status_of(exc: StreamMLError) -> int:
    """The HTTP status of a domain error; every other project error is the client's (400)."""
    return next((status for kind, status in ERROR_STATUS if isinstance(exc, kind)), 400)


@web.middleware
async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    start = time.perf_counter()
    route = request.match_info.route.resource
    route_name = route.canonical if route is not None else "unmatched"
    status = 500
    try:
        auth = request.app[AUTH]
        if auth is not None and request.path not in PUBLIC_PATHS and route is not None:
            authorize(request, auth)
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        if exc.status < 400:
            raise
        message = exc.text if exc.text and not exc.text.startswith(str(exc.status)) else exc.reason
        headers = {
            k: v
            for k, v in exc.headers.items()
            if k.lower() not in ("content-type", "content-length")
        }
        return error_response(exc.status, message or exc.reason, headers)
    except ValidationError as exc:
        status = 400
        return error_response(400, validation_message(exc))
    except StreamMLError as exc:
        status = status_of(exc)
        page = request.method in READ_METHODS and request.path.startswith(DASHBOARD_PREFIX)
        if status == 401 and page:  # a page, not the API: to the login form
            status = 303
            raise web.HTTPSeeOther(location=base_path(request) + "/dashboard/login") from None
        return error_response(status, str(exc), challenge(request) if status == 401 else None)
    except (ConnectionResetError, HttpProcessingError) as exc:
        # the client hung up mid-body, or sent a body aiohttp cannot decode: its doing, not ours
        status = 400
        log.info("incomplete request %s %s: %s", request.method, request.path, type(exc).__name__)
        return error_response(400, "the request body is incomplete or malformed")
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return error_response(500, "internal server error (logged)")
    finally:
        request.app[TELEMETRY].observe(
            request.method, route_name, status, time.perf_counter() - start
        )
