"""Every object the operator writes runs on a rootless (Usernetes-style) cluster.

No hostPath, no privileged container, no host network/PID/IPC, no host ports, no added
capabilities, non-root pods; the server's root filesystem is read-only. Checked on the built
manifests of every StreamModel variant and of the ``kubernetes`` scheduler's Jobs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamml.operator import builders
from streamml.operator.builders import Owner
from streamml.sweep.schedulers import JobRequest
from streamml.sweep.schedulers.kubernetes import input_config_map, input_files, job_manifest
from streamml.vocabulary.streammodel import StreamModelSpec

ROOT = Path(__file__).parents[2]
OWNER = Owner(name="lammps-time", namespace="science", uid="1234-uid")
SAMPLE = yaml.safe_load((ROOT / "config" / "samples" / "streammodel.yaml").read_text())["spec"]
VARIANTS: dict[str, dict[str, Any]] = {
    "sample": SAMPLE,
    "defaults": {},
    "retain": {"server": {"storage": {"reclaimPolicy": "Retain"}}},
    "ephemeral": {"server": {"storage": {"type": "Ephemeral"}}},
    "tls-ingress": {"ingress": {"enabled": True, "host": "a.example.org", "tlsSecretName": "c"}},
    "referenced-secret": {"server": {"auth": {"secretName": "mine"}}},
}
HOST_KEYS = ("hostPath", "hostNetwork", "hostPID", "hostIPC", "hostPort", "hostUsers")


def streammodel_objects(raw: dict[str, Any]) -> list[dict[str, Any]]:
    spec = StreamModelSpec.model_validate(raw)
    found = [
        builders.secret(OWNER, spec, "tok"),
        builders.pvc(OWNER, spec),
        builders.deployment(OWNER, spec, "img:1"),
        builders.service(OWNER, spec),
        builders.ingress(OWNER, spec),
    ]
    return [obj for obj in found if obj is not None]


def job_objects() -> list[dict[str, Any]]:
    job = JobRequest(name="sw-t0001", command=["streamml", "run-lammps"], env={}, cpus=1)
    files = {"in.lj": b"units lj\n", "data.bin": b"\xff\x00"}
    _, items = input_files(files)
    return [
        job_manifest(job, namespace="ns", image="lammps:1"),
        job_manifest(job, namespace="ns", image="lammps:1", input_items=items),
        input_config_map("sw-t0001", "ns", files, "job-uid"),
    ]


def walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield f"{path}.{key}", value
            yield from walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{path}[{i}]")


def pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    if obj["kind"] in ("Deployment", "Job"):
        return dict(obj["spec"]["template"]["spec"])
    return None


def check_rootless(obj: dict[str, Any]) -> None:
    for path, value in walk(obj):
        key = path.rsplit(".", 1)[-1]
        assert key not in HOST_KEYS or value in (False, None), f"{obj['kind']}{path}"
        assert not (key == "privileged" and value), f"{obj['kind']}{path}"
        assert key != "add", f"{obj['kind']}{path}: capabilities added"
        assert not (key == "type" and value == "Unconfined"), f"{obj['kind']}{path}"
    pod = pod_spec(obj)
    if pod is None:
        return
    assert pod["securityContext"]["runAsNonRoot"] is True, obj["kind"]
    assert pod["securityContext"]["runAsUser"] > 0, obj["kind"]
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False, obj["kind"]
    for container in pod["containers"]:
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False, obj["kind"]
        assert sc["capabilities"] == {"drop": ["ALL"]}, obj["kind"]
    volume_kinds = {k for v in pod.get("volumes", []) for k in v if k != "name"}
    assert volume_kinds <= {"persistentVolumeClaim", "emptyDir", "secret", "configMap"}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_streammodel_objects_need_no_host_access(variant: str) -> None:
    objects = streammodel_objects(VARIANTS[variant])
    assert {"Secret", "Deployment", "Service"} <= {o["kind"] for o in objects}
    for obj in objects:
        check_rootless(obj)
    [deployment] = [o for o in objects if o["kind"] == "Deployment"]
    [server] = deployment["spec"]["template"]["spec"]["containers"]
    assert server["securityContext"]["readOnlyRootFilesystem"] is True
    assert server["securityContext"]["runAsNonRoot"] is True
    # every path the server writes is a volume, never the image's root filesystem
    mounts = {m["mountPath"] for m in server["volumeMounts"] if not m.get("readOnly")}
    assert mounts == {builders.DATA_DIR, "/tmp"}


def test_kubernetes_scheduler_jobs_need_no_host_access() -> None:
    objects = job_objects()
    for obj in objects:
        check_rootless(obj)
    assert {o["kind"] for o in objects} == {"Job", "ConfigMap"}


def test_check_catches_each_forbidden_setting() -> None:
    """The checker is not vacuous: each forbidden setting on a built Deployment fails it."""
    breaks = [
        lambda pod: pod.update(hostNetwork=True),
        lambda pod: pod.update(hostPID=True),
        lambda pod: pod["volumes"].append({"name": "h", "hostPath": {"path": "/"}}),
        lambda pod: pod["containers"][0]["securityContext"].update(privileged=True),
        lambda pod: pod["containers"][0]["securityContext"]["capabilities"].update(add=["X"]),
        lambda pod: pod["securityContext"].update(runAsNonRoot=False),
        lambda pod: pod["containers"][0]["ports"][0].update(hostPort=80),
    ]
    for corrupt in breaks:
        deployment = builders.deployment(OWNER, StreamModelSpec(), "img")
        corrupt(deployment["spec"]["template"]["spec"])
        with pytest.raises(AssertionError):
            check_rootless(deployment)


def test_status_address_is_the_service_dns_url_without_an_ingress() -> None:
    """Jobs post to ``status.address``: the Service's DNS name and port, never an IP."""
    spec = StreamModelSpec.model_validate({"service": {"port": 8000}})
    assert spec.ingress.enabled is False and builders.ingress_url(spec, None) is None
    assert builders.service_address(OWNER, spec) == "http://lammps-time.science.svc:8000"
    [port] = builders.service(OWNER, spec)["spec"]["ports"]
    assert port["port"] == 8000 and port["targetPort"] == "http"
