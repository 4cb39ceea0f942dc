"""JWT handshake pieces and the settings' credential rules."""

from __future__ import annotations

import base64
import hashlib
import hmac
import stat
from pathlib import Path
from typing import Any

import orjson
import pytest

from streamml.errors import AuthError, ConfigurationError
from streamml.modelserver.auth import SECRET_FILE, Authenticator, data_dir_secret
from streamml.modelserver.settings import ServerSettings

SECRET = b"k" * 32


def basic(user: str, token: str) -> str:
    return base64.b64encode(f"{user}:{token}".encode()).decode()


def signed(claims: Any, secret: bytes = SECRET, header: Any = None) -> str:
    """A token with any claims, signed like the server signs (for forging tests)."""

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    head = b64(orjson.dumps(header or {"alg": "HS256", "typ": "JWT"}))
    body = b64(orjson.dumps(claims))
    signature = hmac.new(secret, head + b"." + body, hashlib.sha256).digest()
    return (head + b"." + body + b"." + b64(signature)).decode()


def test_tokens_round_trip_and_are_checked() -> None:
    auth = Authenticator("u", "t", SECRET, token_ttl=60)
    jwt, ttl, _ = auth.issue("u")
    assert ttl == 60 and jwt.count(".") == 2
    auth.check_header(f"Bearer {jwt}")
    auth.check_header(f"Basic {basic('u', 't')}")
    other = Authenticator("u", "t", b"o" * 32)
    with pytest.raises(AuthError, match="signature"):
        other.check_bearer(jwt)
    expired, _, _ = auth.issue("u", now=1_000.0)
    with pytest.raises(AuthError, match="expired"):
        auth.check_bearer(expired)
    for bad in ["", "Bearer", "Bearer a.b", "Bearer a.b.c", "Token x", f"Basic {basic('u', 'x')}"]:
        with pytest.raises(AuthError):
            auth.check_header(bad)


def test_every_claim_is_checked() -> None:
    """Even a token signed with the server's secret must carry sane claims."""
    import time

    now = int(time.time())
    auth = Authenticator("u", "t", SECRET, token_ttl=60, max_token_ttl=3600)
    good = {"sub": "u", "iat": now, "exp": now + 60}
    auth.check_bearer(signed(good))
    cases: list[tuple[dict[str, Any], str]] = [
        ({**good, "exp": "inf"}, "'exp'"),
        ({**good, "exp": 1e300}, "'exp'"),
        ({**good, "exp": float(now + 60)}, "'exp'"),
        ({**good, "exp": True}, "'exp'"),
        ({"sub": "u", "iat": now}, "'exp'"),
        ({"sub": "u", "exp": now + 60}, "'iat'"),
        ({**good, "iat": "0"}, "'iat'"),
        ({**good, "sub": "someone-else"}, "'sub'"),
        ({"iat": now, "exp": now + 60}, "'sub'"),
        ({**good, "sub": 7}, "'sub'"),
        ({**good, "iat": now + 600, "exp": now + 660}, "'iat'"),
        ({**good, "nbf": now + 600}, "'nbf'"),
        ({**good, "nbf": "soon"}, "'nbf'"),
        ({**good, "exp": now + 3601}, "lifetime"),
        ({**good, "iat": now - 10**9, "exp": 2**62}, "lifetime"),
    ]
    for claims, word in cases:
        with pytest.raises(AuthError, match=word):
            auth.check_bearer(signed(claims))
    for body in ([1, 2], "claims", None):
        with pytest.raises(AuthError):
            auth.check_bearer(signed(body))
    with pytest.raises(AuthError, match="algorithm"):
        auth.check_bearer(signed(good, header={"alg": "none"}))
    with pytest.raises(AuthError, match="algorithm"):
        auth.check_bearer(signed(good, header=["HS256"]))


def test_lifetime_cap_is_a_setting() -> None:
    with pytest.raises(ConfigurationError, match="token_max_ttl_seconds"):
        Authenticator("u", "t", SECRET, token_ttl=7200, max_token_ttl=3600)
    with pytest.raises(ConfigurationError, match="token_max_ttl_seconds"):
        ServerSettings(
            auth_user="u", auth_token="t", auth_secret="s" * 16, token_ttl_seconds=100_000
        ).authenticator()


