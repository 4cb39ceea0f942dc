"""One reading of a StreamModel's address and credentials (the sweep driver's and watch's)."""

from __future__ import annotations

from typing import Any

import pytest

from streamml.sweep import access
from streamml.sweep.access import Located, ServerAccess, ServerUnavailable


def _model(**status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "sm"}, "status": status}


def _true(kind: str) -> dict[str, str]:
    return {"type": kind, "status": "True", "reason": "Ok"}


def _reason(ref: str, obj: dict[str, Any] | None, ready: bool) -> tuple[str, str]:
    with pytest.raises(ServerUnavailable) as info:
        access.locate(ref, obj, require_ready=ready)
    return info.value.reason, str(info.value)


def test_what_keeps_a_sweep_waiting() -> None:
    assert _reason("'sm'", None, True) == ("StreamModelNotFound", "StreamModel 'sm' does not exist")
    reason, message = _reason("'sm'", _model(address="http://a"), True)
    assert reason == "StreamModelNotReady" and "no Available condition yet" in message
    down = {"type": "ModelsReady", "status": "False", "message": "waiting for the server"}
    reason, message = _reason("'sm'", _model(conditions=[_true("Available"), down]), True)
    assert message == "StreamModel 'sm' is not ModelsReady: waiting for the server"
    ready = [_true("Available"), _true("ModelsReady")]
    assert "has no status.address yet" in _reason("'sm'", _model(conditions=ready), True)[1]


def test_watch_needs_only_an_address() -> None:
    where = access.locate("ns/sm", _model(address="http://a:8000"), require_ready=False)
    assert where == Located("http://a:8000", None)
    assert access.with_credentials(where, None) == ServerAccess("http://a:8000")


def test_credentials_come_from_the_named_secret() -> None:
    obj = _model(address="http://a", authSecretName="sm-auth")
    where = access.locate("ns/sm", obj, require_ready=False)
    assert where.secret_name == "sm-auth"
    with pytest.raises(ServerUnavailable) as info:
        access.with_credentials(where, None)
    assert info.value.reason == "CredentialsMissing" and "'sm-auth'" in str(info.value)
    found = access.with_credentials(where, {"username": "u", "token": "t"})
    assert found == ServerAccess("http://a", "u", "t")
