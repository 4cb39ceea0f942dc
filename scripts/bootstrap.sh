#!/usr/bin/env bash
# Installs everything the project needs on a fresh Debian 12 machine of this kind, and nothing twice:
# Debian packages (LAMMPS, Slurm, munge, load generators), a virtualenv in .venv with the project
# and its dev extras. The Kubernetes control-plane binaries (and etcd) are built and cached by
# `streamml cluster build`, which the test and demo scripts call.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  lammps                                   # /usr/bin/lmp
  munge slurm-wlm slurmctld slurmd slurm-client slurmrestd slurm-wlm-jwt-plugin
  hey                                      # HTTP load generator for the server benchmark
  procps psmisc curl                       # curl: the README's HTTP examples
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo ">> apt-get install ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo ">> creating .venv"
  "$PYTHON" -m venv .venv
  .venv/bin/pip install -q --upgrade pip setuptools wheel
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  echo ">> pip install -e .[dev]"
  .venv/bin/pip install -q -e '.[dev]'
  rm -f .venv/.installed-* && touch "$stamp"
fi
