"""The dashboard's pieces that need no server: roles and rotation of credentials, session
cookies, the login limiter, the sweep summary and its best-effort publisher, the page assets."""

from __future__ import annotations

import asyncio
import base64
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from streamml.errors import AuthError, CapacityError, ConfigurationError, DeliveryError
from streamml.modelserver import sessions
from streamml.modelserver.auth import READ, WRITE, Authenticator
from streamml.modelserver.settings import ServerSettings
from streamml.sweep.publish import PublishingStore, summary_of
from streamml.vocabulary.lammpssweep import LammpsSweepSpec
from streamml.vocabulary.sweepstatus import LammpsSweepStatus
from streamml.vocabulary.sweepsummary import MAX_HELD_OUT, SweepSummary

SECRET = b"k" * 32


def basic(user: str, token: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()


def two_roles() -> Authenticator:
    return Authenticator("writer", "w-token", SECRET, read_username="viewer", read_token="r-token")


def test_each_credential_has_its_role_by_basic_and_by_bearer() -> None:
    auth = two_roles()
    assert auth.check_header(basic("writer", "w-token")) is WRITE
    assert auth.check_header(basic("viewer", "r-token")) is READ
    with pytest.raises(AuthError, match="wrong username or token"):
        auth.check_header(basic("viewer", "w-token"))  # a token is only good for its own user
    read_jwt, _, _ = auth.issue("viewer")
    write_jwt, _, _ = auth.issue("writer")
    assert auth.check_header(f"Bearer {read_jwt}") is READ
    assert auth.check_header(f"Bearer {write_jwt}") is WRITE
    assert auth.check_header(f"Bearer {read_jwt}") is READ  # from the cache, same role


def test_rotation_ends_the_old_tokens_bearers_and_sessions_of_that_credential_only() -> None:
    auth = two_roles()
    write_jwt, _, _ = auth.issue("writer")
    read_jwt, _, _ = auth.issue("viewer")
    cookie = sessions.issue(auth, "viewer", 3600)
    write_cookie = sessions.issue(auth, "writer", 3600)
    auth.check_bearer(read_jwt)  # cached before the rotation
    auth.rotate(read_token="r-token-2")
    for stale in (f"Bearer {read_jwt}", basic("viewer", "r-token")):
        with pytest.raises(AuthError):
            auth.check_header(stale)
    with pytest.raises(AuthError, match="rotated"):
        sessions.check(auth, cookie)
    assert auth.check_header(basic("viewer", "r-token-2")) is READ
    assert auth.check_header(f"Bearer {write_jwt}") is WRITE  # the write credential did not move
    assert sessions.check(auth, write_cookie) == "writer"


def test_a_session_cookie_is_signed_expires_and_cannot_be_forged() -> None:
    auth = two_roles()
    cookie = sessions.issue(auth, "viewer", 60, now=1_000_000.0)
    assert sessions.check(auth, cookie, now=1_000_030.0) == "viewer"
    with pytest.raises(AuthError, match="expired"):
        sessions.check(auth, cookie, now=1_000_061.0)
    body, signature = cookie.split(".")
    forged = base64.urlsafe_b64encode(b'{"sub":"writer","exp":9999999999,"gen":"x"}').decode()
    for bad in (f"{forged.rstrip('=')}.{signature}", body, "", "a.b.c", cookie + "x" * 2000):
        with pytest.raises(AuthError):
            sessions.check(auth, bad, now=1_000_030.0)
    other = Authenticator(
        "writer", "w-token", b"o" * 32, read_username="viewer", read_token="r-token"
    )
    with pytest.raises(AuthError):
        sessions.check(other, cookie, now=1_000_030.0)
    # the cookie is not a bearer token: its key differs from the JWT key
    with pytest.raises(AuthError):
        auth.check_bearer(cookie)


def test_the_login_limiter_counts_failures_per_address_within_its_window() -> None:
    limiter = sessions.LoginLimiter(max_failures=2, window=10.0)
    limiter.failed("a", now=0.0)
    limiter.check("a", now=1.0)
    limiter.failed("a", now=1.0)
    with pytest.raises(CapacityError, match="retry in"):
        limiter.check("a", now=2.0)
    limiter.check("b", now=2.0)  # another address is not affected
    limiter.check("a", now=11.5)  # the window moved on


def test_read_only_settings_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="both"):
        ServerSettings(auth_user="u", auth_token="t", auth_read_user="v").authenticator()  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="differ"):
        ServerSettings(
            auth_user="u",
            auth_token="t",
            auth_read_user="u",
            auth_read_token="r",  # type: ignore[arg-type]
        ).authenticator()
    with pytest.raises(ConfigurationError, match="--auth-read-user"):
        ServerSettings(no_auth=True, auth_read_user="v").authenticator()


