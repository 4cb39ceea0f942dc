"""Dashboard sessions: the cookie a login sets, and the bound on failed logins.

A browser's EventSource cannot send an Authorization header, so the dashboard logs in once
(``POST /dashboard/login``) and gets a cookie: ``HttpOnly`` (no script reads it), ``SameSite=
Strict`` (no other site's page sends it), ``Path`` = the server's base path, ``Secure`` when the
server is reached over https, ``Max-Age`` = the session lifetime.

The cookie is signed, not stored: ``base64(claims) "." base64(HMAC-SHA256)`` with a key derived
from the server's signing secret, so no session table grows and a restart keeps sessions. The
claims hold the user, the expiry and the credential's generation (``Authenticator.generation``):
rotating a token ends every session opened with it.

Every session is READ-ONLY, whichever credential logged in: the middleware accepts the cookie on
GET and HEAD only. That is also why the cookie cannot be used for cross-site request forgery of a
write: a write needs an Authorization header, which a browser never adds on its own.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections import OrderedDict

import orjson

from streamml.errors import AuthError, CapacityError
from streamml.modelserver.auth import Authenticator

COOKIE = "streamml_session"
#: failed logins allowed per client address within FAILURE_WINDOW seconds
MAX_FAILURES = 5
FAILURE_WINDOW = 60.0
#: client addresses remembered (oldest forgotten first): a flood cannot grow the table
_CLIENTS_MAX = 10_000
_MAX_COOKIE_CHARS = 1024


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _key(auth: Authenticator) -> bytes:
    """The session key: derived from the signing secret, never equal to the JWT key."""
    return hmac.new(auth.secret, b"streamml dashboard session", hashlib.sha256).digest()


def issue(auth: Authenticator, user: str, ttl: int, now: float | None = None) -> str:
    issued = int(time.time() if now is None else now)
    claims = {"sub": user, "exp": issued + ttl, "gen": auth.generation(user)}
    body = _b64(orjson.dumps(claims))
    signature = hmac.new(_key(auth), body.encode(), hashlib.sha256).digest()
    return f"{body}.{_b64(signature)}"


def check(auth: Authenticator, cookie: str, now: float | None = None) -> str:
    """The user of a valid session cookie; :class:`AuthError` (one generic message) otherwise."""
    when = time.time() if now is None else now
    try:
        if len(cookie) > _MAX_COOKIE_CHARS:
            raise ValueError("too long")
        body, signature = cookie.split(".")
        expected = hmac.new(_key(auth), body.encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(_unb64(signature), expected):
            raise ValueError("signature")
        claims = orjson.loads(_unb64(body))
        user, exp, gen = claims["sub"], claims["exp"], claims["gen"]
    except (ValueError, KeyError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise AuthError("the dashboard session is not valid: log in again") from None
    if not isinstance(user, str) or auth.role_of(user) is None or type(exp) is not int:
        raise AuthError("the dashboard session is not valid: log in again")
    if exp <= when:
        raise AuthError("the dashboard session expired: log in again")
    if not isinstance(gen, str) or not hmac.compare_digest(gen, auth.generation(user)):
        raise AuthError("the dashboard session ended (credentials rotated): log in again")
    return user


class LoginLimiter:
    """At most MAX_FAILURES failed logins per client address per FAILURE_WINDOW seconds."""

    def __init__(self, max_failures: int = MAX_FAILURES, window: float = FAILURE_WINDOW) -> None:
        self.max_failures = max_failures
        self.window = window
        self._failures: OrderedDict[str, list[float]] = OrderedDict()

    def _recent(self, client: str, now: float) -> list[float]:
        times = [t for t in self._failures.get(client, []) if now - t < self.window]
        if times:
            self._failures[client] = times
        else:
            self._failures.pop(client, None)
        return times

    def check(self, client: str, now: float | None = None) -> None:
        """:class:`CapacityError` (429) while ``client`` has used up its failures."""
        when = time.monotonic() if now is None else now
        times = self._recent(client, when)
        if len(times) >= self.max_failures:
            wait = int(self.window - (when - times[0])) + 1
            raise CapacityError(f"too many failed logins from this address: retry in {wait}s")

    def failed(self, client: str, now: float | None = None) -> None:
        when = time.monotonic() if now is None else now
        times = self._recent(client, when)
        times.append(when)
        self._failures[client] = times
        self._failures.move_to_end(client)
        while len(self._failures) > _CLIENTS_MAX:
            self._failures.popitem(last=False)
