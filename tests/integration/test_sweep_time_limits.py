"""Predicted time limits end to end: real model server, real ``lmp``, the local scheduler.

The wall-time model is a running mean (``dummy.StatisticRegressor``): after two short runs it
predicts their mean wall time (mostly the job's start-up) for a run of 200 times their steps,
so with ``factor: 1`` that run's predicted limit is too small and the job is killed at it. The
sweep must resubmit it with a larger limit, count it, and never let its censored record become
a sample.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from streamml.sweep import timelimits
from tests.fixtures.server import ServerProcess, create_models, learn_calls
from tests.integration.test_sweep_cli import run_sweep, sweep_doc

pytestmark = [pytest.mark.integration, pytest.mark.lammps]

MEAN = {"class": "dummy.StatisticRegressor", "params": {"statistic": {"class": "stats.Mean"}}}
MODELS = [{"name": "loop-mean", "pipeline": [MEAN]}, {"name": "wall-mean", "pipeline": [MEAN]}]
TARGETS = [
    {"name": "loop", "metric": "loop_time", "models": ["loop-mean"]},
    {"name": "wall", "metric": "job_wall_time", "models": ["wall-mean"]},
]


def limited_doc() -> dict[str, Any]:
    return sweep_doc(
        # runs of 50, 100, 20000 steps (grid order), one at a time
        parameters=[{"name": "steps", "type": "categorical", "values": ["50", "100", "20000"]}],
        sampling={"method": "grid"},
        trials=3,
        testTrials=0,
        parallelism=1,
        lammps={"vars": {"nx": "6", "ny": "6", "nz": "6"}},
        targets=TARGETS,
        resources={
            "timeLimitSeconds": 300,
            "predictedTimeLimit": {"fromModel": "wall-mean", "factor": 1.0, "minSeconds": 1,
                                   "maxSeconds": 600, "after": 1},
        },
    )  # fmt: skip


async def test_a_run_killed_at_its_predicted_limit_is_resubmitted_and_never_learned(
    model_server: ServerProcess, tmp_path: Path, lammps_bin: str
) -> None:
    await create_models(model_server, MODELS)
    done, state = run_sweep(tmp_path, limited_doc(), model_server)
    assert done.returncode == 0, done.stderr
    assert state["phase"] == "Succeeded" and state["failed"] == 0
    first, second, *long_runs = sorted(state["trials"], key=lambda t: (t["id"], t["attempt"]))
    # the first runs had the user's limit (the first had no prediction: the model had nothing
    # learned; the second was the first scored) and taught the model their wall times
    for run in (first, second):
        assert run["state"] == "Succeeded" and run.get("timeLimitSeconds") is None
        assert run["targets"]["wall"] == pytest.approx(run["wallSeconds"], abs=1e-3)
    # the long one: killed at its predicted limit (their mean wall time + the grace) ...
    killed = long_runs[0]
    assert killed["id"] == 2 and killed["censored"] is True and killed["state"] == "Failed"
    predicted = killed["predictedWallSeconds"]
    mean = (first["targets"]["wall"] + second["targets"]["wall"]) / 2
    assert predicted == pytest.approx(mean, rel=1e-6)
    assert killed["timeLimitSeconds"] == math.ceil(predicted) + timelimits.GRACE_S
    assert killed.get("targets") is None and killed.get("wallSeconds") is None
    assert "TimeLimit" in killed["reason"]
    # ... then resubmitted with larger limits until it fits, each kill counted
    last = long_runs[-1]
    assert last["state"] == "Succeeded" and last["id"] == 2
    limits = [t["timeLimitSeconds"] for t in long_runs]
    assert limits == sorted(set(limits)) and all(t["censored"] for t in long_runs[:-1])
    tl = state["timeLimits"]
    assert tl["killed"] == tl["resubmitted"] == len(long_runs) - 1 >= 1
    assert tl["killedPredicted"] == tl["killed"]
    # a censored run is never a sample: the server learned the three completed runs only, and
    # the run's ratio is a censored lower bound, never an observed one
    assert await learn_calls(model_server, "wall-mean") == 3
    assert await learn_calls(model_server, "loop-mean") == 3
    assert len(tl["ratios"]) == 2 and len(tl["censoredRatios"]) == tl["killed"]
    # the status reports the fit: killed / predicted-limit jobs, and limit / actual
    rate = tl["killed"] / tl["predictedJobs"]  # the status keeps 4 decimals
    assert tl["underestimationRate"] == pytest.approx(rate, abs=5e-5)
    assert tl["medianRequestedOverActual"] == pytest.approx(
        last["timeLimitSeconds"] / last["wallSeconds"], rel=1e-3
    )
