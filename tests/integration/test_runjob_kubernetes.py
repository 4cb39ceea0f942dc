"""The ``kubernetes`` backend against the real control plane (kube-apiserver + etcd).

The test cluster runs neither a Job controller nor a kubelet, so this test plays both: it creates
the Pod from the Job's template as the Job controller would, runs that container's command for
real (``streamml run-lammps`` on the real ``lmp``, teaching a real model server), writes the Pod's
status as a kubelet would (exit code, termination message = the result document) and the Job's
conditions as the Job controller would. The backend must report the outcome with the result and
the failure's own words; everything it reads comes from the real API server.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from streamml.client.api import ModelServerClient
from streamml.errors import SchedulerError
from streamml.pycommand import streamml_command
from streamml.sweep.schedulers import JobRequest, JobState, make_scheduler
from streamml.sweep.schedulers.kubernetes import KubernetesScheduler
from streamml.testbed.controlplane import ControlPlane
from streamml.vocabulary.modelspec import ModelSpec
from tests.fixtures.server import ServerProcess
from tests.integration import scheduler_cases as cases

pytestmark = [pytest.mark.integration, pytest.mark.controlplane]

IMAGE = "registry.invalid/streamml-lammps:test"  # never pulled: nothing runs Pods here


@pytest.fixture
def server(model_server: ServerProcess) -> ServerProcess:
    return model_server


@pytest.fixture
async def scheduler(
    control_plane: ControlPlane, k8s_namespace: str
) -> AsyncIterator[KubernetesScheduler]:
    made = make_scheduler(
        "kubernetes",
        {"namespace": k8s_namespace, "image": IMAGE, "kubeconfig": str(control_plane.kubeconfig)},
    )
    assert isinstance(made, KubernetesScheduler)
    yield made
    await made.close()


def start_pod(cp: ControlPlane, namespace: str, job_name: str) -> dict[str, Any]:
    """The Job controller's part: one Pod from the Job's template, labelled job-name=<job>."""
    job = json.loads(cp.kubectl("get", "job", job_name, "-n", namespace, "-o", "json").stdout)
    template = job["spec"]["template"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{job_name}-pod",
            "namespace": namespace,
            "labels": {**template["metadata"]["labels"], "job-name": job_name},
        },
        "spec": template["spec"],
    }
    cp.kubectl("apply", "-f", "-", input=json.dumps(pod))
    now = _now()
    status = {"startTime": now, "active": 1}
    cp.kubectl("patch", "job", job_name, "-n", namespace, "--subresource=status",
               "--type=merge", "-p", json.dumps({"status": status}))  # fmt: skip
    return dict(json.loads(cp.kubectl("get", "pod", pod["metadata"]["name"], "-n", namespace,
                                      "-o", "json").stdout))  # fmt: skip


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def mount_volumes(
    cp: ControlPlane, namespace: str, pod: dict[str, Any], tmp: Path
) -> dict[str, str]:
    """The kubelet's volumes, here: a ConfigMap's items as files, an emptyDir as an empty dir.
    Returns mount path -> the local directory standing in for it."""
    volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
    mounts: dict[str, str] = {}
    for mount in pod["spec"]["containers"][0].get("volumeMounts", []):
        local = tmp / f"{pod['metadata']['name']}-{mount['name']}"
        local.mkdir(parents=True)
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            cm = json.loads(cp.kubectl("get", "configmap", volume["configMap"]["name"], "-n",
                                       namespace, "-o", "json").stdout)  # fmt: skip
            for item in volume["configMap"]["items"]:
                target = local / item["path"]
                target.parent.mkdir(parents=True, exist_ok=True)
                if item["key"] in (cm.get("data") or {}):
                    target.write_text(cm["data"][item["key"]])
                else:
                    target.write_bytes(base64.b64decode(cm["binaryData"][item["key"]]))
        mounts[mount["mountPath"]] = str(local)
    return mounts


def play_kubelet(cp: ControlPlane, namespace: str, pod: dict[str, Any], tmp: Path) -> int:
    """Run the Pod's container command here and report it as the kubelet would."""
    container = pod["spec"]["containers"][0]
    mounts = mount_volumes(cp, namespace, pod, tmp)
    env = {**os.environ, **{e["name"]: mounts.get(e["value"], e["value"])
                            for e in container.get("env", [])}}  # fmt: skip
    result = tmp / f"{pod['metadata']['name']}.termination-log"
    env["STREAMML_RESULT_FILE"] = str(result)  # stands in for /dev/termination-log
    cwd = mounts.get(container.get("workingDir", ""), None)
    proc = subprocess.run(container["command"], env=env, capture_output=True, timeout=300,
                          cwd=cwd)  # fmt: skip
    message = result.read_text() if result.exists() else proc.stderr.decode()[-2000:]
    reason = "Completed" if proc.returncode == 0 else "Error"
    terminated = {"exitCode": proc.returncode, "reason": reason, "message": message,
                  "startedAt": _now(), "finishedAt": _now()}  # fmt: skip
    status = {
        "phase": "Succeeded" if proc.returncode == 0 else "Failed",
        "containerStatuses": [{"name": container["name"], "image": container["image"],
                               "imageID": "", "ready": False, "restartCount": 0,
                               "state": {"terminated": terminated}}],
    }  # fmt: skip
    cp.kubectl("patch", "pod", pod["metadata"]["name"], "-n", namespace, "--subresource=status",
               "--type=merge", "-p", json.dumps({"status": status}))  # fmt: skip
    return proc.returncode


