"""The result document of one trial: written by the job program, read by the sweep engine.

``streamml run-lammps`` writes it (``--result-file``: a file on a shared filesystem, or a Pod's
termination message) and the engine reads it back with the same model::

    {"trial": ID, "kind": "learn"|"predict", "features": {...}, "target": y | null,
     "target_name": "cpu_time", "metrics": {...parsed log...}, "predictions": {model: y},
     "delivered": bool, "spooled": path | null, "error": str | null, "reason": CODE | null,
     "image_digest": "sha256:...",   # only when LAMMPS ran in a container
     "targets": {name: y, ...}}      # only with several targets (``target`` is the first's)

Reading is tolerant, because the document comes from another process (possibly an older
release): every field has a default, unknown keys are ignored, and a field holding the wrong type
reads as absent instead of making the whole document unreadable (a non-finite or non-numeric
``target`` is no target). A failed trial's ``error`` is ``CODE: message`` with a code of
:data:`REASON_CODES` and LAMMPS' words without any echo of the input (:func:`public_error`);
:func:`scrub` does the same for any text bound for a status.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
)

JobKind = Literal["learn", "predict"]

#: Fixed reason codes of a failed trial (a status reason is ``CODE: message``).
REASON_CODES: dict[str, str] = {
    "LammpsError": "LAMMPS stopped with an ERROR line (its words, input text removed)",
    "LammpsExitCode": "LAMMPS exited non-zero without an ERROR line",
    "LammpsTimeout": "LAMMPS did not finish within the time limit",
    "LammpsNotRunnable": "the LAMMPS command could not be started",
    "LogUnparseable": "the LAMMPS log lacks the lines a measurement needs",
    "TargetMissing": "the LAMMPS log does not report the target",
    "TargetNotFinite": "the target's value in the LAMMPS log is NaN or infinite",
    "InputUnavailable": "the trial's input directory could not be prepared",
}


def finite(value: Any) -> float | None:
    """``value`` as a float when it is a finite number (bools are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


class JobResult(BaseModel):
    """What one attempt of one trial reports (see the module docstring for the JSON)."""

    model_config = ConfigDict(extra="ignore")

    trial: str | None = None
    kind: JobKind | None = None
    features: dict[str, int | float | str | None] = Field(default_factory=dict)
    target: float | None = None
    target_name: str | None = None
    metrics: dict[str, float | int | None] = Field(default_factory=dict)
    #: the server's answers (a regression's float, a class label, a classifier's dict)
    predictions: dict[str, JsonValue] = Field(default_factory=dict)
    delivered: bool = False
    spooled: str | None = None
    error: str | None = None
    reason: str | None = None
    image_digest: str | None = None
    #: every target's value (several targets per run; ``target`` is the first one's)
    targets: dict[str, float] = Field(default_factory=dict)

    @field_validator("target", mode="before")
    @classmethod
    def _finite_target(cls, value: Any) -> float | None:
        return finite(value)

    @field_validator("targets", mode="before")
    @classmethod
    def _finite_targets(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        return {k: y for k, v in value.items() if (y := finite(v)) is not None}

    @field_validator("*", mode="wrap")
    @classmethod
    def _wrong_type_is_absent(
        cls, value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo
    ) -> Any:
        try:
            return handler(value)
        except ValidationError:
            assert info.field_name is not None
            return cls.model_fields[info.field_name].get_default(call_default_factory=True)

    def finite_predictions(self) -> dict[str, float]:
        """The numeric predictions (a held-out trial's score needs numbers)."""
        return {m: y for m, v in self.predictions.items() if (y := finite(v)) is not None}

    def to_json(self) -> str:
        """The document as the job writes it (``image_digest``, ``targets`` only when set)."""
        exclude = {"image_digest"} if self.image_digest is None else set()
        if not self.targets:
            exclude.add("targets")
        return self.model_dump_json(indent=1, exclude=exclude)


def read(text: str | None) -> JobResult | None:
    """The document in ``text``, or None when it is empty, not JSON or not an object."""
    if not text:
        return None
    try:
        return JobResult.model_validate_json(text)
    except ValidationError:
        return None


# -- the public text of a failure --------------------------------------------------------------

_ANY_ERROR = re.compile(r"ERROR(?: on proc \d+)?: [^\n]*")
_LOCATION = re.compile(r"\s*\((?:src/)?[\w./-]+\.(?:cpp|h|c):\d+\)\s*$")
#: LAMMPS echoes input text in these forms (2021-2023 versions): each is cut from a status
_ECHOES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^ERROR(?: on proc \d+)?:\s*"), ""),
    (re.compile(r"^Last command:.*$", re.MULTILINE), ""),
    # the unknown command is the input line itself
    (re.compile(r"\b(Unknown command)\b.*", re.IGNORECASE), r"\1"),
    # quoted words are the input's: "Unrecognized pair style 'X'", "instead of 'X'"
    (re.compile(r"'[^']*'|\"[^\"]*\"|`[^`]*`"), "'…'"),
    # a file name is the input's: "Cannot open restart file X: No such file or directory"
    (
        re.compile(r"\b(open[\w /-]*? (?:file|script|directory))\s+\S+?(?=: |\s|$)", re.I),
        r"\1 …",
    ),
    # a variable name or value: "Substitution for illegal variable X", "Variable X: ..."
    (re.compile(r"\b(illegal variable)\s+\S+", re.IGNORECASE), r"\1 …"),
    (re.compile(r"\b(Variable)\s+\S+?:"), r"\1 …:"),
    # what follows "Unknown identifier in data file:" and the like is the file's text
    (
        re.compile(r"\b((?:Unknown|Unrecognized|Invalid|Illegal|Unexpected|Incorrect)[^:]*):.*$"),
        r"\1: …",
    ),
)


def public_error(text: str) -> str:
    """LAMMPS' error message with every echo of input text removed: safe for a status.

    >>> public_error("ERROR: Unknown command: hunter2 (src/input.cpp:274)")
    'Unknown command'
    >>> public_error("ERROR on proc 0: Cannot open restart file s3cr3t: No such file or directory")
    'Cannot open restart file …: No such file or directory'
    >>> public_error("ERROR: Lost atoms: original 256 current 212 (src/thermo.cpp:481)")
    'Lost atoms: original 256 current 212'
    """
    line = next((ln for ln in text.splitlines() if ln.strip()), "")
    line = _LOCATION.sub("", line.strip())
    for pattern, replacement in _ECHOES:
        line = pattern.sub(replacement, line)
    return " ".join(line.split())[:300] or "(no message)"


def scrub(text: str) -> str:
    """Any text bound for a status (a scheduler's reason): LAMMPS' echoes cut out of it."""
    text = re.sub(r"Last command:.*", "Last command: …", text)
    text = re.sub(r"(Unknown command)\b[^\n]*", r"\1", text, flags=re.IGNORECASE)
    return _ANY_ERROR.sub(lambda m: f"ERROR: {public_error(m.group(0))}", text)