def test_data_dir_secret_is_random_private_and_kept(tmp_path: Path) -> None:
    first = data_dir_secret(tmp_path / "a")
    assert len(first) >= 32
    assert stat.S_IMODE((tmp_path / "a" / SECRET_FILE).stat().st_mode) == 0o600
    assert data_dir_secret(tmp_path / "a") == first  # kept across restarts
    assert data_dir_secret(tmp_path / "b") != first  # not derived from anything shared
    (tmp_path / "a" / SECRET_FILE).write_bytes(b"short")
    with pytest.raises(ConfigurationError, match="damaged"):
        data_dir_secret(tmp_path / "a")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigurationError, match="--data-dir"):
        data_dir_secret(tmp_path / "file")


def test_default_secret_is_not_derivable_from_the_credentials(tmp_path: Path) -> None:
    """Whoever holds the token cannot mint bearer tokens: the secret is not a function of it."""
    a = ServerSettings(auth_user="u", auth_token="t", data_dir=tmp_path / "a").authenticator()
    b = ServerSettings(auth_user="u", auth_token="t", data_dir=tmp_path / "b").authenticator()
    assert a is not None and b is not None
    assert a.secret != b.secret
    assert a.secret == (tmp_path / "a" / SECRET_FILE).read_bytes()


def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in (
        "STREAMML_AUTH_USER",
        "STREAMML_AUTH_TOKEN",
        "STREAMML_AUTH_SECRET",
        "STREAMML_NO_AUTH",
        "STREAMML_HOST",
    ):
        monkeypatch.delenv(key, raising=False)


def test_settings_require_credentials_or_no_auth(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _clean_env(monkeypatch)
    with pytest.raises(ConfigurationError, match="--no-auth"):
        ServerSettings(data_dir=tmp_path).authenticator()
    assert ServerSettings(no_auth=True).authenticator() is None
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    auth = ServerSettings(
        auth_user="u", auth_token_file=token_file, data_dir=tmp_path
    ).authenticator()
    assert auth is not None and auth.token == "from-file"
    with pytest.raises(ConfigurationError, match="cannot read"):
        ServerSettings(auth_user="u", auth_token_file=tmp_path / "missing").authenticator()
    monkeypatch.setenv("STREAMML_AUTH_USER", "envuser")
    monkeypatch.setenv("STREAMML_AUTH_TOKEN", "envtoken")
    monkeypatch.setenv("STREAMML_AUTH_SECRET", "shared-secret-of-32-characters!!")
    auth = ServerSettings().authenticator()
    assert auth is not None and auth.username == "envuser"
    assert auth.secret == b"shared-secret-of-32-characters!!"
    monkeypatch.setenv("STREAMML_AUTH_SECRET", "short")
    with pytest.raises(ConfigurationError, match=r"--auth-secret: .*too short"):
        ServerSettings().authenticator()


def test_no_auth_is_refused_with_credentials_or_off_loopback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _clean_env(monkeypatch)
    with pytest.raises(ConfigurationError, match="--no-auth together with --auth-user"):
        ServerSettings(no_auth=True, auth_user="u", auth_token="t").authenticator()
    monkeypatch.setenv("STREAMML_AUTH_TOKEN", "t")  # a stray variable counts as given too
    with pytest.raises(ConfigurationError, match="--auth-token"):
        ServerSettings(no_auth=True).authenticator()
    monkeypatch.delenv("STREAMML_AUTH_TOKEN")
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert ServerSettings(no_auth=True, host=host).authenticator() is None
    for host in ("0.0.0.0", "192.0.2.1", "::", "models.example.org"):
        with pytest.raises(ConfigurationError, match="--allow-remote-no-auth"):
            ServerSettings(no_auth=True, host=host).authenticator()
        settings = ServerSettings(no_auth=True, host=host, allow_remote_no_auth=True)
        assert settings.authenticator() is None


def test_public_url_must_be_plain() -> None:
    assert ServerSettings(public_url="https://models.example.org/").public_url == (
        "https://models.example.org"
    )
    for bad in ['https://x.org/",evil="1', "ftp://x.org", "https://x.org/a b", "x.org"]:
        with pytest.raises(ValueError, match="public_url"):
            ServerSettings(public_url=bad)
