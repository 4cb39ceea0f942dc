"""The stop rule (``spec.stopWhen``): its order, when it checks, what it scores, when it stops.

The engine test uses the in-memory scheduler of test_sweep_engine (jobs that write a result)
and a held-out predictor function standing in for the server's batch predict; the real flow
(run-lammps, a real model server) is tests/integration/test_sweep_stop.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from streamml.errors import SpecError
from streamml.sweep import jobs, stopping
from streamml.sweep.engine import SweepEngine
from streamml.sweep.spec import validate
from streamml.sweep.state import FileStore
from streamml.vocabulary.jobresult import JobResult
from streamml.vocabulary.lammpssweep import LammpsSweepSpec
from streamml.vocabulary.stopping import HeldOutCheck, StopWhen, check_stop_model
from streamml.vocabulary.sweepstatus import HeldOutResult, LammpsSweepStatus
from tests.unit.test_sweep_engine import FakeScheduler, _spec


def _stop_spec(**rule: Any) -> LammpsSweepSpec:
    return _spec(trials=20, testTrials=3, parallelism=2, stopWhen={"threshold": 0.9, **rule})


def test_held_out_trials_come_first_then_training() -> None:
    spec = _stop_spec()
    assert [stopping.trial_at(spec, p) for p in range(5)] == [20, 21, 22, 0, 1]
    assert stopping.trial_at(spec, 22) == 19
    status = LammpsSweepStatus()
    order = []
    while (t := stopping.next_trial(status, spec)) is not None:
        order.append(t)
    assert order == [20, 21, 22, *range(20)]


def test_a_stopped_sweep_starts_nothing_more_not_even_a_retry() -> None:
    spec = _stop_spec()
    status = LammpsSweepStatus(retry_queue=[4], runs_to_target=7)
    assert stopping.next_trial(status, spec) is None


def test_core_seconds_are_cpu_seconds_times_ranks_else_loop_time_times_cpus() -> None:
    spec = _spec(lammps={"mpiProcs": 2}, resources={"cpus": 3})
    with_cpu = JobResult(metrics={"cpu_time": 1.5, "loop_time": 2.0})
    without = JobResult(metrics={"loop_time": 2.0})
    assert stopping.core_seconds(with_cpu, spec) == 3.0
    assert stopping.core_seconds(without, spec) == 6.0
    assert stopping.core_seconds(JobResult(), spec) == 0.0
    assert stopping.core_seconds(None, spec) == 0.0


@pytest.mark.parametrize(
    ("metric", "threshold", "value", "holds"),
    [("R2", 0.9, 0.9, True), ("R2", 0.9, 0.8999, False), ("MAPE", 5, 5.0, True),
     ("MAPE", 5, 5.01, False), ("RMSE", 0.1, 0.05, True), ("MAE", 0.1, 0.2, False)],
)  # fmt: skip
def test_a_target_holds_at_or_beyond_its_threshold(
    metric: str, threshold: float, value: float, holds: bool
) -> None:
    assert StopWhen(metric=metric, threshold=threshold).holds(value) is holds  # type: ignore[arg-type]


def _status_with_tests(truths: Sequence[float], succeeded: int) -> LammpsSweepStatus:
    tests = [
        HeldOutResult(id=100 + i, target=y, features={"nx": float(i)}) for i, y in enumerate(truths)
    ]
    return LammpsSweepStatus(test_results=tests, succeeded=succeeded + len(tests))


def test_a_check_is_due_every_k_runs_once_every_held_out_run_is_in() -> None:
    spec = _stop_spec(checkEvery=4)
    status = _status_with_tests([1.0, 2.0, 3.0], succeeded=3)
    assert not stopping.due(status, spec, training_open=True)  # 3 < 4
    status.succeeded += 1
    assert stopping.due(status, spec, training_open=True)
    status.held_out_checks.append(HeldOutCheck(trials=4, core_seconds=0.0))
    assert not stopping.due(status, spec, training_open=True)
    status.succeeded += 1
    assert not stopping.due(status, spec, training_open=True)
    assert stopping.due(status, spec, training_open=False)  # the last runs are checked too
    missing = _status_with_tests([1.0, 2.0], succeeded=9)
    assert not stopping.due(missing, spec, training_open=True)  # a held-out run not in yet


def _predictor(per_model: Mapping[str, Sequence[Any] | None]) -> stopping.HeldOutPredict:
    calls: list[tuple[Sequence[str] | None, list[dict[str, Any]]]] = []

    async def predict(
        models: Sequence[str] | None, samples: Sequence[Mapping[str, Any]]
    ) -> dict[str, list[Any] | None]:
        calls.append((models, [dict(s) for s in samples]))
        return {m: None if ys is None else list(ys) for m, ys in per_model.items()}

    predict.calls = calls  # type: ignore[attr-defined]
    return predict


async def test_a_check_scores_every_model_and_the_best_counts() -> None:
    spec = _stop_spec()
    status = _status_with_tests([1.0, 2.0, 3.0], succeeded=5)
    status.core_seconds = 12.3456
    predict = _predictor({"good": [1.0, 2.0, 3.1], "bad": [2.0, 2.0, 2.0]})
    entry = await stopping.check(status, spec, predict, None)
    # the samples are the held-out runs' features, in plan order
    assert predict.calls[0][1] == [{"features": {"nx": 0.0}}, {"features": {"nx": 1.0}},
                                   {"features": {"nx": 2.0}}]  # type: ignore[attr-defined]  # fmt: skip
    assert entry.model == "good" and entry.value == pytest.approx(1 - 0.01 / 2.0)
    assert entry.values["bad"] == pytest.approx(0.0)
    assert entry.holds and entry.trials == 5 and entry.core_seconds == 12.3456
    assert status.runs_to_target == 5
    cond = next(c for c in status.conditions if c.type == "TargetReached")
    assert cond.status == "True" and cond.reason == "TargetReached" and "good" in cond.message
    # the held-out results carry the check's predictions (status.evaluation follows them)
    assert status.test_results[2].predictions == {"good": 3.1, "bad": 2.0}
    assert status.held_out == f"R2 {entry.value:.4g}/>=0.9"


async def test_a_named_model_counts_even_when_another_is_better() -> None:
    spec = _spec(trials=20, testTrials=3, models=["good", "bad"],
                 stopWhen={"threshold": 0.9, "model": "bad"})  # fmt: skip
    status = _status_with_tests([1.0, 2.0, 3.0], succeeded=5)
    entry = await stopping.check(
        status, spec, _predictor({"good": [1, 2, 3], "bad": [2, 2, 2]}), ["good", "bad"]
    )
    assert entry.model == "bad" and not entry.holds and status.runs_to_target is None
    cond = next(c for c in status.conditions if c.type == "TargetReached")
    assert cond.status == "False" and cond.reason == "Measuring"


async def test_mape_is_in_percent_and_lower_is_better() -> None:
    spec = _stop_spec(metric="MAPE", threshold=10.5)
    status = _status_with_tests([1.0, 2.0, 4.0], succeeded=5)
    entry = await stopping.check(
        status, spec, _predictor({"a": [1.1, 2.2, 4.4], "b": [2.0, 2.0, 2.0]}), None
    )
    assert entry.model == "a" and entry.value == pytest.approx(10.0) and entry.holds


async def test_the_target_must_hold_for_consecutive_checks() -> None:
    spec = _stop_spec(consecutive=3, checkEvery=1)
    status = _status_with_tests([1.0, 2.0, 3.0], succeeded=1)
    good, bad = _predictor({"m": [1, 2, 3]}), _predictor({"m": [3, 2, 1]})
    for predict, learned in ((good, 1), (good, 2), (bad, 3), (good, 4), (good, 5)):
        status.succeeded = 3 + learned
        await stopping.check(status, spec, predict, None)
        assert status.runs_to_target is None, learned
    status.succeeded = 3 + 6
    await stopping.check(status, spec, good, None)
    assert status.runs_to_target == 6
    assert [c.holds for c in status.held_out_checks] == [True, True, False, True, True, True]


async def test_an_unknown_named_model_names_stopwhen_model() -> None:
    spec = _stop_spec(model="ghost")
    status = _status_with_tests([1.0, 2.0, 3.0], succeeded=5)
    with pytest.raises(SpecError, match="'ghost' is not on the model server") as info:
        await stopping.check(status, spec, _predictor({"m": [1, 2, 3]}), None)
    assert info.value.field == "stopWhen.model"


async def test_a_model_of_class_labels_names_stopwhen_metric() -> None:
    spec = _stop_spec(model="labels")
    status = _status_with_tests([1.0, 2.0, 3.0], succeeded=5)
    for answers in ({"labels": ["a", "b", True]}, {"labels": None, "m": [1, 2, 3]}):
        with pytest.raises(SpecError, match="R2 is a regression metric: labels") as info:
            await stopping.check(status, spec, _predictor(answers), None)
        assert info.value.field == "stopWhen.metric"


def test_budget_spent_without_the_target_says_so() -> None:
    spec = _stop_spec()
    status = _status_with_tests([1.0, 2.0, 3.0], succeeded=20)
    status.held_out_checks.append(HeldOutCheck(trials=20, core_seconds=1.0, value=0.5))
    stopping.budget_spent(status, spec)
    cond = next(c for c in status.conditions if c.type == "TargetReached")
    assert cond.reason == "BudgetExhausted" and "20 of 20" in cond.message
    assert stopping.runs(status, spec) == "20/20"


@pytest.mark.parametrize(
    ("doc", "field"),
    [({"testTrials": 1, "stopWhen": {"threshold": 0.9}}, "testTrials"),
     ({"models": ["a"], "stopWhen": {"threshold": 0.9, "model": "b"}}, "stopWhen.model"),
     ({"stopWhen": {"threshold": 1.5}}, "stopWhen.threshold"),
     ({"stopWhen": {"metric": "MAPE", "threshold": -1}}, "stopWhen.threshold"),
     ({"stopWhen": {"metric": "Accuracy", "threshold": 0.9}}, "stopWhen.metric"),
     ({"stopWhen": {"threshold": 0.9, "checkEvery": 0}}, "stopWhen.checkEvery")],
)  # fmt: skip
def test_bad_stop_rules_name_their_field(doc: dict[str, Any], field: str) -> None:
    base = {"streamModelRef": {"name": "m"}, "trials": 5, "testTrials": 3,
            "parameters": [{"name": "nx", "type": "int", "min": 1, "max": 9}]}  # fmt: skip
    with pytest.raises(SpecError) as info:
        validate({**base, **doc})
    assert info.value.field == field and str(info.value).startswith(f"spec.{field}: ")


def test_the_stream_models_flavors_are_checked() -> None:
    rule = StopWhen(threshold=0.9, model="cls")
    flavors = {"reg": "regression", "cls": "binary"}
    assert check_stop_model(rule, flavors, "StreamModel 'x'") == (
        "stopWhen.metric: R2 is a regression metric; model 'cls' is a binary model"
    )
    ghost = check_stop_model(StopWhen(threshold=0.9, model="ghost"), flavors, "StreamModel 'x'")
    assert ghost is not None and ghost.startswith("stopWhen.model: model 'ghost' is not")
    assert check_stop_model(StopWhen(threshold=0.9, model="reg"), flavors, "x") is None
    only_labels = check_stop_model(StopWhen(threshold=0.9), {"cls": "binary"}, "x")
    assert only_labels is not None and only_labels.startswith("stopWhen.metric:")


class FeatureScheduler(FakeScheduler):
    """The engine tests' scheduler whose results also carry features and a cost."""

    def _finish(self, job: Any, reason: str | None) -> Any:
        state = super()._finish(job, reason)
        path = Path(job.env["STREAMML_RESULT_FILE"])
        doc = JobResult.model_validate_json(path.read_text())
        nx = next(v.split("=")[1] for v in job.command if str(v).startswith("nx="))
        doc.features = {"nx": int(nx)}
        doc.metrics = {"cpu_time": 0.5}
        path.write_text(doc.model_dump_json())
        return state


