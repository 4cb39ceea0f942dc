"""JWT handshake pieces and the settings' credential rules."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from streamml.errors import AuthError, ConfigurationError
from streamml.modelserver.auth import Authenticator, derive_secret
from streamml.modelserver.settings import ServerSettings


def basic(user: str, token: str) -> str:
    return base64.b64encode(f"{user}:{token}".encode()).decode()


def test_tokens_round_trip_and_are_checked() -> None:
    auth = Authenticator("u", "t", derive_secret("u", "t"), token_ttl=60)
    jwt, ttl, _ = auth.issue("u")
    assert ttl == 60 and jwt.count(".") == 2
    auth.check_header(f"Bearer {jwt}")
    auth.check_header(f"Basic {basic('u', 't')}")
    other = Authenticator("u", "t2", derive_secret("u", "t2"))
    with pytest.raises(AuthError, match="signature"):
        other.check_bearer(jwt)
    expired, _, _ = auth.issue("u", now=1_000.0)
    with pytest.raises(AuthError, match="expired"):
        auth.check_bearer(expired)
    for bad in ["", "Bearer", "Bearer a.b", "Bearer a.b.c", "Token x", f"Basic {basic('u', 'x')}"]:
        with pytest.raises(AuthError):
            auth.check_header(bad)


def test_same_credentials_same_secret() -> None:
    assert derive_secret("u", "t") == derive_secret("u", "t")
    assert derive_secret("u", "t") != derive_secret("u", "t2")
    assert derive_secret("u", "t") != b"t"


def test_settings_require_credentials_or_no_auth(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in ("STREAMML_AUTH_USER", "STREAMML_AUTH_TOKEN", "STREAMML_NO_AUTH"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(ConfigurationError, match="--no-auth"):
        ServerSettings().authenticator()
    assert ServerSettings(no_auth=True).authenticator() is None
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    auth = ServerSettings(auth_user="u", auth_token_file=token_file).authenticator()
    assert auth is not None and auth.token == "from-file"
    with pytest.raises(ConfigurationError, match="cannot read"):
        ServerSettings(auth_user="u", auth_token_file=tmp_path / "missing").authenticator()
    monkeypatch.setenv("STREAMML_AUTH_USER", "envuser")
    monkeypatch.setenv("STREAMML_AUTH_TOKEN", "envtoken")
    monkeypatch.setenv("STREAMML_AUTH_SECRET", "shared")
    auth = ServerSettings().authenticator()
    assert auth is not None and auth.username == "envuser" and auth.secret == b"shared"
