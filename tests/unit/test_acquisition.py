"""Adaptive sampling: the acquisition (pure, deterministic), the design (warm-up, pool, test
points), the spec's refusals naming the field, and the engine's choose-record-replay order.

The engine tests use the in-memory scheduler of test_sweep_engine (to crash at every save) and
a forecaster computed from the results the scheduler produced; the real flow (run-lammps, a
model server process, SIGKILL of the driver) is tests/integration/test_sweep_adaptive.py.
"""

from __future__ import annotations

import doctest
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from streamml.errors import SpecError
from streamml.sweep import acquisition, design, jobs
from streamml.sweep.acquisition import Forecast
from streamml.sweep.engine import SweepEngine
from streamml.sweep.sampling import fingerprint, plan
from streamml.sweep.schedulers.base import JobRequest
from streamml.sweep.spec import validate
from streamml.sweep.state import FileStore
from streamml.sweep.steering import Predictor
from streamml.vocabulary.lammpssweep import LammpsSweepSpec, Parameter
from streamml.vocabulary.sweepstatus import LammpsSweepStatus
from tests.unit.test_sweep_engine import Crash, CrashingStore, FakeScheduler

NX = Parameter(name="nx", type="int", min=0, max=10)
NY = Parameter(name="ny", type="int", min=0, max=10)


# ---- the acquisition ----------------------------------------------------------------------


def test_the_module_examples_hold() -> None:
    assert doctest.testmod(acquisition).failed == 0


def test_coordinates_span_the_unit_cube() -> None:
    colour = Parameter(name="c", type="categorical", values=["red", "blue"])
    coords = acquisition.coordinates(
        [{"nx": 0, "c": "red"}, {"nx": 10, "c": "blue"}, {"nx": 5, "c": "red"}], [NX, colour]
    )
    assert acquisition.distance(coords[0], coords[1]) == pytest.approx(1.0)
    assert acquisition.distance(coords[0], coords[2]) == pytest.approx(0.5 / math.sqrt(2))


def test_sigma_wins_over_disagreement() -> None:
    coords = acquisition.coordinates([{"nx": 0}, {"nx": 10}], [NX])
    forecasts = {
        "bayes": Forecast(mean=[1.0, 1.0], std=[0.5, 0.1]),
        "linear": Forecast(mean=[1.0, 9.0], std=[None, None]),
    }
    u, basis = acquisition.uncertainty(forecasts, coords, [])
    assert (basis, u) == ("sigma", [0.5, 0.1])


def test_disagreement_without_a_distribution() -> None:
    coords = acquisition.coordinates([{"nx": 0}, {"nx": 10}], [NX])
    forecasts = {
        "a": Forecast(mean=[1.0, 1.0], std=[None, None]),
        "b": Forecast(mean=[3.0, 1.0], std=[None, None]),
    }
    u, basis = acquisition.uncertainty(forecasts, coords, [])
    assert (basis, u) == ("disagreement", [1.0, 0.0])


def test_no_usable_prediction_falls_back_to_distance() -> None:
    coords = acquisition.coordinates([{"nx": 0}, {"nx": 4}, {"nx": 10}], [NX])
    broken = {"a": Forecast(mean=[1.0, None, 2.0], std=[None, None, None])}
    u, basis = acquisition.uncertainty(broken, coords, [coords[0]])
    assert basis == "distance" and u == pytest.approx([0.0, 0.4, 1.0])


def test_per_cost_prefers_the_cheap_candidate_of_equal_uncertainty() -> None:
    cost = acquisition.costs(Forecast(mean=[4.0, 1.0, -3.0], std=[None] * 3), 3)
    assert cost == [4.0, 1.0, 4.0 * acquisition.COST_FLOOR]  # a negative runtime is floored
    assert acquisition.scores([1.0, 1.0, 1.0], cost)[:2] == [0.25, 1.0]
    assert acquisition.costs(Forecast(mean=[0.0, -1.0], std=[None] * 2), 2) is None


