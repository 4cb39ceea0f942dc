"""Kubernetes: one ``batch/v1`` Job per trial running a LAMMPS image.

The job id is the Job's name (the trial name, DNS-label safe), so :meth:`lookup` is a read by
name. The job's result document travels in the container's termination message (the job runs
``streamml run-lammps --result-file /dev/termination-log``) and comes back in
:attr:`JobStatus.output`. Cancel suspends the Job (Kubernetes ends its Pods) and marks it with an
annotation, so a restarted driver still sees it as cancelled. :func:`job_manifest` is pure.

The blocking kubernetes client runs in worker threads (``asyncio.to_thread``).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from streamml.errors import SchedulerError
from streamml.sweep.schedulers.base import JobRequest, JobState, JobStatus

CANCELLED_ANNOTATION = "streamml.io/cancelled"
MANAGED_BY = {"app.kubernetes.io/managed-by": "streamml"}
#: where a trial's input snapshot is mounted (read-only) and where the trial runs (writable)
INPUT_MOUNT = "/streamml/input"
WORK_MOUNT = "/streamml/work"
#: the trial runs as this non-root user (the model server's uid)
JOB_UID = 10001


def input_files(files: Mapping[str, bytes]) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """(ConfigMap data/binaryData, volume items) for a snapshot: keys ``f0..``, paths kept."""
    data: dict[str, str] = {}
    binary: dict[str, str] = {}
    items: list[dict[str, str]] = []
    for i, (name, content) in enumerate(sorted(files.items())):
        key = f"f{i}"
        try:
            data[key] = content.decode("utf-8")
        except UnicodeDecodeError:
            binary[key] = base64.b64encode(content).decode()
        items.append({"key": key, "path": name})
    body: dict[str, Any] = {"data": data}
    if binary:
        body["binaryData"] = binary
    return body, items


def input_config_map(
    name: str, namespace: str, files: Mapping[str, bytes], owner_uid: str | None
) -> dict[str, Any]:
    """The ConfigMap carrying one trial's input snapshot, owned by (and deleted with) its Job."""
    body, _ = input_files(files)
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(MANAGED_BY)}
    if owner_uid:
        metadata["ownerReferences"] = [
            {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": owner_uid}
        ]
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, **body}


def job_manifest(
    job: JobRequest,
    *,
    namespace: str,
    image: str,
    service_account: str | None = None,
    ttl_seconds_after_finished: int = 3600,
    input_items: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """The Job for one trial: no retries (the sweep retries), no API token mounted.

    With ``input_items`` the Pod mounts the ConfigMap named like the Job (the trial's input
    snapshot) at :data:`INPUT_MOUNT` and runs in an empty writable :data:`WORK_MOUNT`;
    ``run-lammps`` copies the one into the other (``STREAMML_INPUT_DIR``).

    One manifest as one literal (a pure builder; longer than ~60 lines on purpose: split, the
    Job would no longer read as the YAML it becomes).
    """
    container: dict[str, Any] = {
        "name": "trial",
        "image": image,
        "command": list(job.command),
        "env": [{"name": k, "value": v} for k, v in job.env.items()],
        "resources": {"requests": {"cpu": str(job.cpus)}, "limits": {"cpu": str(job.cpus)}},
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    if job.workdir is not None:
        container["workingDir"] = str(job.workdir)
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        # non-root whatever the image says (the Usernetes / "restricted" pod security profile)
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": JOB_UID,
            "runAsGroup": JOB_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
    }
    if input_items is not None:
        container["env"].append({"name": "STREAMML_INPUT_DIR", "value": INPUT_MOUNT})
        container["workingDir"] = WORK_MOUNT
        container["volumeMounts"] = [
            {"name": "input", "mountPath": INPUT_MOUNT, "readOnly": True},
            {"name": "work", "mountPath": WORK_MOUNT},
        ]
        pod_spec["volumes"] = [
            {"name": "input", "configMap": {"name": job.name, "items": input_items}},
            {"name": "work", "emptyDir": {}},
        ]
    if service_account:
        pod_spec["serviceAccountName"] = service_account
    spec: dict[str, Any] = {
        "backoffLimit": 0,
        "ttlSecondsAfterFinished": ttl_seconds_after_finished,
        "template": {
            "metadata": {"labels": {**MANAGED_BY, "streamml.io/trial": job.name}},
            "spec": pod_spec,
        },
    }
    if job.time_limit_s is not None:
        spec["activeDeadlineSeconds"] = job.time_limit_s
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job.name,
            "namespace": namespace,
            "labels": {**MANAGED_BY, "streamml.io/trial": job.name},
        },
        "spec": spec,
    }


def job_status(job: dict[str, Any], pods: Sequence[dict[str, Any]]) -> JobStatus:
    """Map a Job (and its Pods, for the termination message and reason) to a JobStatus."""
    annotations = (job.get("metadata") or {}).get("annotations") or {}
    status = job.get("status") or {}
    terminated = _terminated(pods)
    output = terminated.get("message") if terminated else None
    exit_code = terminated.get("exitCode") if terminated else None
    if annotations.get(CANCELLED_ANNOTATION) == "true":
        return JobStatus(JobState.CANCELLED, reason="cancelled", exit_code=exit_code, output=output)
    for condition in status.get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            return JobStatus(JobState.SUCCEEDED, exit_code=exit_code or 0, output=output)
        if condition.get("type") == "Failed":
            parts = [str(condition.get("reason") or "Failed")]
            if terminated and terminated.get("reason"):
                parts.append(str(terminated["reason"]))  # e.g. OOMKilled, Error
            if condition.get("message"):
                parts.append(str(condition["message"]))
            detail = _output_error(output)
            if detail:
                parts.append(detail)
            reason = ": ".join(p for p in parts if p)
            return JobStatus(JobState.FAILED, reason=reason, exit_code=exit_code, output=output)
    if status.get("active"):
        return JobStatus(JobState.RUNNING)
    return JobStatus(JobState.PENDING)


