"""Operator benchmark: N StreamModels against a real control plane with a given Service range.

Every StreamModel owns a Service, so a Service range smaller than N runs out of cluster IPs.
For each range (side by side, one fresh control plane each, operator as a real process): how
many StreamModels got a status at all, how many got every owned object, the Ready reasons, the
time until every StreamModel had a status, and the operator's peak RSS. Before the operator
reported refusals, the StreamModels whose Service was refused kept an empty status.

Usage: ``.venv/bin/python benchmarks/operator_refusals.py [--count 300]
[--ranges 10.0.0.0/24,10.0.0.0/16]``. Prints a table, writes
``benchmarks/results/operator_refusals.json``.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from operator_bench import Api, doc, peak_rss_mb, written  # noqa: E402

from streamml.testbed import k8sflags  # noqa: E402
from streamml.testbed.controlplane import ControlPlane  # noqa: E402
from streamml.testbed.k8sbuild import ensure_binaries  # noqa: E402
from tests.integration.operator_support import OperatorProcess, install_crds  # noqa: E402

SETTLE_S = 240.0


def _ready_reason(obj: dict[str, Any]) -> str:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return f"{cond.get('status')}/{cond.get('reason')}"
    return "no status"


def run_once(service_range: str, count: int, binaries: Any) -> dict[str, Any]:
    k8sflags.SERVICE_CLUSTER_IP_RANGE = service_range  # read when the API server's argv is built
    work = Path(tempfile.mkdtemp(prefix="streamml-refusals-"))
    with ControlPlane(with_controller_manager=False, binaries=binaries) as cp:
        install_crds(cp)
        api, ns = Api(cp), "bench"
        cp.kubectl("create", "namespace", ns)
        env = {"STREAMML_STATUS_POLL_INTERVAL": "10", "STREAMML_RETRY_DELAY": "5"}
        with OperatorProcess(cp.kubeconfig, work, "--namespace", ns, env=env) as op:
            listing = {"apiVersion": "v1", "kind": "List",
                       "items": [doc(f"sm-{i:04d}") for i in range(count)]}  # fmt: skip
            start = time.monotonic()
            cp.kubectl("create", "-n", ns, "-f", "-", input=json.dumps(listing))
            sms: list[dict[str, Any]] = []
            statused_s = None
            while time.monotonic() - start < SETTLE_S:
                sms = api.items(f"/apis/streamml.io/v1alpha1/namespaces/{ns}/streammodels")
                if len(sms) == count and all(written(o) for o in sms):
                    statused_s = time.monotonic() - start
                    break
                time.sleep(1.0)
            services = api.items(f"/api/v1/namespaces/{ns}/services")
            return {
                "service_range": service_range,
                "count": count,
                "with_status": sum(1 for o in sms if written(o)),
                "with_service": len(services),
                "ready_reasons": dict(collections.Counter(_ready_reason(o) for o in sms)),
                "all_statused_s": round(statused_s, 1) if statused_s is not None else None,
                "peak_rss_mb": round(peak_rss_mb(op.pid), 1),
            }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--ranges", default="10.0.0.0/24,10.0.0.0/16")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "operator_refusals.json"
    )
    args = parser.parse_args()
    binaries = ensure_binaries(lambda line: print(f"[build] {line}", flush=True))
    runs = [run_once(r, args.count, binaries) for r in args.ranges.split(",")]
    load = os.getloadavg()[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"runs": runs, "load_average_1m": round(load, 1)}, indent=2))
    header = ("Service range", "StreamModels", "with a status", "with a Service",
              "Ready reasons", "all with a status after", "operator peak RSS")  # fmt: skip
    print("\n| " + " | ".join(header) + " |\n" + "|---" * len(header) + "|")
    for r in runs:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(r["ready_reasons"].items()))
        when = f"{r['all_statused_s']} s" if r["all_statused_s"] is not None else "never"
        print(f"| {r['service_range']} | {r['count']} | {r['with_status']} | "
              f"{r['with_service']} | {reasons} | {when} | {r['peak_rss_mb']} MB |")  # fmt: skip
    print(f"\nload average {load:.1f}; written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