def test_a_batch_spreads_instead_of_crowding_one_peak() -> None:
    pool = [{"nx": x, "ny": y} for x in range(11) for y in range(11)]
    coords = acquisition.coordinates(pool, [NX, NY])
    # one sharp peak at (10, 10) and a lower one at (0, 0)
    score = [1.0 / (1 + (10 - p["nx"]) + (10 - p["ny"])) + 0.4 * (p == {"nx": 0, "ny": 0})
             for p in pool]  # fmt: skip
    plain = sorted(range(len(pool)), key=lambda i: -score[i])[:2]
    assert pool[plain[1]] in ({"nx": 9, "ny": 10}, {"nx": 10, "ny": 9})  # greedy crowds
    picked = acquisition.pick(score, coords, 2, [])
    assert [pool[i] for i in picked] == [{"nx": 10, "ny": 10}, {"nx": 0, "ny": 0}]
    # a point in flight damps its neighbourhood the same way
    busy = [coords[pool.index({"nx": 10, "ny": 10})]]
    assert pool[acquisition.pick(score, coords, 1, busy)[0]] == {"nx": 0, "ny": 0}


def test_pick_is_deterministic_and_never_repeats() -> None:
    coords = acquisition.coordinates([{"nx": v} for v in range(11)], [NX])
    flat = [0.0] * 11  # every score equal: ties go by distance, then by pool index
    first = acquisition.pick(flat, coords, 11, [])
    assert first == acquisition.pick(flat, coords, 11, []) and sorted(first) == list(range(11))
    assert first[:3] == [0, 10, 5]


# ---- the design and the spec ---------------------------------------------------------------


def _spec(**over: Any) -> LammpsSweepSpec:
    doc: dict[str, Any] = {
        "streamModelRef": {"name": "m"},
        "parameters": [NX.model_dump(exclude_none=True), NY.model_dump(exclude_none=True)],
        "trials": 10,
        "testTrials": 3,
        "parallelism": 2,
        "sampling": {"method": "adaptive", "seed": 5, "warmup": 4, "candidates": 40},
    }
    for key, value in over.items():
        doc[key] = value if key != "sampling" else doc["sampling"] | value
    return validate(doc)


def test_design_keeps_pool_warmup_and_test_apart_and_is_seeded() -> None:
    d = design.adaptive_design(_spec())
    keys = [json.dumps(p, sort_keys=True) for p in (*d.warmup, *d.pool, *d.test)]
    assert len(keys) == len(set(keys)) == 4 + 40 + 3
    assert d == design.adaptive_design(_spec())
    assert d.pool != design.adaptive_design(_spec(sampling={"seed": 6})).pool
    provisional = plan(_spec())
    assert provisional[:4] == d.warmup and provisional[-3:] == d.test
    assert all(design.UNCHOSEN in p for p in provisional[4:-3])


