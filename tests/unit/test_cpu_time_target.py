"""The ``cpu_time`` target: the loop's CPU seconds, steady where the wall time is not."""

from __future__ import annotations

import pytest

from streamml.clients.lammps import TARGETS, parse_log
from streamml.errors import LammpsError
from streamml.vocabulary.lammpssweep import LammpsSpec

LOADED = (
    "Loop time of 0.45722 on 1 procs for 50 steps with 6912 atoms\n"
    "33.5% CPU use with 1 MPI tasks x 1 OpenMP threads\n"
)


def test_cpu_time_is_loop_time_times_cpu_use() -> None:
    metrics = parse_log(LOADED)
    assert metrics.target("cpu_time") == pytest.approx(0.45722 * 0.335)
    assert metrics.as_dict()["cpu_time"] == pytest.approx(0.45722 * 0.335)
    assert "cpu_time" in TARGETS
    assert LammpsSpec.model_validate({"target": "cpu_time"}).target == "cpu_time"


def test_cpu_time_needs_the_cpu_use_line() -> None:
    metrics = parse_log("Loop time of 0.5 on 1 procs for 50 steps with 6912 atoms\n")
    assert metrics.cpu_time is None
    with pytest.raises(LammpsError, match="does not report 'cpu_time'"):
        metrics.target("cpu_time")
