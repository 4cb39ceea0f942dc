#!/usr/bin/env bash
# The real node's tests (issue 9): install, build the control plane and the node (kubelet,
# kube-proxy, kube-scheduler, CoreDNS, Traefik; cached under ~/.cache/streamml), then run the
# tests marked `node`. Needs root. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
echo ">> control-plane and node binaries (built once, then cached)"
.venv/bin/streamml cluster build
.venv/bin/streamml cluster build --node
echo ">> pytest -m node"
exec .venv/bin/python -P -m pytest -m node "$@"
