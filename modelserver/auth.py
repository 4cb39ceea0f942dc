"""riverapi's token handshake: Basic ``user:token`` buys a JWT (HS256), then Bearer.

The JWT is signed with a server secret that no client can compute: by default 32 random bytes
created once in the data directory (``jwt-secret``, mode 0600), so tokens survive a restart;
processes that must accept each other's tokens are given one secret (``--auth-secret-file``).
Every claim is checked: ``sub`` names the user, ``iat``/``nbf`` are not in the future, ``exp`` is
an integer in the future and at most the capped lifetime after ``iat``.

Two credentials: the user's (``write``: everything) and, optionally, a read-only one (``read``:
GET only: watch models, metrics, history, streams, the dashboard). Tokens issued here carry
``gen``, a keyed digest of the credential they were bought with: when this server rotates a
token (:meth:`Authenticator.rotate`), it retires that digest, and the bearer tokens bought with
the old token stop working at once. A token of another process sharing the signing secret (with
its own user token) is still accepted, as before; tokens of earlier releases carry no ``gen``
and live out their ``exp``. Dashboard sessions (``sessions``) must match the current digest.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import os
import secrets
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson

from streamml.errors import AuthError, ConfigurationError

_HEADER = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
SECRET_FILE = "jwt-secret"  # noqa: S105 - a file name, not a secret
SECRET_BYTES = 32
#: a shared secret shorter than this could be guessed offline from one token
MIN_SECRET_CHARS = 16
#: clocks of the processes sharing a secret may differ by this much
CLOCK_SKEW_SECONDS = 60
#: accepted-token cache: bounded, so a flood of tokens cannot grow it
_CACHE_MAX = 10_000

Role = Literal["write", "read"]
WRITE: Role = "write"
READ: Role = "read"


def data_dir_secret(data_dir: Path) -> bytes:
    """The data directory's signing secret, created (0600, random) on first use."""
    path = data_dir / SECRET_FILE
    try:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(FileNotFoundError):
            return _read_data_dir_secret(path)
        fd, tmp = tempfile.mkstemp(dir=data_dir, prefix=f".{SECRET_FILE}.")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(secrets.token_bytes(SECRET_BYTES))
                handle.flush()
                os.fsync(handle.fileno())
            with contextlib.suppress(FileExistsError):  # another process made it first: use it
                os.link(tmp, path)
        finally:
            os.unlink(tmp)
        return _read_data_dir_secret(path)
    except OSError as exc:
        raise ConfigurationError(
            f"--data-dir: cannot keep the token signing secret in {path}: {exc.strerror}"
        ) from None


def _read_data_dir_secret(path: Path) -> bytes:
    secret = path.read_bytes()
    if len(secret) < SECRET_BYTES:
        raise ConfigurationError(
            f"{path}: the token signing secret is damaged ({len(secret)} bytes, expected "
            f"{SECRET_BYTES}); delete it to make a new one (issued tokens then stop working)"
        )
    return secret


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _unb64(data: bytes) -> bytes:
    return base64.urlsafe_b64decode(data + b"=" * (-len(data) % 4))


def _int_claim(claims: dict[str, Any], name: str, *, required: bool) -> int | None:
    value = claims.get(name)
    if value is None and not required:
        return None
    # JSON integers only: no bool, no float (1e300), no string ("inf")
    if type(value) is not int:
        raise AuthError(f"malformed bearer token: claim {name!r} must be an integer")
    return value