def status_with(results: int) -> LammpsSweepStatus:
    return LammpsSweepStatus.model_validate(
        {
            "phase": "Running",
            "succeeded": 3,
            "learningCurve": [
                {
                    "model": "linear",
                    "metric": "R2",
                    "points": [{"trials": 1, "samples": 1, "value": float("nan")}],
                }
            ],
            "testResults": [
                {"id": i, "target": 1.0 + i, "predictions": {"linear": 1.0, "mean": float("inf")}}
                for i in range(results)
            ],
            "evaluation": [{"model": "linear", "n": 3, "R2": 0.5}],
        }
    )


SPEC = LammpsSweepSpec.model_validate(
    {"streamModelRef": {"name": "m"},
     "parameters": [{"name": "nx", "type": "int", "min": 2, "max": 4}],
     "trials": 3, "testTrials": 2}
)  # fmt: skip


def test_a_summary_keeps_what_fits_and_drops_what_is_not_finite() -> None:
    summary = summary_of(SPEC, status_with(MAX_HELD_OUT + 5))
    assert len(summary.held_out) == MAX_HELD_OUT
    assert summary.held_out[-1].id == MAX_HELD_OUT + 4  # the newest kept
    assert summary.held_out[0].predictions == {"linear": 1.0}  # inf dropped
    assert summary.learning_curve[0].points[0].value is None  # nan is no value
    assert (summary.trials, summary.test_trials, summary.succeeded) == (3, 2, 3)
    SweepSummary.model_validate_json(summary.model_dump_json())  # what the server accepts


class MemoryStore:
    def __init__(self) -> None:
        self.saved: list[str] = []

    async def load(self) -> LammpsSweepStatus | None:
        return None

    async def save(self, status: LammpsSweepStatus) -> None:
        self.saved.append(status.phase)


async def test_a_failing_publisher_never_fails_the_sweep_and_the_final_status_is_sent() -> None:
    calls: list[str] = []

    async def failing(summary: SweepSummary) -> None:
        calls.append(summary.phase)
        raise DeliveryError("PUT /api/sweeps/x: connection refused")

    inner = MemoryStore()
    store = PublishingStore(inner, lambda: SPEC, failing)
    status = status_with(1)
    for _ in range(5):  # five saves within a second: one publication now, one later at most
        await store.save(status)
    assert inner.saved == ["Running"] * 5
    assert calls == ["Running"]
    status.phase = "Succeeded"
    await store.save(status)  # the final one goes at once (and its failure is only logged)
    assert calls == ["Running", "Succeeded"]
    assert store.published == 0
    await store.close()


async def test_a_save_within_the_interval_is_published_when_it_is_over() -> None:
    sent: list[int] = []

    async def publish(summary: SweepSummary) -> None:
        sent.append(summary.succeeded)

    store = PublishingStore(MemoryStore(), lambda: SPEC, publish)
    status = status_with(0)
    await store.save(status)
    status.succeeded = 4
    await store.save(status)
    assert sent == [3]
    await asyncio.sleep(1.3)
    assert sent == [3, 4]
    assert store.published == 2


@pytest.mark.parametrize("name", ["dashboard.html", "dashboard.js", "dashboard.css", "login.html"])
def test_the_page_assets_ship_in_the_package(name: str) -> None:
    text = (resources.files("streamml.modelserver") / "static" / name).read_text()
    assert text.strip()
    if name.endswith(".html"):
        assert "<script>" not in text and "http://" not in text and "https://" not in text
    if name.endswith(".js"):
        assert "innerHTML" not in text.replace("never innerHTML", "")


def test_pyproject_ships_the_static_folder() -> None:
    import tomllib

    data: dict[str, Any] = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    assert "static/*" in data["tool"]["setuptools"]["package-data"]["streamml.modelserver"]
