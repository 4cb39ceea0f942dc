"""One decoder for a StreamModel's auth Secret (``streamml.sweep.access.decode_secret``).

Two copies had diverged: the operator's skipped a value that did not decode (so a sweep's jobs
ran without a token and failed with 401s later, and a generated Secret with a damaged token was
replaced), while ``streamml watch`` refused it with a clear error. The refusal is kept, for
every reader, and the message names the key but never echoes the value."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from streamml.errors import ConfigurationError
from streamml.operator import reconcile
from streamml.operator.kube import decode_secret as operator_decode
from streamml.sweep import access


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_values_decode() -> None:
    data = {"username": _b64("streamml"), "token": _b64("s3cr3t")}
    assert access.decode_secret(data, "Secret 'x'") == {"username": "streamml", "token": "s3cr3t"}
    assert access.decode_secret(None, "Secret 'x'") == {}


@pytest.mark.parametrize(
    "value",
    ["not base64!!", base64.b64encode(b"\xff\xfe\xfa").decode(), 12345, None],
    ids=["not-base64", "not-utf8", "number", "null"],
)
def test_a_value_that_does_not_decode_is_refused_naming_the_key_not_the_value(value: Any) -> None:
    with pytest.raises(access.SecretMalformed) as info:
        access.decode_secret({"username": _b64("u"), "token": value}, "Secret 'm-auth'")
    message = str(info.value)
    assert "Secret 'm-auth'" in message and "'token'" in message
    assert str(value) not in message
    assert isinstance(info.value, ConfigurationError)


def test_the_operator_no_longer_skips_a_damaged_token() -> None:
    """The old operator copy returned ``{'username': 'u'}`` here (the token silently dropped)."""
    secret = {"metadata": {"name": "m-auth"}, "data": {"username": _b64("u"), "token": "%%%"}}
    with pytest.raises(access.SecretMalformed, match="'token'"):
        operator_decode(secret)


def test_the_streammodel_reconciler_reports_it_as_an_invalid_auth_secret() -> None:
    secret = {"metadata": {"name": "m-auth"}, "data": {"username": _b64("u"), "token": "%%%"}}
    with pytest.raises(reconcile.CredentialsError) as info:
        reconcile._decoded(secret)
    assert info.value.reason == "AuthSecretInvalid"
    assert "%%%" not in str(info.value)