@dataclass
class Authenticator:
    username: str
    token: str
    secret: bytes
    token_ttl: int = 3600
    #: longest lifetime (exp - iat) a bearer token may claim, even one signed with our secret
    max_token_ttl: int = 86_400
    #: the read-only credential (None: there is none)
    read_username: str | None = None
    read_token: str | None = None

    def __post_init__(self) -> None:
        if not 0 < self.token_ttl <= self.max_token_ttl:
            raise ConfigurationError(
                f"token_ttl_seconds ({self.token_ttl}) must be positive and at most "
                f"token_max_ttl_seconds ({self.max_token_ttl})"
            )
        if (self.read_username is None) != (self.read_token is None):
            raise ConfigurationError("the read-only credential needs both a user and a token")
        if self.read_username is not None and self.read_username == self.username:
            raise ConfigurationError(
                "the read-only user must differ from --auth-user (the user decides the role)"
            )
        # verified bearer token -> (expiry, role)
        self._verified: dict[str, tuple[float, Role]] = {}
        #: generations of tokens replaced by a rotation (their bearer tokens are refused)
        self._retired: set[str] = set()

    def credentials(self) -> list[tuple[str, str, Role]]:
        """(user, token, role) of every credential."""
        found: list[tuple[str, str, Role]] = [(self.username, self.token, WRITE)]
        if self.read_username is not None and self.read_token is not None:
            found.append((self.read_username, self.read_token, READ))
        return found

    def role_of(self, user: str) -> Role | None:
        return next((role for name, _, role in self.credentials() if name == user), None)

    def generation(self, user: str) -> str:
        """A keyed digest of ``user``'s current token (it changes when the token rotates)."""
        token = next((t for name, t, _ in self.credentials() if name == user), "")
        digest = hmac.new(
            self.secret, b"gen\0" + user.encode() + b"\0" + token.encode(), hashlib.sha256
        )
        return _b64(digest.digest()[:12]).decode()

    def rotate(self, *, token: str | None = None, read_token: str | None = None) -> None:
        """New tokens: what was issued for the replaced ones stops being accepted."""
        if len(self._retired) > _CACHE_MAX:
            self._retired.clear()
        if token is not None and token != self.token:
            self._retired.add(self.generation(self.username))
            self.token = token
        if read_token is not None and self.read_username is not None:
            if read_token != self.read_token:
                self._retired.add(self.generation(self.read_username))
            self.read_token = read_token
        self._verified.clear()

    def check_credentials(self, user: str, token: str) -> tuple[str, Role]:
        """The user and role of a correct (user, token); one message for every wrong one."""
        found: tuple[str, Role] | None = None
        for name, secret, role in self.credentials():  # compare all: no early exit
            user_ok = hmac.compare_digest(user.encode(), name.encode())
            token_ok = hmac.compare_digest(token.encode(), secret.encode())
            if user_ok and token_ok:
                found = (name, role)
        if found is None:
            raise AuthError("wrong username or token")
        return found

    def check_basic(self, encoded: str) -> str:
        return self._basic(encoded)[0]

    def _basic(self, encoded: str) -> tuple[str, Role]:
        try:
            user, _, token = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise AuthError("malformed Basic credentials") from None
        return self.check_credentials(user, token)

    def issue(self, subject: str, now: float | None = None) -> tuple[str, int, float]:
        issued = time.time() if now is None else now
        claims = {
            "sub": subject,
            "iat": int(issued),
            "exp": int(issued) + self.token_ttl,
            "gen": self.generation(subject),
        }
        signing_input = _HEADER + b"." + _b64(orjson.dumps(claims))
        signature = hmac.new(self.secret, signing_input, hashlib.sha256).digest()
        return (signing_input + b"." + _b64(signature)).decode(), self.token_ttl, issued

    def check_bearer(self, jwt: str) -> Role:
        now = time.time()
        cached = self._verified.get(jwt)
        if cached is not None:
            if cached[0] > now:
                return cached[1]
            del self._verified[jwt]
        claims = self._verified_claims(jwt)
        exp, role = self._check_claims(claims, now)
        if len(self._verified) > _CACHE_MAX:
            self._verified.clear()
        self._verified[jwt] = (exp, role)
        return role

    def _verified_claims(self, jwt: str) -> dict[str, Any]:
        """The claims of a token signed with our secret (signature and header checked)."""
        try:
            header, payload, signature = jwt.encode().split(b".")
            expected = hmac.new(self.secret, header + b"." + payload, hashlib.sha256).digest()
            if not hmac.compare_digest(_unb64(signature), expected):
                raise AuthError("invalid token signature")
            head = orjson.loads(_unb64(header))
            claims = orjson.loads(_unb64(payload))
        except AuthError:
            raise
        except (ValueError, binascii.Error, orjson.JSONDecodeError):
            raise AuthError("malformed bearer token") from None
        if not isinstance(head, dict) or head.get("alg") != "HS256":
            raise AuthError("unsupported token algorithm")
        if not isinstance(claims, dict):
            raise AuthError("malformed bearer token: the claims are not an object")
        return claims

    def _check_claims(self, claims: dict[str, Any], now: float) -> tuple[int, Role]:
        """``exp`` and role of valid claims; :class:`AuthError` naming the first claim that is
        not."""
        sub = claims.get("sub")
        role = self.role_of(sub) if isinstance(sub, str) else None
        if not isinstance(sub, str) or role is None:
            raise AuthError("bearer token: claim 'sub' does not name this server's user")
        gen = claims.get("gen")
        if gen is not None and (not isinstance(gen, str) or gen in self._retired):
            raise AuthError("bearer token: issued for a token since rotated (get a new one)")
        exp = _int_claim(claims, "exp", required=True)
        iat = _int_claim(claims, "iat", required=True)
        nbf = _int_claim(claims, "nbf", required=False)
        assert exp is not None and iat is not None
        if iat > now + CLOCK_SKEW_SECONDS:
            raise AuthError("bearer token: claim 'iat' is in the future")
        if nbf is not None and nbf > now + CLOCK_SKEW_SECONDS:
            raise AuthError("bearer token: not valid yet (claim 'nbf')")
        if exp - iat > self.max_token_ttl:
            raise AuthError(
                f"bearer token: lifetime exp - iat over the limit of {self.max_token_ttl}s"
            )
        if exp <= now:
            raise AuthError("token expired")
        return exp, role

    def check_header(self, header: str | None) -> Role:
        """Accept ``Bearer <jwt>`` (the handshake's result) or ``Basic`` credentials directly;
        the role of the credential."""
        if not header:
            raise AuthError("authentication required")
        scheme, _, value = header.partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer":
            return self.check_bearer(value.strip())
        if scheme == "basic":
            return self._basic(value.strip())[1]
        raise AuthError(f"unsupported authorization scheme {scheme!r}")
