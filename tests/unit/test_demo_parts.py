"""The demo's pure parts: samples handling, progress lines, verdict, options, process tracking."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from streamml import procs
from streamml.clients import demo
from streamml.clients import demo_manifests as samples
from streamml.clients.evaluation import Ceiling, HeldOutReport, Scores
from streamml.errors import ConfigurationError, SpecError

ROOT = Path(__file__).resolve().parents[2]


def test_the_shipped_samples_fit_together() -> None:
    docs = samples.load(ROOT / "config" / "samples")
    models = samples.names(docs, "StreamModel")
    sweeps = [d for d in docs if d["kind"] == "LammpsSweep"]
    assert len(models) == 1 and len(sweeps) == 1
    # kubectl apply -f config/samples/ must give a sweep that finds its StreamModel
    assert sweeps[0]["spec"]["streamModelRef"]["name"] == models[0]
    assert samples.link(docs) == []
    model_names = [
        m["name"] for m in docs[[d["kind"] for d in docs].index("StreamModel")]["spec"]["models"]
    ]
    assert {"linear", "bayesian", "passive-aggressive", "atoms-bayesian"} <= set(model_names)


def test_resize_changes_only_the_sweep_counts() -> None:
    docs = samples.load(ROOT / "config" / "samples")
    resized = samples.resize(docs, trials=4, test_trials=2)
    sweep = next(d for d in resized if d["kind"] == "LammpsSweep")
    original = next(d for d in docs if d["kind"] == "LammpsSweep")
    assert (sweep["spec"]["trials"], sweep["spec"]["testTrials"]) == (4, 2)
    assert sweep["spec"]["parallelism"] == original["spec"]["parallelism"]
    assert original["spec"]["trials"] != 4  # the input is not modified
    assert list(yaml.safe_load_all(samples.dump(resized))) == resized


def test_without_ingress_turns_off_only_enabled_ingresses() -> None:
    docs = samples.load(ROOT / "config" / "samples")
    notes = samples.without_ingress(docs)
    model = next(d for d in docs if d["kind"] == "StreamModel")
    assert model["spec"]["ingress"]["enabled"] is False
    assert len(notes) == 1 and "Ingress disabled" in notes[0]
    assert samples.without_ingress(docs) == []


def test_link_points_a_stray_sweep_at_the_one_streammodel() -> None:
    docs = [
        {"kind": "StreamModel", "metadata": {"name": "m"}, "spec": {}},
        {
            "kind": "LammpsSweep",
            "metadata": {"name": "s"},
            "spec": {"streamModelRef": {"name": "x"}},
        },
    ]
    warnings = samples.link(docs)
    assert len(warnings) == 1 and "'x'" in warnings[0]
    assert docs[1]["spec"]["streamModelRef"]["name"] == "m"


@pytest.mark.parametrize(
    "content, message",
    [
        ("kind: A\n", "needs kind and metadata"),
        ("- 1\n- 2\n", "needs kind and metadata"),
        ("a: [\n", "not valid YAML"),
    ],
)
def test_load_rejects_malformed_samples(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "x.yaml").write_text(content)
    with pytest.raises(SpecError, match=message):
        samples.load(tmp_path)


def test_load_rejects_an_empty_or_oversized_directory(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no manifests"):
        samples.load(tmp_path)
    (tmp_path / "big.yaml").write_text("#" * (samples.MAX_SAMPLE_BYTES + 1))
    with pytest.raises(SpecError, match="larger than"):
        samples.load(tmp_path)


def test_progress_line_shows_counters_and_the_best_model() -> None:
    sweep = {"status": {"phase": "Running", "progress": "7/40", "succeeded": 7, "running": 2}}
    model = {
        "status": {
            "samplesLearned": 84,
            "models": [
                {"name": "linear", "samples": 42},
                {"name": "atoms-bayesian", "samples": 42},
            ],
            "best": {"model": "atoms-bayesian", "metric": "RMSE", "value": 0.0123456},
        }
    }
    line = demo.progress_line(sweep, model)
    assert line == (
        "sweep Running 7/40 (succeeded 7, failed 0, running 2)"
        " | best atoms-bayesian RMSE 0.01235 after 42 samples"
    )
    assert demo.progress_line({}, {}) == "sweep Pending 0/0 (succeeded 0, failed 0, running 0)"


def test_verdict_compares_the_best_model_with_the_ceiling() -> None:
    ceiling = Ceiling(0.0, 1.0, 30, Scores(10, 0.1, 0.1, 0.80))
    close = HeldOutReport(
        {"a": Scores(10, 0.1, 0.1, 0.78), "b": Scores(10, 0.1, 0.1, 0.1)}, ceiling
    )
    assert "best streamed model: a R² 0.780" in demo.verdict(close)
    assert "(-0.020, within 0.03 of the ceiling)" in demo.verdict(close)
    far = HeldOutReport({"a": Scores(10, 0.1, 0.1, 0.70)}, ceiling)
    assert "NOT within" in demo.verdict(far)
    assert "not enough runs" in demo.verdict(HeldOutReport({}, None))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--trials", "0"], "--trials must be at least 1"),
        (["--test-trials", "-1"], "--test-trials must be at least 0"),
        (["--parallelism", "0"], "--parallelism"),
        (["--interval", "0"], "positive"),
        (["--samples", "/nonexistent/samples"], "is not a directory"),
    ],
)
def test_demo_rejects_bad_options_before_starting_anything(argv: list[str], message: str) -> None:
    parser = argparse.ArgumentParser()
    demo.configure(parser)
    with pytest.raises(ConfigurationError, match=message):
        demo.run(parser.parse_args(argv))


def test_demo_stop_without_state_is_a_no_op(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    demo.configure(parser)
    assert demo.run(parser.parse_args(["--stop", "--out", str(tmp_path)])) == 0
    assert "nothing to stop" in capsys.readouterr().out


def test_tracker_finds_and_stops_grandchildren_in_their_own_session() -> None:
    # a child that starts a grandchild in a new session, then exits: the grandchild is orphaned
    script = (
        "import subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-P', '-c', 'import time; time.sleep(600)'],"
        " start_new_session=True)\n"
        "time.sleep(600)\n"
    )
    child = subprocess.Popen([sys.executable, "-P", "-c", script])
    # rooted at the child: never near this test process' other children (session fixtures)
    tracker = procs.ProcessTracker(child.pid)
    deadline = time.monotonic() + 30
    while not tracker.alive() and time.monotonic() < deadline:
        tracker.sample()
        time.sleep(0.05)
    (grandchild,) = tracker.alive()
    child.kill()
    child.wait()
    tracker.sample()
    assert tracker.alive() == [grandchild]  # orphaned, still remembered
    assert tracker.stop_all(grace=2.0) == [grandchild]
    assert tracker.alive() == []


def test_dashboard_note_names_the_url_and_the_secret_never_the_token() -> None:
    from streamml.clients.demo import dashboard_note

    status = {"dashboardUrl": "http://127.0.0.1:4242/dashboard/", "authSecretName": "lt-auth"}
    note = dashboard_note({"status": status}, "demo")
    assert note is not None
    assert note.startswith("dashboard: http://127.0.0.1:4242/dashboard/ ")
    assert "kubectl get secret lt-auth -n demo -o jsonpath='{.data.token}'" in note
    assert dashboard_note({"status": {"authSecretName": "lt-auth"}}, "demo") is None
    assert dashboard_note({}, "demo") is None


def _demo_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    demo.configure(parser)
    return parser.parse_args(list(argv))


def test_a_sample_by_name_is_its_shipped_directory() -> None:
    assert demo.samples_directory(_demo_args()) == ROOT / "config" / "samples"
    assert demo.samples_directory(_demo_args("--sample", "runtime")) == ROOT / "config" / "samples"
    eos = demo.samples_directory(_demo_args("--sample", "eos"))
    assert eos == ROOT / "config" / "samples" / "eos"
    docs = samples.load(eos)  # one StreamModel and one LammpsSweep, as the demo needs
    assert samples.names(docs, "StreamModel") == samples.names(docs, "LammpsSweep") == ["lj-eos"]
    assert demo.samples_directory(_demo_args("--samples", str(eos))) == eos
    parser = argparse.ArgumentParser()
    demo.configure(parser)
    assert "eos: LJ equation of state" in " ".join(parser.format_help().split())


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--sample", "nope"], "--sample 'nope' is not a sample; choose from: runtime, eos"),
        (["--sample", "eos", "--samples", "config/samples"], "--sample or --samples, not both"),
    ],
)
def test_a_bad_sample_choice_is_refused_before_anything_starts(
    argv: list[str], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        demo.run(_demo_args(*argv))


def test_the_demo_prints_each_targets_models_next_to_its_own_ceiling() -> None:
    from streamml.clients import evaluation
    from tests.unit.test_watch_plot import two_target_status

    reports = evaluation.evaluate_targets(evaluation.trials_of_every_target(two_target_status()))
    sweep = {"spec": {"targets": [
        {"name": "pressure", "thermo": {"column": "Press", "reduce": "mean"}, "models": []},
        {"name": "cost", "metric": "cpu_time", "models": []},
    ]}}  # fmt: skip
    text = "\n".join(demo.evaluation_lines(reports, demo.target_sources(sweep)))
    assert "Held-out evaluation: 4 runs, models trained on 10 runs" in text
    _head, pressure, cost = text.split("\ntarget ")
    assert pressure.startswith("pressure (mean of thermo column Press; models: p-flat, p-poly)")
    assert cost.startswith("cost (cpu_time of the run; models: c-poly)")
    rows = {part: [line.split()[0] for line in part.splitlines()[2:]] for part in (pressure, cost)}
    assert rows[pressure] == ["p-poly", "p-flat", "offline", "best"]  # by R², then the ceiling
    assert rows[cost] == ["c-poly", "offline", "best"]
    for part in (pressure, cost):
        assert "offline ceiling (LSQ on rho, t, degree 2)" in part
    assert "best streamed model: p-poly" in pressure and "best streamed model: c-poly" in cost
    document = demo.evaluation_document(reports)
    assert set(document["targets"]) == {"pressure", "cost"}
    assert set(document["targets"]["cost"]["models"]) == {"c-poly"}
    assert document["targets"]["pressure"]["ceiling"]["n_train"] == 10
