"""``streamml plot``'s cost figures from a sweep status: the plotted data, not just the files."""

from __future__ import annotations

import json
from pathlib import Path

from streamml.clients.plot import render
from streamml.clients.plot_cost import cost_figures, curve_series, held_out_series

STATUS = {
    "heldOut": "R2 0.93/>=0.9",
    "runsToTarget": 6,
    "heldOutChecks": [
        {"trials": 2, "metric": "R2", "coreSeconds": 1.5, "values": {"a": 0.2, "b": -0.5}},
        {"trials": 4, "metric": "R2", "coreSeconds": 3.0, "values": {"a": 0.8, "b": 0.1}},
        {"trials": 6, "metric": "R2", "coreSeconds": 4.25, "values": {"a": 0.93}},
        {"trials": 8, "metric": "R2", "values": {"a": 0.99}},  # no cost: left out
    ],
    "learningCurve": [
        {"model": "a", "metric": "R2", "points": [
            {"trials": 1, "samples": 1, "value": None, "coreSeconds": 0.5},
            {"trials": 2, "samples": 2, "value": 0.1, "coreSeconds": 1.5},
            {"trials": 3, "samples": 3, "value": 0.4}]},
    ],
}  # fmt: skip


def test_held_out_checks_become_error_against_core_seconds() -> None:
    assert held_out_series(STATUS) == {
        "a": [(1.5, 0.2), (3.0, 0.8), (4.25, 0.93)],
        "b": [(1.5, -0.5), (3.0, 0.1)],
    }
    assert curve_series(STATUS) == ("R2", {"a": [(1.5, 0.1)]})
    figures = dict(cost_figures(STATUS))
    ax = figures["held_out_vs_core_seconds.png"].axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines["a"].get_xdata()) == [1.5, 3.0, 4.25]
    assert list(lines["target 0.9"].get_ydata()) == [0.9, 0.9]
    assert ax.get_xlabel() == "simulation core-seconds spent"
    assert "after 6 training runs" in ax.get_title()


def test_a_status_without_costs_has_no_cost_figure(tmp_path: Path) -> None:
    assert cost_figures({"learningCurve": [{"model": "a", "metric": "R2", "points": [
        {"trials": 1, "samples": 1, "value": 0.3}]}]}) == []  # fmt: skip
    (tmp_path / "sweep.json").write_text(json.dumps({"status": STATUS}))
    written = {p.name for p in render(tmp_path, tmp_path / "out")}
    assert {"held_out_vs_core_seconds.png", "learning_curve_vs_core_seconds.png"} <= written