def finish_job(cp: ControlPlane, namespace: str, job_name: str, succeeded: bool) -> None:
    """The Job controller's verdict, with the conditions the API server requires."""
    now = _now()
    if succeeded:
        conditions = [
            {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached",
             "lastTransitionTime": now, "lastProbeTime": now},
            {"type": "Complete", "status": "True", "reason": "CompletionsReached",
             "lastTransitionTime": now, "lastProbeTime": now},
        ]  # fmt: skip
        status = {"active": 0, "succeeded": 1, "completionTime": now, "conditions": conditions}
    else:
        message = "Job has reached the specified backoff limit"
        conditions = [
            {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded",
             "message": message, "lastTransitionTime": now, "lastProbeTime": now},
            {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
             "message": message, "lastTransitionTime": now, "lastProbeTime": now},
        ]  # fmt: skip
        status = {"active": 0, "failed": 1, "conditions": conditions}
    cp.kubectl("patch", "job", job_name, "-n", namespace, "--subresource=status",
               "--type=merge", "-p", json.dumps({"status": status}))  # fmt: skip


def trial(name: str, server: ServerProcess, *variables: str) -> JobRequest:
    command = [*streamml_command(), "run-lammps", "--server", server.url,
               "--trial-id", name]  # fmt: skip
    for variable in variables:
        command += ["--var", variable]
    env = {
        "STREAMML_USERNAME": str(server.username),
        "STREAMML_TOKEN": str(server.token),
        "STREAMML_RESULT_FILE": "/dev/termination-log",
    }
    return JobRequest(name=name, command=command, env=env, time_limit_s=600)