async def test_the_engine_runs_tests_first_and_stops_once_the_target_holds(
    tmp_path: Path,
) -> None:
    spec = _spec(trials=30, testTrials=3, parallelism=1, stopWhen={"threshold": 0.9,
                 "checkEvery": 2, "consecutive": 2})  # fmt: skip
    sched = FeatureScheduler(tmp_path)
    learned_at: list[int] = []

    async def predict(
        models: Sequence[str] | None, samples: Sequence[Mapping[str, Any]]
    ) -> dict[str, list[Any] | None]:
        learned_at.append(engine.status.succeeded - 3)
        good = len(learned_at) >= 2  # the second check on predicts the truth exactly
        tests = sorted(engine.status.test_results, key=lambda r: r.id)
        return {"m": [r.target if good else 0.0 for r in tests]}

    ctx = jobs.JobContext(server="http://127.0.0.1:9", workdir=tmp_path, identity="uid-1")
    store = FileStore(tmp_path / "state.json")
    engine = SweepEngine("demo", spec, sched, store, ctx, held_out=predict)
    for _ in range(400):
        if await engine.tick():
            break
    status = await store.load()
    assert status is not None and status.phase == "Succeeded"
    trials = [int(n.split("-t")[1][:5]) for n in sched.submissions]
    assert trials[:3] == [30, 31, 32]  # the held-out runs first
    assert learned_at == [2, 4, 6]  # a check every 2 training runs learned
    assert status.runs_to_target == 6  # held at the checks after 4 and 6 runs
    assert len(trials) == 3 + 6  # nothing submitted after the target held (parallelism 1)
    assert status.core_seconds == pytest.approx(0.5 * 9)
    assert status.runs == "6/30" and status.held_out == "R2 1/>=0.9"
    cond = {c.type: c for c in status.conditions}
    assert cond["TargetReached"].status == "True" and cond["Ready"].reason == "Succeeded"
    assert status.best_model == "m" and status.held_out_r2 == 1.0
    assert [c.trials for c in status.held_out_checks] == [2, 4, 6]


def test_stop_when_combines_with_adaptive_sampling_and_still_names_bad_fields() -> None:
    base = {"streamModelRef": {"name": "m"}, "trials": 5, "testTrials": 3, "models": ["a", "b"],
            "parameters": [{"name": "nx", "type": "int", "min": 1, "max": 30}],
            "sampling": {"method": "adaptive"}, "stopWhen": {"threshold": 0.9}}  # fmt: skip
    spec = validate(base)
    assert spec.sampling.method == "adaptive" and spec.stop_when is not None
    with pytest.raises(SpecError) as info:
        validate({**base, "stopWhen": {"threshold": 0.9, "model": "c"}})
    assert info.value.field == "stopWhen.model"
