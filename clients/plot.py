"""``streamml plot``: PNGs from what ``watch`` recorded and from a sweep's trial records.

Reads from ``--in DIR``:

- ``metrics.csv`` (``streamml watch``) → ``learning_curve_<METRIC>.png``: the metric against
  samples learned, one line per model;
- ``trials.jsonl`` (one trial record a line, see :mod:`streamml.clients.evaluation`), or else
  ``sweep.json`` (a LammpsSweep as ``kubectl get -o json`` prints it, or its status) →
  ``predicted_vs_actual.png`` for the held-out runs (one marker set per model, the offline ceiling
  and the diagonal), ``runtime_vs_atoms.png`` (training and held-out runs, the ceiling's line) and
  ``runtime_heatmap.png`` (mean runtime over the first two parameters); from ``sweep.json``
  also the error against the simulation core-seconds spent (:mod:`.plot_cost`:
  ``held_out_vs_core_seconds.png`` for a ``stopWhen`` sweep and
  ``learning_curve_vs_core_seconds.png``).

A sweep with several targets (trial records naming their target; a status with
``evaluationByTarget``) gets each figure once per target, its file named by the target:
``learning_curve_<METRIC>_<TARGET>.png`` (the target's models only),
``predicted_vs_actual_<TARGET>.png`` (against the target's own ceiling) and
``heatmap_<TARGET>.png``; the size plot is the atom-count ceiling's and is left out. A sweep of
one target keeps the file names above.

Figures are built as plain ``matplotlib.figure.Figure`` objects on the Agg canvas (no pyplot global
state, no display needed), so tests inspect the plotted data, not just the files.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamml.clients.evaluation import (
    TEST,
    TRAIN,
    Ceiling,
    FinishedTrial,
    TargetReport,
    evaluate,
    evaluate_targets,
    load_trials,
    trials_of_every_target,
)
from streamml.clients.watch import METRICS_CSV, read_metrics_table
from streamml.errors import ConfigurationError, SpecError

if TYPE_CHECKING:
    from collections.abc import Callable

    from matplotlib.figure import Figure

    Save = Callable[[Figure, str], None]

log = logging.getLogger(__name__)

TRIALS_JSONL = "trials.jsonl"
#: a LammpsSweep object (``kubectl get lammpssweep X -o json``) or its status
SWEEP_JSON = "sweep.json"
#: metrics drawn as learning curves when present, in this order
CURVE_METRICS = ("R2", "RMSE", "MAE")
HEATMAP_BINS = 6
#: what a sweep of one target measures (a target of several is labelled by its name)
RUNTIME = "runtime (s)"


def _figure(width: float = 7.0, height: float = 4.5) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def learning_curve_figure(
    rows: Sequence[dict[str, Any]], metric: str, target: str | None = None
) -> Figure:
    """``metric`` against samples learned, one line per model (points sorted by samples)."""
    series: dict[str, dict[int, float]] = defaultdict(dict)
    for row in rows:
        value = row["metrics"].get(metric)
        if value is not None and math.isfinite(value):
            series[row["model"]][row["samples"]] = value  # the latest poll at a count wins
    figure = _figure()
    ax = figure.add_subplot()
    for model in sorted(series):
        points = sorted(series[model].items())
        ax.plot([p[0] for p in points], [p[1] for p in points], marker=".", label=model)
    ax.set_xlabel("samples learned")
    ax.set_ylabel(metric)
    of = "" if target is None else f" of {target}"
    ax.set_title(f"Learning curves{of}: {metric} (progressive validation)")
    if metric == "R2":
        ax.set_ylim(max(-1.0, ax.get_ylim()[0]), 1.0)  # early R² can be hugely negative
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return figure


def prediction_figure(
    trials: Sequence[FinishedTrial], ceiling: Ceiling | None, quantity: str = RUNTIME
) -> Figure:
    """Predicted against actual ``quantity`` for the held-out runs: one marker set per model."""
    test = [t for t in trials if t.split == TEST]
    evaluation = evaluate(trials)
    figure = _figure(6.5, 6.0)
    ax = figure.add_subplot()
    for model, scores in sorted(evaluation.models.items()):
        pairs = [(t.target, t.predictions[model]) for t in test if model in t.predictions]
        ax.scatter(
            [a for a, _ in pairs],
            [p for _, p in pairs],
            label=f"{model} (R² {scores.r2:.3f})",
            s=18,
        )
    if ceiling is not None:
        ax.scatter(
            [t.target for t in test],
            [ceiling.predict_trial(t) for t in test],
            label=f"offline ceiling (R² {ceiling.scores.r2:.3f})",
            marker="x",
            color="black",
        )
    actual = [t.target for t in test]
    if actual:
        low, high = min(actual), max(actual)
        ax.plot([low, high], [low, high], linestyle="--", color="grey", label="perfect")
        pad = 0.5 * (high - low or 1.0)
        ax.set_xlim(low - 0.1 * pad, high + 0.1 * pad)
        ax.set_ylim(low - pad, high + pad)  # a wild model must not squash the others
    ax.set_xlabel(f"actual {quantity}")
    ax.set_ylabel(f"predicted {quantity}")
    of = "" if quantity == RUNTIME else f" {quantity}"
    ax.set_title(f"Held-out runs ({len(test)}): predicted vs actual{of}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small")
    return figure


def runtime_figure(trials: Sequence[FinishedTrial], ceiling: Ceiling | None) -> Figure:
    """Runtime against atom count (training and held-out runs) with the ceiling's line."""
    figure = _figure()
    ax = figure.add_subplot()
    for split, marker in ((TRAIN, "o"), (TEST, "s")):
        chosen = [t for t in trials if t.split == split]
        if chosen:
            ax.scatter(
                [t.size for t in chosen],
                [t.target for t in chosen],
                marker=marker,
                label=f"{split} runs ({len(chosen)})",
            )
    if ceiling is not None and trials:
        sizes = [t.size for t in trials]
        xs = [min(sizes), max(sizes)]
        ax.plot(xs, [ceiling.predict(x) for x in xs], color="black", label="least squares")
    ax.set_xlabel("atoms" if all(t.atoms is not None for t in trials) else "product of params")
    ax.set_ylabel("runtime (s)")
    ax.set_title("Runtime surface: runtime against problem size")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return figure


