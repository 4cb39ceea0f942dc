"""riverapi's token handshake: Basic ``user:token`` buys a JWT (HS256), then Bearer.

The JWT is signed with a server secret that no client can compute: by default 32 random bytes
created once in the data directory (``jwt-secret``, mode 0600), so tokens survive a restart;
processes that must accept each other's tokens are given one secret (``--auth-secret-file``).
Every claim is checked: ``sub`` names the user, ``iat``/``nbf`` are not in the future, ``exp`` is
an integer in the future and at most the capped lifetime after ``iat``.
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
from typing import Any

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

    def __post_init__(self) -> None:
        if not 0 < self.token_ttl <= self.max_token_ttl:
            raise ConfigurationError(
                f"token_ttl_seconds ({self.token_ttl}) must be positive and at most "
                f"token_max_ttl_seconds ({self.max_token_ttl})"
            )
        # verified bearer token -> expiry
        self._verified: dict[str, float] = {}

    def check_basic(self, encoded: str) -> str:
        try:
            user, _, token = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise AuthError("malformed Basic credentials") from None
        user_ok = hmac.compare_digest(user.encode(), self.username.encode())
        token_ok = hmac.compare_digest(token.encode(), self.token.encode())
        if not (user_ok and token_ok):
            raise AuthError("wrong username or token")
        return user

    def issue(self, subject: str, now: float | None = None) -> tuple[str, int, float]:
        issued = time.time() if now is None else now
        claims = {"sub": subject, "iat": int(issued), "exp": int(issued) + self.token_ttl}
        signing_input = _HEADER + b"." + _b64(orjson.dumps(claims))
        signature = hmac.new(self.secret, signing_input, hashlib.sha256).digest()
        return (signing_input + b"." + _b64(signature)).decode(), self.token_ttl, issued

    def check_bearer(self, jwt: str) -> None:
        now = time.time()
        expiry = self._verified.get(jwt)
        if expiry is not None:
            if expiry > now:
                return
            del self._verified[jwt]
        claims = self._verified_claims(jwt)
        exp = self._check_claims(claims, now)
        if len(self._verified) > _CACHE_MAX:
            self._verified.clear()
        self._verified[jwt] = exp

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

    def _check_claims(self, claims: dict[str, Any], now: float) -> int:
        """``exp`` of valid claims; :class:`AuthError` naming the first claim that is not."""
        sub = claims.get("sub")
        if not isinstance(sub, str) or not hmac.compare_digest(
            sub.encode(), self.username.encode()
        ):
            raise AuthError("bearer token: claim 'sub' does not name this server's user")
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
        return exp

    def check_header(self, header: str | None) -> None:
        """Accept ``Bearer <jwt>`` (the handshake's result) or ``Basic`` credentials directly."""
        if not header:
            raise AuthError("authentication required")
        scheme, _, value = header.partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer":
            self.check_bearer(value.strip())
        elif scheme == "basic":
            self.check_basic(value.strip())
        else:
            raise AuthError(f"unsupported authorization scheme {scheme!r}")
