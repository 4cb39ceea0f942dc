"""watch's recording, plot's figures and the offline evaluation, with no server running."""

from __future__ import annotations

import csv
import json
import math
import random
from pathlib import Path

import pytest

from streamml.clients import evaluation as ev
from streamml.clients import plot, watch
from streamml.errors import ConfigurationError, SpecError


def _snap(t: float, model: str, samples: int, **metrics: float) -> dict[str, object]:
    return watch.snapshot(t, model, metrics, {"learn": {"n_calls": samples}}, {"p": 1})


def test_samples_learned_reads_riverapi_stats_and_ignores_garbage() -> None:
    assert watch.samples_learned({"learn": {"n_calls": 7}, "predict": {"n_calls": 3}}) == 7
    assert watch.samples_learned({"samples": 11, "learn": {"n_calls": 7}}) == 11
    assert watch.samples_learned({"learn": "many"}) == 0
    assert watch.samples_learned({"samples": True}) == 0
    assert watch.samples_learned({}) == 0


def test_numeric_metrics_drops_non_numbers_and_non_finite() -> None:
    got = watch.numeric_metrics({"MAE": 1, "RMSE": float("nan"), "x": "1", "ok": False, "R2": 0.5})
    assert got == {"MAE": 1.0, "R2": 0.5}


def test_metrics_table_appends_and_widens_without_losing_rows(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    table = watch.MetricsTable(path)
    table.append([_snap(1.0, "a", 1, MAE=0.5), _snap(1.0, "b,evil\nname", 1, MAE=0.7)])
    table.append([_snap(2.0, "a", 2, MAE=0.4, RMSE=0.6)])  # a new metric appears
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["time", "model", "samples", "MAE", "RMSE"]
    assert rows[1] == ["1.000", "a", "1", "0.5", ""]
    assert rows[2][1] == "b,evil\nname"  # quoted, not split into columns
    assert rows[3] == ["2.000", "a", "2", "0.4", "0.6"]
    # a second recorder on the same directory continues the same table
    again = watch.MetricsTable(path)
    assert again.columns == ["time", "model", "samples", "MAE", "RMSE"]
    again.append([_snap(3.0, "a", 3, RMSE=0.5)])
    parsed = watch.read_metrics_table(path)
    assert [(r["model"], r["samples"], r["metrics"]) for r in parsed][-1] == (
        "a",
        3,
        {"RMSE": 0.5},
    )
    assert len(parsed) == 4


def test_metrics_table_refuses_a_foreign_csv(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(ConfigurationError, match="not a streamml metrics table"):
        watch.MetricsTable(path)


def test_metrics_table_caps_hostile_numbers_of_columns(tmp_path: Path) -> None:
    table = watch.MetricsTable(tmp_path / "metrics.csv")
    table.append([_snap(1.0, "a", 1, **{f"m{i:04d}": float(i) for i in range(500)})])
    assert len(table.columns) == len(watch.FIXED_COLUMNS) + watch.MAX_METRIC_COLUMNS


def test_read_metrics_table_skips_corrupt_lines(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text("time,model,samples,MAE\n1.0,a,1,0.5\nnot-a-time,a,x,0.1\n2.0,a,2,oops\n")
    rows = watch.read_metrics_table(path)
    assert [(r["samples"], r["metrics"]) for r in rows] == [(1, {"MAE": 0.5}), (2, {})]


def test_recorder_writes_full_snapshots_as_jsonl(tmp_path: Path) -> None:
    recorder = watch.Recorder(tmp_path / "out")
    recorder.record([_snap(1.0, "a", 1, MAE=0.5)])
    recorder.record([])
    lines = (tmp_path / "out" / watch.SNAPSHOTS_JSONL).read_text().splitlines()
    assert [json.loads(x) for x in lines] == [
        {
            "time": 1.0,
            "model": "a",
            "samples": 1,
            "metrics": {"MAE": 0.5},
            "stats": {"learn": {"n_calls": 1}},
            "parameters": {"p": 1},
        }
    ]
    assert recorder.count == 1


def test_recorder_reports_an_unusable_output_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigurationError, match="cannot create output directory"):
        watch.Recorder(blocker / "sub")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--server", "http://127.0.0.1:1", "--interval", "0"], "--interval"),
        (["--server", "http://127.0.0.1:1", "--interval", "nan"], "--interval"),
        (["--server", "http://127.0.0.1:1", "--count", "0"], "--count"),
        (["--server", "http://127.0.0.1:1", "--duration", "-1"], "--duration"),
        (["--server", "file:///etc/passwd"], "http"),
    ],
)
def test_watch_rejects_bad_options(argv: list[str], message: str, tmp_path: Path) -> None:
    import argparse

    parser = argparse.ArgumentParser()
    watch.configure(parser)
    args = parser.parse_args([*argv, "--out", str(tmp_path)])
    with pytest.raises(ConfigurationError, match=message):
        watch.run(args)


