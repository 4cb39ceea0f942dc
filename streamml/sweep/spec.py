"""A LammpsSweep spec from untrusted input: the one validation both drivers use.

The operator validates ``spec`` of the custom resource, ``streamml sweep`` the spec inside a
YAML file; both report the first problem as a :class:`~streamml.errors.SpecError` whose message
names the field in the Kubernetes form (``spec.parameters[0].min: ...``) and whose ``field`` is
that path without ``spec.``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from streamml.errors import ConfigurationError, SpecError, spec_error
from streamml.sweep.sampling import plan
from streamml.vocabulary.lammpssweep import LammpsSweepSpec

MAX_FILE_BYTES = 1_000_000


def validate(raw: Mapping[str, Any]) -> LammpsSweepSpec:
    """The spec, or SpecError naming the first bad field (``spec.parameters[0]...``)."""
    try:
        return LammpsSweepSpec.model_validate(raw)
    except ValidationError as exc:
        raise _named(spec_error(exc)) from exc


#: a whole-spec check (the targets' mapping to models) names its field first in its message
_ROOT_FIELD = re.compile(
    r"^spec\.\(root\): Value error, "
    r"((?:targets|models)\[\d+\](?:\.\w+)?|lammps\.target|lammps\.features|sampling\.\w+"
    r"|stopWhen\.\w+|testTrials|resources\.predictedTimeLimit(?:\.\w+)?): "
)


def _named(error: SpecError) -> SpecError:
    """``spec.(root): Value error, targets[1].models: ...`` as ``spec.targets[1].models: ...``."""
    match = _ROOT_FIELD.match(str(error))
    if match is None:
        return error
    rest = str(error)[match.end() :]
    return SpecError(f"spec.{match.group(1)}: {rest}", field=match.group(1))


def load_sweep_file(path: Path) -> tuple[str, LammpsSweepSpec]:
    """(name, spec) from a LammpsSweep manifest or a bare spec; SpecError naming the field."""
    import yaml

    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise SpecError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(doc, dict):
        raise SpecError(f"{path}: expected a mapping (a LammpsSweep manifest or its spec)")
    name = path.stem
    if "spec" in doc or "kind" in doc:
        if doc.get("kind", "LammpsSweep") != "LammpsSweep":
            raise SpecError(f"{path}: kind is {doc.get('kind')!r}, not LammpsSweep", field="kind")
        meta = doc.get("metadata") or {}
        if isinstance(meta, dict) and isinstance(meta.get("name"), str):
            name = meta["name"]
        doc = doc.get("spec")
        if not isinstance(doc, dict):
            raise SpecError(f"{path}: spec must be a mapping", field="spec")
    try:
        spec = validate(doc)
    except SpecError as exc:
        raise SpecError(f"{path}: {exc}", field=exc.field) from exc
    try:
        plan(spec)  # impossible counts surface now, before anything is created
    except SpecError as exc:
        raise SpecError(f"{path}: spec.{exc.field}: {exc}", field=exc.field) from exc
    return name, spec
