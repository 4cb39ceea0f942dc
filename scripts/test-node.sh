#!/usr/bin/env bash
# The real node's and the images' tests (issue 9): install, build the control plane, the node
# (kubelet, kube-proxy, kube-scheduler, CoreDNS, Traefik) and the server/operator/job images
# (buildah; all cached under ~/.cache/streamml), then run the tests marked `node` or `images`.
# Needs root. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
echo ">> control-plane and node binaries (built once, then cached)"
.venv/bin/streamml cluster build
.venv/bin/streamml cluster build --node
echo ">> the server, operator and job images (buildah, from the Dockerfiles; cached per content)"
.venv/bin/streamml images build
echo ">> pytest -m 'node or images'"
exec .venv/bin/python -P -m pytest -m "node or images" "$@"
