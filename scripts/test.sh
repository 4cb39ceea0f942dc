#!/usr/bin/env bash
# The whole check, as CI runs it: install, lint, type-check, then every test (real components).
# Extra arguments go to pytest, e.g. `make test ARGS="-m 'not slurm'"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
echo ">> ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo ">> mypy (strict)"
bash scripts/typecheck.sh
echo ">> control-plane binaries (built once, then cached)"
.venv/bin/streamml cluster build
echo ">> flux-core, Apptainer and the LAMMPS image (built once from ../shared/vendor, then cached)"
.venv/bin/streamml hpc build --flux --apptainer
echo ">> the server, operator and job images (buildah, from the Dockerfiles; cached per content)"
.venv/bin/streamml images build
echo ">> pytest"
exec .venv/bin/python -P -m pytest "$@"
