"""Shared pytest configuration: fixture plugins, one per real component.

- ``tests.fixtures.server``: a real ``streamml serve`` process on 127.0.0.1.
- ``tests.fixtures.controlplane``: a real kube-apiserver + etcd (+ controller-manager).
- ``tests.fixtures.hpc``: real munge + Slurm daemons (+ slurmrestd) and the ``lmp`` binary.
- ``tests.fixtures.flux``: a real Flux instance, Apptainer and a LAMMPS SIF (built once, cached).
- ``tests.fixtures.node``: a real node (kubelet, containerd, DNS, ingress) in its own netns.
- ``tests.fixtures.browser``: Debian's headless Chromium over DevTools, reaching only 127.0.0.1.
"""

from __future__ import annotations

import importlib.util

import pytest

pytest_plugins = [
    name
    for name in (
        "tests.fixtures.server",
        "tests.fixtures.controlplane",
        "tests.fixtures.hpc",
        "tests.fixtures.flux",
        "tests.fixtures.node",
        "tests.fixtures.browser",
    )
    if importlib.util.find_spec(name) is not None
]


# What a test needs built, by marker, in the order scripts/test.sh builds it in the background:
# nothing, the control plane, Flux and Apptainer, the node and the images. Each fixture waits for
# its build (every build holds a lock while it runs, and finds the cache after it).
STAGES = (("controlplane",), ("flux", "apptainer"), ("node", "images"))


def build_stage(item: pytest.Item) -> int:
    """0 for a test that needs no build, else 1 + the index in :data:`STAGES` of its last build."""
    stage = 0
    for index, markers in enumerate(STAGES, start=1):
        if any(item.get_closest_marker(marker) for marker in markers):
            stage = index
    return stage


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the tests that need nothing built first, then by build stage, so that a cold run tests
    while the builds go on beside it. A module moves as a whole (at its latest stage), keeping its
    module-scoped fixtures to one setup, and the order inside a module is kept."""
    module_stage: dict[str, int] = {}
    for item in items:
        key = item.nodeid.split("::", 1)[0]
        module_stage[key] = max(module_stage.get(key, 0), build_stage(item))
    items.sort(key=lambda item: module_stage[item.nodeid.split("::", 1)[0]])