@pytest.mark.lammps
async def test_trial_through_a_job(
    scheduler: KubernetesScheduler,
    control_plane: ControlPlane,
    k8s_namespace: str,
    server: ServerProcess,
    tmp_path: Path,
    lammps_bin: str,
) -> None:
    async with ModelServerClient(server.url, username=server.username, token=server.token) as c:
        await c.create_model(ModelSpec.model_validate(cases.LINEAR))
        job_id = await scheduler.submit(trial("sw-t0001", server, "nx=4", "ny=4", "nz=4"))
        assert job_id == "sw-t0001" and await scheduler.lookup("sw-t0001") == job_id
        with pytest.raises(SchedulerError, match="already exists"):
            await scheduler.submit(trial("sw-t0001", server, "nx=4"))
        before = (await scheduler.poll([job_id]))[job_id]
        assert before.state in (JobState.PENDING, JobState.RUNNING)

        pod = await asyncio.to_thread(start_pod, control_plane, k8s_namespace, job_id)
        assert pod["spec"]["automountServiceAccountToken"] is False
        assert (await scheduler.poll([job_id]))[job_id].state is JobState.RUNNING
        code = await asyncio.to_thread(play_kubelet, control_plane, k8s_namespace, pod, tmp_path)
        assert code == 0
        await asyncio.to_thread(finish_job, control_plane, k8s_namespace, job_id, True)
        status, _ = await cases.wait_finished(scheduler, job_id, timeout_s=120)
        assert status.state is JobState.SUCCEEDED and status.exit_code == 0
        assert status.output is not None
        document = json.loads(status.output)
        assert document["delivered"] is True and document["metrics"]["atoms"] == 256
        assert (await c.stats("linear")).learn.n_calls == 1

    bad = await scheduler.submit(trial("sw-t0002", server, "nx=3.3", "ny=4", "nz=4", "steps=50"))
    pod = await asyncio.to_thread(start_pod, control_plane, k8s_namespace, bad)
    assert await asyncio.to_thread(play_kubelet, control_plane, k8s_namespace, pod, tmp_path) == 1
    await asyncio.to_thread(finish_job, control_plane, k8s_namespace, bad, False)
    status, _ = await cases.wait_finished(scheduler, bad, timeout_s=120)
    assert status.state is JobState.FAILED and status.exit_code == 1
    assert status.reason is not None and "LammpsError: Lost atoms" in status.reason, status.reason


async def test_cancel_unknown_and_refusals(
    scheduler: KubernetesScheduler, control_plane: ControlPlane, k8s_namespace: str
) -> None:
    job_id = await scheduler.submit(JobRequest(name="sleepy", command=["sleep", "300"]))
    await asyncio.to_thread(start_pod, control_plane, k8s_namespace, job_id)
    assert (await scheduler.poll([job_id]))[job_id].state is JobState.RUNNING
    await scheduler.cancel(job_id)
    assert (await scheduler.poll([job_id]))[job_id].state is JobState.CANCELLED
    job = json.loads(control_plane.kubectl("get", "job", job_id, "-n", k8s_namespace,
                                           "-o", "json").stdout)  # fmt: skip
    assert job["spec"]["suspend"] is True  # a Job controller ends a suspended Job's Pods
    await scheduler.cancel(job_id)
    await scheduler.cancel("never-existed")
    statuses = await scheduler.poll(["never-existed"])
    assert statuses["never-existed"].state is JobState.UNKNOWN
    assert await scheduler.lookup("never-existed") is None
    with pytest.raises(SchedulerError, match="cannot create Job 'Not_A_DNS_Name'"):
        await scheduler.submit(JobRequest(name="Not_A_DNS_Name", command=["true"]))
    with pytest.raises(SchedulerError, match="empty command"):
        await scheduler.submit(JobRequest(name="empty", command=[]))


async def test_least_privilege_identity_is_refused(
    control_plane: ControlPlane, k8s_namespace: str
) -> None:
    """A caller without RBAC rights on Jobs gets the API server's own refusal as the reason."""
    nobody = control_plane.user_kubeconfig("nobody")
    scheduler = make_scheduler(
        "kubernetes", {"namespace": k8s_namespace, "image": IMAGE, "kubeconfig": str(nobody)}
    )
    try:
        with pytest.raises(SchedulerError, match="forbidden"):
            await scheduler.submit(JobRequest(name="x", command=["true"]))
    finally:
        await scheduler.close()


