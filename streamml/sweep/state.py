"""Where a sweep's status lives between ticks: the store protocol, the CLI's file store.

The operator's store patches the LammpsSweep's ``/status`` (``operator/sweep_driver.py``); the
CLI's writes a JSON file atomically. Both hold a whole
:class:`~streamml.vocabulary.sweepstatus.LammpsSweepStatus`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from streamml.errors import SpecError
from streamml.files import write_atomic
from streamml.vocabulary.sweepstatus import LammpsSweepStatus


class StateStore(Protocol):
    """Where a sweep's status lives between ticks (and across restarts)."""

    async def load(self) -> LammpsSweepStatus | None: ...

    async def save(self, status: LammpsSweepStatus) -> None: ...


class FileStore:
    """The CLI's store: the status as JSON, replaced atomically on every save."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def load(self) -> LammpsSweepStatus | None:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        try:
            return LammpsSweepStatus.model_validate_json(text)
        except ValueError as exc:
            raise SpecError(f"state file {self.path} is not a sweep status: {exc}") from exc

    async def save(self, status: LammpsSweepStatus) -> None:
        write_atomic(self.path, status.model_dump_json(by_alias=True, indent=1))


def stamp() -> str:
    """Now, RFC 3339 with milliseconds (a trial's times; conditions keep whole seconds)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def dump(status: LammpsSweepStatus) -> str:
    return json.dumps(status.model_dump(by_alias=True), indent=1)
