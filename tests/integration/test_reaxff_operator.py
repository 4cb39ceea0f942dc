"""The prototype's ReaxFF sample, ``config/samples/flux-reaxff/``, through the operator: its
manifests (``kustomization.yaml``: a ConfigMap generated from the input, data file and force field
beside it, and the sample's LammpsSweep reading them by ``configMapRef``) rendered by the real
``kubectl kustomize`` and applied to the real kube-apiserver; the operator (local runtime) runs
the sweep on a real Flux instance with the REAXFF ``lmp`` the project installs; status reaches
Succeeded with the held-out evaluation.

Scaled down as ``test_reaxff_sample`` is (1x1x{1,2} replicas, 10 steps, two training trials and
one held-out trial instead of 2x2x2, 100 steps, 6 + 2: one full-size trial takes ~57 s here);
the shipped manifests themselves pass the apiserver's validation unchanged (server dry run).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamml.client.api import ModelServerClient
from streamml.testbed import flux
from streamml.testbed.controlplane import ControlPlane
from tests.integration.test_reaxff_sample import SAMPLE, assert_reaxff_ran, reaxff_lmp
from tests.integration.test_sweep_flux import flux_jobs
from tests.integration.test_sweep_operator import STREAMMODEL, Operator, running_operator

pytestmark = [
    pytest.mark.integration,
    pytest.mark.controlplane,
    pytest.mark.lammps,
    pytest.mark.flux,
    pytest.mark.timeout(1800),  # ReaxFF trials on a shared 2-core machine
]

__all__ = ["reaxff_lmp"]  # the session fixture, used here by name
MODEL = "lammps-time"  # the StreamModel the sample names


@pytest.fixture
def operator(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    with running_operator(control_plane, tmp_path_factory, "reaxff") as op:
        yield op


def small(doc: dict[str, Any], lmp: Path, uri: str) -> dict[str, Any]:
    """The sample's LammpsSweep made small, on this Flux, with this REAXFF lmp."""
    spec: dict[str, Any] = doc["spec"]
    spec["parameters"] = [{**p, "min": 1, "max": 2 if p["name"] == "z" else 1}
                          for p in spec["parameters"]]  # fmt: skip
    spec.update(trials=2, testTrials=1, parallelism=2)
    spec["lammps"]["command"] = str(lmp)
    spec["lammps"]["vars"]["t"] = "10"
    spec["scheduler"]["fluxUri"] = uri
    return doc


def learns(op: Operator, model: str) -> int:
    sm = op.get("streammodel", MODEL) or {}
    secret = op.get("secret", sm["status"]["authSecretName"]) or {}
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}

    async def stats() -> int:
        async with ModelServerClient(
            sm["status"]["address"], username=data["username"], token=data["token"]
        ) as client:
            return (await client.stats(model)).learn.n_calls

    return asyncio.run(stats())


def test_the_reaxff_sample_runs_through_the_operator_on_flux(
    operator: Operator, flux_instance: flux.FluxInstance, reaxff_lmp: Path
) -> None:
    op = operator
    # the manifests as shipped are valid for the real apiserver (CRD schema included)
    dry = op.cp.kubectl(
        "apply", "--dry-run=server", "-n", op.namespace, "-k", str(SAMPLE), check=False
    )
    assert dry.returncode == 0, dry.stderr
    rendered = list(yaml.safe_load_all(op.cp.kubectl("kustomize", str(SAMPLE)).stdout))
    kinds = sorted(d["kind"] for d in rendered)
    assert kinds == ["ConfigMap", "LammpsSweep"], kinds
    configmap = next(d for d in rendered if d["kind"] == "ConfigMap")
    for name in ("in.reaxff.hns", "data.hns-equil", "ffield.reax.hns"):
        assert configmap["data"][name] == (SAMPLE / name).read_text()  # the files, verbatim
    sweep = small(next(d for d in rendered if d["kind"] == "LammpsSweep"), reaxff_lmp,
                  flux_instance.uri)  # fmt: skip
    name = sweep["metadata"]["name"]
    assert "inputFile" not in sweep["spec"]["lammps"]
    model = {**STREAMMODEL, "metadata": {"name": MODEL}}
    assert op.apply(model).returncode == 0, op.logs()
    for doc in (configmap, sweep):  # as JSON: PyYAML writes the parameter `y` bare, a YAML 1.1 bool
        done = op.cp.kubectl(
            "apply", "-n", op.namespace, "-f", "-", input=json.dumps(doc), check=False
        )
        assert done.returncode == 0, done.stderr

    op.wait_for("the sweep to finish", lambda: op.status(name).get("phase") in ("Succeeded",
                "Failed"), timeout=1500)  # fmt: skip
    status = op.status(name)
    assert status["phase"] == "Succeeded", status
    assert (status["submitted"], status["succeeded"], status["failed"]) == (3, 3, 0)
    names = flux_jobs(flux_instance, f"{name}-")
    assert len(names) == len(set(names)) == 3, names  # one Flux job per trial
    assert names == sorted(t["jobName"] for t in status["trials"])
    assert all(t["jobId"].startswith("f") and t["target"] > 0 for t in status["trials"])
    (workdir,) = op.sweeps_dir.glob(f"{name}-*")
    for trial in status["trials"]:
        # on the data file and force field the ConfigMap carried
        assert_reaxff_ran(workdir / "trials" / trial["jobName"], int(trial["params"]["z"]))
    for m in ("mean", "linear"):
        assert learns(op, m) == 2  # each training trial learned once
    evaluation = {e["model"]: e for e in status["evaluation"]}
    assert set(evaluation) == {"mean", "linear"}
    assert all(e["n"] == 1 for e in evaluation.values())
