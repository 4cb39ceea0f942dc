"""Who may see the dashboard, on a real server over real HTTP: the login and its session cookie,
no access without credentials, wrong credentials refused (and bounded), the read-only
credential, and credential rotation that keeps the models."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from streamml.pycommand import streamml_command
from tests.fixtures.server import ServerProcess, create_models, learn_calls, running_server

pytestmark = pytest.mark.integration

READ_USER = "viewer"
READ_TOKEN = "read-0nly-t0ken-for-tests"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    with running_server(
        tmp_path / "data", "--auth-read-user", READ_USER, f"--auth-read-token={READ_TOKEN}"
    ) as s:
        yield s


def basic(user: str, token: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()}


def login(server: ServerProcess, user: str, token: str) -> requests.Response:
    return requests.post(
        server.url + "/dashboard/login",
        data={"username": user, "token": token},
        allow_redirects=False,
        timeout=30,
    )


def session(
    server: ServerProcess, user: str = READ_USER, token: str = READ_TOKEN
) -> requests.Session:
    s = requests.Session()
    r = s.post(
        server.url + "/dashboard/login",
        data={"username": user, "token": token},
        allow_redirects=False,
        timeout=30,
    )
    assert r.status_code == 303, r.text
    return s


def learn_body(i: int = 1) -> dict[str, Any]:
    return {"model": "linear", "features": {"x": float(i)}, "ground_truth": 2.0 * i}


DATA_PATHS = ["/api/dashboard/models", "/api/history/linear", "/api/sweeps", "/api/models/"]


async def test_without_credentials_the_page_redirects_and_the_data_answers_401(
    server: ServerProcess,
) -> None:
    await create_models(server)
    r = requests.get(server.url + "/dashboard/", allow_redirects=False, timeout=30)
    assert (r.status_code, r.headers["Location"]) == (303, "/dashboard/login")
    r = requests.get(
        server.url + "/", headers={"Accept": "text/html"}, allow_redirects=False, timeout=30
    )
    assert (r.status_code, r.headers["Location"]) == (302, "/dashboard/")
    streams = ["/api/stream/events/", "/api/stream/metrics/", "/api/stream/dashboard/"]
    for path in [*DATA_PATHS, *streams]:
        r = requests.get(server.url + path, allow_redirects=False, timeout=30)
        assert r.status_code == 401, path
    form = requests.get(server.url + "/dashboard/login", timeout=30)
    assert form.status_code == 200 and 'id="login-form"' in form.text
    assert (
        server.token is not None and server.token not in form.text and READ_TOKEN not in form.text
    )
    assert "'unsafe-inline'" not in form.headers["Content-Security-Policy"]


def test_login_sets_an_httponly_samesite_strict_cookie_that_opens_page_data_and_streams(
    server: ServerProcess,
) -> None:
    r = login(server, READ_USER, READ_TOKEN)
    assert (r.status_code, r.headers["Location"]) == (303, "/dashboard/")
    cookie = r.headers["Set-Cookie"]
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "max-age", "path"} <= attributes
    assert "SameSite=Strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain http on loopback: a Secure cookie would not come back
    assert READ_TOKEN not in cookie
    s = requests.Session()
    s.cookies.update(r.cookies)
    page = s.get(server.url + "/dashboard/", timeout=30)
    assert page.status_code == 200 and 'id="models"' in page.text
    value = r.cookies["streamml_session"]
    assert (
        value not in page.text
        and READ_TOKEN not in page.text
        and str(server.token) not in page.text
    )
    for path in DATA_PATHS:
        assert s.get(server.url + path, timeout=30).status_code in (200, 404), path
    # the event stream (what EventSource opens) accepts the cookie and carries a learn
    asyncio_run_create(server)
    with s.get(server.url + "/api/stream/events/", stream=True, timeout=30) as stream:
        assert stream.status_code == 200
        requests.post(
            server.url + "/api/learn/", json=learn_body(), headers=server.auth_header(), timeout=30
        )
        frame = next(stream.iter_lines(decode_unicode=True))
        assert frame == "event: learn"
    # and the page's own stream: the learns since the previous batch, with the model's metrics
    with s.get(server.url + "/api/stream/dashboard/", stream=True, timeout=30) as stream:
        assert stream.status_code == 200
        for _ in range(3):
            requests.post(
                server.url + "/api/learn/",
                json=learn_body(),
                headers=server.auth_header(),
                timeout=30,
            )
        lines = stream.iter_lines(decode_unicode=True)
        learned, events = 0, []
        while learned < 3:  # one batch, or two if the posts straddled a batch's moment
            assert next(lines) == "event: batch"
            batch = json.loads(next(lines).removeprefix("data: "))
            assert next(lines) == ""
            assert set(batch["models"]) == {"linear"}
            learned += batch["models"]["linear"]["learned"]
            events += batch["events"]
        assert learned == 3 and [e["kind"] for e in events] == ["learn"] * 3


def asyncio_run_create(server: ServerProcess) -> None:
    import asyncio

    asyncio.run(create_models(server))


def test_the_session_is_read_only_so_a_forged_cross_site_write_does_nothing(
    server: ServerProcess,
) -> None:
    asyncio_run_create(server)
    s = session(server, "scientist", str(server.token))  # even the write credential's session
    r = s.post(server.url + "/api/learn/", json=learn_body(), timeout=30)
    assert r.status_code == 403 and "read-only" in r.json()["message"]
    r = s.delete(server.url + "/api/model/", data={"model": "linear"}, timeout=30)
    assert r.status_code == 403
    assert s.get(server.url + "/api/models/", timeout=30).json()["models"] == ["linear", "mean"]
    # a login form posted from another origin is refused
    r = requests.post(
        server.url + "/dashboard/login",
        data={"username": READ_USER, "token": READ_TOKEN},
        headers={"Origin": "http://evil.example"},
        allow_redirects=False,
        timeout=30,
    )
    assert r.status_code == 403 and "Set-Cookie" not in r.headers


def test_wrong_credentials_fail_alike_and_are_rate_limited(server: ServerProcess) -> None:
    wrong_token = login(server, READ_USER, "not-the-token")
    wrong_user = login(server, "nobody", READ_TOKEN)
    for r in (wrong_token, wrong_user):
        assert r.status_code == 401 and "Set-Cookie" not in r.headers
        assert "wrong username or token" in r.text
    assert wrong_token.text == wrong_user.text  # not a word on which part was wrong
    tampered = requests.get(
        server.url + "/api/dashboard/models", cookies={"streamml_session": "e30.AAAA"}, timeout=30
    )
    assert tampered.status_code == 401
    for _ in range(3):
        assert login(server, READ_USER, "still-wrong").status_code == 401
    # five failures within the minute: the next attempt is refused, even a correct one
    limited = login(server, READ_USER, READ_TOKEN)
    assert limited.status_code == 429 and "Set-Cookie" not in limited.headers
    assert "not-the-token" not in server.log() and "still-wrong" not in server.log()
    assert READ_TOKEN not in server.log()


def test_the_read_only_credential_watches_but_cannot_write(
    server: ServerProcess, tmp_path: Path
) -> None:
    asyncio_run_create(server)
    viewer = basic(READ_USER, READ_TOKEN)
    bearer = requests.get(server.url + "/api/auth/token/", headers=viewer, timeout=30).json()[
        "token"
    ]
    for headers in (viewer, {"Authorization": f"Bearer {bearer}"}):
        for method, path, body in (
            ("POST", "/api/learn/", learn_body()),
            ("POST", "/api/predict/", {"model": "linear", "features": {"x": 1.0}}),
            (
                "POST",
                "/api/model/regression/another/",
                {"pipeline": [{"class": "linear_model.LinearRegression"}]},
            ),
            ("PUT", "/api/sweeps/some-sweep", {"phase": "Running"}),
            ("DELETE", "/api/model/?model=linear", None),
        ):
            r = requests.request(method, server.url + path, json=body, headers=headers, timeout=30)
            assert r.status_code == 403, (method, path, r.text)
        for path in [*DATA_PATHS, "/api/metrics/?model=linear", "/api/stats/?model=linear"]:
            assert (
                requests.get(server.url + path, headers=headers, timeout=30).status_code == 200
            ), path
    assert asyncio_learns(server) == 0
    # `streamml watch` records with the read-only credential
    out = tmp_path / "watch"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")}
    done = subprocess.run(
        [*streamml_command(), "watch", "--server", server.url, "--username", READ_USER,
         "--token", READ_TOKEN, "--count", "1", "--interval", "0.2", "--out", str(out)],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "recorded 2 snapshots" in done.stdout


def asyncio_learns(server: ServerProcess) -> int:
    import asyncio

    return asyncio.run(learn_calls(server, "linear"))


def rotate_file(path: Path, value: str) -> None:
    """As the kubelet updates a mounted Secret: a new file renamed over the old one."""
    new = path.with_name(path.name + ".new")
    new.write_text(value)
    os.replace(new, path)


def wait_status(url: str, status: int, **kwargs: Any) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if requests.get(url, timeout=30, **kwargs).status_code == status:
            return
        time.sleep(0.1)
    raise AssertionError(f"{url} never answered {status}")


def test_rotating_the_tokens_keeps_the_models_and_ends_old_tokens_and_sessions(
    tmp_path: Path,
) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "token").write_text("first-write-token")
    (secrets / "read").write_text("first-read-token")
    data = tmp_path / "data"
    args = ("--auth-token-file", str(secrets / "token"), "--auth-read-user", READ_USER,
            "--auth-read-token-file", str(secrets / "read"))  # fmt: skip
    with running_server(data, *args, token="first-write-token") as server:
        asyncio_run_create(server)
        for i in range(3):
            r = requests.post(
                server.url + "/api/learn/",
                json=learn_body(i),
                headers=server.auth_header(),
                timeout=30,
            )
            assert r.status_code == 201
        old_session = session(server, READ_USER, "first-read-token")
        write_bearer = requests.get(
            server.url + "/api/auth/token/", headers=server.auth_header(), timeout=30
        ).json()["token"]
        models = server.url + "/api/models/"
        rotate_file(secrets / "token", "second-write-token")
        rotate_file(secrets / "read", "second-read-token")
        wait_status(models, 401, headers=basic("scientist", "first-write-token"))
        wait_status(models, 401, headers=basic(READ_USER, "first-read-token"))
        assert (
            requests.get(
                models, headers={"Authorization": f"Bearer {write_bearer}"}, timeout=30
            ).status_code
            == 401
        )
        assert old_session.get(server.url + "/api/dashboard/models", timeout=30).status_code == 401
        new_write = basic("scientist", "second-write-token")
        assert requests.get(models, headers=new_write, timeout=30).json()["models"] == [
            "linear",
            "mean",
        ]
        stats = requests.get(
            server.url + "/api/stats/?model=linear", headers=new_write, timeout=30
        ).json()
        assert stats["learn"]["n_calls"] == 3  # nothing lost
        assert (
            session(server, READ_USER, "second-read-token")
            .get(server.url + "/dashboard/", timeout=30)
            .status_code
            == 200
        )
        # SIGHUP re-reads even a file whose inode, size and mtime did not change
        path = secrets / "read"
        stamp = os.stat(path)
        with path.open("r+") as handle:  # in place, same length
            handle.write("third--read-token")
        os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
        time.sleep(1.5)  # the watcher looked at least once and saw no change
        assert (
            requests.get(
                models, headers=basic(READ_USER, "second-read-token"), timeout=30
            ).status_code
            == 200
        )
        os.kill(server.pid, signal.SIGHUP)
        wait_status(models, 200, headers=basic(READ_USER, "third--read-token"))
        assert (
            requests.get(
                models, headers=basic(READ_USER, "second-read-token"), timeout=30
            ).status_code
            == 401
        )
        assert "second-write-token" not in server.log() and "third--read-token" not in server.log()
        assert "credentials rotated" in server.log()
