"""The real kube-apiserver, with this tree's CRDs, accepts the sample manifests of commit 0d095a3
(``tests/fixtures/samples-0d095a3/``, kept by issue 14's compatibility rule; the same files
against the pydantic schemas: ``tests/unit/test_compat_samples.py``), and today's samples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from streamml.testbed.controlplane import ControlPlane
from tests.integration.operator_support import install_crds

pytestmark = [pytest.mark.integration, pytest.mark.controlplane]

ROOT = Path(__file__).resolve().parents[2]
OLD_SAMPLES = ROOT / "tests" / "fixtures" / "samples-0d095a3"
ACCEPTED = [
    "lammpssweep.streamml.io/lj-size created (server dry run)",
    "lammpssweep.streamml.io/reaxff-hns created (server dry run)",
    "streammodel.streamml.io/lammps-time created (server dry run)",
]


def _created(stdout: str) -> list[str]:
    return sorted(line for line in stdout.splitlines() if "(server dry run)" in line)


def test_the_api_server_accepts_the_old_samples_and_todays(
    control_plane: ControlPlane, k8s_namespace: str
) -> None:
    install_crds(control_plane)
    # As the project reads them (PyYAML): 0d095a3's flux-reaxff sample said `name: y`, which
    # kubectl reads as true (YAML 1.1 booleans) and PyYAML, like `streamml sweep`, as "y".
    files = sorted(OLD_SAMPLES.rglob("*.yaml"))
    docs = [doc for path in files for doc in yaml.safe_load_all(path.read_text())]
    old = control_plane.kubectl(
        "apply", "--dry-run=server", "-n", k8s_namespace, "-f", "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}),
    )  # fmt: skip
    assert _created(old.stdout) == ACCEPTED, old.stdout
    # today's files as kubectl reads them, sub-folders too (a kustomization.yaml is kustomize's
    # input, not a manifest: `kubectl apply -k` of that folder is test_reaxff_operator's)
    today_files = [
        arg
        for path in sorted((ROOT / "config/samples").rglob("*.yaml"))
        if path.name != "kustomization.yaml"
        for arg in ("-f", str(path))
    ]
    today = control_plane.kubectl("apply", "--dry-run=server", "-n", k8s_namespace, *today_files)
    eos = [  # issue 12's equation-of-state sample: several targets per run
        "lammpssweep.streamml.io/lj-eos created (server dry run)",
        "streammodel.streamml.io/lj-eos created (server dry run)",
    ]
    adaptive = ["lammpssweep.streamml.io/lj-size-adaptive created (server dry run)"]  # issue 11
    assert _created(today.stdout) == sorted(ACCEPTED + eos + adaptive), today.stdout
