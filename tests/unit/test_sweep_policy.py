"""The operator refuses LammpsSweeps that would run code inside its own process unless allowed."""

from __future__ import annotations

from typing import Any

import pytest

from streamml.errors import SpecError
from streamml.operator.settings import OperatorSettings
from streamml.operator.sweep_driver import check_allowed, validate

SPEC: dict[str, Any] = {
    "streamModelRef": {"name": "m"},
    "parameters": [{"name": "nx", "type": "int", "min": 8, "max": 12}],
    "trials": 3,
    "testTrials": 1,
}


def spec(scheduler: str) -> Any:
    return validate({**SPEC, "scheduler": {"type": scheduler}})


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("STREAMML_"):
            monkeypatch.delenv(key)


def test_in_cluster_operator_refuses_local_jobs_naming_the_field() -> None:
    with pytest.raises(SpecError) as info:
        check_allowed(spec("local"), OperatorSettings())
    assert info.value.field == "scheduler.type"
    assert "STREAMML_SWEEPS__ALLOW_LOCAL_JOBS" in str(info.value)


def test_remote_schedulers_are_always_allowed() -> None:
    check_allowed(spec("slurm"), OperatorSettings())
    kubernetes = validate({**SPEC, "scheduler": {"type": "kubernetes", "image": "lammps:1"}})
    check_allowed(kubernetes, OperatorSettings())


def test_local_runtime_or_explicit_opt_in_allows_local_jobs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    check_allowed(spec("local"), OperatorSettings(local_runtime=True))
    monkeypatch.setenv("STREAMML_SWEEPS__ALLOW_LOCAL_JOBS", "true")
    check_allowed(spec("local"), OperatorSettings())
    # ...and an explicit "no" wins even with the local runtime
    monkeypatch.setenv("STREAMML_SWEEPS__ALLOW_LOCAL_JOBS", "false")
    with pytest.raises(SpecError):
        check_allowed(spec("local"), OperatorSettings(local_runtime=True))
