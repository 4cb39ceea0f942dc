"""Hostile credentials and headers against a real ``streamml serve`` process: forged and
immortal bearer tokens, a realm built from client text, an oversized header, and ``--no-auth``
given together with credentials or on a non-loopback address."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import socket
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests

from streamml.pycommand import streamml_command
from tests.fixtures.server import ServerProcess, running_server

pytestmark = pytest.mark.integration


def sign(claims: Any, secret: bytes) -> str:
    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    head = b64(b'{"alg":"HS256","typ":"JWT"}')
    body = b64(orjson.dumps(claims))
    signature = hmac.new(secret, head + b"." + body, hashlib.sha256).digest()
    return (head + b"." + body + b"." + b64(signature)).decode()


def with_bearer(server: ServerProcess, token: str) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"}
    return requests.get(server.url + "/api/models/", headers=headers, timeout=30)


def handshake(server: ServerProcess) -> str:
    r = requests.get(server.url + "/api/auth/token/", headers=server.auth_header(), timeout=30)
    assert r.status_code == 200, r.text
    return str(r.json()["token"])


def test_bearer_tokens_cannot_be_minted_and_every_claim_counts(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running_server(data, token="the-users-token", username="scientist") as server:
        token = handshake(server)
        assert with_bearer(server, token).status_code == 200
        # Whoever holds the user's token must not be able to compute the signing secret (it
        # used to be HMAC(token, "streamml-jwt-v1:" + user)) and mint a token that never expires.
        derived = hmac.new(b"the-users-token", b"streamml-jwt-v1:scientist", hashlib.sha256)
        immortal = {"sub": "scientist", "iat": int(time.time()), "exp": 2**62}
        assert with_bearer(server, sign(immortal, derived.digest())).status_code == 401
        secret_file = data / "jwt-secret"
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
        # Even signed with the real secret (as a process sharing it could), claims are checked.
        secret, now = secret_file.read_bytes(), int(time.time())
        good = {"sub": "scientist", "iat": now, "exp": now + 60}
        assert with_bearer(server, sign(good, secret)).status_code == 200
        for claims, word in [
            ({**good, "exp": "inf"}, "'exp'"),
            ({**good, "exp": 1e300}, "'exp'"),
            ({**good, "sub": "somebody"}, "'sub'"),
            ({k: v for k, v in good.items() if k != "sub"}, "'sub'"),
            ({**good, "nbf": now + 3600}, "'nbf'"),
            ({**good, "iat": now + 3600, "exp": now + 3660}, "'iat'"),
            ({**good, "exp": now + 86_401}, "lifetime"),
        ]:
            r = with_bearer(server, sign(claims, secret))
            assert r.status_code == 401, (claims, r.text)
            assert word in r.json()["message"], (word, r.text)
    # The secret lives in the data dir: a restarted server still accepts its tokens ...
    with running_server(data, token="the-users-token", username="scientist") as again:
        assert with_bearer(again, token).status_code == 200
    # ... and another server with the same credentials does not (no shared secret given).
    with running_server(tmp_path / "other", token="the-users-token") as other:
        assert with_bearer(other, token).status_code == 401


def _challenge(server: ServerProcess, **headers: str) -> str:
    r = requests.get(server.url + "/api/models/", headers=headers, timeout=30)
    assert r.status_code == 401
    return r.headers["Www-Authenticate"]


def test_challenge_realm_is_never_unchecked_client_text(tmp_path: Path) -> None:
    with running_server(tmp_path / "d") as server:
        url = server.url
        expected = f'realm="{url}/api/auth/token",service="{url}"'
        assert _challenge(server) == expected
        # hostile Host and X-Forwarded-Proto: ignored, never echoed
        for headers in (
            {"Host": 'evil.example",service="https://evil.example'},
            {"Host": "evil.example/path?x"},
            {"Host": "a" * 300},
            {"X-Forwarded-Proto": 'javascript",x="'},
            {"X-Forwarded-Proto": "gopher"},
        ):
            assert _challenge(server, **headers) == expected, headers
        # a well-formed name (a proxy's) is kept, as riverapi follows it
        behind = _challenge(
            server, Host="models.example.org:8443", **{"X-Forwarded-Proto": "https"}
        )
        base = "https://models.example.org:8443"
        assert behind == f'realm="{base}/api/auth/token",service="{base}"'
    with running_server(tmp_path / "e", "--public-url", "https://models.example.org/") as server:
        base = "https://models.example.org"
        expected = f'realm="{base}/api/auth/token",service="{base}"'
        assert _challenge(server, Host='x",evil="1') == expected
        assert _challenge(server) == expected


def _raw_request(server: ServerProcess, header: str) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(f"GET /api/models/ HTTP/1.1\r\nHost: x\r\n{header}\r\n\r\n".encode())
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    return reply


def test_oversized_header_gets_a_clean_refusal_and_one_log_line(
    model_server: ServerProcess,
) -> None:
    marker = "HEADERTEXT"
    for header in (
        f"X-Padding: {marker * 900}",
        f"Authorization: Basic {marker * 900}",
        f"X-{marker * 900}: 1",
    ):
        reply = _raw_request(model_server, header)
        status = int(reply.split(b" ", 2)[1])
        assert status in (400, 431), reply[:200]
    # still serving
    r = requests.get(model_server.url + "/api/models/", headers=model_server.auth_header())
    assert r.status_code == 200
    log = model_server.log()
    assert marker not in log
    assert "Traceback" not in log and " ERROR " not in log
    refusals = [line for line in log.splitlines() if "cannot be parsed" in line]
    assert len(refusals) == 3, log[-3000:]
    assert all(re.search(r"WARNING .*LineTooLong \(HTTP 4\d\d\)$", line) for line in refusals)


def _serve(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")}
    return subprocess.run(
        [*streamml_command(), "serve", "--port", "0", "--data-dir", str(tmp_path / "d"), *args],
        capture_output=True,
        text=True,
        env={**clean, **(env or {})},
        timeout=120,
    )


def test_no_auth_with_credentials_or_off_loopback_is_refused(tmp_path: Path) -> None:
    given = _serve(tmp_path, "--no-auth", "--auth-user", "u", "--auth-token", "t")
    assert given.returncode != 0
    assert "--no-auth together with --auth-user, --auth-token" in given.stderr, given.stderr
    # the same through the environment (a stray variable must not win silently)
    stray = _serve(tmp_path, "--auth-user", "u", "--auth-token", "t", env={"STREAMML_NO_AUTH": "1"})
    assert stray.returncode != 0 and "--no-auth together with" in stray.stderr, stray.stderr
    # 192.0.2.1 (TEST-NET-1) is on no interface here: nothing can listen there by mistake
    remote = _serve(tmp_path, "--no-auth", "--host", "192.0.2.1")
    assert remote.returncode != 0
    assert "--allow-remote-no-auth" in remote.stderr, remote.stderr
    assert "Traceback" not in given.stderr + stray.stderr + remote.stderr


def test_a_client_hanging_up_mid_body_is_not_a_server_error(model_server: ServerProcess) -> None:
    auth = model_server.auth_header()["Authorization"]
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", model_server.port), timeout=30) as sock:
            sock.sendall(
                b"POST /api/learn/ HTTP/1.1\r\nHost: x\r\nAuthorization: " + auth.encode()
                + b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
                + b'{"model": "BODYTEXT"'
            )  # fmt: skip
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(65536):
                pass
    r = requests.get(model_server.url + "/api/models/", headers=model_server.auth_header())
    assert r.status_code == 200
    log = model_server.log()
    assert "Traceback" not in log and " ERROR " not in log and "BODYTEXT" not in log
    assert log.count("incomplete request POST /api/learn/") == 3, log[-2000:]
