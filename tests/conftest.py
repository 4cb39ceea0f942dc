"""Shared pytest configuration: fixture plugins, one per real component.

- ``tests.fixtures.server``: a real ``streamml serve`` process on 127.0.0.1.
- ``tests.fixtures.controlplane``: a real kube-apiserver + etcd (+ controller-manager).
- ``tests.fixtures.hpc``: real munge + Slurm daemons (+ slurmrestd) and the ``lmp`` binary.
- ``tests.fixtures.flux``: a real Flux instance, Apptainer and a LAMMPS SIF (built once, cached).
- ``tests.fixtures.node``: a real node (kubelet, containerd, DNS, ingress) in its own netns.
- ``tests.fixtures.browser``: Debian's headless Chromium over DevTools, reaching only 127.0.0.1.
- ``tests.fixtures.builds``: the tests that need nothing built run first, then the rest by the
  build they need, each waiting for it (``make test`` builds in the background meanwhile).
"""

from __future__ import annotations

import importlib.util

pytest_plugins = [
    name
    for name in (
        "tests.fixtures.server",
        "tests.fixtures.controlplane",
        "tests.fixtures.hpc",
        "tests.fixtures.flux",
        "tests.fixtures.node",
        "tests.fixtures.browser",
        "tests.fixtures.builds",
    )
    if importlib.util.find_spec(name) is not None
]
