"""The LammpsSweep schema, its CRD, and the pure pieces of the operator driver and runtime."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import pytest

from streamml.clients import lammps
from streamml.clients import sweep_runtime as rt
from streamml.errors import SpecError
from streamml.operator import crdgen
from streamml.operator.sweep_driver import validate
from streamml.vocabulary.lammpssweep import LAMMPSSWEEP, LammpsSweepSpec, Target

SAMPLE = Path(__file__).resolve().parents[2] / "config" / "samples" / "lammpssweep.yaml"


def _walk(node: Any, path: str = "") -> typing.Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield f"{path}.{key}", value
            yield from _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}[{i}]")


def test_every_target_is_a_number_run_lammps_parses() -> None:
    metrics = lammps.parse_log(
        "Loop time of 0.5 on 1 procs for 50 steps with 2048 atoms\n"
        "Performance: 1.0 tau/day, 100.0 timesteps/s, 0.2 Matom-step/s\n"
        "99.0% CPU use with 1 MPI tasks x 1 OpenMP threads\n"
        "Total wall time: 0:00:01\n"
    )
    for name in typing.get_args(Target):
        assert isinstance(metrics.target(name), float), name


def test_crd_is_structural_with_the_printer_columns() -> None:
    crd = crdgen.crd(LAMMPSSWEEP)
    version = crd["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    for where, value in _walk(schema):
        key = where.rsplit(".", 1)[-1]
        if key in ("exclusiveMinimum", "exclusiveMaximum"):
            assert isinstance(value, bool), where  # OpenAPI v3.0: booleans only
        assert key not in ("anyOf", "oneOf", "$ref", "$defs"), where
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Progress"] == ".status.progress"
    assert columns["Model"] == ".spec.streamModelRef.name"
    assert columns["R2"] == ".status.heldOutR2"
    assert set(columns) >= {"Phase", "Succeeded", "Failed", "Age"}
    assert version["subresources"] == {"status": {}}
    spec = schema["properties"]["spec"]["properties"]
    assert spec["scheduler"]["properties"]["type"]["enum"] == [
        "local",
        "slurm",
        "slurm-rest",
        "kubernetes",
        "flux",
    ]
    assert spec["trials"]["minimum"] == 1 and spec["testTrials"]["minimum"] == 0


def test_sample_is_valid() -> None:
    from streamml.clients.sampling import plan
    from streamml.clients.sweep_command import load_sweep_file

    name, spec = load_sweep_file(SAMPLE)
    assert name == "lj-size"
    assert spec.scheduler.type == "local"
    points = plan(spec)
    assert len(points) == spec.trials + spec.test_trials
    assert all(isinstance(p["nx"], int) for p in points)  # whole fcc cells


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"parameters": [{"name": "nx", "type": "int", "min": 5, "max": 1}]}, "parameters[0]"),
        ({"trials": 0}, "trials"),
        ({"scheduler": {"type": "slurm-rest"}}, "scheduler"),
        ({"lammps": {"input": "x", "inputFile": "/y"}}, "lammps"),
        ({"lammps": {"target": "bogus"}}, "lammps.target"),
        ({"lammps": {"vars": {"nx": "3"}}}, "(root)"),
    ],
)
def test_validate_names_the_field(raw: dict[str, Any], field: str) -> None:
    doc: dict[str, Any] = {
        "streamModelRef": {"name": "m"},
        "parameters": [{"name": "nx", "type": "int", "min": 1, "max": 9}],
        "trials": 3,
    }
    doc.update(raw)
    with pytest.raises(SpecError) as info:
        validate(doc)
    assert str(info.value).startswith(f"spec.{field}")


def _spec(**over: Any) -> LammpsSweepSpec:
    doc: dict[str, Any] = {
        "streamModelRef": {"name": "m"},
        "parameters": [{"name": "nx", "type": "int", "min": 1, "max": 9}],
        "trials": 3,
        "parallelism": 3,
    }
    doc.update(over)
    return LammpsSweepSpec.model_validate(doc)


def test_scheduler_settings(tmp_path: Path) -> None:
    assert rt.scheduler_settings(_spec(), tmp_path) == {
        "root": str(tmp_path / "jobs"),
        "maxParallel": 3,
    }
    rest = _spec(scheduler={"type": "slurm-rest", "restUrl": "http://127.0.0.1:1"})
    with pytest.raises(SpecError) as info:
        rt.scheduler_settings(rest, tmp_path)
    assert info.value.field == "scheduler.jwtSecretRef"
    settings = rt.scheduler_settings(rest, tmp_path, slurm_token="jwt")
    assert settings["token"] == "jwt" and settings["url"] == "http://127.0.0.1:1"
    k8s = _spec(scheduler={"type": "kubernetes", "image": "img"})
    assert rt.scheduler_settings(k8s, tmp_path, namespace="ns") == {
        "namespace": "ns",
        "image": "img",
    }


def test_credentials_are_private_files(tmp_path: Path) -> None:
    env = rt.credential_env(tmp_path, rt.ServerAccess("http://x", "alice", "s3cret"))
    token = Path(env["STREAMML_TOKEN_FILE"])
    assert token.read_text() == "s3cret" and token.stat().st_mode & 0o777 == 0o600
    assert "s3cret" not in str(env)
    assert rt.credential_env(tmp_path / "none", rt.ServerAccess("http://x")) == {}


def test_inline_input_and_missing_input_file(tmp_path: Path) -> None:
    path = rt.materialise_input(_spec(lammps={"input": "units lj\n"}), tmp_path, None)
    assert path is not None and path.read_text() == "units lj\n"
    from_cm = rt.materialise_input(_spec(), tmp_path, "from a ConfigMap\n")
    assert from_cm is not None and from_cm.read_text() == "from a ConfigMap\n"
    assert rt.materialise_input(_spec(), tmp_path, None) is None  # packaged in.lj
    with pytest.raises(SpecError) as info:
        rt.materialise_input(_spec(lammps={"inputFile": str(tmp_path / "nope")}), tmp_path, None)
    assert info.value.field == "lammps.inputFile"


def test_kubernetes_jobs_report_through_the_termination_message(tmp_path: Path) -> None:
    from streamml.clients import sweep_jobs as jobs
    from streamml.clients.schedulers.local import LocalScheduler
    from streamml.clients.sweep import FileStore

    spec = _spec(scheduler={"type": "kubernetes", "image": "img"})
    access = rt.ServerAccess("http://sm.ns.svc", "u", "tok")
    engine = rt.build_engine(
        "k", spec, FileStore(tmp_path / "s.json"), access=access, workdir=tmp_path,
        identity="uid", scheduler=LocalScheduler(tmp_path / "unused"),
    )  # fmt: skip
    job = jobs.build_job(spec, engine.ctx, trial=0, attempt=1, point={"nx": 2}, test=False,
                         sweep="k")  # fmt: skip
    args = list(job.command)
    assert args[:2] == ["streamml", "run-lammps"]
    assert args[args.index("--result-file") + 1] == "/dev/termination-log"
    assert "--spool-dir" not in args and "--log-file" not in args and job.workdir is None
    assert job.env["STREAMML_TOKEN"] == "tok"
    doc = '{"target": 1.5, "delivered": true}'
    assert jobs.read_result(engine.ctx, job.name, doc) == {"target": 1.5, "delivered": True}
    assert jobs.read_result(engine.ctx, job.name, None) is None
    with pytest.raises(SpecError) as info:
        rt.build_engine(
            "k", _spec(scheduler={"type": "kubernetes", "image": "i"}, lammps={"input": "x"}),
            FileStore(tmp_path / "t.json"), access=access, workdir=tmp_path, identity="u",
            scheduler=LocalScheduler(tmp_path / "unused"),
        )  # fmt: skip
    assert info.value.field == "lammps"


@pytest.mark.parametrize(
    "lammps_spec",
    [
        {"command": "lmp -in /etc/passwd"},
        {"command": "lmp; rm -rf /"},
        {"command": "-oops"},
        {"vars": {"steps": "20\nshell rm -rf /"}},
        {"vars": {"steps": "x" * 300}},
    ],
)
def test_hostile_lammps_fields_are_rejected(lammps_spec: dict[str, Any]) -> None:
    with pytest.raises(SpecError):
        validate(
            {
                "streamModelRef": {"name": "m"},
                "parameters": [{"name": "nx", "type": "int", "min": 1, "max": 9}],
                "trials": 3,
                "lammps": lammps_spec,
            }
        )


def test_hostile_categorical_values_are_rejected() -> None:
    with pytest.raises(SpecError):
        validate(
            {
                "streamModelRef": {"name": "m"},
                "parameters": [{"name": "c", "type": "categorical", "values": ["a\nb"]}],
                "trials": 1,
            }
        )
