"""Pure pieces of the scheduler backends: batch scripts, state maps, Job manifests and statuses."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from streamml.sweep.schedulers import JobRequest, JobState
from streamml.sweep.schedulers import flux as flux_scheduler
from streamml.sweep.schedulers.flux import unreachable
from streamml.sweep.schedulers.kubernetes import CANCELLED_ANNOTATION, job_manifest, job_status
from streamml.sweep.schedulers.slurm_cli import (
    batch_script,
    controller_down,
    map_state,
    time_limit_minutes,
)
from streamml.sweep.schedulers.slurm_rest import _exit_code, _expand
from streamml.testbed import hpc


def test_batch_script_quotes_env_and_command(tmp_path: Path) -> None:
    job = JobRequest(
        name="t",
        command=["printf", "%s|%s", "$(touch no)", "a b"],
        env={"X": "it's; $(touch no) `x`"},
    )
    script = batch_script(job)
    assert script.startswith("#!/bin/bash\n")
    out = subprocess.run(
        ["bash", "-c", script + 'printf "|%s" "$X"'], cwd=tmp_path, capture_output=True, text=True
    )
    # exec replaces the shell, so the trailing printf never runs: the exit code is the job's
    assert out.stdout == "$(touch no)|a b"
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize(
    ("state", "reason", "expected", "why"),
    [
        ("PENDING", "Resources", JobState.PENDING, None),
        ("RUNNING", "None", JobState.RUNNING, None),
        ("COMPLETING", "None", JobState.RUNNING, None),
        ("COMPLETED", "None", JobState.SUCCEEDED, None),
        ("FAILED", "NonZeroExitCode", JobState.FAILED, "NonZeroExitCode"),
        ("TIMEOUT", "None", JobState.FAILED, "TIMEOUT"),
        ("OUT_OF_MEMORY", "", JobState.FAILED, "OUT_OF_MEMORY"),
        ("CANCELLED by 0", "None", JobState.CANCELLED, None),
        ("WEIRD_NEW_STATE", "x", JobState.UNKNOWN, "unrecognised Slurm state 'WEIRD_NEW_STATE'"),
        ("", "", JobState.UNKNOWN, "unrecognised Slurm state ''"),
    ],
)
def test_slurm_states(state: str, reason: str, expected: JobState, why: str | None) -> None:
    status = map_state(state, reason)
    assert status.state is expected and status.reason == why


def test_time_limits_and_exit_codes() -> None:
    assert time_limit_minutes(None) is None
    assert time_limit_minutes(1) == 1 and time_limit_minutes(61) == 2
    assert _exit_code(3 << 8) == 3 and _exit_code(0) == 0 and _exit_code(9) == 137
    assert _exit_code("3") is None and _exit_code(True) is None
    assert _expand("/w/slurm-%j-%x.out", {"job_id": 7, "name": "t1"}) == "/w/slurm-7-t1.out"
    assert _expand(None, {}) is None


def test_job_manifest_is_least_privilege() -> None:
    job = JobRequest(
        name="sw-t0001",
        command=["streamml", "run-lammps", "--result-file", "/dev/termination-log"],
        env={"STREAMML_TRIAL_ID": "sw-t0001"},
        cpus=2,
        time_limit_s=600,
    )
    manifest = job_manifest(job, namespace="ns", image="lammps:1", ttl_seconds_after_finished=60)
    assert manifest["metadata"] == {
        "name": "sw-t0001",
        "namespace": "ns",
        "labels": {"app.kubernetes.io/managed-by": "streamml", "streamml.io/trial": "sw-t0001"},
    }
    spec = manifest["spec"]
    assert spec["backoffLimit"] == 0 and spec["activeDeadlineSeconds"] == 600
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    assert container["command"] == list(job.command)
    assert container["env"] == [{"name": "STREAMML_TRIAL_ID", "value": "sw-t0001"}]
    assert container["resources"]["limits"]["cpu"] == "2"
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def _pod(terminated: dict[str, object]) -> dict[str, object]:
    return {"status": {"containerStatuses": [{"state": {"terminated": terminated}}]}}


def test_job_statuses() -> None:
    assert job_status({}, []).state is JobState.PENDING
    assert job_status({"status": {"active": 1}}, []).state is JobState.RUNNING
    done = job_status(
        {"status": {"conditions": [{"type": "Complete", "status": "True"}]}},
        [_pod({"exitCode": 0, "message": '{"trial": "t"}'})],
    )
    assert done.state is JobState.SUCCEEDED and done.output == '{"trial": "t"}'
    failed = job_status(
        {"status": {"conditions": [{"type": "Failed", "status": "True",
                                    "reason": "BackoffLimitExceeded",
                                    "message": "Job has reached the specified backoff limit"}]}},
        [_pod({"exitCode": 137, "reason": "OOMKilled", "message": "ERROR: Lost atoms: x\n"})],
    )  # fmt: skip
    assert failed.state is JobState.FAILED and failed.exit_code == 137
    assert failed.reason == (
        "BackoffLimitExceeded: OOMKilled: Job has reached the specified backoff limit: "
        "ERROR: Lost atoms: x"
    )
    from_result = job_status(
        {"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "X"}]}},
        [_pod({"exitCode": 1, "reason": "Error",
               "message": '{"trial": "t",\n "error": "ERROR: Lost atoms: y"\n}'})],
    )  # fmt: skip
    assert from_result.reason == "X: Error: ERROR: Lost atoms: y"
    not_yet = {"status": {"conditions": [{"type": "Failed", "status": "False"}], "active": 1}}
    assert job_status(not_yet, []).state is JobState.RUNNING
    cancelled = {"metadata": {"annotations": {CANCELLED_ANNOTATION: "true"}}}
    assert job_status(cancelled, []).state is JobState.CANCELLED


def test_slurm_conf_renders_every_placeholder(tmp_path: Path) -> None:
    text = hpc.render_conf(
        cluster="c", host="h", node="n", cpus=2, memory=1000, partition="debug",
        ctld_port=1, slurmd_port=2, munge_socket=tmp_path / "s", jwt_key=tmp_path / "k",
        state=tmp_path,
    )  # fmt: skip
    assert "$" not in text
    assert f"AuthInfo=socket={tmp_path}/s" in text and "SlurmctldPort=1" in text
    with pytest.raises(KeyError):
        hpc.render_conf(cluster="c")


def test_stop_never_hits_a_process_of_another_instance(tmp_path: Path) -> None:
    """A pid file naming a process that is not ours (e.g. a recycled PID) is left alone."""
    (tmp_path / "run").mkdir()
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        (tmp_path / "run" / "slurmctld.pid").write_text(f"{sleeper.pid}\n")
        assert hpc.stop(tmp_path) == []
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.parametrize(
    ("stderr", "down"),
    [  # the messages a real flux 0.88 CLI printed, captured during `flux shutdown`
        ("[Errno 38] No service matching job-ingest.submit is registered", True),
        (
            "flux-submit: ERROR: Unable to connect to Flux: broker socket /tmp/x/local-0 was not"
            " found",
            True,
        ),
        ("flux-jobs: ERROR: [Errno 104] Connection reset by peer", True),
        ("flux-submit: ERROR: [Errno 111] Connection refused", True),
        # refusals: retrying cannot help, the trial fails with the reason
        ("flux-submit: ERROR: Unsatisfiable request: requested 64 cores, 2 available", False),
        ("flux-submit: ERROR: [Errno 22] Invalid argument: --time-limit", False),
    ],
)
def test_flux_errors_tell_down_from_refused(stderr: str, down: bool) -> None:
    assert unreachable(stderr) is down


@pytest.mark.parametrize(
    ("code", "out", "err", "unanswered"),
    [
        (0, "f2Ab3\n", "", False),  # accepted
        (1, "", "flux-submit: ERROR: Unsatisfiable request: requested 64 cores", False),
        (1, "", "[Errno 38] No service matching job-ingest.submit is registered", True),
        (1, "", "", True),  # ended without a word mid-shutdown (CI, stop 12)
        (-9, "", "", True),  # killed by a signal
        (-15, "", "flux-submit: ERROR: Unsatisfiable request", True),  # killed: no verdict
        (0, "", "", True),  # exit 0 and no id: whether it acted is unknown: look it up
    ],
)
def test_a_submit_without_an_answer_is_unavailable_not_refused(
    code: int, out: str, err: str, unanswered: bool
) -> None:
    assert flux_scheduler.submit_unanswered(code, out, err) is unanswered


@pytest.mark.parametrize(
    ("stderr", "down"),
    [  # what slurm 22.05's commands printed with slurmctld stopped, and two refusals
        (
            "sbatch: error: Batch job submission failed: Unable to contact slurm controller"
            " (connect failure)",
            True,
        ),
        ("slurm_load_jobs error: Unable to contact slurm controller (connect failure)", True),
        ("sbatch: error: Batch job submission failed: Invalid partition name specified", False),
        ("sbatch: error: invalid environment variable name", False),
    ],
)
def test_slurm_errors_tell_down_from_refused(stderr: str, down: bool) -> None:
    assert controller_down(stderr) is down
