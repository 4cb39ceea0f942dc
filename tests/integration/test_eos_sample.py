"""``config/samples/eos/`` run for real (fewer runs): ``streamml sweep`` on the local scheduler,
real LAMMPS, a real model server with the sample's StreamModel models.

The surface models see the same features as the offline ceiling (degree-2 polynomials of rho and
t) and learn by an exact online update with a negligible penalty, so on the same training runs
their held-out R² must reach the least-squares fit's; the linear baselines need not.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from streamml.clients import evaluation
from tests.fixtures.server import ServerProcess, create_models, learn_calls
from tests.integration.test_sweep_cli import run_sweep

pytestmark = [pytest.mark.integration, pytest.mark.lammps]

SAMPLE = Path(__file__).resolve().parents[2] / "config" / "samples" / "eos"


async def test_the_eos_sample_learns_each_surface_as_well_as_least_squares(
    model_server: ServerProcess, tmp_path: Path, lammps_bin: str
) -> None:
    models = yaml.safe_load((SAMPLE / "streammodel.yaml").read_text())["spec"]["models"]
    await create_models(
        model_server, [{"name": m["name"], "pipeline": m["pipeline"]} for m in models]
    )
    doc = yaml.safe_load((SAMPLE / "lammpssweep.yaml").read_text())
    doc["spec"].update(trials=12, testTrials=4)
    done, state = run_sweep(tmp_path, doc, model_server)
    assert done.returncode == 0, done.stderr
    assert state["phase"] == "Succeeded" and state["succeeded"] == 16
    for model in models:
        assert await learn_calls(model_server, model["name"]) == 12
    by_target = {e["target"]: e for e in state["evaluationByTarget"]}
    assert list(by_target) == ["pressure", "pe_per_atom", "cost"]
    for target, model in (("pressure", "pressure-poly"), ("pe_per_atom", "energy-poly")):
        trials = evaluation.trials_from_sweep_status(state, target)
        report = evaluation.evaluate(trials, evaluation.polynomial_ceiling)
        assert report.ceiling is not None and report.ceiling.n_train == 12
        streamed = report.models[model]
        assert abs(streamed.r2 - report.ceiling.scores.r2) < 0.02, (target, report.as_dict())
        status_r2 = next(e["R2"] for e in by_target[target]["evaluation"] if e["model"] == model)
        assert status_r2 == pytest.approx(streamed.r2, rel=1e-9)
