"""``spec.targets``: each target to its models, checked at apply time (operator and CLI alike)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamml.errors import SpecError
from streamml.operator.sweep_driver import validate
from streamml.sweep import jobs
from streamml.sweep.spec import load_sweep_file
from streamml.vocabulary.lammpssweep import resolved_targets
from streamml.vocabulary.sweepstatus import HeldOutResult
from streamml.vocabulary.targets import TARGET_LIST

BASE: dict[str, Any] = {
    "streamModelRef": {"name": "eos"},
    "parameters": [{"name": "rho", "type": "float", "min": 0.7, "max": 0.9}],
    "trials": 4,
}
PRESSURE = {"name": "pressure", "thermo": {"column": "Press", "reduce": "mean"}, "models": ["p"]}
ENERGY = {"name": "pe_per_atom", "thermo": {"column": "PotEng"}, "models": ["e1", "e2"]}
COST = {"name": "cost", "metric": "cpu_time", "models": ["c"]}


def spec(**extra: Any) -> dict[str, Any]:
    return {**BASE, **extra}


def refused(doc: dict[str, Any], tmp_path: Path) -> SpecError:
    """The operator's and the CLI's verdict on ``doc`` (the same, naming the same field)."""
    with pytest.raises(SpecError) as operator:
        validate(doc)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"kind": "LammpsSweep", "spec": doc}))
    with pytest.raises(SpecError) as cli:
        load_sweep_file(path)
    assert cli.value.field == operator.value.field
    assert str(cli.value) == f"{path}: {operator.value}"
    return operator.value


def test_several_targets_each_to_its_models() -> None:
    parsed = validate(spec(targets=[PRESSURE, ENERGY, COST], models=["p", "e1", "e2", "c"]))
    assert [t.name for t in resolved_targets(parsed)] == ["pressure", "pe_per_atom", "cost"]
    # models may be left out: they are the targets' models
    assert validate(spec(targets=[PRESSURE, ENERGY])).models is None


def test_without_targets_the_one_metric_goes_to_models() -> None:
    (only,) = resolved_targets(validate(spec(models=["a"], lammps={"target": "cpu_time"})))
    assert (only.name, only.metric, only.thermo, only.models) == (
        "cpu_time",
        "cpu_time",
        None,
        ["a"],
    )
    (default,) = resolved_targets(validate(spec()))
    assert (default.name, default.metric, default.models) == ("loop_time", "loop_time", None)


@pytest.mark.parametrize(
    ("doc", "field", "words"),
    [
        (  # a target no model learns
            spec(targets=[PRESSURE, {**ENERGY, "models": None}]),
            "targets[1].models",
            "no model would learn it",
        ),
        (  # a model with no target source
            spec(targets=[PRESSURE, ENERGY], models=["p", "e1", "e2", "orphan"]),
            "models[3]",
            "'orphan' has no target source",
        ),
        (
            spec(targets=[PRESSURE, ENERGY], models=["p", "e1"]),
            "targets[1].models",
            "'e2' is not in spec.models",
        ),
        (
            spec(targets=[PRESSURE, {**ENERGY, "models": ["p"]}]),
            "targets[1].models",
            "'p' already learns targets[0]",
        ),
        (spec(targets=[PRESSURE, {**COST, "name": "pressure"}]), "targets[1].name", "another"),
        (
            spec(targets=[PRESSURE], lammps={"target": "cpu_time"}),
            "lammps.target",
            "not both",
        ),
    ],
)
def test_a_bad_mapping_is_refused_naming_the_field(
    doc: dict[str, Any], field: str, words: str, tmp_path: Path
) -> None:
    error = refused(doc, tmp_path)
    assert error.field == field
    assert str(error).startswith(f"spec.{field}: ")
    assert words in str(error)


@pytest.mark.parametrize(
    ("target", "where"),
    [
        ({"name": "x", "models": ["m"]}, "exactly one source"),  # no source at all
        ({"name": "x", "metric": "cpu_time", "thermo": {"column": "Press"}}, "exactly one source"),
        ({"name": "x", "metric": "pressure"}, "targets.0.metric"),
        ({"name": "X!", "metric": "cpu_time"}, "targets.0.name"),
        ({"name": "x", "thermo": {"column": "Press", "run": 0}}, "0 is no run"),
        ({"name": "x", "thermo": {"column": "Press", "rows": 3}}, "only with reduce: mean"),
        ({"name": "x", "thermo": {"column": "Press;rm"}}, "targets.0.thermo.column"),
    ],
)
def test_a_bad_target_is_refused(target: dict[str, Any], where: str, tmp_path: Path) -> None:
    error = refused(spec(targets=[target]), tmp_path)
    assert str(error).startswith("spec.targets[0]")
    assert where.replace("targets.0.", "") in str(error) or where in str(error)


def test_the_job_gets_the_targets_as_json(tmp_path: Path) -> None:
    parsed = validate(spec(targets=[PRESSURE, COST]))
    ctx = jobs.JobContext(server="http://127.0.0.1:9", workdir=tmp_path, identity="u")
    point = {"rho": 0.8}
    command = jobs.build_job(parsed, ctx, trial=0, attempt=1, point=point, test=False, sweep="s")
    listed = command.command[command.command.index("--targets") + 1]
    assert TARGET_LIST.validate_json(listed) == parsed.targets
    assert "--target" not in command.command
    single = jobs.build_job(
        validate(spec()), ctx, trial=0, attempt=1, point=point, test=False, sweep="s"
    )
    assert single.command[single.command.index("--target") + 1] == "loop_time"
    assert "--targets" not in single.command


def test_each_model_is_scored_against_its_own_target() -> None:
    results = [
        HeldOutResult(
            id=i,
            target=float(i),
            targets={"pressure": float(i), "cost": 10.0 * i},
            predictions={"p": float(i), "c": 10.0 * i + 1.0},
        )
        for i in range(4)
    ]
    owner = {"p": "pressure", "c": "cost"}
    scores = {e.model: e for e in jobs.evaluate(results, owner)}
    assert scores["p"].mae == 0.0 and scores["p"].r2 == 1.0
    assert scores["c"].mae == 1.0  # against cost, not against the first target
    targets = validate(spec(targets=[{**PRESSURE, "models": ["p"]}, COST])).targets
    assert targets is not None
    split = jobs.evaluate_by_target(jobs.evaluate(results, owner), targets)
    assert [(t.target, [e.model for e in t.evaluation]) for t in split] == [
        ("pressure", ["p"]),
        ("cost", ["c"]),
    ]
    assert split[0].best_model == "p" and split[0].held_out_r2 == 1.0


def test_the_targets_round_trip_through_json() -> None:
    parsed = TARGET_LIST.validate_json(json.dumps([PRESSURE, ENERGY, COST]))
    assert TARGET_LIST.validate_json(TARGET_LIST.dump_json(parsed, by_alias=True)) == parsed


def _status_of_a_quadratic_surface() -> dict[str, Any]:
    """A status of several targets: pressure an exact quadratic of (rho, t), cost linear."""

    def pressure(rho: float, t: float) -> float:
        return 1.0 + 2.0 * rho - 3.0 * t + 0.5 * rho * rho + rho * t - 0.25 * t * t

    points = [(0.7 + 0.02 * i, 1.0 + 0.05 * ((i * 7) % 11)) for i in range(14)]
    trials, tests = [], []
    for i, (rho, t) in enumerate(points):
        values = {"pressure": pressure(rho, t), "cost": 2.0 * rho}
        role = "train" if i < 10 else "test"
        trials.append({"id": i, "role": role, "state": "Succeeded", "jobName": f"j{i}",
                       "params": {"rho": str(rho), "t": str(t)},
                       "target": values["pressure"], "targets": values})  # fmt: skip
        if role == "test":
            tests.append({"id": i, "target": values["pressure"], "targets": values,
                          "predictions": {"p": values["pressure"] + 0.1, "c": 0.0}})  # fmt: skip
    by_target = [{"target": "pressure", "evaluation": [{"model": "p", "n": 4}]},
                 {"target": "cost", "evaluation": [{"model": "c", "n": 4}]}]  # fmt: skip
    return {"trials": trials, "testResults": tests, "evaluationByTarget": by_target}


def test_the_offline_ceiling_per_target_is_a_least_squares_fit_of_the_same_features() -> None:
    from streamml.clients import evaluation

    status = _status_of_a_quadratic_surface()
    pressure = evaluation.trials_from_sweep_status(status, "pressure")
    assert sum(t.split == "train" for t in pressure) == 10
    assert all(set(t.predictions) <= {"p"} for t in pressure)  # only its own models
    ceiling = evaluation.polynomial_ceiling(pressure, degree=2)
    assert ceiling is not None and ceiling.n_train == 10
    assert ceiling.scores.r2 > 1 - 1e-9  # the surface is in the span of the features
    report = evaluation.evaluate(pressure)
    assert set(report.models) == {"p"} and math.isclose(report.models["p"].mae, 0.1)
    cost = evaluation.trials_from_sweep_status(status, "cost")
    assert [t.target for t in cost] == [t["targets"]["cost"] for t in status["trials"]]
    assert evaluation.polynomial_ceiling(cost[:5] + cost[-1:], degree=2) is None  # 5 runs, 6 terms
    with pytest.raises(SpecError, match="no target 'nope'"):
        evaluation.trials_from_sweep_status(status, "nope")


def test_the_default_the_api_server_writes_into_lammps_target_is_no_clash() -> None:
    """The CRD's default fills lammps.target in every stored sweep (the operator's path)."""
    parsed = validate(spec(targets=[PRESSURE], lammps={"target": "loop_time"}))
    assert [t.name for t in resolved_targets(parsed)] == ["pressure"]
