"""Where a StreamModel's server is and how to authenticate: read once, for every reader.

The sweep driver (operator) and ``streamml watch --streammodel`` both turn a StreamModel and its
auth Secret into a :class:`ServerAccess`; they fetch the two objects with their own API clients
and hand them to :func:`locate` and :func:`with_credentials`, which hold the rules.

Jobs use ``status.address`` (the in-cluster Service, or loopback in local runtime), never the
Ingress URL. A sweep needs the server ``Available`` with its models (``ModelsReady``), not the
aggregate ``Ready``, which also waits for an ingress controller a cluster may not have.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from streamml.errors import ConfigurationError, StreamMLError
from streamml.vocabulary.streammodel import StreamModelStatus

#: the conditions a sweep waits for
NEEDED_FOR_JOBS = ("Available", "ModelsReady")


@dataclass(frozen=True)
class ServerAccess:
    """A model server's base URL and the credentials for it."""

    url: str
    username: str | None = None
    token: str | None = None


@dataclass(frozen=True)
class Located:
    """A StreamModel's address and the name of its auth Secret (None: no auth)."""

    address: str
    secret_name: str | None


class SecretMalformed(ConfigurationError):
    """A Secret's value is not base64-encoded UTF-8 text (the message names the key, never the
    value)."""


def decode_secret(data: Mapping[str, Any] | None, what: str) -> dict[str, str]:
    """Every value of a Secret's ``data``, base64-decoded: the one decoder for the operator and
    ``watch``. A value that does not decode is an error naming ``what`` and its key, never
    skipped: a skipped token would run jobs without credentials (401s later) or let a generated
    Secret be replaced."""
    out: dict[str, str] = {}
    for key, value in (data or {}).items():
        try:
            if not isinstance(value, str | bytes):
                raise ValueError("not a string")
            out[str(key)] = base64.b64decode(value, validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            raise SecretMalformed(f"{what}: key {key!r} is not base64-encoded UTF-8 text") from None
    return out


class ServerUnavailable(StreamMLError):
    """The StreamModel cannot be used (yet): ``reason`` is a condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def locate(ref: str, obj: Mapping[str, Any] | None, *, require_ready: bool) -> Located:
    """The address in ``obj``'s status; ServerUnavailable when it is missing (or not ready)."""
    if obj is None:
        raise ServerUnavailable("StreamModelNotFound", f"StreamModel {ref} does not exist")
    try:
        status = StreamModelStatus.model_validate(obj.get("status") or {})
    except ValidationError as exc:
        raise ServerUnavailable("StreamModelNotReady", f"StreamModel {ref}: {exc}") from exc
    if require_ready:
        conditions = {c.type: c for c in status.conditions}
        for needed in NEEDED_FOR_JOBS:
            cond = conditions.get(needed)
            if cond is None or cond.status != "True":
                why = (cond.message if cond else "") or f"no {needed} condition yet"
                raise ServerUnavailable(
                    "StreamModelNotReady", f"StreamModel {ref} is not {needed}: {why}"
                )
    if not status.address:
        raise ServerUnavailable(
            "StreamModelNotReady", f"StreamModel {ref} has no status.address yet (is it Ready?)"
        )
    return Located(status.address, status.auth_secret_name or None)


def with_credentials(where: Located, secret: Mapping[str, str] | None) -> ServerAccess:
    """The access, with the ``username`` and ``token`` of the (decoded) auth Secret."""
    if where.secret_name is None:
        return ServerAccess(where.address)
    if secret is None:
        raise ServerUnavailable(
            "CredentialsMissing", f"Secret {where.secret_name!r} does not exist"
        )
    return ServerAccess(where.address, secret.get("username"), secret.get("token"))
