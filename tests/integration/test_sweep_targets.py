"""Several targets per run, end to end: real model server, real ``lmp``, the local scheduler.

Each target goes to its own models; a ``dummy.StatisticRegressor`` with ``stats.Mean`` predicts
the mean of what it learned, which shows each model learned its own target's values (and each
once) without trusting our parser for the truth twice.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from streamml.client import delivery
from streamml.client.api import ModelServerClient
from streamml.clients import evaluation
from streamml.errors import NotFoundError, SpecError
from tests.fixtures.server import ServerProcess, create_models, learn_calls
from tests.integration.test_sweep_cli import run_sweep, sweep_doc

pytestmark = [pytest.mark.integration, pytest.mark.lammps]

#: an LJ fluid at reduced density rho and temperature t: equilibrate, then measure
EOS_INPUT = """\
variable rho index 0.8
variable t index 1.2
units lj
atom_style atomic
lattice fcc ${rho}
region box block 0 3 0 3 0 3
create_box 1 box
create_atoms 1 box
mass 1 1.0
velocity all create ${t} 4928 loop geom
pair_style lj/cut 2.5
pair_coeff 1 1 1.0 1.0 2.5
neighbor 0.3 bin
fix 1 all nvt temp ${t} ${t} 0.5
thermo_style custom step temp press pe
thermo 10
run 40
run 60
"""
TARGETS = [
    {"name": "pressure", "thermo": {"column": "Press", "reduce": "mean"}, "models": ["p-mean"]},
    {"name": "pe_per_atom", "thermo": {"column": "pe", "reduce": "mean", "rows": 3},
     "models": ["e-mean", "e-linear"]},
    {"name": "cost", "metric": "cpu_time", "models": ["c-mean"]},
    {"name": "memory", "metric": "memory_mb", "models": ["m-mean"]},
]  # fmt: skip


def mean_model(name: str) -> dict[str, Any]:
    stat = {"class": "dummy.StatisticRegressor", "params": {"statistic": {"class": "stats.Mean"}}}
    return {"name": name, "pipeline": [stat]}


MODELS = [
    *(mean_model(n) for n in ("p-mean", "e-mean", "c-mean", "m-mean")),
    {"name": "e-linear", "pipeline": [{"class": "preprocessing.StandardScaler"},
                                      {"class": "linear_model.LinearRegression"}]},
]  # fmt: skip


def eos_doc(**spec: Any) -> dict[str, Any]:
    return sweep_doc(
        parameters=[
            {"name": "rho", "type": "float", "min": 0.7, "max": 0.9},
            {"name": "t", "type": "float", "min": 1.0, "max": 1.5},
        ],
        lammps={"input": EOS_INPUT},
        **{"targets": TARGETS, **spec},
    )


async def test_one_trial_teaches_each_target_to_its_models_once(
    model_server: ServerProcess, tmp_path: Path, lammps_bin: str
) -> None:
    await create_models(model_server, MODELS)
    done, state = run_sweep(tmp_path, eos_doc(trials=4, testTrials=2), model_server)
    assert done.returncode == 0, done.stderr
    assert state["phase"] == "Succeeded" and state["succeeded"] == 6
    train = [t for t in state["trials"] if t["role"] == "train"]
    assert len(train) == 4
    for model in ("p-mean", "e-mean", "e-linear", "c-mean", "m-mean"):
        assert await learn_calls(model_server, model) == 4  # once per training trial
    async with ModelServerClient(
        model_server.url, username=model_server.username, token=model_server.token
    ) as client:
        for model, target in [("p-mean", "pressure"), ("e-mean", "pe_per_atom"),
                              ("c-mean", "cost"), ("m-mean", "memory")]:  # fmt: skip
            learned = statistics.fmean(t["targets"][target] for t in train)
            answer = await client.predict({"rho": 0.8, "t": 1.2}, model=model)
            assert isinstance(answer.prediction, float)
            assert math.isclose(answer.prediction, learned, rel_tol=1e-9), model
    # the job's result documents carry every target; the physics is sane
    for trial in train:
        values = trial["targets"]
        assert set(values) == {"pressure", "pe_per_atom", "cost", "memory"}
        assert trial["target"] == values["pressure"]  # the first target, as before
        assert values["pe_per_atom"] < 0 and values["memory"] > 0 and values["cost"] > 0
    # held-out: each model scored against its own target, per target
    by_target = {e["target"]: e for e in state["evaluationByTarget"]}
    assert list(by_target) == ["pressure", "pe_per_atom", "cost", "memory"]
    assert {e["model"] for e in by_target["pe_per_atom"]["evaluation"]} == {"e-mean", "e-linear"}
    for test in state["testResults"]:
        assert set(test["predictions"]) == {"p-mean", "e-mean", "e-linear", "c-mean", "m-mean"}
        assert set(test["targets"]) == set(by_target)
    e_mean = next(e for e in by_target["pe_per_atom"]["evaluation"] if e["model"] == "e-mean")
    tests = state["testResults"]
    mae = statistics.fmean(
        abs(t["predictions"]["e-mean"] - t["targets"]["pe_per_atom"]) for t in tests
    )
    assert math.isclose(e_mean["MAE"], mae, rel_tol=1e-9)
    assert state["bestModel"] == by_target["pressure"]["bestModel"]
    energy = evaluation.trials_from_sweep_status(state, "pe_per_atom")
    report = evaluation.evaluate(energy)  # the offline evaluation reads the same per target
    assert set(report.models) == {"e-mean", "e-linear"}
    assert math.isclose(report.models["e-mean"].mae, e_mean["MAE"], rel_tol=1e-9)
    assert sorted(t.target for t in energy if t.split == "train") == sorted(
        t["targets"]["pe_per_atom"] for t in train
    )
    rows = [line.split() for line in done.stdout.splitlines()]
    assert ["pe_per_atom", "e-linear"] in [row[:2] for row in rows]  # the CLI's table, per target
    curves = {c["model"]: c["target"] for c in state["learningCurve"]}
    assert curves["e-linear"] == "pe_per_atom" and curves["c-mean"] == "cost"


async def test_a_missing_thermo_column_fails_the_trial_naming_it(
    model_server: ServerProcess, tmp_path: Path, lammps_bin: str
) -> None:
    await create_models(model_server, MODELS)
    targets = [TARGETS[0], {"name": "h", "thermo": {"column": "Enthalpy"}, "models": ["e-mean"]}]
    doc = eos_doc(trials=1, testTrials=0, maxFailures=0, targets=targets)
    done, state = run_sweep(tmp_path, doc, model_server)
    assert done.returncode == 1 and state["phase"] == "Failed"
    (trial,) = state["trials"]
    assert trial["reason"].startswith("TargetMissing: thermo column 'Enthalpy'"), trial
    assert "columns: Step Temp Press PotEng" in trial["reason"]
    assert await learn_calls(model_server, "p-mean") == 0  # no target of the trial was learned


def learn_request(server: ServerProcess, targets: list[dict[str, Any]]) -> delivery.Request:
    return delivery.Request(
        kind="learn",
        server=server.url,
        trial="sweep-x/t00001",
        features={"rho": 0.8},
        models=["p-mean", "c-mean"],
        targets=targets,
    )


async def test_a_resent_or_respooled_request_learns_nothing_twice(
    model_server: ServerProcess, tmp_path: Path
) -> None:
    await create_models(model_server, MODELS)
    credentials = delivery.Credentials(model_server.username, model_server.token)
    groups = [
        {"name": "pressure", "models": ["p-mean"], "ground_truth": 1.5},
        {"name": "cost", "models": ["c-mean"], "ground_truth": 0.25},
    ]
    request = learn_request(model_server, groups)
    first = await delivery.send(request, credentials)
    assert first.reply is not None
    assert {m: r.learned for m, r in first.reply.results.items()} == {
        "p-mean": True,
        "c-mean": True,
    }
    again = await delivery.send(request, credentials)
    assert again.reply is not None
    assert all(r.duplicate and not r.learned for r in again.reply.results.values())
    # the spool keeps the targets, and its redelivery is the same request
    spooled = delivery.spool(request, tmp_path)
    assert json.loads(spooled.read_text())["targets"] == groups
    report = await delivery.redeliver(tmp_path, credentials)
    assert report.delivered == [request.trial] and not report.failed
    assert (
        await learn_calls(model_server, "p-mean"),
        await learn_calls(model_server, "c-mean"),
    ) == (
        1,
        1,
    )


@pytest.mark.parametrize(
    ("groups", "error", "words"),
    [
        (  # an unknown model: 404 naming it, and the other target is not learned either
            [{"name": "pressure", "models": ["p-mean"], "ground_truth": 1.0},
             {"name": "cost", "models": ["nope"], "ground_truth": 1.0}],
            NotFoundError,
            "nope",
        ),
        (  # one model in two targets
            [{"name": "pressure", "models": ["p-mean"], "ground_truth": 1.0},
             {"name": "cost", "models": ["p-mean"], "ground_truth": 2.0}],
            SpecError,
            "also learns target 'pressure'",
        ),
        (
            [{"name": "pressure", "models": ["p-mean"], "ground_truth": 1e300 * 1e10}],
            SpecError,
            "ground_truth",
        ),
    ],
)  # fmt: skip
async def test_a_bad_request_is_refused_and_applies_nothing(
    model_server: ServerProcess, groups: list[dict[str, Any]], error: type[Exception], words: str
) -> None:
    await create_models(model_server, MODELS)
    async with ModelServerClient(
        model_server.url, username=model_server.username, token=model_server.token
    ) as client:
        with pytest.raises(error, match=words):
            await client.learn_targets({"rho": 0.8}, groups, identifier="t/1")
    assert await learn_calls(model_server, "p-mean") == 0


async def test_the_endpoint_needs_credentials(model_server: ServerProcess) -> None:
    await create_models(model_server, MODELS)
    group = {"name": "pressure", "models": ["p-mean"], "ground_truth": 1.0}
    body = {"features": {"rho": 0.8}, "identifier": "t/2", "targets": [group]}
    url = f"{model_server.url}/api/learn/targets/"
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as response:
        assert response.status == 401
    assert await learn_calls(model_server, "p-mean") == 0
