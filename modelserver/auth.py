"""riverapi's token handshake: Basic ``user:token`` buys a JWT (HS256), then Bearer.

The JWT is signed with a server secret. Processes given the same secret (or, by default, the same
credentials, from which the secret is derived) accept each other's tokens, so a client may be
served by any replica.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from dataclasses import dataclass

import orjson

from streamml.errors import AuthError

_HEADER = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")


def derive_secret(username: str, token: str) -> bytes:
    """The default signing secret: deterministic in the credentials, never the token itself."""
    return hmac.new(
        token.encode(), b"streamml-jwt-v1:" + username.encode(), hashlib.sha256
    ).digest()


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _unb64(data: bytes) -> bytes:
    return base64.urlsafe_b64decode(data + b"=" * (-len(data) % 4))


@dataclass
class Authenticator:
    username: str
    token: str
    secret: bytes
    token_ttl: int = 3600

    def __post_init__(self) -> None:
        # verified bearer token -> expiry; bounded, so a flood of tokens cannot grow it
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
        try:
            header, payload, signature = jwt.encode().split(b".")
            expected = hmac.new(self.secret, header + b"." + payload, hashlib.sha256).digest()
            if not hmac.compare_digest(_unb64(signature), expected):
                raise AuthError("invalid token signature")
            if orjson.loads(_unb64(header)).get("alg") != "HS256":
                raise AuthError("unsupported token algorithm")
            claims = orjson.loads(_unb64(payload))
            exp = float(claims["exp"])
        except AuthError:
            raise
        except (
            ValueError,
            KeyError,
            TypeError,
            AttributeError,
            binascii.Error,
            orjson.JSONDecodeError,
        ):
            raise AuthError("malformed bearer token") from None
        if exp <= now:
            raise AuthError("token expired")
        if len(self._verified) > 10_000:
            self._verified.clear()
        self._verified[jwt] = exp

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
