"""Real drift: the same sweep continues with its input script's pair cutoff at 5.0 instead of 2.5
sigma (real ``lmp``, the real local scheduler, a real server learning ``cpu_time``), a change no
feature shows, and the model's watch detects it within a bounded number of runs, noted in the
sweep's status; the same sweep without the change raises no alarm. (The two-MPI-rank change, whose
size depends on the machine's load, and the full false-alarm figure, >= 50 runs on >= 3 seeds, are
benchmarks/drift_bench.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from streamml.sweep.access import ServerAccess
from tests.fixtures.drift import LONGER_CUTOFF, MODEL, PIPELINE, run_drift_sweep
from tests.fixtures.server import ServerProcess

pytestmark = [pytest.mark.integration, pytest.mark.lammps]

WARMUP = 12
THRESHOLD = 15
#: runs after the change within which the detection must come
BOUND = 18


def create(server: ServerProcess) -> None:
    body = {"pipeline": PIPELINE, "drift": {"warmup": WARMUP, "threshold": THRESHOLD}}
    r = requests.post(
        f"{server.url}/api/model/regression/{MODEL}/",
        json=body,
        headers=server.auth_header(),
        timeout=30,
    )
    assert r.status_code == 201, r.text


def access(server: ServerProcess) -> ServerAccess:
    return ServerAccess(server.url, server.username, server.token)


#: the longer cutoff must move ``cpu_time`` by at least this factor (else the test proves nothing)
REAL = 3.0


async def test_a_changed_input_script_mid_sweep_is_detected_and_noted(
    model_server: ServerProcess, tmp_path: Path, lammps_bin: str
) -> None:
    create(model_server)
    run = await run_drift_sweep(
        access(model_server),
        tmp_path / "wd",
        trials=40,
        change_after=20,
        seed=3,
        change=LONGER_CUTOFF,
    )
    ratio = run.change_ratio()
    assert ratio >= REAL, f"the 5.0-sigma cutoff moved cpu_time by x{ratio:.2f} only"
    assert run.changed_at == 21 and run.learned == 40
    assert run.notes, f"no drift detected, though cpu_time moved by x{ratio:.2f}"
    first = run.notes[0]
    assert first.model == MODEL
    assert run.changed_at - 1 <= first.detected_after_trials <= run.changed_at + BOUND
    assert first.first_trial_after is not None
    assert abs(first.first_trial_after - run.changed_at) <= 3  # the change is placed near it
    assert first.magnitude > 1
    stats = requests.get(
        f"{model_server.url}/api/stats/?model={MODEL}", headers=model_server.auth_header()
    ).json()
    assert stats["drift"]["detections"] == len(run.notes)


async def test_the_same_sweep_without_a_change_raises_no_alarm(
    model_server: ServerProcess, tmp_path: Path, lammps_bin: str
) -> None:
    create(model_server)
    run = await run_drift_sweep(
        access(model_server), tmp_path / "wd", trials=40, change_after=None, seed=3
    )
    assert run.learned == 40 and run.changed_at is None
    assert run.notes == []