# -- evaluation ----------------------------------------------------------------------------


def test_scores_match_hand_computed_values() -> None:
    s = ev.scores([1.0, 2.0, 3.0], [1.0, 2.0, 4.0])
    assert (s.n, s.mae, s.rmse) == (3, pytest.approx(1 / 3), pytest.approx(math.sqrt(1 / 3)))
    assert s.r2 == pytest.approx(1 - 1 / 2)
    assert math.isnan(ev.scores([2.0, 2.0], [1.0, 3.0]).r2)  # no variance: undefined, not 1


def _synthetic(seed: int = 0, noise: float = 0.1) -> list[ev.FinishedTrial]:
    rng = random.Random(seed)
    trials = []
    for i in range(40):
        nx, ny, nz = (rng.randint(8, 30) for _ in range(3))
        atoms = 4 * nx * ny * nz
        runtime = 0.02 + 30e-6 * atoms * (1 + rng.uniform(-noise, noise))
        split = ev.TRAIN if i < 30 else ev.TEST
        predictions = {"good": 0.02 + 30e-6 * atoms, "raw": 0.01 * (nx + ny + nz)}
        trials.append(
            ev.FinishedTrial(
                f"t{i}", split, {"nx": nx, "ny": ny, "nz": nz}, runtime, predictions=predictions
            )
        )
    return trials


def test_ceiling_recovers_the_generating_line_and_scores_held_out_runs() -> None:
    trials = _synthetic(noise=0.0)
    ceiling = ev.offline_ceiling(trials)
    assert ceiling is not None
    # size is the product of the params: slope = 4 * 30e-6 per unit of product
    assert ceiling.slope == pytest.approx(120e-6)
    assert ceiling.intercept == pytest.approx(0.02)
    assert ceiling.scores.r2 == pytest.approx(1.0)
    assert ceiling.n_train == 30 and ceiling.scores.n == 10


def test_evaluate_ranks_models_against_the_ceiling() -> None:
    result = ev.evaluate(_synthetic())
    assert set(result.models) == {"good", "raw"}
    assert result.best() is not None and result.best()[0] == "good"  # type: ignore[index]
    assert result.models["raw"].r2 < result.models["good"].r2
    table = ev.format_evaluation(result)
    assert table.splitlines()[1].startswith("good")
    assert "offline ceiling" in table.splitlines()[-1]
    data = result.as_dict()
    assert data["best"]["model"] == "good"
    assert data["ceiling"]["n_train"] == 30


def test_ceiling_needs_training_and_test_runs() -> None:
    trials = [t for t in _synthetic() if t.split == ev.TRAIN]
    assert ev.offline_ceiling(trials) is None
    assert ev.offline_ceiling(_synthetic()[:1] + _synthetic()[-1:]) is None


