"""``streamml demo``: from a fresh machine to a learning curve, with one command.

1. builds (once, then cached) the control-plane binaries, showing progress;
2. starts kube-apiserver + etcd (+ controller-manager) on loopback;
3. runs the operator in local runtime as a child process (it starts the model server);
4. applies the CRDs and ``config/samples/`` (a StreamModel and a LammpsSweep of real LJ runs;
   ``--sample eos``: the equation-of-state sweep of ``config/samples/eos/``, three targets);
5. prints the StreamModel's dashboard URL (``status.dashboardUrl``) as soon as it serves, then
   shows live progress while ``watch`` records every model, and the sweep trains and evaluates;
6. prints ``kubectl get streammodels,lammpssweeps``, the held-out evaluation per model next to
   the offline ceiling (per target for a sweep of several: the physics surrogates next to the
   runtime model), and where the plots are;
7. stops everything it started, unless ``--keep-running`` (then ``streamml demo --stop`` does;
   the dashboard stays up until then).

Ctrl-C at any point runs the same cleanup: every process the demo ever saw below itself is
stopped by PID (see :mod:`streamml.procs`), nothing is left running.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from streamml.clients.evaluation import HeldOutReport, TargetReport, format_evaluation
from streamml.errors import ConfigurationError, InfrastructureError

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SAMPLES = REPO_ROOT / "config" / "samples"
#: ``--sample NAME``: the shipped samples the demo runs, and what each is
SAMPLES: dict[str, tuple[Path, str]] = {
    "runtime": (DEFAULT_SAMPLES, "LJ runtime against box size, six models (the default)"),
    "eos": (
        DEFAULT_SAMPLES / "eos",
        "LJ equation of state: pressure and energy per atom over density and temperature, "
        "and the run's cost, each to its own models",
    ),
}
STATE_FILE = "demo-state.json"
#: the issue's target: best streamed model within this much R² of the offline ceiling
CEILING_TOLERANCE = 0.03


def say(line: str) -> None:
    print(f"[demo] {line}", flush=True)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trials", type=int, help="training runs (default: the sample's)")
    parser.add_argument("--test-trials", type=int, help="held-out runs (default: the sample's)")
    parser.add_argument("--parallelism", type=int, help="runs in flight (default: the sample's)")
    parser.add_argument(
        "--out", type=Path, default=Path("out/demo"), help="output directory (default out/demo)"
    )
    choices = "; ".join(f"{name}: {what}" for name, (_, what) in SAMPLES.items())
    parser.add_argument("--sample", metavar="NAME", help=f"a shipped sample ({choices})")
    parser.add_argument(
        "--samples",
        type=Path,
        metavar="DIR",
        help=f"a directory of sample manifests instead (default {DEFAULT_SAMPLES})",
    )
    parser.add_argument("--namespace", default="default", help="namespace for the samples")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between updates")
    parser.add_argument("--timeout", type=float, default=1800.0, help="give up after (s)")
    parser.add_argument(
        "--keep-running",
        action="store_true",
        help="leave the control plane, operator and server running at the end",
    )
    parser.add_argument(
        "--stop", action="store_true", help="stop what a --keep-running demo left in --out"
    )


def _check(args: argparse.Namespace) -> None:
    for flag, value, low in (
        ("--trials", args.trials, 1),
        ("--test-trials", args.test_trials, 0),
        ("--parallelism", args.parallelism, 1),
    ):
        if value is not None and value < low:
            raise ConfigurationError(f"{flag} must be at least {low}, got {value}")
    if not args.interval > 0 or not args.timeout > 0:
        raise ConfigurationError("--interval and --timeout must be positive")
    if not args.stop and not (directory := samples_directory(args)).is_dir():
        raise ConfigurationError(f"--samples {directory} is not a directory")


def samples_directory(args: argparse.Namespace) -> Path:
    """The manifests to apply: ``--samples DIR``, the ``--sample NAME``'s, or the default."""
    if args.sample is not None and args.samples is not None:
        raise ConfigurationError("give --sample or --samples, not both")
    if args.samples is not None:
        return Path(args.samples)
    if args.sample is None:
        return DEFAULT_SAMPLES
    if args.sample not in SAMPLES:
        known = ", ".join(SAMPLES)
        raise ConfigurationError(f"--sample {args.sample!r} is not a sample; choose from: {known}")
    return SAMPLES[args.sample][0]


