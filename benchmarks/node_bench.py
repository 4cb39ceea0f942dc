"""A real node (issue 9): build costs, bring-up, pod start, memory.

1. Builds: seconds and binary sizes of each node build as its ``build-info.json`` recorded them
   (kubelet/kube-proxy/kube-scheduler, CoreDNS, Traefik; the control plane's for reference), and
   the size of the caches (``~/.cache/streamml/{k8s-*,coredns-*,traefik-*,node-images-*}``, Go's
   build and module caches).
2. Bring-up: ``NodeCluster.start`` from nothing to node Ready + DNS + ingress ready (wall s).
3. Pods: ``kubectl apply`` of a 1-replica Deployment of the local tinyhttp image -> Ready, then
   scale 1 -> 3 -> all Ready, ``--repeats`` times (p50).
4. Memory: RSS of every daemon idle (after the pods are deleted) and with 3 pods running.

Prints a table and writes ``benchmarks/results/node_bench.json``. Needs root.

    .venv/bin/python -P benchmarks/node_bench.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from streamml import procs
from streamml.testbed import k8sbuild, nodebuild
from streamml.testbed.node import NodeCluster
from streamml.testbed.nodeimages import TINYHTTP_IMAGE

RESULTS = Path(__file__).resolve().parent / "results" / "node_bench.json"


def _du(path: Path) -> int:
    if not path.exists():
        return 0
    out = procs.run(["du", "-sb", str(path)], capture_output=True, text=True, check=False)
    return int(out.stdout.split()[0]) if out.returncode == 0 else 0


def builds() -> dict[str, Any]:
    cache = k8sbuild.cache_root()
    info: dict[str, Any] = {}
    roots = [k8sbuild.cached_binaries().bin_dir.parent] + [t.root for t in nodebuild.targets()]
    for root in roots:
        try:
            data = json.loads((root / "build-info.json").read_text())
        except (OSError, ValueError):
            continue
        info[root.name] = {
            "build_seconds": data.get("build_seconds"),
            "sizes": data.get("sizes", {}),
            "bytes": _du(root),
        }
    images = sorted(cache.glob("node-images-*"))
    info["node-images"] = {"bytes": sum(_du(p) for p in images)}
    home = Path.home()
    info["go-build-cache"] = {
        "bytes": _du(Path(os.environ.get("GOCACHE", home / ".cache/go-build")))
    }
    info["go-mod-cache"] = {"bytes": _du(home / "go" / "pkg" / "mod")}
    return info


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def rss(node: NodeCluster) -> dict[str, float]:
    out = {d.name: _rss_kib(d.pid) / 1024 for d in node.daemons if d.alive()}
    shims = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if (
                b"containerd-shim" in cmd.split(b"\0", 1)[0]
                and str(node.containerd_socket).encode() in cmd
            ):
                shims += _rss_kib(int(entry.name)) / 1024
    out["shims"] = shims
    return out


def _deploy(node: NodeCluster, replicas: int) -> float:
    started = time.monotonic()
    node.kubectl(
        "create",
        "deployment",
        "bench",
        f"--image={TINYHTTP_IMAGE}",
        f"--replicas={replicas}",
        "--",
        "/tinyhttp",
        "serve",
        "8080",
    )
    node.kubectl("rollout", "status", "deployment/bench", "--timeout=180s")
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    load = Path("/proc/loadavg").read_text().split()[:3]
    result: dict[str, Any] = {"loadavg_before": load, "builds": builds()}
    started = time.monotonic()
    with NodeCluster(with_ingress=nodebuild.traefik_target().complete()) as node:
        result["bring_up_s"] = round(time.monotonic() - started, 1)
        first, scaled = [], []
        for _ in range(args.repeats):
            first.append(_deploy(node, 1))
            t = time.monotonic()
            node.kubectl("scale", "deployment/bench", "--replicas=3")
            node.kubectl("rollout", "status", "deployment/bench", "--timeout=180s")
            scaled.append(time.monotonic() - t)
            result["rss_3_pods_mib"] = rss(node)
            node.kubectl("delete", "deployment/bench", "--wait=true")
            node.kubectl("wait", "pods", "-l", "app=bench", "--for=delete", "--timeout=120s")
        time.sleep(5)
        result["rss_idle_mib"] = rss(node)
        result["apply_to_ready_s_p50"] = round(statistics.median(first), 2)
        result["scale_1_to_3_s_p50"] = round(statistics.median(scaled), 2)
    result["loadavg_after"] = Path("/proc/loadavg").read_text().split()[:3]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    _print(result)


def _print(result: dict[str, Any]) -> None:
    print(f"load before {result['loadavg_before']}, after {result['loadavg_after']}")
    print(f"{'build':<24}{'seconds':>10}{'cache MB':>10}")
    for name, b in result["builds"].items():
        seconds = b.get("build_seconds")
        print(f"{name:<24}{seconds if seconds is not None else '-':>10}{b['bytes'] / 1e6:>10.0f}")
    print(f"bring-up to Ready+DNS+ingress: {result['bring_up_s']} s")
    print(
        f"apply -> 1 pod Ready p50: {result['apply_to_ready_s_p50']} s; "
        f"scale 1 -> 3 p50: {result['scale_1_to_3_s_p50']} s"
    )
    for label in ("rss_idle_mib", "rss_3_pods_mib"):
        total = sum(result[label].values())
        parts = ", ".join(
            f"{k} {v:.0f}" for k, v in sorted(result[label].items(), key=lambda kv: -kv[1])
        )
        print(f"{label}: total {total:.0f} MiB ({parts})")


if __name__ == "__main__":
    main()