@pytest.mark.lammps
async def test_trial_with_input_files_through_a_job(
    scheduler: KubernetesScheduler,
    control_plane: ControlPlane,
    k8s_namespace: str,
    server: ServerProcess,
    tmp_path: Path,
    lammps_bin: str,
) -> None:
    """The trial's input directory (a script, its data file and potential) travels as a
    ConfigMap owned by the Job, mounted read-only and copied into a writable run directory."""
    snapshot = tmp_path / "input"
    shutil.copytree(Path(__file__).resolve().parents[1] / "fixtures" / "lj_data", snapshot)
    (snapshot / "blob.bin").write_bytes(bytes(range(256)))  # binary files survive too
    async with ModelServerClient(server.url, username=server.username, token=server.token) as c:
        await c.create_model(ModelSpec.model_validate(cases.LINEAR))
        request = trial("sw-data", server, "nx=2", "ny=1", "nz=1", "steps=20")
        request = JobRequest(name=request.name, command=[*request.command, "--input",
                             "in.lj-data"], env=request.env, input_dir=snapshot)  # fmt: skip
        job_id = await scheduler.submit(request)
        job = json.loads(control_plane.kubectl("get", "job", job_id, "-n", k8s_namespace,
                                               "-o", "json").stdout)  # fmt: skip
        cm = json.loads(control_plane.kubectl("get", "configmap", job_id, "-n", k8s_namespace,
                                              "-o", "json").stdout)  # fmt: skip
        owner = cm["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["uid"]) == ("Job", job["metadata"]["uid"])
        assert len(cm["data"]) == 3 and len(cm["binaryData"]) == 1

        pod = await asyncio.to_thread(start_pod, control_plane, k8s_namespace, job_id)
        mounts = {m["mountPath"]: m for m in pod["spec"]["containers"][0]["volumeMounts"]}
        assert mounts["/streamml/input"]["readOnly"] is True
        code = await asyncio.to_thread(play_kubelet, control_plane, k8s_namespace, pod, tmp_path)
        assert code == 0
        await asyncio.to_thread(finish_job, control_plane, k8s_namespace, job_id, True)
        status, _ = await cases.wait_finished(scheduler, job_id, timeout_s=120)
        assert status.state is JobState.SUCCEEDED and status.output is not None
        document = json.loads(status.output)
        assert document["delivered"] is True and document["metrics"]["atoms"] == 64
        assert (await c.stats("linear")).learn.n_calls == 1


async def test_the_operators_role_may_carry_a_trials_inputs(
    control_plane: ControlPlane, k8s_namespace: str, tmp_path: Path
) -> None:
    """With the operator's own ClusterRole (config/rbac/role.yaml), not admin, a trial's Job and
    its input ConfigMap are created (the old role could only read ConfigMaps)."""
    import yaml

    cp, ns = control_plane, k8s_namespace
    role = yaml.safe_load((Path(__file__).parents[2] / "config/rbac/role.yaml").read_text())
    role["metadata"]["name"] = f"streamml-operator-{ns}"
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": role["metadata"]["name"]},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": role["metadata"]["name"]},
        "subjects": [{"kind": "ServiceAccount", "name": "streamml-operator", "namespace": ns}],
    }  # fmt: skip
    cp.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                     "items": [role, binding]}))  # fmt: skip
    snapshot = tmp_path / "input"
    snapshot.mkdir()
    (snapshot / "in.x").write_text("read_data data.x\n")
    (snapshot / "data.x").write_text("1\n")
    scheduler = make_scheduler("kubernetes", {
        "namespace": ns, "image": IMAGE,
        "kubeconfig": str(cp.service_account_kubeconfig(ns, "streamml-operator")),
    })  # fmt: skip
    try:
        job_id = await scheduler.submit(
            JobRequest(name="rbac-inputs", command=["true"], input_dir=snapshot)
        )
        cm = json.loads(cp.kubectl("get", "configmap", job_id, "-n", ns, "-o", "json").stdout)
        assert sorted(cm["data"].values()) == ["1\n", "read_data data.x\n"]
    finally:
        await scheduler.close()
        cp.kubectl("delete", "clusterrolebinding", binding["metadata"]["name"], check=False)
        cp.kubectl("delete", "clusterrole", role["metadata"]["name"], check=False)
