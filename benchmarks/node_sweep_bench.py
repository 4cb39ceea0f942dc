"""One LammpsSweep, three schedulers, one run: Kubernetes Jobs on the real node, local, Slurm.

The same spec (LJ, ``nx, ny, nz`` in 4..6, Latin hypercube seed 7, ``--trials`` training runs,
parallelism 2, 20 steps, target ``cpu_time``) runs

- as Kubernetes Jobs from the job image on the real node (``streamml.testbed.node``), driven by
  the operator in its own pod (``kubectl apply -k config/``), posting to the StreamModel's
  server pod through its Service (``status.address``);
- on the ``local`` scheduler and on the real single-node Slurm (``streamml.testbed.hpc``), driven
  by ``streamml sweep``, posting to a ``streamml serve`` on 127.0.0.1.

Both drivers run the same engine at the same tick interval (2 s, the operator's default). Per
trial the figure is ``finishedAt - submittedAt`` from the sweep's own status: recorded just
before the submit, to the tick that saw the run learned. Reported: p50/p95/max per scheduler and
the sweep's wall time (first submit to last end).

Needs root, the node's builds (``streamml cluster build --node``) and the images (``streamml
images build``; rebuilt here when the source changed). Prints a table and writes
``benchmarks/results/node_sweep_bench.json``.

    .venv/bin/python -P benchmarks/node_sweep_bench.py [--trials 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _ourserver import PIPELINE, OurServer  # noqa: E402

from streamml import procs  # noqa: E402
from streamml.client.api import ModelServerClient  # noqa: E402
from streamml.testbed import hpc, nodebuild  # noqa: E402
from streamml.testbed.imagebuild import IMAGE_NAMES, ensure_images, load_images  # noqa: E402
from streamml.testbed.node import NodeCluster  # noqa: E402
from streamml.testbed.waiting import wait_for  # noqa: E402
from streamml.vocabulary.modelspec import ModelSpec  # noqa: E402

ROOT = HERE.parent
RESULTS = HERE / "results" / "node_sweep_bench.json"
INTERVAL_S = 2.0  # operator/settings.py: sweeps.interval
JOB_IMAGE = "lammps-stream-ml/lammps:0.1.0"
NS = "bench"


def spec(trials: int, scheduler: dict[str, Any]) -> dict[str, Any]:
    return {
        "streamModelRef": {"name": "bench"},
        "parameters": [
            {"name": axis, "type": "int", "min": 4, "max": 6} for axis in ("nx", "ny", "nz")
        ],
        "sampling": {"method": "latinHypercube", "seed": 7},
        "trials": trials,
        "parallelism": 2,
        "maxFailures": 2,
        "lammps": {"command": "lmp", "target": "cpu_time", "vars": {"steps": "20"}},
        "resources": {"cpus": 1, "timeLimitSeconds": 300},
        "scheduler": scheduler,
    }


def latencies(status: dict[str, Any]) -> dict[str, Any]:
    """Per attempt ``finishedAt - submittedAt`` (s) and the sweep's first-to-last wall."""
    starts, ends, each = [], [], []
    for trial in status["trials"]:
        if not (trial.get("submittedAt") and trial.get("finishedAt")):
            continue
        a = datetime.fromisoformat(trial["submittedAt"])
        b = datetime.fromisoformat(trial["finishedAt"])
        starts.append(a)
        ends.append(b)
        each.append((b - a).total_seconds())
    if not each:
        raise RuntimeError(f"no timed trials in {json.dumps(status)[:2000]}")
    ordered = sorted(each)
    return {
        "phase": status.get("phase"),
        "succeeded": status.get("succeeded"),
        "failed": status.get("failed"),
        "attempts": len(each),
        "submit_to_learned_s_p50": statistics.median(ordered),
        "submit_to_learned_s_p95": ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))],
        "submit_to_learned_s_max": ordered[-1],
        "sweep_wall_s": (max(ends) - min(starts)).total_seconds(),
    }


def run_cli(root: Path, server: OurServer, trials: int, scheduler: dict[str, Any],
            env: dict[str, str]) -> dict[str, Any]:  # fmt: skip
    """``streamml sweep`` against the host's server; its state file is the status."""
    work = root / f"sweep-{scheduler['type']}"
    work.mkdir()
    file = work / "sweep.yaml"
    file.write_text(yaml.safe_dump({"apiVersion": "streamml.io/v1alpha1", "kind": "LammpsSweep",
                                    "metadata": {"name": f"bench-{scheduler['type']}"},
                                    "spec": spec(trials, scheduler)}))  # fmt: skip
    token = work / "token"
    token.write_text(server.token)
    token.chmod(0o600)
    streamml = str(Path(sys.executable).parent / "streamml")
    argv = [streamml, "sweep", str(file), "--server", server.url, "--username", server.user,
            "--token-file", str(token), "--workdir", str(work / "wd"), "--no-progress",
            "--interval", str(INTERVAL_S)]  # fmt: skip
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")}
    done = procs.run(argv, env={**clean, **env}, capture_output=True, text=True, timeout=1800,
                     check=False, cwd=work)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"streamml sweep ({scheduler['type']}): {done.stderr[-2000:]}")
    return dict(json.loads((work / "wd" / "state.json").read_text()))


def get_json(node: NodeCluster, *args: str) -> dict[str, Any]:
    out = node.kubectl("get", *args, "-o", "json", check=False)
    return dict(json.loads(out.stdout)) if out.returncode == 0 else {}


