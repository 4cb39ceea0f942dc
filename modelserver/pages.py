"""The dashboard's pages: ``GET /`` (a browser is sent to the dashboard), ``GET /dashboard/``,
the login form and its POST, logout, and the page's static assets.

The page is plain HTML + SVG + vanilla JavaScript served from the package (``static/``): no
charting library, no npm build, no CDN. The server image stays lean (nothing to install or
vendor), the page works with no network beyond the server, and there is no third-party code to
keep patched. A learning curve is a polyline and a few hundred circles, which SVG draws well.

The pages carry no credential and no data: the script fetches the data API with the session
cookie. A strict Content-Security-Policy allows only this server's own scripts, styles and
connections (no inline script) and no framing.
"""

from __future__ import annotations

import html
import logging
from functools import cache
from importlib import resources
from urllib.parse import urlsplit

from aiohttp import web

from streamml.errors import AuthError
from streamml.modelserver import sessions
from streamml.modelserver.appkeys import AUTH, DASHBOARD, SETTINGS
from streamml.modelserver.middleware import base_path, error_response

log = logging.getLogger(__name__)

ASSETS = {
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # no-referrer made Chromium post the login with Origin: null
    "Cache-Control": "no-store",
}
#: the login form's fields are bounded (a credential is never this long)
MAX_FIELD_CHARS = 512


@cache
def asset(name: str) -> bytes:
    """A file of the package's ``static/`` folder (read once)."""
    return (resources.files("streamml.modelserver") / "static" / name).read_bytes()


def _page(name: str, status: int = 200, **fields: str) -> web.Response:
    text = asset(name).decode()
    for key, value in fields.items():
        text = text.replace("{{" + key + "}}", html.escape(value))
    return web.Response(
        text=text, status=status, content_type="text/html", headers=SECURITY_HEADERS
    )


async def root(request: web.Request) -> web.StreamResponse:
    """A browser (Accept: text/html) goes to the dashboard; an API client learns where is what."""
    if "text/html" in request.headers.get("Accept", ""):
        raise web.HTTPFound(location=base_path(request) + "/dashboard/")
    return web.json_response({"api": "/api/", "dashboard": "/dashboard/"})


async def to_dashboard(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound(location=base_path(request) + "/dashboard/")


async def dashboard_page(request: web.Request) -> web.Response:
    return _page("dashboard.html", base=base_path(request))


async def static_asset(request: web.Request) -> web.Response:
    name = request.match_info["asset"]
    if name not in ASSETS:
        raise web.HTTPNotFound(text=f"no asset {name[:40]!r}")
    return web.Response(body=asset(name), content_type=ASSETS[name], headers=SECURITY_HEADERS)


async def login_form(request: web.Request) -> web.Response:
    return _page("login.html", base=base_path(request), message="")


def _secure(request: web.Request) -> bool:
    public = request.app[SETTINGS].public_url
    if public:
        return public.startswith("https://")
    forwarded = request.headers.get("X-Forwarded-Proto", "").strip().lower()
    return request.scheme == "https" or forwarded == "https"


def _same_origin(request: web.Request) -> bool:
    """A login form posted by another site's page is refused (login CSRF)."""
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        return origin is None
    public = request.app[SETTINGS].public_url
    netloc = urlsplit(origin).netloc
    return netloc == (urlsplit(public).netloc if public else request.host)


async def login(request: web.Request) -> web.Response:
    """Username + token from the form; a correct one sets the session cookie and goes to the
    dashboard. A wrong one says only that it is wrong (not which part), and counts against the
    client's address (:class:`~streamml.modelserver.sessions.LoginLimiter`)."""
    auth = request.app[AUTH]
    base = base_path(request)
    if auth is None:
        raise web.HTTPSeeOther(location=base + "/dashboard/")
    if not _same_origin(request):
        return error_response(403, "the login form must be posted from this server's own page")
    limiter = request.app[DASHBOARD].logins
    client = request.remote or "?"
    limiter.check(client)  # 429 once used up
    if request.content_type != "application/x-www-form-urlencoded":
        raise web.HTTPUnsupportedMediaType(text="post the login form (urlencoded)")
    try:
        form = await request.post()
    except (UnicodeDecodeError, ValueError):
        return _refused(request, 400, "the form is not valid")
    user, token = form.get("username"), form.get("token")
    if not isinstance(user, str) or not isinstance(token, str):
        return _refused(request, 400, "give a username and a token")
    try:
        if len(user) > MAX_FIELD_CHARS or len(token) > MAX_FIELD_CHARS:
            raise AuthError("wrong username or token")
        name, _ = auth.check_credentials(user, token)
    except AuthError:
        limiter.failed(client)
        log.info("dashboard: a failed login from %s", client)  # never the fields' values
        return _refused(request, 401, "wrong username or token")
    ttl = request.app[SETTINGS].session_ttl_seconds
    response = _see_other(base + "/dashboard/")
    response.set_cookie(
        sessions.COOKIE,
        sessions.issue(auth, name, ttl),
        max_age=ttl,
        path=base + "/" if base else "/",
        httponly=True,
        samesite="Strict",
        secure=_secure(request),
    )
    return response


def _refused(request: web.Request, status: int, message: str) -> web.Response:
    """The form again with the message for a browser; a JSON error for any other client."""
    if "text/html" in request.headers.get("Accept", ""):
        return _page("login.html", status, base=base_path(request), message=message)
    return error_response(status, message)


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})


async def logout(request: web.Request) -> web.Response:
    """Ends the browser's session (the cookie is signed, not stored: it cannot be revoked
    server-side one by one; rotating the token ends all of them)."""
    base = base_path(request)
    response = _see_other(base + "/dashboard/login")
    response.del_cookie(sessions.COOKIE, path=base + "/" if base else "/")
    return response
