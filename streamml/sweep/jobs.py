"""Pure builders of the sweep engine: job names and requests, result reading, scores, curves.

Nothing here talks to a scheduler or a server; the engine (:mod:`streamml.sweep.engine`) calls
these and does the I/O.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamml.pycommand import streamml_command
from streamml.sweep import timelimits
from streamml.sweep.sampling import Point, as_vars
from streamml.sweep.schedulers.base import JobRequest
from streamml.vocabulary import jobresult
from streamml.vocabulary.jobresult import JobResult, finite
from streamml.vocabulary.lammpssweep import LammpsSweepSpec
from streamml.vocabulary.sweepstatus import (
    MAX_CURVE_POINTS,
    CurvePoint,
    Evaluation,
    HeldOutResult,
    TargetEvaluation,
)
from streamml.vocabulary.targets import TARGET_LIST, TargetSpec, model_targets

#: the job-side program; the kubernetes backend's image has ``streamml`` on its PATH instead
DEFAULT_JOB_PREFIX: tuple[str, ...] = tuple(streamml_command("run-lammps"))
REMOTE_JOB_PREFIX: tuple[str, ...] = ("streamml", "run-lammps")
TERMINATION_LOG = "/dev/termination-log"
RESULT_FILE = "result.json"
#: a trial's LAMMPS runs here, in its copy of the input snapshot (beside result.json, not in it)
RUN_DIR = "run"
#: preferred headline metrics for the learning curve, in order
HEADLINE_METRICS = ("R2", "RMSE", "MAE")


@dataclass(frozen=True)
class JobContext:
    """Everything a trial's job needs besides its point: where to send, how to authenticate."""

    server: str
    workdir: Path
    identity: str  # unique per sweep (the CR uid, or name + plan fingerprint for the CLI)
    models: Sequence[str] | None = None
    env: Mapping[str, str] = field(default_factory=dict)  # e.g. STREAMML_TOKEN_FILE
    prefix: Sequence[str] = DEFAULT_JOB_PREFIX
    #: the sweep's input snapshot (script + files; :mod:`.sweep_inputs`) and the script's name
    input_dir: Path | None = None
    input_name: str | None = None
    spool: bool = True
    #: the job runs where our filesystem is not (a Pod): its result comes back as the
    #: termination message, and an undelivered result fails the job (no spool to redeliver)
    remote: bool = False


def job_name(sweep: str, trial: int, attempt: int, identity: str) -> str:
    """A DNS-label-safe name, unique per (sweep identity, trial, attempt): the key a restarted
    engine looks its job up by. The identity's digest keeps two sweeps of one name (in two
    namespaces, or a CLI sweep re-planned under its old name) from adopting each other's jobs
    on a scheduler they share. A trial record keeps the name it was submitted under, so a
    record written before the digest was added is still found under its old name."""
    base = re.sub(r"[^a-z0-9-]", "-", sweep.lower()).strip("-") or "sweep"
    if len(base) > 38:
        base = f"{base[:29]}-{hashlib.sha256(base.encode()).hexdigest()[:8]}"
    scope = hashlib.sha256(identity.encode()).hexdigest()[:6]
    return f"{base}-{scope}-t{trial:05d}-a{attempt}"


def trial_identifier(identity: str, trial: int) -> str:
    """The learn identifier: the same for every attempt, so a retried trial learns once."""
    return f"{identity}/t{trial:05d}"


def trial_dir(ctx: JobContext, name: str) -> Path:
    return ctx.workdir / "trials" / name


def build_job(
    spec: LammpsSweepSpec,
    ctx: JobContext,
    *,
    trial: int,
    attempt: int,
    point: Point,
    test: bool,
    sweep: str,
    time_limit: int | None = None,
) -> JobRequest:
    """The scheduler request of one attempt of one trial (``streamml run-lammps ...``).

    ``time_limit`` is a predicted (or grown) scheduler limit (:mod:`.timelimits`): LAMMPS
    gets it less the job's grace; without it the user's ``timeLimitSeconds`` is LAMMPS' and
    the scheduler's is a minute more. One command line, built top to bottom in the order
    run-lammps reads it (longer than ~60 lines on purpose: split, the order of its options
    would be scattered).
    """
    name = job_name(sweep, trial, attempt, ctx.identity)
    out = trial_dir(ctx, name)
    result = TERMINATION_LOG if ctx.remote else str(out / RESULT_FILE)
    command = [
        *ctx.prefix,
        "--server",
        ctx.server,
        "--trial-id",
        trial_identifier(ctx.identity, trial),
        *target_args(spec),
        "--features",
        spec.lammps.features,
        "--lmp",
        spec.lammps.command,
        "--result-file",
        result,
    ]
    if not ctx.remote:
        command += ["--log-file", str(out / "lammps.log")]
    if ctx.spool and not ctx.remote:
        command += ["--spool-dir", str(ctx.workdir / "spool")]
    for model in ctx.models or ():
        command += ["--model", model]
    if ctx.input_dir is not None and ctx.input_name is not None:
        # each trial runs LAMMPS in its own copy of the snapshot; a Pod gets the snapshot as a
        # ConfigMap volume whose path its backend sets (STREAMML_INPUT_DIR)
        if not ctx.remote:
            command += ["--input-dir", str(ctx.input_dir), "--run-dir", str(out / RUN_DIR)]
        command += ["--input", ctx.input_name]
    for key, value in {**spec.lammps.vars, **as_vars(point)}.items():
        command += ["--var", f"{key}={value}"]
    flux = spec.scheduler.type == "flux"
    if spec.lammps.mpi_procs > 1:
        # under Flux the job is an allocation of mpiProcs tasks and `flux run` starts the ranks
        command += ["--flux-run" if flux else "--mpirun", str(spec.lammps.mpi_procs)]
    command += container_args(spec)
    if time_limit is not None:
        command += ["--timeout", str(max(time_limit - timelimits.GRACE_S, 1))]
    elif spec.resources.time_limit_seconds:
        command += ["--timeout", str(spec.resources.time_limit_seconds)]
    if test:
        command.append("--test")
    return JobRequest(
        name=name,
        command=command,
        # the sweep and the attempt reach the job by its environment (an older run-lammps in
        # an image ignores them, where an unknown option would fail it): its provenance
        env={
            **ctx.env,
            "STREAMML_RESULT_FILE": result,
            "STREAMML_SWEEP": sweep,
            "STREAMML_ATTEMPT": str(attempt),
        },
        workdir=None if ctx.remote else out,
        input_dir=ctx.input_dir,
        cpus=max(spec.resources.cpus, spec.lammps.mpi_procs),
        tasks=spec.lammps.mpi_procs if flux else 1,
        nodes=spec.resources.nodes,
        time_limit_s=time_limit if time_limit is not None else timelimits.user_limit(spec),
    )


