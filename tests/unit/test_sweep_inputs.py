"""A trial's input directory: staging a snapshot (a ConfigMap volume's layout too), its bounds,
and the kubernetes backend's pure builders that carry it to a Pod."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from streamml.errors import SpecError
from streamml.sweep import snapshot as inputs
from streamml.sweep.schedulers.base import JobRequest
from streamml.sweep.schedulers.kubernetes import input_config_map, input_files, job_manifest


def configmap_volume(root: Path, files: dict[str, bytes]) -> Path:
    """What the kubelet makes of a ConfigMap volume: keys are links into ``..data``."""
    data = root / "..2026_12_01_10_00_00.123"
    for name, content in files.items():
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        (data / name).write_bytes(content)
    (root / "..data").symlink_to(data.name)
    for top in {Path(name).parts[0] for name in files}:
        (root / top).symlink_to(Path("..data") / top)
    return root


def test_stage_copies_a_configmap_volume_and_nothing_else(tmp_path: Path) -> None:
    volume = configmap_volume(
        tmp_path / "vol", {"in.x": b"read_data data.x\n", "data.x": b"1\n", "sub/pot": b"p"}
    )
    run = tmp_path / "run"
    run.mkdir()
    assert inputs.stage(volume, run) == len(b"read_data data.x\n") + 2 + 1
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file()) == [
        "data.x", "in.x", "sub/pot"
    ]  # fmt: skip
    assert not any(p.is_symlink() for p in run.rglob("*"))  # copies: a trial may write them


def test_stage_refuses_a_link_that_leads_out(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("s3cret\n")
    source = tmp_path / "input"
    source.mkdir()
    (source / "in.x").write_text("include leak\n")
    (source / "leak").symlink_to(tmp_path / "secret")
    (tmp_path / "run").mkdir()
    with pytest.raises(SpecError, match="outside"):
        inputs.stage(source, tmp_path / "run")
    assert not (tmp_path / "run" / "leak").exists()


def test_an_unchanged_snapshot_is_not_rewritten(tmp_path: Path) -> None:
    """A restarted driver must not pull the snapshot from under trials copying it."""
    from streamml.vocabulary.lammpssweep import LammpsSpec

    spec = LammpsSpec(input="units lj\n")
    first = inputs.prepare(spec, tmp_path, inputs.Roots())
    assert first is not None
    inode = (first.directory / first.script).stat().st_ino
    again = inputs.prepare(spec, tmp_path, inputs.Roots())
    assert again is not None and (again.directory / again.script).stat().st_ino == inode
    changed = inputs.prepare(LammpsSpec(input="units real\n"), tmp_path, inputs.Roots())
    assert changed is not None and (changed.directory / changed.script).read_text() == (
        "units real\n"
    )


def test_the_snapshot_travels_as_a_configmap_volume() -> None:
    files = {"in.x": b"read_data data.x\n", "sub/pot": b"\xff\x00binary"}
    body, items = input_files(files)
    assert items == [{"key": "f0", "path": "in.x"}, {"key": "f1", "path": "sub/pot"}]
    assert body["data"] == {"f0": "read_data data.x\n"}
    assert base64.b64decode(body["binaryData"]["f1"]) == b"\xff\x00binary"
    cm = input_config_map("sw-t00001-a1", "ns", files, "uid-1")
    assert cm["metadata"]["ownerReferences"][0] == {
        "apiVersion": "batch/v1", "kind": "Job", "name": "sw-t00001-a1", "uid": "uid-1"
    }  # fmt: skip
    job = JobRequest(name="sw-t00001-a1", command=["streamml", "run-lammps"])
    manifest = job_manifest(job, namespace="ns", image="img", input_items=items)
    pod = manifest["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert {"name": "STREAMML_INPUT_DIR", "value": "/streamml/input"} in container["env"]
    assert container["workingDir"] == "/streamml/work"
    assert pod["volumes"][0]["configMap"] == {"name": "sw-t00001-a1", "items": items}
    assert (
        job_manifest(job, namespace="ns", image="img")["spec"]["template"]["spec"].get("volumes")
        is None
    )
