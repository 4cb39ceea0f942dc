"""``streamml plot``'s cost figures: a sweep's error against the simulation core-seconds spent.

From a sweep's status (``sweep.json``):

- ``held_out_vs_core_seconds.png`` (a sweep with ``stopWhen``): every held-out check's value of
  the stop metric per model against the core-seconds spent by then, the target's line, and a
  mark where the target held;
- ``learning_curve_vs_core_seconds.png`` (any sweep whose curve points carry ``coreSeconds``):
  each model's headline metric (progressive validation on the server) against core-seconds.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: ``status.heldOut``: ``R2 0.871/>=0.9``
_HELD_OUT = re.compile(r"^(\w+) \S+/(?:>=|<=)(-?[0-9.eE+-]+)%?$")


def _number(value: Any) -> float | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def held_out_series(status: Mapping[str, Any]) -> dict[str, list[tuple[float, float]]]:
    """model -> (core-seconds, stop-metric value) per held-out check, in check order."""
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for check in status.get("heldOutChecks") or []:
        if not isinstance(check, dict):
            continue
        spent = _number(check.get("coreSeconds"))
        values = check.get("values")
        if spent is None or not isinstance(values, dict):
            continue
        for model, value in values.items():
            if (y := _number(value)) is not None:
                series[str(model)].append((spent, y))
    return dict(series)


def curve_series(status: Mapping[str, Any]) -> tuple[str, dict[str, list[tuple[float, float]]]]:
    """(metric, model -> (core-seconds, value)) of the learning curves' points that have both."""
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    metric = ""
    for curve in status.get("learningCurve") or []:
        if not isinstance(curve, dict):
            continue
        metric = metric or str(curve.get("metric", ""))
        for point in curve.get("points") or []:
            spent, value = _number(point.get("coreSeconds")), _number(point.get("value"))
            if spent is not None and value is not None:
                series[str(curve.get("model"))].append((spent, value))
    return metric, dict(series)


def cost_figure(
    series: Mapping[str, list[tuple[float, float]]],
    metric: str,
    title: str,
    target: float | None = None,
) -> Figure:
    """``metric`` against core-seconds, one line per model (and the target's line)."""
    from streamml.clients.plot import _figure

    figure = _figure()
    ax = figure.add_subplot()
    for model in sorted(series):
        points = series[model]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker=".", label=model)
    if target is not None:
        ax.axhline(target, color="black", linestyle="--", linewidth=1, label=f"target {target:g}")
    ax.set_xlabel("simulation core-seconds spent")
    ax.set_ylabel(metric)
    ax.set_title(title)
    if metric == "R2":
        ax.set_ylim(max(-1.0, ax.get_ylim()[0]), 1.0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return figure


def cost_figures(status: Mapping[str, Any]) -> list[tuple[str, Figure]]:
    """(file name, figure) of every cost figure the status allows."""
    out: list[tuple[str, Figure]] = []
    held = held_out_series(status)
    if held:
        checks = [c for c in status.get("heldOutChecks") or [] if isinstance(c, dict)]
        metric = str(checks[-1].get("metric") or "metric") if checks else "metric"
        match = _HELD_OUT.match(str(status.get("heldOut") or ""))
        target = float(match.group(2)) if match else None
        title = f"Held-out {metric} against cost"
        if (runs := status.get("runsToTarget")) is not None:
            title += f" (target held after {runs} training runs)"
        out.append(("held_out_vs_core_seconds.png", cost_figure(held, metric, title, target)))
    metric, curves = curve_series(status)
    if curves:
        title = f"Learning curves: {metric} (progressive validation) against cost"
        out.append(("learning_curve_vs_core_seconds.png", cost_figure(curves, metric, title)))
    return out
