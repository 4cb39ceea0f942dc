"""The prototype's resource shape, ``flux run -N6 --ntasks 48``, from a LammpsSweep's own fields
(``resources.nodes: 6``, ``lammps.mpiProcs: 48``) on a real Flux instance whose six brokers have
a fake resource set of 8 cores each (``streamml.testbed.flux.start(size=6, fake_cores=8)``): the
trial's allocation really spans 6 nodes and 48 cores, and real LAMMPS runs 48 ranks under
``flux run`` inside it; the models learn the trial.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streamml.testbed import flux
from tests.fixtures.server import ServerProcess, create_models, learn_calls
from tests.integration.test_sweep_cli import clean_env
from tests.integration.test_sweep_flux import flux_jobs, run_on_flux

pytestmark = [
    pytest.mark.integration,
    pytest.mark.flux,
    pytest.mark.lammps,
    pytest.mark.timeout(1800),  # 48 LAMMPS ranks on a shared 2-core machine
]

NODES, CORES = 6, 8


@pytest.fixture(scope="module")
def six_nodes(flux_install: flux.FluxInstall) -> Iterator[flux.FluxInstance]:
    state = Path(tempfile.mkdtemp(prefix="streamml-flux-six-"))
    instance = flux.start(
        state, size=NODES, fake_cores=CORES, install=flux_install, detached=False, timeout_s=300
    )
    try:
        yield instance
    finally:
        flux.stop(state)
        shutil.rmtree(state, ignore_errors=True)


def flux_json(instance: flux.FluxInstance, *args: str) -> Any:
    out = subprocess.run(
        [str(instance.flux), *args], capture_output=True, text=True, check=True, timeout=120,
        env={**clean_env(), **instance.env(), "FLUX_F58_FORCE_ASCII": "1"},
    ).stdout  # fmt: skip
    return json.loads(out)


def test_the_fake_resource_set_has_six_nodes_of_eight_cores(six_nodes: flux.FluxInstance) -> None:
    doc = flux_json(six_nodes, "resource", "R")
    ranks = doc["execution"]["R_lite"]
    assert sum(len(expand(r["rank"])) for r in ranks) == NODES
    assert all(expand(r["children"]["core"]) == list(range(CORES)) for r in ranks)
    assert doc["execution"]["nodelist"] == [f"node[0-{NODES - 1}]"]


def expand(idset: str) -> list[int]:
    """An RFC 22 idset ("0-5", "0,2-3") as its ids."""
    ids: list[int] = []
    for part in idset.split(","):
        low, _, high = part.partition("-")
        ids += list(range(int(low), int(high or low) + 1))
    return ids


async def test_a_sweep_trial_runs_the_prototypes_six_by_eight_shape(
    model_server: ServerProcess, six_nodes: flux.FluxInstance, tmp_path: Path, lammps_bin: str
) -> None:
    await create_models(model_server)
    done, state = run_on_flux(
        tmp_path, model_server, six_nodes, trials=1, testTrials=0, parallelism=1,
        lammps={"mpiProcs": NODES * CORES, "vars": {"steps": "20"}},
        resources={"nodes": NODES, "cpus": 1, "timeLimitSeconds": 1200},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert state["phase"] == "Succeeded" and state["succeeded"] == 1, state
    (trial,) = state["trials"]
    assert flux_jobs(six_nodes, "cli-sweep-") == [trial["jobName"]]
    # the allocation Flux gave the trial: 6 nodes, 8 cores on each, 48 slots of one core
    spec = flux_json(six_nodes, "job", "info", trial["jobId"], "jobspec")
    node = spec["resources"][0]
    assert (node["type"], node["count"]) == ("node", NODES)
    alloc = flux_json(six_nodes, "job", "info", trial["jobId"], "R")["execution"]["R_lite"]
    assert sum(len(expand(r["rank"])) for r in alloc) == NODES
    assert sum(len(expand(r["rank"])) * len(expand(r["children"]["core"])) for r in alloc) == 48
    # and LAMMPS ran 48 ranks in it
    log = (tmp_path / "wd" / "trials" / trial["jobName"] / "lammps.log").read_text()
    assert f"on {NODES * CORES} procs" in log, log[-2000:]
    for model in ("linear", "mean"):
        assert await learn_calls(model_server, model) == 1