def test_trial_records_round_trip_and_reject_malformed_input(tmp_path: Path) -> None:
    path = tmp_path / "trials.jsonl"
    ev.write_trials(path, _synthetic())
    assert ev.load_trials(path) == _synthetic()
    bad = [
        ('{"split": "test", "parameters": {"nx": 1}, "target": "fast"}', "target"),
        ('{"split": "holdout", "parameters": {}, "target": 1}', "split"),
        ('{"parameters": [1, 2], "target": 1}', "parameters"),
        ('{"parameters": {"nx": "8"}, "target": 1}', "parameters.nx"),
        ('{"parameters": {"nx": 8}, "target": 1e999}', "finite"),
        ("[1, 2]", "must be an object"),
        ("{not json", "not JSON"),
    ]
    for text, message in bad:
        path.write_text(text)
        with pytest.raises(SpecError, match=message):
            ev.load_trials(path)
    with pytest.raises(SpecError, match="cannot read"):
        ev.load_trials(tmp_path / "missing.jsonl")


# -- plot ----------------------------------------------------------------------------------


def test_learning_curve_has_one_line_per_model_with_the_recorded_points() -> None:
    rows = [
        {"model": "a", "samples": 1, "metrics": {"RMSE": 3.0}},
        {"model": "a", "samples": 2, "metrics": {"RMSE": 2.0}},
        {"model": "a", "samples": 2, "metrics": {"RMSE": 1.5}},  # later poll, same count
        {"model": "b", "samples": 1, "metrics": {"RMSE": 4.0, "MAE": 1.0}},
        {"model": "c", "samples": 1, "metrics": {"MAE": 1.0}},  # no RMSE: no line
    ]
    figure = plot.learning_curve_figure(rows, "RMSE")
    lines = figure.axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["a", "b"]
    assert list(lines[0].get_xdata()) == [1, 2]
    assert list(lines[0].get_ydata()) == [3.0, 1.5]


def test_prediction_and_runtime_figures_plot_every_held_out_run() -> None:
    trials = _synthetic()
    ceiling = ev.offline_ceiling(trials)
    figure = plot.prediction_figure(trials, ceiling)
    collections = figure.axes[0].collections
    labels = [c.get_label() for c in collections]
    assert labels[0].startswith("good (R² ") and labels[1].startswith("raw (R² ")
    assert labels[2].startswith("offline ceiling")
    assert all(len(c.get_offsets()) == 10 for c in collections)
    runtime = plot.runtime_figure(trials, ceiling)
    sizes = [len(c.get_offsets()) for c in runtime.axes[0].collections]
    assert sizes == [30, 10]


def test_heatmap_grid_averages_runtime_per_cell() -> None:
    trials = [
        ev.FinishedTrial("a", ev.TRAIN, {"nx": 0, "ny": 0}, 1.0),
        ev.FinishedTrial("b", ev.TRAIN, {"nx": 0, "ny": 0}, 3.0),
        ev.FinishedTrial("c", ev.TRAIN, {"nx": 6, "ny": 6}, 5.0),
    ]
    x_edges, y_edges, grid = plot.heatmap_grid(trials, "nx", "ny", bins=2)
    assert x_edges == [0, 3, 6] and y_edges == [0, 3, 6]
    assert grid[0][0] == 2.0 and grid[1][1] == 5.0
    assert math.isnan(grid[0][1]) and math.isnan(grid[1][0])


def test_render_writes_decodable_non_blank_pngs(tmp_path: Path) -> None:
    from matplotlib import image

    src = tmp_path / "in"
    recorder = watch.Recorder(src)
    for n in range(1, 6):
        recorder.record([_snap(n, "a", n, RMSE=1 / n, MAE=0.5 / n), _snap(n, "b", n, RMSE=2 / n)])
    ev.write_trials(src / plot.TRIALS_JSONL, _synthetic())
    written = plot.render(src, tmp_path / "png")
    assert sorted(p.name for p in written) == [
        "learning_curve_MAE.png",
        "learning_curve_RMSE.png",
        "predicted_vs_actual.png",
        "runtime_heatmap.png",
        "runtime_vs_atoms.png",
    ]
    for path in written:
        pixels = image.imread(path)
        assert pixels.shape[0] > 300 and pixels.shape[1] > 400
        assert pixels.std() > 0.05  # something was drawn


