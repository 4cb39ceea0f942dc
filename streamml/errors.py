"""The project's exceptions: one root, a few clear branches.

::

    StreamMLError                 every error this project raises on purpose
    ├── ConfigurationError        bad settings or command-line options (fail fast at start-up)
    ├── SpecError                 an invalid user-supplied spec (model spec, CR spec, sweep file)
    │   └── UnknownComponentError a river class or scheduler that is not on the allow-list
    ├── NotFoundError             a named thing (model, trial, job) does not exist
    ├── ConflictError             a named thing already exists (never silently overwritten)
    ├── CapacityError             a bounded buffer is full: retry later (HTTP 429)
    ├── AuthError                 missing or wrong credentials; forbidden action
    ├── DeliveryError             a result could not be delivered to the model server (yet)
    ├── SchedulerError            a scheduler backend refused or failed an operation
    │   └── SchedulerUnavailable  it could not be reached (down, restarting): try again later
    ├── LammpsError               LAMMPS failed or its log cannot be parsed
    └── InfrastructureError       a local service (control plane, Slurm) failed to build or start

User mistakes become clear messages (HTTP 4xx with ``{"message": ...}``, a CR status condition,
a CLI error line), never a traceback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the hierarchy itself needs nothing; only the formatter reads pydantic's errors
    from pydantic import ValidationError


class StreamMLError(Exception):
    """Root of every error raised on purpose by lammps-stream-ml."""


class ConfigurationError(StreamMLError):
    """Settings or command-line options are invalid or incomplete."""


class SpecError(StreamMLError):
    """A user-supplied spec is invalid. ``field`` names the offending field when known."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class UnknownComponentError(SpecError):
    """A named component (river class, scheduler) is not on the allow-list."""


class NotFoundError(StreamMLError):
    """A named thing does not exist."""


class ConflictError(StreamMLError):
    """A named thing already exists."""


class CapacityError(StreamMLError):
    """A bounded buffer (pending predictions, event streams) is full; nothing was changed."""


class AuthError(StreamMLError):
    """Credentials are missing or wrong, or the action is forbidden."""


class DeliveryError(StreamMLError):
    """A result could not be delivered to the model server."""


class SchedulerError(StreamMLError):
    """A scheduler backend refused or failed an operation."""


class SchedulerUnavailable(SchedulerError):
    """The scheduler could not be reached (down, restarting, no answer): nothing is known to have
    been done; the caller tries again later (a submit: look the job up by its name first)."""


class LammpsError(StreamMLError):
    """LAMMPS failed, or its output could not be parsed.

    ``code`` is a fixed reason code (``LammpsError``, ``LogUnparseable``, ...); the message is
    safe for a status (LAMMPS' echo of input text removed); ``detail`` is the full text, for the
    job's own log only.
    """

    def __init__(self, message: str, *, code: str = "LammpsError", detail: str | None = None):
        super().__init__(message)
        self.code = code
        self.detail = detail if detail is not None else message


class InfrastructureError(StreamMLError):
    """A local service (control plane, Slurm) could not be built or started."""


def spec_error(exc: ValidationError, *, prefix: str = "") -> SpecError:
    """A spec's first validation error as one line naming the field the way the CRD does.

    ``spec.parameters[0].min: <pydantic's message>`` (list items in brackets, ``spec.(root)``
    for the spec as a whole), after ``prefix`` (e.g. the sweep file's path); ``field`` is the
    path below ``spec`` (``parameters[0].min``; None for the whole spec).
    """
    first = exc.errors(include_url=False)[0]
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"])
    where = where.lstrip(".")
    message = f"spec.{where or '(root)'}: {first['msg']}"
    return SpecError(f"{prefix}: {message}" if prefix else message, field=where or None)
