"""End to end on a real node: the operator runs as a pod from its image (``kubectl apply -k
config/``, its ServiceAccount and RBAC), a StreamModel's server pod serves from the server image,
and the prototype's riverapi snippet runs unchanged against ``status.url`` through the ingress
controller.

The node lives in its own network namespace with no route out; ``status.url`` is the Ingress
address Traefik publishes (the node's address), so the snippet runs inside that namespace, as
``docs/node.md`` says host clients do (``nsenter --net``), never over a route from the host.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamml import procs
from streamml.testbed import nodeflags, nodehost
from streamml.testbed.imagebuild import IMAGE_NAMES, ensure_images, load_images
from streamml.testbed.node import NodeCluster
from streamml.testbed.waiting import wait_for
from tests.integration.test_server_riverapi import (
    DECLARATIVE,
    JOB_SNIPPET,
    assert_prototype_predictions,
    predictions_by_model,
)

pytestmark = [pytest.mark.integration, pytest.mark.node, pytest.mark.images,
              pytest.mark.timeout(1800)]  # fmt: skip

ROOT = Path(__file__).resolve().parents[2]
OPERATOR_NS = "streamml-system"


def get_json(node: NodeCluster, *args: str) -> dict[str, Any]:
    out = node.kubectl("get", *args, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else {}


@pytest.fixture(scope="module")
def operator_pod(node_cluster: NodeCluster) -> Iterator[NodeCluster]:
    """The images in the node's containerd and the operator applied from ``config/``."""
    if not node_cluster.with_ingress:
        pytest.skip("Traefik not built: streamml cluster build --node")
    images = ensure_images(IMAGE_NAMES)  # cached by `make images` (rebuilt on a source change)
    load_images(images.values(), node_cluster.containerd_socket)
    node_cluster.kubectl("apply", "-k", str(ROOT / "config"))

    def available() -> bool:
        dep = get_json(node_cluster, "deployment", "streamml-operator", "-n", OPERATOR_NS)
        return bool(dep) and dep.get("status", {}).get("availableReplicas") == 1

    wait_for("the operator pod", available)
    yield node_cluster
    node_cluster.kubectl("delete", "-k", str(ROOT / "config"), "--wait=false", check=False)


def test_the_operator_runs_as_a_pod_under_its_own_service_account(
    operator_pod: NodeCluster,
) -> None:
    pods = get_json(operator_pod, "pods", "-n", OPERATOR_NS)["items"]
    assert len(pods) == 1
    pod = pods[0]
    assert pod["spec"]["serviceAccountName"] == "streamml-operator"
    container = pod["spec"]["containers"][0]
    assert container["image"] == "lammps-stream-ml/operator:0.1.0"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["status"]["containerStatuses"][0]["ready"] is True

    def holder() -> list[str]:  # the one active operator holds the Lease, under its pod's name
        leases = get_json(operator_pod, "leases", "-n", OPERATOR_NS).get("items", [])
        return [lease["spec"].get("holderIdentity") for lease in leases]

    assert pod["metadata"]["name"] in wait_for("the operator to take its Lease", holder)
    # least privilege: what its ServiceAccount may and may not do
    sa = f"system:serviceaccount:{OPERATOR_NS}:streamml-operator"

    def can(*args: str) -> bool:
        out = operator_pod.kubectl("auth", "can-i", *args, f"--as={sa}", check=False)
        return out.stdout.strip() == "yes"

    assert can("create", "deployments", "-n", "anywhere")
    assert can("patch", "streammodels.streamml.io", "-n", "anywhere")
    assert not can("delete", "nodes")
    assert not can("create", "pods/exec", "-n", "kube-system")
    assert not can("create", "clusterrolebindings")


