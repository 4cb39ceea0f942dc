"""The LammpsSweep schema, its CRD, and the pure pieces of the operator driver and runtime."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from streamml.clients import lammps
from streamml.errors import LammpsError, SpecError
from streamml.sweep import wiring as rt
from streamml.sweep.access import ServerAccess
from streamml.sweep.schedulers.options import KubernetesOptions, LocalOptions, SlurmRestOptions
from streamml.sweep.snapshot import Roots
from streamml.sweep.spec import validate
from streamml.vocabulary import crdgen
from streamml.vocabulary.jobresult import JobResult
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
        "Per MPI rank memory allocation (min/avg/max) = 3.119 | 3.119 | 3.2 Mbytes\n"
        "Loop time of 0.5 on 1 procs for 50 steps with 2048 atoms\n"
        "Performance: 1.0 tau/day, 100.0 timesteps/s, 0.2 Matom-step/s\n"
        "99.0% CPU use with 1 MPI tasks x 1 OpenMP threads\n"
        "Total wall time: 0:00:01\n"
    )
    # job_wall_time is the job program's own clock (run-lammps sets it), not the log's
    timed = dataclasses.replace(metrics, job_wall_time=2.5)
    for name in typing.get_args(Target):
        assert isinstance(timed.target(name), float), name
    with pytest.raises(LammpsError, match="job_wall_time"):
        metrics.target("job_wall_time")


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
    from streamml.sweep.sampling import plan
    from streamml.sweep.spec import load_sweep_file

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
        # non-finite and absurd bounds (a YAML .inf / .nan reaches the CLI as a float)
        ({"parameters": [{"name": "nx", "type": "int", "min": 1, "max": float("inf")}]},
         "parameters[0].max"),
        ({"parameters": [{"name": "t", "type": "float", "min": float("nan"), "max": 1}]},
         "parameters[0].min"),
        ({"parameters": [{"name": "t", "type": "float", "min": 0, "max": 1e300}]},
         "parameters[0].max"),
        ({"parameters": [{"name": "t", "type": "float", "min": -1e16, "max": 0}]},
         "parameters[0].min"),
        ({"parameters": [{"name": "t", "type": "float", "min": 0, "max": 1,
                          "step": float("inf")}]}, "parameters[0].step"),
        ({"lammps": {"configMapRef": {"name": "c", "key": "in.x", "files": ["in.x"]}}},
         "lammps.configMapRef"),
        ({"lammps": {"configMapRef": {"name": "c", "key": "in.x", "files": ["../x"]}}},
         "lammps.configMapRef"),
        ({"lammps": {"command": "/usr/bin/lmp -in x"}}, "lammps.command"),
        ({"lammps": {"command": "/usr/../bin/lmp"}}, "lammps.command"),
    ],
)  # fmt: skip
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


def test_scheduler_options(tmp_path: Path) -> None:
    assert rt.scheduler_options(_spec(), tmp_path) == LocalOptions(
        root=str(tmp_path / "jobs"), max_parallel=3
    )
    rest = _spec(scheduler={"type": "slurm-rest", "restUrl": "http://127.0.0.1:1"})
    with pytest.raises(SpecError) as info:
        rt.scheduler_options(rest, tmp_path)
    assert info.value.field == "scheduler.jwtSecretRef"
    options = rt.scheduler_options(rest, tmp_path, slurm_token="jwt")
    assert isinstance(options, SlurmRestOptions)
    assert options.token == "jwt" and options.url == "http://127.0.0.1:1"
    k8s = _spec(scheduler={"type": "kubernetes", "image": "img"})
    assert rt.scheduler_options(k8s, tmp_path, namespace="ns") == KubernetesOptions(
        namespace="ns", image="img"
    )
    # a token file that cannot be read names the spec's field
    unreadable = _spec(scheduler={"type": "slurm-rest", "restUrl": "http://127.0.0.1:1",
                                  "tokenFile": str(tmp_path / "none")})  # fmt: skip
    with pytest.raises(SpecError) as info:
        rt.build_scheduler(rt.scheduler_options(unreadable, tmp_path))
    assert info.value.field == "scheduler.tokenFile"


def test_credentials_are_private_files(tmp_path: Path) -> None:
    env = rt.credential_env(tmp_path, ServerAccess("http://x", "alice", "s3cret"))
    token = Path(env["STREAMML_TOKEN_FILE"])
    assert token.read_text() == "s3cret" and token.stat().st_mode & 0o777 == 0o600
    assert "s3cret" not in str(env)
    assert rt.credential_env(tmp_path / "none", ServerAccess("http://x")) == {}


def test_absolute_command_paths_are_accepted() -> None:
    for command in ("/usr/bin/lmp", "/opt/lammps-2023/bin/lmp_mpi", "lmp", "bin/lmp_serial",
                    "/root/.cache/streamml/lammps-reaxff-8f81c0e07e1b1218/bin/lmp"):  # fmt: skip
        assert _spec(lammps={"command": command}).lammps.command == command
    for command in ("/opt/./lmp", "/opt/../lmp", "/..", "/opt/.../lmp", "/opt/.x /lmp"):
        with pytest.raises(ValidationError):
            _spec(lammps={"command": command})


def test_inline_input_and_missing_input_file(tmp_path: Path) -> None:
    from streamml.sweep import snapshot as inputs

    roots = inputs.Roots(allowed=(tmp_path,), base=tmp_path)
    prepared = inputs.prepare(_spec(lammps={"input": "units lj\n"}).lammps, tmp_path, roots)
    assert prepared is not None and prepared.script == inputs.INLINE_NAME
    assert (prepared.directory / prepared.script).read_text() == "units lj\n"
    ref = {"name": "cm", "key": "in.x", "files": ["data.x"]}
    from_cm = inputs.prepare(
        _spec(lammps={"configMapRef": ref}).lammps,
        tmp_path,
        roots,
        config_map={"in.x": b"read_data data.x\n", "data.x": b"atoms\n", "other": b"no"},
    )
    assert from_cm is not None and from_cm.script == "in.x"
    assert sorted(p.name for p in from_cm.directory.iterdir()) == ["data.x", "in.x"]
    assert inputs.prepare(_spec().lammps, tmp_path, roots) is None  # packaged in.lj
    with pytest.raises(SpecError) as info:
        inputs.prepare(_spec(lammps={"inputFile": "nope"}).lammps, tmp_path, roots)
    assert info.value.field == "lammps.inputFile"
    with pytest.raises(SpecError) as info:
        inputs.prepare(
            _spec(lammps={"configMapRef": ref}).lammps, tmp_path, roots, config_map={"in.x": b""}
        )
    assert info.value.field == "lammps.configMapRef" and "data.x" in str(info.value)


def test_input_paths_are_confined_to_the_roots(tmp_path: Path) -> None:
    """A path outside every root, or a link leading out, is refused naming the field."""
    from streamml.sweep import snapshot as inputs

    root, outside = tmp_path / "root", tmp_path / "secrets"
    (root / "inputs").mkdir(parents=True)
    outside.mkdir()
    (outside / "token").write_text("s3cret\n")
    (root / "inputs" / "in.x").write_text("read_data data.x\n")
    (root / "inputs" / "data.x").write_text("data\n")
    roots = inputs.Roots(allowed=(root,), base=root)
    work = tmp_path / "work"
    cases: list[tuple[dict[str, Any], str]] = [
        ({"inputFile": str(outside / "token")}, "lammps.inputFile"),
        ({"inputFile": "../secrets/token"}, "lammps.inputFile"),
        ({"inputDir": str(outside), "inputFile": "token"}, "lammps.inputDir"),
        ({"input": "x", "files": [str(outside / "token")]}, "lammps.files[0]"),
    ]
    for lammps_spec, where in cases:
        with pytest.raises(SpecError) as info:
            inputs.prepare(_spec(lammps=lammps_spec).lammps, work, roots)
        assert info.value.field == where, lammps_spec
        assert "s3cret" not in str(info.value)
    (root / "inputs" / "leak").symlink_to(outside / "token")
    with pytest.raises(SpecError) as info:
        inputs.prepare(
            _spec(lammps={"inputDir": "inputs", "inputFile": "in.x"}).lammps, work, roots
        )
    assert info.value.field == "lammps.inputDir"
    (root / "inputs" / "leak").unlink()
    prepared = inputs.prepare(
        _spec(lammps={"inputDir": "inputs", "inputFile": "in.x"}).lammps, work, roots
    )
    assert prepared is not None and prepared.script == "in.x"
    assert sorted(p.name for p in prepared.directory.iterdir()) == ["data.x", "in.x"]
    # the operator's default: no roots at all, so no path is allowed
    with pytest.raises(SpecError, match="outside the allowed input roots"):
        inputs.prepare(
            _spec(lammps={"inputFile": str(root / "inputs" / "in.x")}).lammps,
            work,
            inputs.Roots(),
        )


def test_input_snapshots_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from streamml.sweep import snapshot as inputs

    (tmp_path / "big").mkdir()
    for i in range(4):
        (tmp_path / "big" / f"f{i}").write_bytes(b"x" * 1000)
    monkeypatch.setattr(inputs, "MAX_INPUT_BYTES", 3500)
    roots = inputs.Roots(allowed=(tmp_path,), base=tmp_path)
    with pytest.raises(SpecError, match="exceed") as info:
        inputs.prepare(_spec(lammps={"input": "x", "inputDir": "big"}).lammps, tmp_path, roots)
    assert info.value.field == "lammps.inputDir"


def test_kubernetes_jobs_report_through_the_termination_message(tmp_path: Path) -> None:
    from streamml.sweep import jobs
    from streamml.sweep.schedulers.local import LocalScheduler
    from streamml.sweep.state import FileStore

    spec = _spec(scheduler={"type": "kubernetes", "image": "img"})
    access = ServerAccess("http://sm.ns.svc", "u", "tok")
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
    assert jobs.read_result(engine.ctx, job.name, doc) == JobResult(target=1.5, delivered=True)
    assert jobs.read_result(engine.ctx, job.name, None) is None
    # an input travels with the Job (its backend makes it a ConfigMap): the command names the
    # script, the Pod's STREAMML_INPUT_DIR says where the files are
    with_input = rt.build_engine(
        "k", _spec(scheduler={"type": "kubernetes", "image": "i"}, lammps={"input": "x"}),
        FileStore(tmp_path / "t.json"), access=access, workdir=tmp_path, identity="u",
        scheduler=LocalScheduler(tmp_path / "unused"),
    )  # fmt: skip
    job = jobs.build_job(with_input.spec, with_input.ctx, trial=0, attempt=1, point={"nx": 2},
                         test=False, sweep="k")  # fmt: skip
    args = list(job.command)
    assert args[args.index("--input") + 1] == "input.lammps" and "--input-dir" not in args
    assert job.input_dir is not None and (job.input_dir / "input.lammps").read_text() == "x"
    (tmp_path / "big").mkdir()
    (tmp_path / "big" / "data.x").write_bytes(b"1 2 3\n" * 150_000)  # > what a ConfigMap holds
    with pytest.raises(SpecError) as info:
        rt.build_engine(
            "k", _spec(scheduler={"type": "kubernetes", "image": "i"},
                       lammps={"input": "x", "inputDir": "big"}),
            FileStore(tmp_path / "u.json"), access=access, workdir=tmp_path / "w", identity="u",
            scheduler=LocalScheduler(tmp_path / "unused"),
            roots=Roots(allowed=(tmp_path,), base=tmp_path),
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


def test_a_sweep_file_and_a_custom_resource_name_a_bad_field_alike(tmp_path: Path) -> None:
    """Both drivers report ``spec.parameters[0].min`` (the CLI used to say ``parameters.0.min``:
    two formatters had diverged; the Kubernetes form is the one a status and kubectl use)."""
    from streamml.sweep.spec import load_sweep_file

    doc = yaml.safe_load(SAMPLE.read_text())
    doc["spec"]["parameters"][0]["min"] = "many"
    with pytest.raises(SpecError) as cr:
        validate(doc["spec"])
    file = tmp_path / "bad.yaml"
    file.write_text(yaml.safe_dump(doc))
    with pytest.raises(SpecError) as cli:
        load_sweep_file(file)
    assert cr.value.field == cli.value.field == "parameters[0].min"
    assert str(cli.value) == f"{file}: {cr.value}"
    assert str(cr.value).startswith("spec.parameters[0].min: ")
