"""The order ``tests.fixtures.builds`` gives the tests: no build first, then by build stage, a
module kept whole at its latest stage, the order inside a stage kept."""

from __future__ import annotations

from typing import Any, cast

import pytest

from tests.fixtures.builds import build_stage, pytest_collection_modifyitems


class Item:
    """The two things the ordering reads of a pytest item: its node id and its markers."""

    def __init__(self, nodeid: str, *markers: str) -> None:
        self.nodeid = nodeid
        self.markers = set(markers)

    def get_closest_marker(self, name: str) -> Any:
        return name if name in self.markers else None


def test_a_tests_stage_is_its_last_build() -> None:
    def stage(*markers: str) -> int:
        return build_stage(cast(pytest.Item, Item("t.py::a", *markers)))

    assert stage() == 0
    assert stage("integration", "slurm") == 0
    assert stage("controlplane") == 1
    assert stage("apptainer") == 2
    assert stage("controlplane", "flux") == 2
    assert stage("node") == stage("images") == stage("flux", "node") == 3


def test_modules_move_whole_by_their_latest_stage_and_keep_their_order() -> None:
    items = [
        Item("node.py::a", "node"),
        Item("mixed.py::a"),
        Item("mixed.py::b", "controlplane"),
        Item("mixed.py::c"),
        Item("plain.py::a"),
        Item("flux.py::a", "flux"),
        Item("cp.py::a", "controlplane"),
        Item("plain2.py::a"),
    ]  # as pytest collects them: a module's items together
    pytest_collection_modifyitems(cast(list[pytest.Item], items))
    assert [i.nodeid for i in items] == [
        "plain.py::a",
        "plain2.py::a",
        "mixed.py::a",
        "mixed.py::b",
        "mixed.py::c",
        "cp.py::a",
        "flux.py::a",
        "node.py::a",
    ]
