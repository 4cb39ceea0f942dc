"""The CRD reference in docs/ is generated from the schemas and must not go stale."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from streamml import docgen
from streamml.vocabulary import crdgen


def _aliases(model: type[BaseModel]) -> list[str]:
    return [field.alias or name for name, field in model.model_fields.items()]


def test_committed_reference_matches_the_schemas() -> None:
    committed = docgen.DEFAULT_OUT.read_text(encoding="utf-8")
    assert committed == docgen.render(), "docs/crd-reference.md is stale: python -m streamml.docgen"


def test_every_top_level_field_and_printer_column_is_documented() -> None:
    text = docgen.render()
    for info in crdgen.resources():
        assert f"## {info.kind}\n" in text
        for alias in _aliases(info.spec_model):
            assert f"| `spec.{alias}` |" in text, (info.kind, alias)
        for alias in _aliases(info.status_model):
            assert f"| `status.{alias}` |" in text, (info.kind, alias)
        for column in info.printer_columns:
            assert f"| {column.name} | `{column.json_path}` |" in text


def test_constraints_and_pipes_are_rendered_readably() -> None:
    node = {
        "type": "string",
        "pattern": "^(a|b)$",
        "enum": ["a", "b"],
        "maxLength": 3,
        "nullable": True,
        "description": "x | y",
    }
    rows = list(
        docgen.fields({"type": "object", "properties": {"f": node}, "required": ["f"]}, "spec")
    )
    assert rows[1] == [
        "`spec.f`",
        "string",
        "",
        "required; max length 3; one of `a`, `b`; pattern `^(a\\|b)$`; nullable",
        "x \\| y",
    ]


def test_openapi_v3_boolean_exclusive_bounds_read_as_strict_bounds() -> None:
    """crdgen turns ``gt=0`` into ``minimum: 0, exclusiveMinimum: true`` (OpenAPI v3.0): the
    reference once read "≥ 0; > True"."""
    node = {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 10}
    [(_, _, _, constraints, _)] = docgen.fields(node, "spec.x")
    assert constraints == "> 0; ≤ 10"
    node = {"type": "number", "minimum": 0, "exclusiveMinimum": False}
    [(_, _, _, constraints, _)] = docgen.fields(node, "spec.x")
    assert constraints == "≥ 0"


def test_check_mode_reports_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "ref.md"
    stale.write_text("old")
    assert docgen.main(["--out", str(stale), "--check"]) == 1
    assert docgen.main(["--out", str(stale)]) == 0
    assert docgen.main(["--out", str(stale), "--check"]) == 0