def heatmap_grid(
    trials: Sequence[FinishedTrial], x_param: str, y_param: str, bins: int = HEATMAP_BINS
) -> tuple[list[float], list[float], list[list[float]]]:
    """Bin edges on both axes and the mean runtime per cell (NaN where no run fell)."""
    xs = [t.parameters[x_param] for t in trials]
    ys = [t.parameters[y_param] for t in trials]

    def edges(values: list[float]) -> list[float]:
        low, high = min(values), max(values)
        if high == low:
            high = low + 1.0
        return [low + (high - low) * i / bins for i in range(bins + 1)]

    def index(value: float, e: list[float]) -> int:
        for i in range(bins):
            if value < e[i + 1]:
                return i
        return bins - 1

    x_edges, y_edges = edges(xs), edges(ys)
    sums = [[0.0] * bins for _ in range(bins)]
    counts = [[0] * bins for _ in range(bins)]
    for t, x, y in zip(trials, xs, ys, strict=True):
        i, j = index(y, y_edges), index(x, x_edges)
        sums[i][j] += t.target
        counts[i][j] += 1
    grid = [
        [sums[i][j] / counts[i][j] if counts[i][j] else math.nan for j in range(bins)]
        for i in range(bins)
    ]
    return x_edges, y_edges, grid


def heatmap_figure(
    trials: Sequence[FinishedTrial], x_param: str, y_param: str, quantity: str = RUNTIME
) -> Figure:
    """Mean ``quantity`` over two parameters (the others averaged out)."""
    import numpy as np

    x_edges, y_edges, grid = heatmap_grid(trials, x_param, y_param)
    figure = _figure(6.5, 5.0)
    ax = figure.add_subplot()
    mesh = ax.pcolormesh(x_edges, y_edges, np.ma.masked_invalid(np.array(grid)), cmap="viridis")
    figure.colorbar(mesh, ax=ax, label=f"mean {quantity}")
    ax.set_xlabel(x_param)
    ax.set_ylabel(y_param)
    ax.set_title(f"Mean {quantity} over {x_param} by {y_param} ({len(trials)} runs)")
    return figure