def run_in_node_netns(snippet: str, env: dict[str, str], cwd: Path) -> str:
    """A Python client inside the node's network namespace (the only way in but the relays)."""
    result = procs.run(
        ["nsenter", f"--net=/run/netns/{nodehost.NETNS}", sys.executable, "-P", "-c", snippet],
        capture_output=True, text=True, env=env, cwd=cwd, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def streammodel(name: str) -> dict[str, Any]:
    """The prototype's three models; an Ingress without a host (riverapi sends no Host)."""
    return {
        "apiVersion": "streamml.io/v1alpha1",
        "kind": "StreamModel",
        "metadata": {"name": name},
        "spec": {
            "models": [
                {"name": model, "flavor": "regression", "pipeline": pipeline}
                for model, pipeline in DECLARATIVE.items()
            ],
            "server": {"storage": {"type": "PersistentVolumeClaim", "size": "1Gi"}},
            "ingress": {"enabled": True, "path": "/"},
        },
    }


def test_streammodel_serves_the_prototype_snippet_through_the_ingress(
    operator_pod: NodeCluster, node_namespace: str, tmp_path: Path
) -> None:
    node, ns = operator_pod, node_namespace
    node.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(streammodel("proto")))

    def ready() -> dict[str, Any] | None:
        status = get_json(node, "streammodel", "proto", "-n", ns).get("status", {})
        conds = {c["type"]: c["status"] for c in status.get("conditions", [])}
        return status if conds.get("Ready") == "True" and status.get("url") else None

    status = wait_for("the StreamModel to be Ready with an ingress URL", ready, timeout=600)
    # the operator created the models through the in-cluster Service, by its DNS name
    assert status["address"] == f"http://proto.{ns}.svc:80"
    assert sorted(m["name"] for m in status["models"]) == sorted(DECLARATIVE)
    url = status["url"]
    assert url == f"http://{nodeflags.NODE_IP}/"  # the address Traefik published, as written
    # the server pod: non-root, read-only root file system, its data on the bound PVC
    pod = get_json(node, "pods", "-n", ns, "-l", "app.kubernetes.io/instance=proto")["items"][0]
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    container = pod["spec"]["containers"][0]
    assert container["image"] == "lammps-stream-ml/server:0.1.0"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    claim = get_json(node, "pvc", "-n", ns)["items"][0]
    assert claim["status"]["phase"] == "Bound"
    # the prototype's snippet, unchanged but for the URL: status.url exactly as written
    secret = get_json(node, "secret", status["authSecretName"], "-n", ns)["data"]
    creds = {key: base64.b64decode(value).decode() for key, value in secret.items()}
    env = {"PATH": "/usr/bin:/bin", "RIVER_ML_USER": creds["username"],
           "RIVER_ML_TOKEN": creds["token"]}  # fmt: skip
    out = run_in_node_netns(JOB_SNIPPET.replace("http://localhost:8080", url), env, tmp_path)
    assert_prototype_predictions(predictions_by_model(out))
    assert creds["token"] not in json.dumps(status)

    def learned() -> bool:  # the operator polls the server's metrics into status
        models = get_json(node, "streammodel", "proto", "-n", ns)["status"]["models"]
        return all(m.get("samples") == 4 for m in models)

    wait_for("the learned samples in status", learned)
    table = node.kubectl("get", "streammodels", "-n", ns).stdout
    print(node.kubectl("get", "pods,svc,ingress,pvc,streammodels", "-n", ns).stdout)
    assert "proto" in table and url in table and "True" in table
    # kubectl delete: garbage collection removes everything it owned
    node.kubectl("delete", "streammodel", "proto", "-n", ns, "--wait=true", timeout=300)

    owned = [("deployment", "proto"), ("service", "proto"), ("ingress", "proto"),
             ("secret", status["authSecretName"]), ("pvc", claim["metadata"]["name"])]  # fmt: skip

    def collected() -> bool:  # kubectl must answer (an error is not "gone")
        left = [
            node.kubectl("get", kind, name, "-n", ns, "--ignore-not-found", "-o", "name").stdout
            for kind, name in owned
        ]
        return not any(out.strip() for out in left)

    wait_for("the StreamModel's objects to be collected", collected)