def run(args: argparse.Namespace) -> int:
    _check(args)
    out = args.out.resolve()
    if args.stop:
        from streamml.clients.demo_stack import stop_kept

        return stop_kept(out / STATE_FILE, say)
    from streamml.clients.demo_stack import Stack

    out.mkdir(parents=True, exist_ok=True)
    stack = Stack(out, keep_running=args.keep_running, say=say)
    try:
        stack.start()
        ok = _run_demo(stack, args, out)
    except KeyboardInterrupt:
        say("interrupted: stopping everything the demo started")
        stack.keep_running = False
        raise
    except BaseException:
        stack.keep_running = False  # a failed demo never leaves half a stack behind
        raise
    finally:
        stack.close()
    if args.keep_running:
        say(f"still running; stop it with: streamml demo --stop --out {out}")
        say(f'use kubectl with: eval "$(streamml cluster env --state-dir {stack.cluster_dir})"')
    return 0 if ok else 1


def _run_demo(stack: Any, args: argparse.Namespace, out: Path) -> bool:
    """The demo's script, step by step as it prints them (longer than ~60 lines: a straight
    sequence; each step is a call)."""
    from streamml.clients import demo_manifests as sample_files
    from streamml.clients.evaluation import (
        evaluate_targets,
        trials_of_every_target,
        write_trials,
    )
    from streamml.clients.plot import render

    samples = samples_directory(args)
    docs = sample_files.load(samples)
    docs = sample_files.resize(
        docs, trials=args.trials, test_trials=args.test_trials, parallelism=args.parallelism
    )
    for warning in sample_files.link(docs):
        say(f"WARNING: {warning}")
    for note in sample_files.without_ingress(docs):
        say(note)
    models = sample_files.names(docs, "StreamModel")
    sweeps = sample_files.names(docs, "LammpsSweep")
    if len(models) != 1 or len(sweeps) != 1:
        raise ConfigurationError(
            f"{samples}: expected one StreamModel and one LammpsSweep, "
            f"found {len(models)} and {len(sweeps)}"
        )
    model_name, sweep_name = models[0], sweeps[0]
    ns = args.namespace
    stack.apply(sample_files.dump(docs), ns)
    say(f"applied StreamModel/{model_name} and LammpsSweep/{sweep_name} in namespace {ns}")
    stack.wait_ready(model_name, ns, timeout=180.0)
    say(f"StreamModel {model_name} serves its models; recording them to {out / 'watch'}")
    dashboard = dashboard_note(stack.get("streammodel", model_name, ns), ns)
    if dashboard:
        say(dashboard)
    stack.start_watch(model_name, ns, out / "watch", interval=args.interval)

    deadline = time.monotonic() + args.timeout
    started, last = time.monotonic(), ""
    sweep: dict[str, Any] = {}
    while time.monotonic() < deadline:
        stack.sample()
        sweep = stack.get("lammpssweep", sweep_name, ns)
        model = stack.get("streammodel", model_name, ns)
        line = progress_line(sweep, model)
        if line != last:
            print(f"[{time.monotonic() - started:5.0f}s] {line}", flush=True)
            last = line
        if (sweep.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            break
        time.sleep(args.interval)
    else:
        raise InfrastructureError(f"the sweep did not finish within {args.timeout:.0f} s")
    stack.stop_watch()

    status = sweep.get("status") or {}
    (out / "sweep.json").write_text(json.dumps(sweep, indent=2, sort_keys=True))
    trials = trials_of_every_target(status)
    write_trials(out / "watch" / "trials.jsonl", trials)
    reports = evaluate_targets(trials)
    (out / "evaluation.json").write_text(json.dumps(evaluation_document(reports), indent=2))

    print("\n$ kubectl get streammodels,lammpssweeps", flush=True)
    print(stack.kubectl("get", "streammodels,lammpssweeps", "-n", ns).rstrip(), flush=True)
    print("\n".join(evaluation_lines(reports, target_sources(sweep))), flush=True)
    plots = render(out / "watch", out / "plots")
    print(f"\nPlots ({out / 'plots'}):", flush=True)
    for path in plots:
        print(f"  {path}", flush=True)
    print(f"Recorded metrics: {out / 'watch' / 'metrics.csv'}", flush=True)
    if dashboard and args.keep_running:
        print(f"\nThe dashboard stays up: {dashboard}", flush=True)
    return status.get("phase") == "Succeeded"


def dashboard_note(streammodel: dict[str, Any], namespace: str) -> str | None:
    """Where the StreamModel's dashboard is and how to log in (never the token itself)."""
    status = streammodel.get("status") or {}
    url, secret = status.get("dashboardUrl"), status.get("authSecretName")
    if not url:
        return None
    if not secret:
        return f"dashboard: {url}"
    token = f"kubectl get secret {secret} -n {namespace} -o jsonpath='{{.data.token}}' | base64 -d"
    return f"dashboard: {url} (log in as the Secret {secret}'s username, token: {token})"


def progress_line(sweep: dict[str, Any], model: dict[str, Any]) -> str:
    """One line of live progress: the sweep's counters and the best model so far."""
    status = sweep.get("status") or {}
    line = (
        f"sweep {status.get('phase', 'Pending')} {status.get('progress', '0/0')}"
        f" (succeeded {status.get('succeeded', 0)}, failed {status.get('failed', 0)},"
        f" running {status.get('running', 0)})"
    )
    model_status = model.get("status") or {}
    best = model_status.get("best") or {}
    if best.get("model"):
        samples = next(
            (
                m.get("samples", 0)
                for m in model_status.get("models") or []
                if m.get("name") == best["model"]
            ),
            0,
        )
        line += (
            f" | best {best['model']} {best.get('metric', '')} {float(best.get('value', 0)):.4g}"
            f" after {samples} samples"
        )
    return line


def target_sources(sweep: dict[str, Any]) -> dict[str, str]:
    """target -> where a run's value comes from, as the sweep's ``spec.targets`` says."""
    sources: dict[str, str] = {}
    for target in (sweep.get("spec") or {}).get("targets") or []:
        thermo, metric = target.get("thermo"), target.get("metric")
        if isinstance(thermo, dict):
            sources[str(target.get("name"))] = (
                f"{thermo.get('reduce', 'last')} of thermo column {thermo.get('column')}"
            )
        elif metric:
            sources[str(target.get("name"))] = f"{metric} of the run"
    return sources


def evaluation_lines(
    reports: list[TargetReport], sources: dict[str, str] | None = None
) -> list[str]:
    """The held-out evaluation as the demo prints it: a table of the models next to the
    offline ceiling and the verdict, once per target for a sweep of several."""
    first = reports[0].trials if reports else []
    n_train = sum(1 for t in first if t.split == "train")
    n_test = sum(1 for t in first if t.split == "test")
    lines = [f"\nHeld-out evaluation: {n_test} runs, models trained on {n_train} runs"]
    if not reports:
        lines.append("(not enough runs for a held-out evaluation)")
    for report in reports:
        if report.target is not None:
            source = (sources or {}).get(report.target)
            what = f"{source}; " if source else ""
            lines.append(f"\ntarget {report.target} ({what}models: {', '.join(report.models)})")
        lines.append(format_evaluation(report.report))
        lines.append(verdict(report.report))
    return lines


def evaluation_document(reports: list[TargetReport]) -> dict[str, Any]:
    """``evaluation.json``: the report of the one target, or ``{"targets": {name: report}}``."""
    if len(reports) == 1 and reports[0].target is None:
        return dict(reports[0].report.as_dict())
    return {"targets": {r.target: r.report.as_dict() for r in reports}}


def verdict(evaluation: HeldOutReport) -> str:
    best, ceiling = evaluation.best(), evaluation.ceiling
    if best is None or ceiling is None:
        return "(not enough runs for a held-out evaluation)"
    gap = best[1].r2 - ceiling.scores.r2
    within = "within" if gap >= -CEILING_TOLERANCE else "NOT within"
    return (
        f"best streamed model: {best[0]} R² {best[1].r2:.3f}; offline ceiling R² "
        f"{ceiling.scores.r2:.3f} ({gap:+.3f}, {within} {CEILING_TOLERANCE} of the ceiling)"
    )