def _sweep_status(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SpecError(f"{path}: not a JSON document: {exc}") from exc
    if not isinstance(doc, dict):
        raise SpecError(f"{path}: expected a LammpsSweep object or its status")
    status = doc.get("status", doc) if doc.get("kind", "LammpsSweep") == "LammpsSweep" else None
    if not isinstance(status, dict):
        raise SpecError(f"{path}: expected a LammpsSweep object or its status")
    return status


def curve_rows_from_sweep_status(status: dict[str, Any]) -> list[dict[str, Any]]:
    """The status' bounded learning curve in the shape of ``metrics.csv`` rows."""
    rows: list[dict[str, Any]] = []
    for curve in status.get("learningCurve") or []:
        if not isinstance(curve, dict):
            continue
        model, metric = str(curve.get("model", "")), str(curve.get("metric", ""))
        for point in curve.get("points") or []:
            value, samples = point.get("value"), point.get("samples")
            if isinstance(value, int | float) and isinstance(samples, int):
                rows.append({"model": model, "samples": samples, "metrics": {metric: value}})
    return rows


def render(in_dir: Path, out_dir: Path) -> list[Path]:
    """Every figure the inputs allow (per target for a sweep of several); returns the PNGs."""
    if not in_dir.is_dir():
        raise ConfigurationError(f"--in {in_dir} is not a directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def save(figure: Figure, name: str) -> None:
        path = out_dir / name
        figure.savefig(path, format="png")
        written.append(path)

    sweep_status = _sweep_status(in_dir / SWEEP_JSON)
    metrics_path = in_dir / METRICS_CSV
    rows: list[dict[str, Any]] = []
    if metrics_path.exists():
        rows = read_metrics_table(metrics_path)
    elif sweep_status is not None:
        rows = curve_rows_from_sweep_status(sweep_status)
    trials_path = in_dir / TRIALS_JSONL
    trials: list[FinishedTrial] = []
    if trials_path.exists():
        trials = load_trials(trials_path)
    elif sweep_status is not None:
        trials = trials_of_every_target(sweep_status)
    reports = evaluate_targets(trials)
    _learning_curves(rows, _model_targets(reports, sweep_status), save)
    for report in reports:
        _trial_figures(report, save)
    if sweep_status is not None:  # error against the simulation core-seconds spent
        from streamml.clients.plot_cost import cost_figures

        for name, figure in cost_figures(sweep_status):
            save(figure, name)
    if not written:
        expected = f"{METRICS_CSV}, {TRIALS_JSONL} or {SWEEP_JSON}"
        raise SpecError(f"nothing to plot in {in_dir}: expected {expected}")
    return written


def _model_targets(
    reports: Sequence[TargetReport], sweep_status: dict[str, Any] | None
) -> dict[str, str]:
    """model -> its target (several targets): from the held-out predictions of each target's
    records, and the status' learning curves (which name their target) when there is one."""
    owner = {m: r.target for r in reports if r.target is not None for m in r.models}
    for curve in (sweep_status or {}).get("learningCurve") or []:
        if isinstance(curve, dict) and isinstance(curve.get("target"), str):
            owner.setdefault(str(curve.get("model")), curve["target"])
    return owner


def _learning_curves(rows: list[dict[str, Any]], owner: dict[str, str], save: Save) -> None:
    """One figure per metric; with several targets one per metric and target (a model of no
    known target in the file without a target, as for one target)."""
    groups: dict[str | None, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[owner.get(row["model"])].append(row)
    for target, chosen in groups.items():
        present = {m for row in chosen for m in row["metrics"]}
        suffix = "" if target is None else f"_{target}"
        for metric in CURVE_METRICS:
            if metric in present:
                figure = learning_curve_figure(chosen, metric, target)
                save(figure, f"learning_curve_{metric}{suffix}.png")


def _trial_figures(report: TargetReport, save: Save) -> None:
    """One target's held-out predictions, its surface over two parameters (and, for a sweep of
    one target, its runtime against the atom count)."""
    trials, ceiling, target = report.trials, report.report.ceiling, report.target
    quantity = RUNTIME if target is None else target
    if any(t.split == TEST and t.predictions for t in trials):
        name = "predicted_vs_actual.png" if target is None else f"predicted_vs_actual_{target}.png"
        save(prediction_figure(trials, ceiling, quantity), name)
    if trials and target is None:
        save(runtime_figure(trials, ceiling), "runtime_vs_atoms.png")
    params = sorted({p for t in trials for p in t.parameters})
    pair = set(params[:2])
    with_both = [t for t in trials if len(pair) == 2 and pair <= t.parameters.keys()]
    if with_both:
        name = "runtime_heatmap.png" if target is None else f"heatmap_{target}.png"
        save(heatmap_figure(with_both, params[0], params[1], quantity), name)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--in", dest="in_dir", type=Path, required=True, help="watch/sweep output")
    parser.add_argument("--out", type=Path, required=True, help="directory for the PNGs")


def run(args: argparse.Namespace) -> int:
    for path in render(args.in_dir, args.out):
        print(path)
    return 0