def _output_error(output: str | None) -> str | None:
    """The failure's own words from the termination message: the result document's ``error``
    (run-lammps writes LAMMPS' ERROR line there), else the message's last line."""
    if not output or not output.strip():
        return None
    try:
        document = json.loads(output)
    except ValueError:
        return output.strip().splitlines()[-1][:300]
    if isinstance(document, dict) and document.get("error"):
        return str(document["error"])[:300]
    return None


def _terminated(pods: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    for pod in pods:
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (container.get("state") or {}).get("terminated")
            if terminated:
                return dict(terminated)
    return None


class KubernetesScheduler:
    name = "kubernetes"

    def __init__(
        self,
        *,
        namespace: str = "default",
        image: str | None = None,
        kubeconfig: str | None = None,
        service_account: str | None = None,
        ttl_seconds_after_finished: int = 3600,
    ) -> None:
        self.namespace = namespace
        self.image = image
        self.service_account = service_account
        self.ttl = ttl_seconds_after_finished
        self._kubeconfig = kubeconfig
        self._api: Any = None

    def _client(self) -> Any:
        if self._api is None:
            from kubernetes import client, config

            api_client = (
                config.new_client_from_config(config_file=self._kubeconfig)  # type: ignore[no-untyped-call]
                if self._kubeconfig
                else _in_cluster(client, config)
            )
            self._api = (client.BatchV1Api(api_client), client.CoreV1Api(api_client), api_client)
        return self._api

    async def submit(self, job: JobRequest) -> str:
        image = job.image or self.image
        if not image:
            raise SchedulerError("the kubernetes scheduler needs an image (settings 'image')")
        if not job.command:
            raise SchedulerError(f"job {job.name!r} has an empty command")
        files = await asyncio.to_thread(_snapshot, job.input_dir) if job.input_dir else None
        manifest = job_manifest(
            job,
            namespace=self.namespace,
            image=image,
            service_account=self.service_account,
            ttl_seconds_after_finished=self.ttl,
            input_items=input_files(files)[1] if files is not None else None,
        )
        batch, core, _ = self._client()
        try:
            created = await asyncio.to_thread(batch.create_namespaced_job, self.namespace, manifest)
        except Exception as exc:
            raise SchedulerError(f"cannot create Job {job.name!r}: {_api_reason(exc)}") from exc
        if files is not None:
            uid = getattr(getattr(created, "metadata", None), "uid", None)
            config_map = input_config_map(job.name, self.namespace, files, uid)
            try:
                await asyncio.to_thread(
                    core.create_namespaced_config_map, self.namespace, config_map
                )
            except Exception as exc:
                await self.cancel(job.name)  # its Pod would wait for the volume forever
                raise SchedulerError(
                    f"cannot create the input ConfigMap of Job {job.name!r}: {_api_reason(exc)}"
                ) from exc
        return job.name

    async def _read(self, job_id: str) -> JobStatus:
        batch, core, api_client = self._client()
        try:
            job = await asyncio.to_thread(batch.read_namespaced_job, job_id, self.namespace)
        except Exception as exc:
            if getattr(exc, "status", None) == 404:
                return JobStatus(JobState.UNKNOWN, reason="no such Job")
            raise SchedulerError(f"cannot read Job {job_id!r}: {_api_reason(exc)}") from exc
        pods = await asyncio.to_thread(
            core.list_namespaced_pod, self.namespace, label_selector=f"job-name={job_id}"
        )
        return job_status(
            api_client.sanitize_for_serialization(job),
            [api_client.sanitize_for_serialization(p) for p in pods.items],
        )

    async def poll(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        statuses = await asyncio.gather(*(self._read(job_id) for job_id in job_ids))
        return dict(zip(job_ids, statuses, strict=True))

    async def lookup(self, name: str) -> str | None:
        status = await self._read(name)
        return None if status.state is JobState.UNKNOWN else name

    async def cancel(self, job_id: str) -> None:
        batch = self._client()[0]
        patch = {
            "metadata": {"annotations": {CANCELLED_ANNOTATION: "true"}},
            "spec": {"suspend": True},  # the Job controller ends its Pods; the record stays
        }
        try:
            await asyncio.to_thread(batch.patch_namespaced_job, job_id, self.namespace, patch)
        except Exception as exc:
            if getattr(exc, "status", None) == 404:
                return
            raise SchedulerError(f"cannot cancel Job {job_id!r}: {_api_reason(exc)}") from exc

    async def close(self) -> None:
        if self._api is not None:
            await asyncio.to_thread(self._api[2].close)
            self._api = None


def _snapshot(directory: Path) -> dict[str, bytes]:
    """The files of an input snapshot (bounded when the driver prepared it)."""
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def _in_cluster(client: Any, config: Any) -> Any:
    """In a Pod: its ServiceAccount. Elsewhere (an operator run locally): $KUBECONFIG."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        return config.new_client_from_config()
    return client.ApiClient()


def _api_reason(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, str | bytes) and body:
        try:
            return str(json.loads(body).get("message") or body)
        except ValueError:
            return str(body)[:300]
    return str(exc)