def test_render_explains_when_there_is_nothing_to_plot(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="nothing to plot"):
        plot.render(tmp_path, tmp_path / "png")
    with pytest.raises(ConfigurationError, match="not a directory"):
        plot.render(tmp_path / "missing", tmp_path / "png")


def _sweep_status() -> dict[str, object]:
    return {
        "phase": "Succeeded",
        "trials": [
            {
                "id": 0,
                "role": "train",
                "attempt": 1,
                "jobName": "s-t0",
                "state": "Succeeded",
                "params": {"nx": "8", "ny": "8"},
                "target": 0.2,
            },
            {
                "id": 1,
                "role": "train",
                "attempt": 1,
                "jobName": "s-t1",
                "state": "Succeeded",
                "params": {"nx": "16", "ny": "8"},
                "target": 0.4,
            },
            {
                "id": 2,
                "role": "train",
                "attempt": 1,
                "jobName": "s-t2",
                "state": "Failed",
                "params": {"nx": "9", "ny": "9"},
                "target": None,
            },
            {
                "id": 3,
                "role": "train",
                "attempt": 1,
                "jobName": "s-t3",
                "state": "Succeeded",
                "params": {"nx": "16", "ny": "16"},
                "target": 0.8,
            },
            {
                "id": 0,
                "role": "test",
                "attempt": 1,
                "jobName": "s-h0",
                "state": "Succeeded",
                "params": {"nx": "12", "ny": "8", "mode": "fast"},
                "target": 0.3,
            },
            {
                "id": 1,
                "role": "test",
                "attempt": 1,
                "jobName": "s-h1",
                "state": "Succeeded",
                "params": {"nx": "8", "ny": "12"},
                "target": 0.31,
            },
        ],
        "testResults": [
            {"id": 0, "target": 0.3, "predictions": {"a": 0.29, "b": "oops"}},
            {"id": 1, "target": 0.31, "predictions": {"a": 0.33, "b": 0.5}},
            {"id": 9, "target": True},
        ],
        "learningCurve": [
            {
                "model": "a",
                "metric": "RMSE",
                "points": [
                    {"trials": 1, "samples": 1, "value": 0.5},
                    {"trials": 3, "samples": 3, "value": 0.1},
                ],
            },
        ],
    }


def test_trials_from_sweep_status_joins_held_out_results_to_their_parameters() -> None:
    trials = ev.trials_from_sweep_status(_sweep_status())
    train = [t for t in trials if t.split == ev.TRAIN]
    test = [t for t in trials if t.split == ev.TEST]
    assert [(t.name, t.size, t.target) for t in train] == [
        ("s-t0", 64, 0.2),
        ("s-t1", 128, 0.4),
        ("s-t3", 256, 0.8),
    ]
    assert [(t.parameters, t.target, t.predictions) for t in test] == [
        ({"nx": 12.0, "ny": 8.0}, 0.3, {"a": 0.29}),  # the categorical param is not a size
        ({"nx": 8.0, "ny": 12.0}, 0.31, {"a": 0.33, "b": 0.5}),
    ]
    ceiling = ev.offline_ceiling(trials)
    assert ceiling is not None and ceiling.slope == pytest.approx(0.2 / 64)
    with pytest.raises(SpecError):
        ev.trials_from_sweep_status([])  # type: ignore[arg-type]


