"""The sample manifests of an earlier ``main`` still validate against this tree's schemas.

``tests/fixtures/samples-0d095a3/`` is ``config/samples/`` as of commit 0d095a3 (issue 14: a
schema may only gain optional fields within ``v1alpha1``). Every document is loaded the way the
project loads it: a StreamModel through the operator's validation, a LammpsSweep through the
``streamml sweep`` loader (schema, then the sampling plan). The real API server's verdict on the
same files is in ``tests/integration/test_compat_fixtures.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from streamml.operator.reconcile import validate as validate_streammodel
from streamml.sweep.spec import load_sweep_file

OLD_SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "samples-0d095a3"


def _manifests() -> list[Path]:
    return sorted(OLD_SAMPLES.rglob("*.yaml"))


def test_the_fixture_holds_every_sample_kind() -> None:
    kinds = sorted(
        doc["kind"] for p in _manifests() for doc in yaml.safe_load_all(p.read_text()) if doc
    )
    assert kinds == ["LammpsSweep", "LammpsSweep", "StreamModel"]


@pytest.mark.parametrize("path", _manifests(), ids=lambda p: str(p.relative_to(OLD_SAMPLES)))
def test_an_old_sample_validates_against_the_current_schemas(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        if doc["kind"] == "StreamModel":
            spec = validate_streammodel(doc["spec"])
            assert [m.name for m in spec.models] == [m["name"] for m in doc["spec"]["models"]]
        else:
            assert doc["kind"] == "LammpsSweep"
            name, sweep = load_sweep_file(path)
            assert name == doc["metadata"]["name"]
            assert sweep.trials == doc["spec"]["trials"]
