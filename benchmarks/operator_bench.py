"""Operator benchmark: 100 StreamModels at once against a real control plane (objects only).

Measures, with the operator as a real process (``streamml operator``, local runtime off):

- the time from one ``kubectl create -f`` of N StreamModels (one List) until every one has its
  Deployment, Service, Secret, PVC and a written status (``observedGeneration``, conditions),
  and the CPU seconds the operator spent on it;
- single-apply reconcile latency: create one StreamModel, time until its status is written
  (p50/p99 over sequential repetitions);
- the operator process's peak resident memory (VmHWM).

Usage: ``.venv/bin/python benchmarks/operator_bench.py [--count 100] [--singles 40]``.
Prints a table and writes ``benchmarks/results/operator.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamml.testbed.controlplane import ControlPlane  # noqa: E402
from streamml.testbed.k8sbuild import ensure_binaries  # noqa: E402
from tests.integration.operator_support import OperatorProcess, install_crds  # noqa: E402

TARGETS = {"all_done_s": 30.0, "single_p50_s": 1.0, "peak_rss_mb": 200.0}


def doc(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "streamml.io/v1alpha1",
        "kind": "StreamModel",
        "metadata": {"name": name},
        "spec": {
            "models": [
                {
                    "name": "linear",
                    "pipeline": [
                        {"class": "preprocessing.StandardScaler"},
                        {"class": "linear_model.LinearRegression", "params": {"intercept_lr": 0.1}},
                    ],
                },
                {
                    "name": "bayesian",
                    "pipeline": [{"class": "linear_model.BayesianLinearRegression"}],
                },
            ]
        },
    }


class Api:
    """Direct HTTPS to the API server as admin (fine-grained polling without kubectl spawns)."""

    def __init__(self, cp: ControlPlane) -> None:
        self.base = cp.server
        self.context = ssl.create_default_context(cafile=str(cp.pki_dir / "ca.crt"))
        self.context.load_cert_chain(cp.pki_dir / "admin.crt", cp.pki_dir / "admin.key")

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.base + path, data=data, method=method,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, context=self.context, timeout=30) as reply:
            return json.loads(reply.read())

    def items(self, path: str) -> list[dict[str, Any]]:
        return list(self.call("GET", path)["items"])


def written(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    return bool(
        status.get("conditions")
        and status.get("observedGeneration") == obj["metadata"].get("generation")
    )


def all_done(api: Api, ns: str, count: int) -> bool:
    sms = [o for o in api.items(f"/apis/streamml.io/v1alpha1/namespaces/{ns}/streammodels")]
    if len(sms) < count or not all(written(o) for o in sms):
        return False
    for path in (
        f"/apis/apps/v1/namespaces/{ns}/deployments",
        f"/api/v1/namespaces/{ns}/services",
        f"/api/v1/namespaces/{ns}/persistentvolumeclaims",
        f"/api/v1/namespaces/{ns}/secrets",
    ):
        owned = [
            o
            for o in api.items(path)
            if (o["metadata"].get("ownerReferences") or [{}])[0].get("kind") == "StreamModel"
        ]
        if len(owned) < count:
            return False
    return True


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def main() -> int:
    """Options, then the run (longer than ~60 lines: mostly argparse declarations and one
    straight measurement sequence)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--singles", type=int, default=40)
    parser.add_argument("--with-controller-manager", action="store_true")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "operator.json"
    )
    args = parser.parse_args()

    binaries = ensure_binaries(lambda line: print(f"[build] {line}", flush=True))
    work = Path(tempfile.mkdtemp(prefix="streamml-opbench-"))
    with ControlPlane(
        with_controller_manager=args.with_controller_manager, binaries=binaries
    ) as cp:
        install_crds(cp)
        api = Api(cp)
        ns = "bench"
        cp.kubectl("create", "namespace", ns)
        cp.kubectl("create", "namespace", "single")
        env = {"STREAMML_STATUS_POLL_INTERVAL": "10"}
        with OperatorProcess(
            cp.kubeconfig, work, "--namespace", ns, "--namespace", "single", env=env
        ) as op:
            baseline_mb = peak_rss_mb(op.pid)
            cpu_start = cpu_seconds(op.pid)
            listing = {
                "apiVersion": "v1",
                "kind": "List",
                "items": [doc(f"sm-{i:03d}") for i in range(args.count)],
            }
            start = time.monotonic()
            cp.kubectl("create", "-n", ns, "-f", "-", input=json.dumps(listing))
            applied = time.monotonic() - start
            while not all_done(api, ns, args.count):
                if time.monotonic() - start > 300:
                    print(op.log()[-3000:])
                    raise SystemExit("not done after 300 s")
                time.sleep(0.5)  # listings are not free: do not load the API server
            all_done_s = time.monotonic() - start
            cpu_bulk = cpu_seconds(op.pid) - cpu_start

            latencies = []
            base = "/apis/streamml.io/v1alpha1/namespaces/single/streammodels"
            for i in range(args.singles):
                t0 = time.monotonic()
                api.call("POST", base, doc(f"single-{i:03d}"))
                while not written(api.call("GET", f"{base}/single-{i:03d}")):
                    time.sleep(0.01)
                latencies.append(time.monotonic() - t0)
            time.sleep(12)  # a full status-poll round over all objects, for the memory peak
            rss = peak_rss_mb(op.pid)

    results = {
        "count": args.count,
        "controller_manager": args.with_controller_manager,
        "kubectl_create_s": round(applied, 3),
        "all_done_s": round(all_done_s, 3),
        "operator_cpu_s_for_bulk": round(cpu_bulk, 2),
        "load_average_1m": round(os.getloadavg()[0], 1),
        "single_p50_s": round(statistics.median(latencies), 3),
        "single_p99_s": round(percentile(latencies, 99), 3),
        "single_max_s": round(max(latencies), 3),
        "singles": len(latencies),
        "peak_rss_mb": round(rss, 1),
        "rss_at_start_mb": round(baseline_mb, 1),
        "targets": TARGETS,
    }
    ok = {
        "all_done_s": results["all_done_s"] < TARGETS["all_done_s"],
        "single_p50_s": results["single_p50_s"] < TARGETS["single_p50_s"],
        "peak_rss_mb": results["peak_rss_mb"] < TARGETS["peak_rss_mb"],
    }
    results["met"] = ok
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    rows = [
        (
            f"{args.count} StreamModels: apply -> all objects + status",
            f"{all_done_s:.2f} s",
            "< 30 s",
            ok["all_done_s"],
        ),
        (
            "single apply -> status written, p50",
            f"{results['single_p50_s'] * 1000:.0f} ms",
            "< 1 s",
            ok["single_p50_s"],
        ),
        (
            "single apply -> status written, p99",
            f"{results['single_p99_s'] * 1000:.0f} ms",
            "",
            None,
        ),
        ("operator peak RSS (VmHWM)", f"{rss:.0f} MB", "< 200 MB", ok["peak_rss_mb"]),
    ]
    print("\n| measure | result | target | met |\n|---|---|---|---|")
    for label, value, target, met in rows:
        print(
            f"| {label} | {value} | {target} | {'' if met is None else ('yes' if met else 'NO')} |"
        )
    print(f"\nwritten {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