def test_the_node_namespace_has_no_route_out(node_cluster: NodeCluster) -> None:
    """The node's namespace has no default route: nothing that ran above could leave it."""
    routes = subprocess.run(
        ["ip", "netns", "exec", nodehost.NETNS, "ip", "route", "show", "default"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert routes.strip() == ""


def lammps_sweep(name: str, model: str) -> dict[str, Any]:
    """Six small LJ runs as Kubernetes Jobs from the job image (four teach, two are held out)."""
    return {
        "apiVersion": "streamml.io/v1alpha1",
        "kind": "LammpsSweep",
        "metadata": {"name": name},
        "spec": {
            "streamModelRef": {"name": model},
            "parameters": [
                {"name": axis, "type": "int", "min": 4, "max": 6} for axis in ("nx", "ny", "nz")
            ],
            "sampling": {"method": "latinHypercube", "seed": 7},
            "trials": 4,
            "testTrials": 2,
            "parallelism": 2,
            "maxFailures": 2,
            "lammps": {"command": "lmp", "target": "cpu_time", "vars": {"steps": "20"}},
            "resources": {"cpus": 1, "timeLimitSeconds": 300},
            "scheduler": {"type": "kubernetes", "image": "lammps-stream-ml/lammps:0.1.0"},
        },
    }


def test_a_sweep_runs_real_jobs_that_post_to_the_server_from_inside(
    operator_pod: NodeCluster, node_namespace: str, capsys: pytest.CaptureFixture[str]
) -> None:
    node, ns = operator_pod, node_namespace
    node.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(streammodel("surrogate")))
    sweep = yaml.safe_dump(lammps_sweep("lj", "surrogate"))
    node.kubectl("apply", "-n", ns, "-f", "-", input=sweep)

    def finished() -> dict[str, Any] | None:
        status = get_json(node, "lammpssweep", "lj", "-n", ns).get("status", {})
        return status if status.get("phase") in ("Succeeded", "Failed") else None

    status = wait_for("the sweep to finish", finished, timeout=1200)
    assert status["phase"] == "Succeeded", json.dumps(status)[:3000]
    assert status["succeeded"] == 6 and status["submitted"] == 6 + status["failed"]
    assert {e["model"] for e in status["evaluation"]} == set(DECLARATIVE)
    jobs = get_json(node, "jobs", "-n", ns)["items"]
    assert len(jobs) == status["submitted"]
    assert all(
        j["spec"]["template"]["spec"]["containers"][0]["image"] == "lammps-stream-ml/lammps:0.1.0"
        for j in jobs
    )
    # each training run was learned exactly once, through status.address from inside the cluster
    models = get_json(node, "streammodel", "surrogate", "-n", ns)["status"]

    def learned() -> bool:
        got = get_json(node, "streammodel", "surrogate", "-n", ns)["status"]["models"]
        return all(m.get("samples") == 4 for m in got)

    wait_for("four learned samples per model", learned)
    assert models["address"] == f"http://surrogate.{ns}.svc:80"
    # Into the run's log, past output capture: what the cluster holds once a sweep has run.
    shown = node.kubectl("get", "pods,svc,ingress,streammodels,lammpssweeps", "-A").stdout
    with capsys.disabled():
        print(f"\n>> kubectl get pods,svc,ingress,streammodels,lammpssweeps -A\n{shown}")
    assert re.search(rf"^{ns}\s+lammpssweep\.streamml\.io/lj\s.*Succeeded", shown, re.M), shown


def test_pods_deleted_mid_sweep_lose_no_trial_and_learn_none_twice(
    operator_pod: NodeCluster, node_namespace: str
) -> None:
    """The model server's pod and then the operator's pod are deleted while a sweep runs: the
    Deployments replace them, the PVC keeps every acknowledged learn, the jobs' deliveries retry,
    the new operator (after the Lease) resumes: every trial runs, each training run is learned
    exactly once, no trial is submitted twice."""
    node, ns = operator_pod, node_namespace
    node.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(streammodel("faults")))
    doc = lammps_sweep("lj", "faults")
    doc["spec"].update(trials=10, testTrials=2, maxFailures=6)
    doc["spec"]["lammps"]["vars"] = {"steps": "400"}  # a few seconds each: in flight at a fault
    node.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(doc))

    def sweep_status() -> dict[str, Any]:
        return dict(get_json(node, "lammpssweep", "lj", "-n", ns).get("status", {}))

    wait_for("two trials to succeed", lambda: sweep_status().get("succeeded", 0) >= 2, 900)
    server = get_json(node, "pods", "-n", ns, "-l", "app.kubernetes.io/instance=faults")
    node.kubectl("delete", "pod", "-n", ns, server["items"][0]["metadata"]["name"], "--wait=false")
    wait_for("five trials to succeed", lambda: sweep_status().get("succeeded", 0) >= 5, 900)
    operator = get_json(node, "pods", "-n", OPERATOR_NS)["items"][0]["metadata"]["name"]
    node.kubectl("delete", "pod", "-n", OPERATOR_NS, operator, "--wait=false")
    wait_for("the sweep to finish", lambda: sweep_status().get("phase") in ("Succeeded", "Failed"),
             1200)  # fmt: skip
    status = sweep_status()
    assert status["phase"] == "Succeeded", json.dumps(status)[:3000]
    assert status["succeeded"] == 12
    names = [j["metadata"]["name"] for j in get_json(node, "jobs", "-n", ns)["items"]]
    assert len(names) == len(set(names)) == status["submitted"]  # none submitted twice
    assert sorted(names) == sorted(t["jobName"] for t in status["trials"])

    def learned_once() -> bool:  # each of the 10 training runs, once, kept across the restart
        got = get_json(node, "streammodel", "faults", "-n", ns)["status"]["models"]
        return all(m.get("samples") == 10 for m in got)

    wait_for("ten learned samples per model", learned_once)


