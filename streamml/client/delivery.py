"""Deliver one trial's result to the model server: retry with backoff, else spool to disk.

A finished LAMMPS run is expensive; its result is never dropped. :func:`deliver` retries a
server that is down or failing (connection errors, 5xx) with exponential backoff; if it stays
unreachable the request is written to ``<spool>/<trial>.json`` and :func:`redeliver` sends it
later (``streamml run-lammps --deliver-spool DIR``). Every request carries the trial's identifier,
so the server learns it once however often it is re-sent (idempotent learn).

A spool file is the whole request plus where it goes::

    {"kind": "learn" | "predict", "server": URL, "trial": ID, "models": [..] | null,
     "features": {...}, "ground_truth": y | null, "result_file": path | null,
     "targets": [{"name", "models", "ground_truth"}, ...],   # several targets only
     "provenance": {"sweep", "trial", "attempt", ...}}       # where it came from, if known

A learn with ``targets`` goes in ONE request (``POST /api/learn/targets/``): each target to its
models, all under the trial's identifier, so a resend learns only what a model lacks.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from streamml.client.api import ModelServerClient
from streamml.errors import DeliveryError, StreamMLError
from streamml.files import write_atomic
from streamml.vocabulary import jobresult
from streamml.vocabulary.replies import LearnReply
from streamml.vocabulary.wire import MAX_PROVENANCE_VALUE, check_provenance

log = logging.getLogger(__name__)

Kind = Literal["learn", "predict"]


@dataclass(frozen=True)
class Credentials:
    username: str | None = None
    token: str | None = None


@dataclass(frozen=True)
class Retry:
    """Exponential backoff: ``initial_s * factor**n`` capped at ``max_s``, ``attempts`` in all."""

    attempts: int = 5
    initial_s: float = 0.5
    factor: float = 2.0
    max_s: float = 30.0

    def delays(self) -> list[float]:
        return [min(self.max_s, self.initial_s * self.factor**n) for n in range(self.attempts - 1)]


@dataclass
class Request:
    kind: Kind
    server: str
    trial: str
    features: dict[str, Any]
    ground_truth: float | None = None
    models: list[str] | None = None  # None: learn on every model / predict with every model
    result_file: str | None = None
    #: several targets, each to its models (``{"name", "models", "ground_truth"}``); learn only
    targets: list[dict[str, Any]] | None = None
    #: where the sample came from (``wire.check_provenance``); learn only
    provenance: dict[str, str] | None = None

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "kind": self.kind,
            "server": self.server,
            "trial": self.trial,
            "models": self.models,
            "features": self.features,
            "ground_truth": self.ground_truth,
            "result_file": self.result_file,
        }
        if self.targets is not None:
            data["targets"] = self.targets
        if self.provenance:
            data["provenance"] = self.provenance
        return data

    @classmethod
    def from_data(cls, data: object) -> Request:
        if not isinstance(data, Mapping):
            raise DeliveryError("spool entry is not a JSON object")
        kind = data.get("kind")
        if kind not in ("learn", "predict"):
            raise DeliveryError(f"spool entry has an invalid kind {kind!r}")
        if not isinstance(data.get("server"), str) or not isinstance(data.get("trial"), str):
            raise DeliveryError("spool entry lacks 'server' or 'trial'")
        if not isinstance(data.get("features"), dict):
            raise DeliveryError("spool entry lacks 'features'")
        models = data.get("models")
        if models is not None and not (
            isinstance(models, list) and all(isinstance(m, str) for m in models)
        ):
            raise DeliveryError("spool entry has invalid 'models'")
        return cls(
            kind=kind,
            server=data["server"],
            trial=data["trial"],
            features=data["features"],
            ground_truth=data.get("ground_truth"),
            models=models,
            result_file=data.get("result_file"),
            targets=_spooled_targets(data.get("targets")),
            provenance=_spooled_provenance(data.get("provenance")),
        )


def _spooled_provenance(value: object) -> dict[str, str] | None:
    if value is None:
        return None
    try:
        return dict(check_provenance(value))
    except ValueError as exc:
        raise DeliveryError(f"spool entry has an invalid 'provenance': {exc}") from None


def _spooled_targets(value: object) -> list[dict[str, Any]] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise DeliveryError("spool entry has invalid 'targets'")
    for item in value:
        models = item.get("models") if isinstance(item, dict) else None
        if not (
            isinstance(item, dict)
            and isinstance(item.get("name"), str)
            and isinstance(models, list)
            and all(isinstance(m, str) for m in models)
            and jobresult.finite(item.get("ground_truth")) is not None
        ):
            raise DeliveryError("spool entry has invalid 'targets'")
    return [dict(item) for item in value]


def provenance_value(text: str | None) -> str | None:
    """``text`` as a provenance value the server accepts: control characters as ``?``, at most
    :data:`MAX_PROVENANCE_VALUE` characters (None when nothing is left). A host name or a
    version line is what the job found: an odd one must not cost the trial its learn."""
    if text is None:
        return None
    clean = "".join(c if c.isprintable() else "?" for c in text.strip())
    return clean[:MAX_PROVENANCE_VALUE] or None


@dataclass
class Outcome:
    delivered: bool
    spooled: Path | None = None
    reply: LearnReply | None = None
    predictions: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    #: the server was unreachable or failing (worth retrying later), not refusing the request
    unreachable: bool = False


async def send(request: Request, credentials: Credentials, *, timeout_s: float = 10.0) -> Outcome:
    """One attempt: learn (idempotent by trial id) or predict with each model."""
    async with ModelServerClient(
        request.server, username=credentials.username, token=credentials.token, timeout=timeout_s
    ) as client:
        if request.kind == "learn" and request.targets is not None:
            reply = await client.learn_targets(
                request.features,
                request.targets,
                identifier=request.trial,
                provenance=request.provenance,
            )
            return Outcome(delivered=True, reply=reply)
        if request.kind == "learn":
            if request.ground_truth is None:
                raise DeliveryError(f"trial {request.trial}: a learn request needs a target")
            reply = await client.learn(
                request.features,
                request.ground_truth,
                models=request.models,
                identifier=request.trial,
                provenance=request.provenance,
            )
            return Outcome(delivered=True, reply=reply)
        models = request.models if request.models is not None else await client.models()
        predictions: dict[str, Any] = {}
        for model in models:
            answer = await client.predict(request.features, model=model, identifier=request.trial)
            predictions[model] = answer.prediction
        return Outcome(delivered=True, predictions=predictions)


async def deliver(
    request: Request,
    credentials: Credentials,
    *,
    retry: Retry | None = None,
    spool_dir: Path | None = None,
) -> Outcome:
    """Send with retries; when the server stays unreachable, spool (if a spool dir is given).

    Only DeliveryError (unreachable, 5xx) is retried: a 4xx (bad credentials, unknown model)
    will not heal by waiting. Either way an undelivered request is spooled, never dropped.
    """
    retry = retry or Retry()
    delays = retry.delays()
    error: StreamMLError | None = None
    for attempt in range(retry.attempts):
        try:
            return await send(request, credentials)
        except DeliveryError as exc:
            error = exc
            if attempt < len(delays):
                log.warning(
                    "trial %s: delivery attempt %d/%d failed (%s); retrying in %.1f s",
                    request.trial,
                    attempt + 1,
                    retry.attempts,
                    exc,
                    delays[attempt],
                )
                await asyncio.sleep(delays[attempt])
        except StreamMLError as exc:  # not retriable
            error = exc
            break
    message = str(error)
    spooled = spool(request, spool_dir) if spool_dir is not None else None
    if spooled is not None:
        log.warning("trial %s: not delivered (%s); spooled to %s", request.trial, message, spooled)
    unreachable = isinstance(error, DeliveryError)
    return Outcome(delivered=False, spooled=spooled, error=message, unreachable=unreachable)


_ESCAPE = re.compile(r"[^A-Za-z0-9.-]")
#: an escaped name longer than this is shortened and made unique by a hash of the whole id
_MAX_NAME = 160


def spool_path(spool_dir: Path, trial: str) -> Path:
    """The spool file of a trial: one name per trial id, two ids never share one.

    Every character outside ``[A-Za-z0-9.-]`` (``_`` included) becomes ``_XX`` (its UTF-8 bytes
    in hex), so the name is injective and never leaves the spool dir; a long id keeps a prefix
    plus the SHA-256 of the whole id.
    """
    name = _ESCAPE.sub(lambda m: "".join(f"_{b:02X}" for b in m.group().encode()), trial)
    if name.startswith(".") or not name:  # no hidden files, no "." or ".."
        name = "_" + name
    if len(name) > _MAX_NAME:
        name = f"{name[:80]}~{hashlib.sha256(trial.encode()).hexdigest()}"
    return spool_dir / f"{name}.json"


def spool(request: Request, spool_dir: Path) -> Path:
    """Write the request atomically (a reader never sees half a file)."""
    text = json.dumps(request.to_data(), indent=1)
    return write_atomic(spool_path(spool_dir, request.trial), text)


@dataclass
class Redelivery:
    delivered: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # spool file -> reason


async def redeliver(
    spool_dir: Path,
    credentials: Credentials,
    *,
    retry: Retry | None = None,
    server: str | None = None,
) -> Redelivery:
    """Send every spooled request; a delivered one moves to ``<spool>/delivered/``.

    ``server`` overrides the recorded address (the server may have moved). A request whose
    result file was recorded gets that file updated (``delivered``, predictions).
    """
    report = Redelivery()
    done = spool_dir / "delivered"
    for path in await asyncio.to_thread(lambda: sorted(spool_dir.glob("*.json"))):
        try:
            request = Request.from_data(json.loads(path.read_text()))
        except (OSError, ValueError, DeliveryError) as exc:
            report.failed[str(path)] = f"unreadable spool entry: {exc}"
            continue
        if server is not None:
            request.server = server
        outcome = await deliver(request, credentials, retry=retry or Retry(attempts=1))
        if not outcome.delivered:
            report.failed[str(path)] = outcome.error or "not delivered"
            continue
        if request.result_file:
            _mark_delivered(Path(request.result_file), request.trial, outcome)
        done.mkdir(exist_ok=True)
        os.replace(path, done / path.name)
        report.delivered.append(request.trial)
    return report


def _mark_delivered(result_file: Path, trial: str, outcome: Outcome) -> None:
    try:
        document = jobresult.read(result_file.read_text())
    except (OSError, ValueError):
        return  # the result file is the job's; a missing one does not undo a delivery
    if document is None or document.trial != trial:
        return  # only ever rewrite this trial's own result document
    document.delivered = True
    if outcome.predictions:
        document.predictions = dict(outcome.predictions)
    write_atomic(result_file, document.to_json())