def run_on_node(trials: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The operator's pod drives the sweep; the Jobs post to the server's pod."""
    extra: dict[str, Any] = {}
    with NodeCluster(with_ingress=nodebuild.traefik_target().complete()) as node:
        t = time.monotonic()
        images = ensure_images(IMAGE_NAMES)
        extra["images_ensure_s"] = round(time.monotonic() - t, 1)
        t = time.monotonic()
        load_images(images.values(), node.containerd_socket)
        extra["images_load_s"] = round(time.monotonic() - t, 1)
        node.kubectl("apply", "-k", str(ROOT / "config"))
        wait_for("the operator pod", lambda: get_json(
            node, "deployment", "streamml-operator", "-n", "streamml-system"
        ).get("status", {}).get("availableReplicas") == 1, 600)  # fmt: skip
        node.kubectl("create", "namespace", NS)
        model = {"apiVersion": "streamml.io/v1alpha1", "kind": "StreamModel",
                 "metadata": {"name": "bench"},
                 "spec": {"models": [{"name": "linear", "pipeline": PIPELINE}],
                          "server": {"storage": {"type": "PersistentVolumeClaim",
                                                 "size": "1Gi"}}}}  # fmt: skip
        t = time.monotonic()
        node.kubectl("apply", "-n", NS, "-f", "-", input=yaml.safe_dump(model))

        def ready() -> bool:
            status = get_json(node, "streammodel", "bench", "-n", NS).get("status", {})
            conds = {c["type"]: c["status"] for c in status.get("conditions", [])}
            return conds.get("Ready") == "True"

        wait_for("the StreamModel", ready, 900)
        extra["streammodel_ready_s"] = round(time.monotonic() - t, 1)

        def metrics() -> bool:  # the operator polled the created model's metrics into status
            models = get_json(node, "streammodel", "bench", "-n", NS)["status"].get("models", [])
            return any("samples" in m for m in models)

        wait_for("the first metrics in status", metrics, 600)
        extra["streammodel_first_metrics_s"] = round(time.monotonic() - t, 1)
        sweep = {"apiVersion": "streamml.io/v1alpha1", "kind": "LammpsSweep",
                 "metadata": {"name": "bench"},
                 "spec": spec(trials, {"type": "kubernetes", "image": JOB_IMAGE})}  # fmt: skip
        node.kubectl("apply", "-n", NS, "-f", "-", input=yaml.safe_dump(sweep))

        def finished() -> dict[str, Any] | None:
            status = get_json(node, "lammpssweep", "bench", "-n", NS).get("status", {})
            return status if status.get("phase") in ("Succeeded", "Failed") else None

        status = wait_for("the sweep", finished, 3600)
        extra["kubectl_get"] = node.kubectl(
            "get", "pods,svc,ingress,streammodels,lammpssweeps", "-A"
        ).stdout
        node.kubectl("delete", "-k", str(ROOT / "config"), "--wait=false", check=False)
    return status, extra


async def create_model(server: OurServer) -> None:
    async with ModelServerClient(server.url, username=server.user, token=server.token) as c:
        await c.create_model(ModelSpec.model_validate({"name": "linear", "pipeline": PIPELINE}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    report: dict[str, Any] = {"trials": args.trials, "interval_s": INTERVAL_S}
    report["loadavg_before"] = Path("/proc/loadavg").read_text().split()[:3]
    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="node-sweep-bench-") as tmp:
        root = Path(tmp)
        root.chmod(0o755)  # munged and slurmd (other users) reach the Slurm state dir in it
        cluster = hpc.start(root / "slurm", rest=False)
        server = OurServer(root / "server", port=procs.free_port())
        try:
            server.start()
            asyncio.run(create_model(server))
            local = run_cli(root, server, args.trials, {"type": "local"}, {})
            rows["local (streamml sweep)"] = latencies(local)
            on_slurm = {"type": "slurm", "partition": cluster.partition}
            slurm = run_cli(root, server, args.trials, on_slurm, cluster.env())
            rows["slurm (streamml sweep)"] = latencies(slurm)
        finally:
            server.stop()
            hpc.stop(root / "slurm")
        status, extra = run_on_node(args.trials)
        rows["kubernetes (node, operator pod)"] = latencies(status)
        report.update(extra)
    report["rows"] = rows
    report["loadavg_after"] = Path("/proc/loadavg").read_text().split()[:3]
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    for key in ("images_ensure_s", "images_load_s", "streammodel_ready_s",
                "streammodel_first_metrics_s"):  # fmt: skip
        print(f"{key}: {report.get(key)}")
    print(report.get("kubectl_get", ""))


def table(report: dict[str, Any]) -> str:
    lines = [
        f"{report['trials']} training trials, parallelism 2, tick {report['interval_s']} s; "
        f"load {' '.join(report['loadavg_before'])} before, "
        f"{' '.join(report['loadavg_after'])} after",
        "| scheduler | phase | attempts | submit→learned p50 s | p95 s | max s | sweep wall s |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for label, row in report["rows"].items():
        lines.append(
            f"| {label} | {row['phase']} | {row['attempts']} | "
            f"{row['submit_to_learned_s_p50']:.2f} | {row['submit_to_learned_s_p95']:.2f} | "
            f"{row['submit_to_learned_s_max']:.2f} | {row['sweep_wall_s']:.1f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
