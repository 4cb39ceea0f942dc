#!/usr/bin/env bash
# mypy (strict) on the whole `streamml` namespace. The repository maps top-level folders into the
# namespace (pyproject.toml); mypy does not run import hooks, so give it the same view through a
# tree of symlinks under .typecheck/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
rm -rf .typecheck && mkdir -p .typecheck/streamml
for f in streamml/*; do ln -s "../../$f" ".typecheck/streamml/$(basename "$f")"; done
ln -s ../../operator .typecheck/streamml/operator
ln -s ../../modelserver .typecheck/streamml/modelserver
ln -s ../../clients .typecheck/streamml/clients
cd .typecheck
exec "../$PY" -m mypy --config-file ../pyproject.toml -p streamml "$@"
