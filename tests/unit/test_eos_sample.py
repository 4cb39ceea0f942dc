"""``config/samples/eos/``: the equation-of-state sample is valid, and its sweep's targets map
onto exactly the models its StreamModel declares (each model learns one target)."""

from __future__ import annotations

from pathlib import Path

import yaml

from streamml.operator.reconcile import validate as validate_streammodel
from streamml.sweep.spec import load_sweep_file
from streamml.vocabulary.lammpssweep import resolved_targets

SAMPLE = Path(__file__).resolve().parents[2] / "config" / "samples" / "eos"


def test_the_sweep_teaches_every_model_of_the_streammodel_one_target() -> None:
    model_doc = yaml.safe_load((SAMPLE / "streammodel.yaml").read_text())
    models = validate_streammodel(model_doc["spec"]).models
    name, sweep = load_sweep_file(SAMPLE / "lammpssweep.yaml")
    assert name == "lj-eos" and sweep.stream_model_ref.name == model_doc["metadata"]["name"]
    targets = resolved_targets(sweep)
    assert [t.name for t in targets] == ["pressure", "pe_per_atom", "cost"]
    learners = [m for t in targets for m in t.models or ()]
    assert sorted(learners) == sorted(m.name for m in models)
    assert [p.name for p in sweep.parameters] == ["rho", "t"]


def test_the_surface_models_see_the_features_of_the_ceiling() -> None:
    """Degree-2 polynomial features of (rho, t) with a bias: the six terms the offline ceiling
    (clients/evaluation.py: polynomial_ceiling, degree 2) fits."""
    model_doc = yaml.safe_load((SAMPLE / "streammodel.yaml").read_text())
    for model in validate_streammodel(model_doc["spec"]).models:
        if model.name.endswith("-poly"):
            first = model.pipeline[0]
            assert first.class_name == "feature_extraction.PolynomialExtender"
            assert first.params == {"degree": 2, "include_bias": True}
