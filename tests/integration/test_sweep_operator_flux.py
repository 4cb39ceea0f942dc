"""The operator (local runtime, outside any Pod network) drives a LammpsSweep on a real Flux
instance, with the trials inside the real LAMMPS SIF: the models learn, evaluation in status."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamml.testbed import flux
from streamml.testbed.controlplane import ControlPlane
from tests.integration.operator_support import install_crds
from tests.integration.test_sweep_operator import STREAMMODEL, Operator, server_learns, sweep

pytestmark = [
    pytest.mark.integration,
    pytest.mark.controlplane,
    pytest.mark.lammps,
    pytest.mark.flux,
    pytest.mark.apptainer,
]


@pytest.fixture(scope="module")
def operator(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory, lammps_bin: str
) -> Iterator[Operator]:
    root = tmp_path_factory.mktemp("sweep-operator-flux")
    install_crds(control_plane)
    namespace = f"flux-{uuid.uuid4().hex[:6]}"
    control_plane.kubectl("create", "namespace", namespace)
    op = Operator(control_plane, namespace, root)
    op.start()
    try:
        yield op
    finally:
        op.stop()
        control_plane.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_operator_runs_a_containerised_sweep_on_flux(
    operator: Operator, flux_instance: flux.FluxInstance, lammps_sif: Path
) -> None:
    op = operator
    assert op.apply(STREAMMODEL).returncode == 0
    doc = sweep(
        "lj-flux", trials=3, testTrials=1,
        scheduler={"type": "flux", "fluxUri": flux_instance.uri},
        lammps={"vars": {"steps": "20"}, "container": {"image": str(lammps_sif)}},
    )  # fmt: skip
    assert op.apply(doc).returncode == 0, op.logs()
    op.wait_for("the sweep to finish", lambda: op.status("lj-flux").get("phase") == "Succeeded")
    status = op.status("lj-flux")
    assert status["submitted"] == 4 and status["succeeded"] == 4 and status["failed"] == 0
    assert all(t["jobId"].startswith("f") and t["imageDigest"] for t in status["trials"])
    for model in ("mean", "linear"):
        assert server_learns(op, model) == 3
    assert {e["model"] for e in status["evaluation"]} == {"mean", "linear"}
    assert len(status["evaluationByImage"]) == 1