@pytest.mark.parametrize(
    "change",
    [
        {"seed": 6},
        {"candidates": 41},
        {"warmup": 5},
        {"acquisition": "uncertaintyPerCost", "costModel": "m1"},
    ],
)
def test_the_fingerprint_describes_pool_seed_and_options(change: dict[str, Any]) -> None:
    assert fingerprint(plan(_spec(sampling=change))) != fingerprint(plan(_spec()))


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"sampling": {"candidates": 1}}, "sampling.candidates"),
        ({"sampling": {"candidates": 20_001}}, "sampling.candidates"),
        ({"sampling": {"warmup": 11}}, "sampling.warmup"),
        ({"sampling": {"warmup": 0}}, "sampling.warmup"),
        ({"sampling": {"acquisition": "greed"}}, "sampling.acquisition"),
        ({"sampling": {"acquisition": "uncertaintyPerCost"}}, "sampling.costModel"),
        (
            {"models": ["a", "b"], "sampling": {"costModel": "c"}},
            "sampling.costModel",
        ),
        ({"sampling": {"method": "random"}}, "sampling.candidates"),
        ({"lammps": {"features": "vars+atoms"}}, "lammps.features"),
    ],
)
def test_bad_adaptive_specs_name_the_field(over: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as info:
        _spec(**over)
    assert info.value.field == field and f"spec.{field}" in str(info.value)


def test_a_pool_the_space_cannot_hold_names_candidates() -> None:
    small = [{"name": "nx", "type": "int", "min": 1, "max": 12}]
    spec = _spec(parameters=small, sampling={"candidates": 50})
    with pytest.raises(SpecError) as info:  # 12 points: 4 warm-up, 3 test, 5 left for 6 runs
        plan(spec)
    assert info.value.field == "sampling.candidates" and "6 runs" in str(info.value)
    assert len(design.adaptive_design(_spec(parameters=small, trials=9)).pool) == 5


def test_defaults_give_a_warmup_and_a_pool() -> None:
    spec = _spec(sampling={"warmup": None, "candidates": None}, trials=30)
    assert design.warmup_size(spec) == 6 and design.pool_size(spec) == 600


# ---- the engine: choose, record, then submit; replay on restart -------------------------------


def _forecaster(sched: FakeScheduler) -> Predictor:
    """A "Bayesian" model whose sigma is the distance to the nearest point it learned (the
    results the fake scheduler wrote), and whose mean is the target nx * ny."""

    async def forecast(
        models: Sequence[str] | None, samples: list[dict[str, Any]]
    ) -> dict[str, Forecast]:
        learned = [(float(v["nx"]), float(v["ny"])) for v in _finished_points(sched)]
        std = [
            min((math.dist((s["nx"], s["ny"]), p) for p in learned), default=1.0) for s in samples
        ]
        mean = [float(s["nx"] * s["ny"]) for s in samples]
        return {"bayes": Forecast(mean=mean, std=std), "cost": Forecast(mean, [None] * len(mean))}

    return forecast


def _finished_points(sched: FakeScheduler) -> list[dict[str, str]]:
    out = []
    for job_id, job in sched.jobs.items():
        if sched.state[job_id].finished and "--test" not in job.command:
            args = list(job.command)
            pairs = [args[i + 1] for i, a in enumerate(args) if a == "--var"]
            out.append(dict(p.split("=", 1) for p in pairs))
    return out


class RecordingScheduler(FakeScheduler):
    """Checks at every submit that the stored status already holds the trial's choice."""

    def __init__(self, workdir: Path, state_file: Path) -> None:
        super().__init__(workdir)
        self.state_file = state_file
        self.checked = 0

    async def submit(self, job: JobRequest) -> str:
        stored = LammpsSweepStatus.model_validate_json(self.state_file.read_text())
        trial = int(job.command[job.command.index("--trial-id") + 1].rsplit("/t", 1)[1])
        if 4 <= trial < 10:
            assert len(stored.chosen) > trial - 4, "submitted before its choice was saved"
            self.checked += 1
        return await super().submit(job)


def _engine(
    tmp: Path, spec: LammpsSweepSpec, sched: FakeScheduler, store: FileStore
) -> SweepEngine:
    ctx = jobs.JobContext(server="http://127.0.0.1:9", workdir=tmp, identity="uid-1")
    return SweepEngine("demo", spec, sched, store, ctx, predict=_forecaster(sched))


async def _drive(engine: SweepEngine, limit: int = 300) -> None:
    for _ in range(limit):
        if await engine.tick():
            return
    raise AssertionError("the sweep did not finish")


async def test_choices_are_saved_before_their_runs_and_follow_the_models(tmp_path: Path) -> None:
    spec = _spec(sampling={"acquisition": "uncertainty"})
    store = FileStore(tmp_path / "state.json")
    sched = RecordingScheduler(tmp_path, store.path)
    engine = _engine(tmp_path, spec, sched, store)
    await _drive(engine)
    status = engine.status
    assert status.phase == "Succeeded" and sched.checked == 6
    assert len(status.chosen) == 6 == len(set(status.chosen))
    assert [d.trial for d in status.decisions] == list(range(4, 10))
    assert {d.basis for d in status.decisions} == {"sigma"}
    # each choice is a candidate far from everything learned when it was made
    first = status.decisions[0]
    assert first.uncertainty is not None and first.uncertainty >= 2.0
    # the same seed and results: the same choices
    again = tmp_path / "again"
    store2 = FileStore(again / "state.json")
    twin = _engine(again, spec, RecordingScheduler(again, store2.path), store2)
    await _drive(twin)
    assert twin.status.chosen == status.chosen


async def test_per_cost_takes_cheaper_candidates(tmp_path: Path) -> None:
    chosen = {}
    for acq in ("uncertainty", "uncertaintyPerCost"):
        where = tmp_path / acq
        extra = {"costModel": "cost"} if acq != "uncertainty" else {}
        spec = _spec(sampling={"acquisition": acq, **extra})
        store = FileStore(where / "state.json")
        engine = _engine(where, spec, FakeScheduler(where), store)
        await _drive(engine)
        pool = engine.steering.design.pool if engine.steering else []
        chosen[acq] = sum(pool[i]["nx"] * pool[i]["ny"] for i in engine.status.chosen)
    assert chosen["uncertaintyPerCost"] < chosen["uncertainty"]


async def test_an_unknown_cost_model_is_a_spec_error_naming_it(tmp_path: Path) -> None:
    spec = _spec(sampling={"acquisition": "uncertaintyPerCost", "costModel": "nope"})
    engine = _engine(tmp_path, spec, FakeScheduler(tmp_path), FileStore(tmp_path / "s.json"))
    with pytest.raises(SpecError) as info:
        await _drive(engine)
    assert info.value.field == "sampling.costModel"


@pytest.mark.parametrize("crash_at", range(2, 40, 3))
async def test_a_crash_anywhere_replays_choices_without_a_duplicate(
    tmp_path: Path, crash_at: int
) -> None:
    spec = _spec()
    store = CrashingStore(tmp_path / "state.json", crash_at=crash_at)
    sched = FakeScheduler(tmp_path)
    engine = _engine(tmp_path, spec, sched, store)
    with pytest.raises(Crash):
        await _drive(engine)
    saved = None
    if store.path.exists():
        saved = LammpsSweepStatus.model_validate_json(store.path.read_text())
    restarted = _engine(tmp_path, spec, sched, FileStore(store.path))
    await _drive(restarted)
    status = restarted.status
    assert status.phase == "Succeeded"
    assert len(sched.submissions) == len(set(sched.submissions)) == 13
    if saved is not None:  # what was recorded is replayed, never decided again
        assert status.chosen[: len(saved.chosen)] == saved.chosen
    assert len(status.chosen) == 6 == len(set(status.chosen))
    _assert_chosen_runs_ran_their_candidates(restarted)


def _assert_chosen_runs_ran_their_candidates(engine: SweepEngine, warmup: int = 4) -> None:
    """Every chosen training run ran the pool point its recorded choice names."""
    status, steering = engine.status, engine.steering
    assert steering is not None
    for record in status.trials:
        if warmup <= record.id < engine.spec.trials:
            want = steering.design.pool[status.chosen[record.id - warmup]]
            assert record.params == {k: str(v) for k, v in want.items()}


# ---- adaptive with a stop target: held-out runs first, then warm-up, then choices -------------


def _stop_engine(
    tmp: Path, spec: LammpsSweepSpec, sched: FakeScheduler, store: FileStore, good_after: int
) -> SweepEngine:
    """An adaptive engine whose held-out predictor is exact from the ``good_after``-th check."""
    checks = 0

    async def held_out(
        models: Sequence[str] | None, samples: Sequence[Mapping[str, Any]]
    ) -> dict[str, list[Any] | None]:
        nonlocal checks
        checks += 1
        tests = sorted(engine.status.test_results, key=lambda r: r.id)
        return {"bayes": [r.target if checks >= good_after else 0.0 for r in tests]}

    ctx = jobs.JobContext(server="http://127.0.0.1:9", workdir=tmp, identity="uid-1")
    engine = SweepEngine(
        "demo", spec, sched, store, ctx, predict=_forecaster(sched), held_out=held_out
    )
    return engine


def _stop_spec() -> LammpsSweepSpec:
    return _spec(trials=30, sampling={"candidates": 60},
                 stopWhen={"threshold": 0.9, "checkEvery": 2, "consecutive": 2})  # fmt: skip


def _trial_ids(sched: FakeScheduler) -> list[int]:
    return [int(n.split("-t")[1][:5]) for n in sched.submissions]


async def test_an_adaptive_sweep_with_a_stop_target_runs_tests_warmup_choices_then_stops(
    tmp_path: Path,
) -> None:
    spec = _stop_spec()
    store = FileStore(tmp_path / "state.json")
    sched = FakeScheduler(tmp_path)
    engine = _stop_engine(tmp_path, spec, sched, store, good_after=3)
    await _drive(engine)
    status = engine.status
    assert status.phase == "Succeeded"
    ids = _trial_ids(sched)
    assert sorted(ids[:3]) == [30, 31, 32]  # the held-out runs first
    assert sorted(ids[3:7]) == [0, 1, 2, 3]  # then the Latin hypercube warm-up
    assert ids[7:] == list(range(4, len(ids) - 3))  # then one chosen run per new trial
    assert len(ids) == len(set(ids))
    # a check once 2 more training runs are in (runs end in pairs); exact from the third on,
    # so the target held at the third and the fourth check, and the sweep stopped there
    at = [c.trials for c in status.held_out_checks]
    assert len(at) == 4 and all(b - a >= 2 for a, b in zip([0, *at], at, strict=False))
    assert [c.holds for c in status.held_out_checks] == [False, False, True, True]
    assert status.runs_to_target == at[-1]
    # every chosen run has its recorded decision, nothing was chosen after the stop
    assert len(status.chosen) == len(ids) - 3 - 4 == len(set(status.chosen))
    assert [d.trial for d in status.decisions] == list(range(4, 4 + len(status.chosen)))
    assert len(ids) <= 3 + at[-1] + spec.parallelism  # the runs in flight at the stop finish
    cond = {c.type: c for c in status.conditions}
    assert cond["TargetReached"].status == "True"
    _assert_chosen_runs_ran_their_candidates(engine)


@pytest.mark.parametrize("crash_at", range(2, 30, 4))
async def test_an_adaptive_stop_sweep_replays_its_choices_after_a_crash(
    tmp_path: Path, crash_at: int
) -> None:
    spec = _stop_spec()
    store = CrashingStore(tmp_path / "state.json", crash_at=crash_at)
    sched = FakeScheduler(tmp_path)
    with pytest.raises(Crash):
        await _drive(_stop_engine(tmp_path, spec, sched, store, good_after=3))
    saved = None
    if store.path.exists():
        saved = LammpsSweepStatus.model_validate_json(store.path.read_text())
    restarted = _stop_engine(tmp_path, spec, sched, FileStore(store.path), good_after=1)
    await _drive(restarted)
    status = restarted.status
    assert status.phase == "Succeeded" and status.runs_to_target is not None
    assert len(sched.submissions) == len(set(sched.submissions))
    if saved is not None:
        assert status.chosen[: len(saved.chosen)] == saved.chosen
    assert len(status.chosen) == len(set(status.chosen))
    _assert_chosen_runs_ran_their_candidates(restarted)