def target_args(spec: LammpsSweepSpec) -> list[str]:
    """``--target METRIC``, or ``--targets JSON`` for a sweep that lists its targets."""
    if spec.targets is None:
        return ["--target", spec.lammps.target]
    listed = TARGET_LIST.dump_json(spec.targets, by_alias=True, exclude_none=True)
    return ["--targets", listed.decode()]


def container_args(spec: LammpsSweepSpec) -> list[str]:
    """``run-lammps`` options that wrap lmp in ``spec.lammps.container`` (none without one)."""
    box = spec.lammps.container
    if box is None:
        return []
    args = ["--container-runtime", box.runtime, "--container-image", box.image]
    for bind in box.binds:
        args += ["--container-bind", bind]
    return args


def read_result(ctx: JobContext, name: str, output: str | None) -> JobResult | None:
    """The job's result document: transported by the scheduler, else the file it wrote."""
    text = output
    if not text and not ctx.remote:
        try:
            text = (trial_dir(ctx, name) / RESULT_FILE).read_text()
        except OSError:
            return None
    return jobresult.read(text)


def evaluate(
    results: Sequence[HeldOutResult], model_targets: Mapping[str, str] | None = None
) -> list[Evaluation]:
    """Held-out MAE, RMSE and R² per model from the test trials' predictions vs. actual: each
    model against its own target (``model_targets``: model -> target name) or ``target``."""
    per_model: dict[str, list[tuple[float, float]]] = {}
    for r in results:
        for model, y_hat in r.predictions.items():
            name = (model_targets or {}).get(model)
            truth = r.target if name is None else (r.targets or {}).get(name)
            if truth is not None:
                per_model.setdefault(model, []).append((truth, y_hat))
    out: list[Evaluation] = []
    for model in sorted(per_model):
        pairs = per_model[model]
        n = len(pairs)
        errors = [y_hat - y for y, y_hat in pairs]
        mae = sum(abs(e) for e in errors) / n
        sse = sum(e * e for e in errors)
        mean = sum(y for y, _ in pairs) / n
        sst = sum((y - mean) ** 2 for y, _ in pairs)
        r2 = 1.0 - sse / sst if sst > 0 else None
        # MAPE only where every truth is non-zero (a zero truth has no relative error)
        mape = (
            100.0 * sum(abs(y_hat - y) / abs(y) for y, y_hat in pairs) / n
            if all(y != 0 for y, _ in pairs)
            else None
        )
        out.append(Evaluation(model=model, n=n, MAE=mae, RMSE=math.sqrt(sse / n), R2=r2, MAPE=mape))
    return out


def evaluate_by_target(
    evaluation: Sequence[Evaluation], targets: Sequence[TargetSpec]
) -> list[TargetEvaluation]:
    """The evaluation split by target, each with its best model (several targets only)."""
    if len(targets) < 2:
        return []
    owner = model_targets(list(targets))
    out: list[TargetEvaluation] = []
    for target in targets:
        mine = [e for e in evaluation if owner.get(e.model) == target.name]
        entry = TargetEvaluation(target=target.name, evaluation=mine)
        scored = [(e.r2, e.model) for e in mine if e.r2 is not None]
        if scored:
            r2, entry.best_model = max(scored)
            entry.held_out_r2 = round(r2, 4)
        out.append(entry)
    return out


def headline(metrics: Mapping[str, Any]) -> tuple[str, float | None]:
    for name in HEADLINE_METRICS:
        if name in metrics:
            return name, finite(metrics[name])
    for name, value in sorted(metrics.items()):
        return name, finite(value)
    return "none", None


def add_point(points: list[CurvePoint], point: CurvePoint) -> None:
    """Append, keeping at most MAX_CURVE_POINTS: thin every other old point, keep the newest."""
    if points and points[-1].trials == point.trials:
        points[-1] = point
        return
    points.append(point)
    if len(points) > MAX_CURVE_POINTS:
        kept = [*points[:-1:2], points[-1]]
        points[:] = kept