def test_render_from_a_sweep_object_alone(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / plot.SWEEP_JSON).write_text(
        json.dumps({"kind": "LammpsSweep", "status": _sweep_status()})
    )
    written = sorted(p.name for p in plot.render(src, tmp_path / "png"))
    assert written == [
        "learning_curve_RMSE.png",
        "predicted_vs_actual.png",
        "runtime_heatmap.png",
        "runtime_vs_atoms.png",
    ]
    rows = plot.curve_rows_from_sweep_status(_sweep_status())
    assert [(r["samples"], r["metrics"]) for r in rows] == [(1, {"RMSE": 0.5}), (3, {"RMSE": 0.1})]
    (src / plot.SWEEP_JSON).write_text("[]")
    with pytest.raises(SpecError, match="LammpsSweep"):
        plot.render(src, tmp_path / "png")


# -- several targets -----------------------------------------------------------------------


def _pressure(rho: float, t: float) -> float:
    return 1.0 + 2.0 * rho - 3.0 * t + 0.5 * rho * rho + rho * t - 0.25 * t * t


def two_target_status() -> dict[str, object]:
    """A status of a sweep with two targets (pressure an exact quadratic of (rho, t), cost
    linear), each learned by its own models (p-poly, p-flat: pressure; c-poly: cost), in the
    shape the operator writes it."""
    points = [(0.6 + 0.02 * i, 1.3 + 0.06 * ((i * 7) % 11)) for i in range(14)]
    trials, tests = [], []
    for i, (rho, t) in enumerate(points):
        values = {"pressure": _pressure(rho, t), "cost": 2.0 * rho + 0.1 * (i % 3)}
        role = "train" if i < 10 else "test"
        trials.append({"id": i, "role": role, "attempt": 1, "state": "Succeeded",
                       "jobName": f"eos-{i}", "params": {"rho": str(rho), "t": str(t)},
                       "target": values["pressure"], "targets": values})  # fmt: skip
        if role == "test":
            predictions = {"p-poly": values["pressure"] + 0.01, "p-flat": 1.0,
                           "c-poly": values["cost"] - 0.05}  # fmt: skip
            tests.append({"id": i, "target": values["pressure"], "targets": values,
                          "predictions": predictions})  # fmt: skip
    by_target = [
        {"target": "pressure",
         "evaluation": [{"model": "p-flat", "n": 4}, {"model": "p-poly", "n": 4}]},
        {"target": "cost", "evaluation": [{"model": "c-poly", "n": 4}]},
    ]  # fmt: skip
    curves = [
        {"model": m, "metric": "RMSE", "target": target,
         "points": [{"trials": 1, "samples": 1, "value": 1.0},
                    {"trials": 10, "samples": 10, "value": 0.1}]}
        for m, target in (("p-poly", "pressure"), ("p-flat", "pressure"), ("c-poly", "cost"))
    ]  # fmt: skip
    return {"phase": "Succeeded", "trials": trials, "testResults": tests,
            "evaluationByTarget": by_target, "learningCurve": curves}  # fmt: skip


def test_every_target_gets_its_own_records_models_and_polynomial_ceiling() -> None:
    trials = ev.trials_of_every_target(two_target_status())
    reports = ev.evaluate_targets(trials)
    assert [r.target for r in reports] == ["pressure", "cost"]
    pressure, cost = reports
    assert pressure.models == ["p-flat", "p-poly"] and cost.models == ["c-poly"]
    assert [t.target for t in cost.trials] == [
        t["targets"]["cost"]  # type: ignore[index]
        for t in two_target_status()["trials"]  # type: ignore[attr-defined]
    ]
    assert set(pressure.report.models) == {"p-flat", "p-poly"}
    assert pressure.report.models["p-poly"].mae == pytest.approx(0.01)
    ceiling = pressure.report.ceiling
    assert ceiling is not None and ceiling.features == ("rho", "t") and ceiling.n_train == 10
    assert ceiling.scores.r2 == pytest.approx(1.0)  # the surface is in the span of the features
    assert "LSQ on rho, t, degree 2" in ceiling.label
    for t in pressure.trials:  # the fit it keeps reproduces the surface
        assert ceiling.predict_trial(t) == pytest.approx(t.target, abs=1e-9)
    assert "LSQ on rho, t, degree 2" in ev.format_evaluation(pressure.report).splitlines()[-1]
    # a sweep of one target: one report, named by no target, the atom-count ceiling
    (single,) = ev.evaluate_targets(ev.trials_of_every_target(_sweep_status()))
    assert single.target is None and single.report.ceiling is not None
    assert single.report.ceiling.label == "offline ceiling (LSQ on atoms)"


