#!/usr/bin/env bash
# The whole check, as CI runs it: install, lint, type-check, then every test (real components),
# the real node's included.
# Extra arguments go to pytest, e.g. `make test ARGS="-m 'not slurm'"`; with them, only the
# control plane, Flux and Apptainer are built first (the node's tests build the node themselves).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
echo ">> ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo ">> mypy (strict)"
bash scripts/typecheck.sh

if [ "$#" -gt 0 ]; then
    echo ">> control-plane binaries, flux-core, Apptainer and the LAMMPS image (built once, cached)"
    .venv/bin/streamml cluster build
    .venv/bin/streamml hpc build --flux --apptainer
    echo ">> pytest $*"
    exec .venv/bin/python -P -m pytest "$@"
fi

# The builds run in the background, niced, while pytest runs the tests that need nothing built;
# pytest then orders the rest by what they need (tests/fixtures/builds.py: the control plane,
# then Flux and Apptainer, then the node and the images), and waits for each build's lock before
# its first test.
# Cached builds take a second. Logs: build/test-builds/*.log, printed at the end. A cold run on a
# new machine (apt packages included) measured 59.6 min (BENCHMARKS.md, "issue 9, stop 15").
logs=build/test-builds
rm -rf "$logs" && mkdir -p "$logs"
set -m  # each background chain in a process group of its own, so that it can be stopped whole
chain() {
    local name=$1 started=$SECONDS status=0
    shift
    {
        for step in "$@"; do
            local t0=$SECONDS
            echo ">> $step"
            # shellcheck disable=SC2086  # a step is a command line
            nice -n 10 .venv/bin/streamml $step || { status=$?; echo ">> $step failed ($status)"; break; }
            echo ">> $step: $((SECONDS - t0)) s"
        done
        echo ">> $name: $((SECONDS - started)) s, exit $status"
    } >"$logs/$name.log" 2>&1
    return "$status"
}
chain kubernetes "cluster build" "cluster build --node" "images build" &
kube_pid=$!
chain hpc "hpc build --flux --apptainer" &
hpc_pid=$!
set +m  # pytest stays in this script's process group
stop_builds() {
    for pid in "$kube_pid" "$hpc_pid"; do
        kill -0 "$pid" 2>/dev/null && kill -TERM -- "-$pid" 2>/dev/null
    done
    return 0
}
trap stop_builds EXIT
echo ">> builds in the background: control plane, node, images (pid $kube_pid); flux-core, Apptainer, LAMMPS SIF (pid $hpc_pid)"

echo ">> pytest"
status=0
.venv/bin/python -P -m pytest --durations=30 || status=$?
[ "$status" -eq 0 ] || stop_builds  # a failed run does not wait for builds it no longer needs

builds=0
wait "$kube_pid" || builds=$?
wait "$hpc_pid" || builds=$?
trap - EXIT
for log in "$logs"/*.log; do
    echo ">> $log"
    if [ "$builds" -ne 0 ] && [ "$status" -eq 0 ]; then cat "$log"; else grep '^>> ' "$log"; fi
done
if [ "$builds" -ne 0 ] && [ "$status" -eq 0 ]; then
    echo ">> a background build failed (logs above)"
    exit 1
fi
exit "$status"
