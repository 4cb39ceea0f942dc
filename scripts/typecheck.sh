#!/usr/bin/env bash
# mypy (strict) on the whole `streamml` namespace. The repository maps top-level folders into the
# namespace (pyproject.toml); mypy does not run import hooks, so give it the same view through a
# private tree of symlinks (one per run, so concurrent runs do not collide).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
PY=${PY:-$root/.venv/bin/python}
view=$(mktemp -d "${TMPDIR:-/tmp}/streamml-typecheck.XXXXXX")
trap 'rm -rf "$view"' EXIT
mkdir -p "$view/streamml"
for f in streamml/*; do ln -s "$root/$f" "$view/streamml/$(basename "$f")"; done
ln -s "$root/operator" "$view/streamml/operator"
ln -s "$root/modelserver" "$view/streamml/modelserver"
ln -s "$root/clients" "$view/streamml/clients"
cd "$view"
"$PY" -m mypy --config-file "$root/pyproject.toml" --cache-dir "$root/.mypy_cache" -p streamml "$@"