def test_trial_records_keep_their_target_and_refuse_a_bad_target_name(tmp_path: Path) -> None:
    path = tmp_path / "trials.jsonl"
    trials = ev.trials_of_every_target(two_target_status())
    ev.write_trials(path, trials)
    assert ev.load_trials(path) == trials
    assert {t.target_name for t in ev.load_trials(path)} == {"pressure", "cost"}
    for bad in ('"../x"', "3", '"Pressure"'):
        path.write_text('{"parameters": {}, "target": 1, "target_name": ' + bad + "}")
        with pytest.raises(SpecError, match="target_name"):
            ev.load_trials(path)


def test_render_draws_each_target_in_files_named_by_it(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    status = two_target_status()
    (src / plot.SWEEP_JSON).write_text(json.dumps({"kind": "LammpsSweep", "status": status}))
    written = sorted(p.name for p in plot.render(src, tmp_path / "png"))
    assert written == [
        "heatmap_cost.png",
        "heatmap_pressure.png",
        "learning_curve_RMSE_cost.png",
        "learning_curve_RMSE_pressure.png",
        "predicted_vs_actual_cost.png",
        "predicted_vs_actual_pressure.png",
    ]
    # the same from the records the demo writes (trials.jsonl) and watch's metrics.csv: the
    # models' targets come from the held-out predictions
    watched = tmp_path / "watched"
    recorder = watch.Recorder(watched)
    for n in range(1, 4):
        recorder.record([_snap(n, m, n, RMSE=1 / n, R2=0.5) for m in ("p-poly", "c-poly")])
    ev.write_trials(watched / plot.TRIALS_JSONL, ev.trials_of_every_target(status))
    names = {p.name for p in plot.render(watched, tmp_path / "png2")}
    assert {"learning_curve_R2_pressure.png", "learning_curve_RMSE_cost.png"} <= names
    assert not names & {"learning_curve_RMSE.png", "predicted_vs_actual.png"}


def test_a_targets_figures_show_its_models_and_its_ceiling_only() -> None:
    pressure, cost = ev.evaluate_targets(ev.trials_of_every_target(two_target_status()))
    figure = plot.prediction_figure(pressure.trials, pressure.report.ceiling, "pressure")
    collections = figure.axes[0].collections
    labels = [c.get_label() for c in collections]
    assert [label.split()[0] for label in labels] == ["p-flat", "p-poly", "offline"]
    assert figure.axes[0].get_xlabel() == "actual pressure"
    ceiling_points = collections[2].get_offsets()
    test = [t for t in pressure.trials if t.split == ev.TEST]
    flat = [float(v) for point in ceiling_points for v in point]
    expected = [t.target for t in test for _ in range(2)]
    assert flat == pytest.approx(expected, abs=1e-9)  # the polynomial fit's own, not NaN
    curves = [
        {"model": "p-poly", "samples": 1, "metrics": {"RMSE": 1.0}},
        {"model": "p-poly", "samples": 2, "metrics": {"RMSE": 0.5}},
    ]
    title = plot.learning_curve_figure(curves, "RMSE", "pressure").axes[0].get_title()
    assert "of pressure" in title
    heat = plot.heatmap_figure(cost.trials, "rho", "t", "cost")
    assert heat.axes[0].get_title().startswith("Mean cost over rho by t")
