"""The API server refuses an object the operator owns (here: a real ResourceQuota): the
StreamModel says so in its status and in an Event, retries with a growing delay (no hot loop),
and recovers by itself once the refusal is lifted."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamml.testbed.controlplane import ControlPlane
from tests.integration.operator_support import (
    ROOT,
    OperatorProcess,
    condition,
    get_json,
    install_crds,
    wait_for,
)

SAMPLE = yaml.safe_load((ROOT / "config" / "samples" / "streammodel.yaml").read_text())
NAME = SAMPLE["metadata"]["name"]
#: retry delays of 1, 2, 4, 4, ... s: a window of WINDOW seconds sees at most ~WINDOW/2 retries;
#: a hot loop would post hundreds of Events
RETRY_ENV = {"STREAMML_RETRY_DELAY": "1", "STREAMML_RETRY_MAX_DELAY": "4"}
WINDOW = 12


@pytest.fixture(scope="module")
def crds(control_plane: ControlPlane) -> ControlPlane:
    install_crds(control_plane)
    return control_plane


def _refusal_events(cp: ControlPlane, ns: str, reason: str) -> list[dict[str, Any]]:
    listing = get_json(cp, "events", "-n", ns, "--field-selector", f"involvedObject.name={NAME}")
    return [e for e in (listing or {}).get("items", []) if e.get("reason") == reason]


def test_a_quota_refusal_is_reported_retried_with_backoff_and_recovers(
    crds: ControlPlane, k8s_namespace: str, tmp_path: Path
) -> None:
    cp, ns = crds, k8s_namespace
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "no-services", "namespace": ns},
        "spec": {"hard": {"services": "0"}},
    }
    cp.kubectl("apply", "-f", "-", input=json.dumps(quota))
    wait_for(
        lambda: ((get_json(cp, "resourcequota", "no-services", "-n", ns) or {}).get("status") or {})
        .get("hard"),
        "the quota controller to count the namespace",
    )  # fmt: skip
    with OperatorProcess(cp.kubeconfig, tmp_path, "--namespace", ns, env=RETRY_ENV) as operator:
        cp.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(SAMPLE))

        def refused() -> dict[str, Any] | None:
            ready = condition(get_json(cp, "streammodel", NAME, "-n", ns), "Ready")
            return ready if ready and ready["reason"] == "QuotaExceeded" else None

        ready = wait_for(refused, "Ready=False, QuotaExceeded")
        assert ready["status"] == "False"
        # the API server's own message, naming the object and the quota
        assert "exceeded quota: no-services" in ready["message"], ready
        assert f'services "{NAME}" is forbidden' in ready["message"], ready
        wait_for(lambda: _refusal_events(cp, ns, "QuotaExceeded"), "a QuotaExceeded Event")
        before = len(_refusal_events(cp, ns, "QuotaExceeded"))
        time.sleep(WINDOW)
        retries = len(_refusal_events(cp, ns, "QuotaExceeded")) - before
        assert retries <= WINDOW // 2 + 2, (retries, operator.log()[-3000:])
        # the quota lifted: a later retry creates the Service and the condition moves on
        cp.kubectl("delete", "resourcequota", "no-services", "-n", ns)
        wait_for(lambda: get_json(cp, "service", NAME, "-n", ns), "the Service", timeout=90)
        wait_for(
            lambda: (
                (c := condition(get_json(cp, "streammodel", NAME, "-n", ns), "Ready"))
                and c["reason"] != "QuotaExceeded"
            ),
            "Ready to move past QuotaExceeded",
        )
        assert "Traceback" not in operator.log()