KILL_LAMMPS = """
import os, signal
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        argv0 = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\\0")[0]
    except OSError:
        continue
    if argv0.endswith(b"lmp"):
        os.kill(int(pid), signal.SIGKILL)
        print("killed", pid)
"""


def running_job_pods(node: NodeCluster, ns: str) -> list[dict[str, Any]]:
    pods = get_json(node, "pods", "-n", ns, "-l", "streamml.io/trial")["items"]
    return [p for p in pods if p.get("status", {}).get("phase") == "Running"]


def test_an_evicted_and_a_failed_job_pod_are_retried_within_max_failures(
    operator_pod: NodeCluster, node_namespace: str
) -> None:
    """One running job's pod is evicted through the Eviction API (as a drain or the kubelet's
    pressure handling would), another's LAMMPS process is killed in its container: each Job
    fails (backoffLimit 0), the sweep records the failed attempt and retries the trial as a new
    Job, and it succeeds with both failures counted and nothing learned twice."""
    node, ns = operator_pod, node_namespace
    node.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(streammodel("retry")))
    doc = lammps_sweep("lj", "retry")
    doc["spec"].update(trials=3, testTrials=1, parallelism=2, maxFailures=2)
    doc["spec"]["lammps"]["vars"] = {"steps": "40000"}  # tens of seconds: caught running
    node.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(doc))

    evicted = wait_for("a running job pod", lambda: running_job_pods(node, ns), 900)[0]
    name = evicted["metadata"]["name"]
    eviction = {"apiVersion": "policy/v1", "kind": "Eviction",
                "metadata": {"name": name, "namespace": ns}}  # fmt: skip
    node.kubectl("create", "--raw", f"/api/v1/namespaces/{ns}/pods/{name}/eviction",
                 "-f", "-", input=json.dumps(eviction))  # fmt: skip

    def another() -> list[dict[str, Any]]:
        return [p for p in running_job_pods(node, ns) if p["metadata"]["name"] != name]

    def kill_lammps() -> dict[str, Any] | None:
        """SIGKILL to LAMMPS in another running job's container (the job image has python;
        a container that just ended cannot be entered: try the next)."""
        for pod in another():
            out = node.kubectl("exec", "-n", ns, pod["metadata"]["name"], "--", "python", "-c",
                               KILL_LAMMPS, check=False)  # fmt: skip
            if out.returncode == 0 and "killed" in out.stdout:
                return pod
        return None

    killed = wait_for("LAMMPS killed in a second running job", kill_lammps, 900)

    def sweep_status() -> dict[str, Any]:
        return dict(get_json(node, "lammpssweep", "lj", "-n", ns).get("status", {}))

    wait_for("the sweep to finish", lambda: sweep_status().get("phase") in ("Succeeded", "Failed"),
             1500)  # fmt: skip
    status = sweep_status()
    assert status["phase"] == "Succeeded", json.dumps(status)[:3000]
    assert status["succeeded"] == 4 and status["failed"] == 2
    by_job = {t["jobName"]: t for t in status["trials"]}
    for pod in (evicted, killed):
        job = pod["metadata"]["labels"]["job-name"]
        first = by_job[job]
        assert first["state"] == "Failed" and first["attempt"] == 1, first
        retried = [t for t in status["trials"] if t["id"] == first["id"] and t["attempt"] == 2]
        assert [t["state"] for t in retried] == ["Succeeded"], status["trials"]
    jobs = {j["metadata"]["name"] for j in get_json(node, "jobs", "-n", ns)["items"]}
    assert jobs == set(by_job)  # every attempt its own Job, none submitted twice

    def learned_once() -> bool:  # three training runs, each learned once despite the failures
        got = get_json(node, "streammodel", "retry", "-n", ns)["status"]["models"]
        return all(m.get("samples") == 3 for m in got)

    wait_for("three learned samples per model", learned_once)
    print(node.kubectl("get", "pods,jobs,lammpssweeps", "-n", ns).stdout)
