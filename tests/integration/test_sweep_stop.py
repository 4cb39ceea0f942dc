"""``stopWhen`` end to end: ``streamml sweep`` on real ``lmp``, the real local scheduler and a
real model server: the held-out runs go first, the server predicts them again every
``checkEvery`` training runs, and the sweep stops submitting once the target holds; rules the
server cannot answer end the sweep with a condition naming the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.server import ServerProcess, create_models, learn_calls
from tests.integration.test_sweep_cli import run_sweep, sweep_doc

pytestmark = [pytest.mark.integration, pytest.mark.lammps]

#: the atom count (4 nx ny nz) is the target: the Mean model's prediction after k runs is the
#: mean of their atom counts, exactly, so the held-out MAPE of each check can be recomputed
ATOMS = {"target": "atoms", "features": "vars+atoms", "vars": {"steps": "20"}}


def _stop_doc(**rule: Any) -> dict[str, Any]:
    return sweep_doc(trials=12, testTrials=3, parallelism=1, lammps=ATOMS,
                     stopWhen={"metric": "MAPE", "checkEvery": 3, **rule})  # fmt: skip


async def test_a_stop_when_sweep_stops_once_the_target_holds(
    model_server: ServerProcess, tmp_path: Path, lammps_bin: str
) -> None:
    await create_models(model_server)
    done, state = run_sweep(tmp_path, _stop_doc(threshold=1000, model="mean"), model_server)
    assert done.returncode == 0, done.stderr
    assert state["phase"] == "Succeeded"
    # the held-out runs ran first, then 3 training runs: the first check held, nothing more ran
    roles = [t["role"] for t in state["trials"]]
    assert roles == ["test"] * 3 + ["train"] * 3, roles
    assert state["runsToTarget"] == 3 and state["runs"] == "3/12"
    assert await learn_calls(model_server, "mean") == 3
    cond = {c["type"]: c for c in state["conditions"]}
    assert cond["TargetReached"]["status"] == "True", cond
    assert cond["TargetReached"]["reason"] == "TargetReached"
    # the check's value is the server's Mean after exactly the 3 training runs, recomputed here
    train = [t["target"] for t in state["trials"] if t["role"] == "train"]
    tests = [r["target"] for r in state["testResults"]]
    mean = sum(train) / 3
    mape = 100 * sum(abs(mean - y) / y for y in tests) / 3
    (check,) = state["heldOutChecks"]
    assert check["trials"] == 3 and check["model"] == "mean" and check["holds"]
    assert check["value"] == pytest.approx(mape, rel=1e-6)
    assert all(r["predictions"]["mean"] == pytest.approx(mean) for r in state["testResults"])
    # every run's simulation cost was counted; the check saw what was spent by then
    assert state["coreSeconds"] > 0 and 0 < check["coreSeconds"] <= state["coreSeconds"]
    assert state["heldOut"].startswith("MAPE ") and state["heldOut"].endswith("/<=1000%")


async def test_a_target_never_reached_spends_the_budget_and_says_so(
    model_server: ServerProcess, tmp_path: Path, lammps_bin: str
) -> None:
    await create_models(model_server)
    doc = _stop_doc(threshold=0, model="mean")
    doc["spec"]["trials"] = 4
    done, state = run_sweep(tmp_path, doc, model_server)
    assert done.returncode == 0, done.stderr
    assert state["phase"] == "Succeeded" and state.get("runsToTarget") is None
    assert [c["trials"] for c in state["heldOutChecks"]] == [3, 4]  # every 3, and the last
    cond = {c["type"]: c for c in state["conditions"]}
    assert cond["TargetReached"]["reason"] == "BudgetExhausted", cond
    assert await learn_calls(model_server, "mean") == 4


async def test_a_named_model_the_server_lacks_fails_naming_stopwhen_model(
    model_server: ServerProcess, tmp_path: Path, lammps_bin: str
) -> None:
    await create_models(model_server)
    done, state = run_sweep(tmp_path, _stop_doc(threshold=50, model="ghost"), model_server)
    assert done.returncode == 1
    assert state["phase"] == "Failed"
    ready = next(c for c in state["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "InvalidSpec"
    assert ready["message"].startswith("spec.stopWhen.model: model 'ghost' is not on the model")
    assert "linear, mean" in ready["message"]


async def test_a_classifier_named_for_a_regression_metric_fails_naming_stopwhen_metric(
    model_server: ServerProcess, tmp_path: Path, lammps_bin: str
) -> None:
    labels = {"name": "labels", "flavor": "multiclass", "pipeline": [
        {"class": "tree.HoeffdingTreeClassifier"}]}  # fmt: skip
    await create_models(model_server, [*_two(), labels])
    doc = _stop_doc(threshold=50, model="labels")
    doc["spec"]["models"] = ["mean", "labels"]
    done, state = run_sweep(tmp_path, doc, model_server)
    assert done.returncode == 1
    ready = next(c for c in state["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "InvalidSpec", state["conditions"]
    assert ready["message"].startswith("spec.stopWhen.metric: MAPE is a regression metric")


def _two() -> list[dict[str, Any]]:
    from tests.fixtures.server import TWO_MODELS

    return list(TWO_MODELS)
