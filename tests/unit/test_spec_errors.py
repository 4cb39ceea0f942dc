"""One spec-error formatter (``streamml.errors.spec_error``) for the operator's sweep validation
and the ``streamml sweep`` command: both name a list item the way the CRD reference does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from streamml.errors import SpecError
from streamml.operator.sweep_driver import validate
from streamml.sweep.spec import load_sweep_file

BAD_BOUNDS: dict[str, Any] = {
    "streamModelRef": {"name": "m"},
    "parameters": [{"name": "nx", "type": "int", "min": 1, "max": float("inf")}],
    "trials": 3,
}


def test_the_operator_and_the_cli_name_the_same_field(tmp_path: Path) -> None:
    """The CLI's copy wrote ``spec.parameters.0.max`` (field ``parameters.0.max``), the
    operator's ``spec.parameters[0].max``: the bracketed one, as in docs/crd-reference.md and
    in the sampler's own errors, is kept."""
    with pytest.raises(SpecError) as operator:
        validate(BAD_BOUNDS)
    file = tmp_path / "bad.yaml"
    file.write_text(yaml.safe_dump({"kind": "LammpsSweep", "spec": BAD_BOUNDS}))
    with pytest.raises(SpecError) as cli:
        load_sweep_file(file)
    assert operator.value.field == cli.value.field == "parameters[0].max"
    assert str(operator.value).startswith("spec.parameters[0].max: ")
    assert str(cli.value) == f"{file}: {operator.value}"


def test_an_error_of_the_whole_spec_names_the_root() -> None:
    doc = {**BAD_BOUNDS, "parameters": [{"name": "nx", "type": "int", "min": 1, "max": 9}]}
    with pytest.raises(SpecError) as info:
        validate({**doc, "lammps": {"vars": {"nx": "3"}}})
    assert str(info.value).startswith("spec.(root): ") and info.value.field is None
