"""``streamml run-lammps``: the job-side program of one trial.

Runs LAMMPS with the trial's ``-var`` parameters, parses the log, and sends the result to the
model server under the trial's identifier: a training trial learns (idempotent), a held-out trial
(``--test``) asks every model for a prediction and never learns. It always writes a result
document for the sweep engine (``--result-file``, default ``$STREAMML_RESULT_FILE``): a
:class:`~streamml.vocabulary.jobresult.JobResult`, the schema the engine reads it with.

A LAMMPS failure's ``error`` is ``CODE: message``
(:data:`streamml.vocabulary.jobresult.REASON_CODES`) with LAMMPS' echo of input text removed;
the full text goes to stderr, the job's own log.

Exit codes: 0 the result was delivered or spooled for later; 1 LAMMPS failed or its log is
unparseable (the ``ERROR:`` line is printed); 2 bad options; 3 the result could not be delivered
and was not spooled, or the server refused it (bad credentials, unknown model; it is spooled when
a spool dir is set). ``--deliver-spool DIR`` re-sends spooled results instead of running LAMMPS.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic_settings import BaseSettings, SettingsConfigDict

from streamml.clients import jobclock
from streamml.errors import ConfigurationError, LammpsError
from streamml.files import read_secret, write_atomic
from streamml.vocabulary.jobresult import JobResult
from streamml.vocabulary.targets import TARGET_LIST, TargetSpec, check_mapping, learner_models

if TYPE_CHECKING:
    from streamml.client.delivery import Outcome, Retry

log = logging.getLogger(__name__)

FEATURE_SETS = ("vars", "vars+atoms")
EXIT_LAMMPS = 1
EXIT_USAGE = 2
EXIT_UNDELIVERED = 3
#: marks a run directory run-lammps made (only such a directory is ever emptied)
RUN_MARKER = ".streamml-run"


class RunJobSettings(BaseSettings):
    """Defaults from the environment (``STREAMML_*``); command-line options override them."""

    model_config = SettingsConfigDict(env_prefix="STREAMML_", extra="ignore")

    server: str | None = None
    trial_id: str | None = None
    username: str | None = None
    token: str | None = None
    username_file: Path | None = None
    token_file: Path | None = None
    result_file: Path | None = None
    spool_dir: Path | None = None
    #: the trial's input snapshot (set by a backend that mounts it, e.g. kubernetes)
    input_dir: Path | None = None
    lmp: str = "lmp"
    #: the sweep and the attempt of this job (set by the sweep engine): provenance only
    sweep: str | None = None
    attempt: str | None = None

    def credentials_pair(self) -> tuple[str | None, str | None]:
        username = self.username or _read_file(self.username_file)
        token = self.token or _read_file(self.token_file)
        return username, token


def _read_file(path: Path | None) -> str | None:
    return None if path is None else read_secret(path, "credentials file")


def configure(parser: argparse.ArgumentParser) -> None:
    """The options of ``streamml run-lammps``, in the order ``--help`` lists them (longer than ~60
    lines on purpose: one ``add_argument`` per option, nothing else)."""
    parser.add_argument("--server", help="model server base URL (env STREAMML_SERVER)")
    parser.add_argument("--trial-id", help="the trial's identifier (idempotent learn)")
    parser.add_argument(
        "--sweep", help="the sweep this trial belongs to, for its provenance (env STREAMML_SWEEP)"
    )
    parser.add_argument(
        "--attempt", help="the attempt of this trial, for its provenance (env STREAMML_ATTEMPT)"
    )
    parser.add_argument(
        "--model",
        action="append",
        dest="models",
        metavar="M",
        help="model to teach/ask (repeatable; default: every model on the server)",
    )
    parser.add_argument("--target", help="metric to learn (default loop_time)")
    parser.add_argument(
        "--targets",
        metavar="JSON",
        help="several targets instead of --target: a JSON list of a sweep's spec.targets "
        '([{"name": "pressure", "thermo": {"column": "Press"}, "models": ["p"]}, ...])',
    )
    parser.add_argument("--input", type=Path, help="LAMMPS input file (default: packaged in.lj)")
    parser.add_argument(
        "--input-dir",
        type=Path,
        help="copy this directory (the input and its data files, potentials) into the run"
        " directory and run there; --input is then a name in it (env STREAMML_INPUT_DIR)",
    )
    parser.add_argument(
        "--run-dir", type=Path, help="where LAMMPS runs with --input-dir (default ./run)"
    )
    parser.add_argument(
        "--var",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="LAMMPS -var parameter (repeatable); also the features",
    )
    launch = parser.add_mutually_exclusive_group()
    launch.add_argument("--mpirun", type=int, metavar="N", help="run under mpirun -np N")
    launch.add_argument("--srun", action="store_true", help="run under srun --mpi=pmix")
    launch.add_argument("--flux-run", type=int, metavar="N", help="run under flux run -n N")
    parser.add_argument(
        "--container-runtime", choices=("apptainer", "singularity"), default="apptainer"
    )
    parser.add_argument("--container-image", type=Path, help="run lmp inside this SIF image")
    parser.add_argument(
        "--container-bind", action="append", default=[], metavar="SRC[:DST]", help="bind mount"
    )
    parser.add_argument("--lmp", help="LAMMPS binary (default lmp; env STREAMML_LMP)")
    parser.add_argument("--test", action="store_true", help="held-out trial: predict, never learn")
    parser.add_argument("--features", choices=FEATURE_SETS, default="vars", help="feature set")
    parser.add_argument("--result-file", type=Path, help="result JSON (env STREAMML_RESULT_FILE)")
    parser.add_argument("--spool-dir", type=Path, help="spool undelivered results here")
    parser.add_argument("--log-file", type=Path, help="keep the LAMMPS output here")
    parser.add_argument("--timeout", type=float, help="LAMMPS time limit in seconds")
    parser.add_argument("--retries", type=int, default=5, help="delivery attempts (5)")
    parser.add_argument("--backoff", type=float, default=0.5, help="first retry delay, s (0.5)")
    parser.add_argument(
        "--deliver-spool",
        type=Path,
        metavar="DIR",
        help="re-send the results spooled in DIR (no LAMMPS run)",
    )


def run(args: argparse.Namespace) -> int:
    settings = RunJobSettings()
    try:
        if args.deliver_spool is not None:
            return _redeliver(args, settings)
        return _run_trial(args, settings)
    except ConfigurationError as exc:
        print(f"streamml run-lammps: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def parse_vars(pairs: list[str]) -> dict[str, str]:
    variables: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise ConfigurationError(f"--var expects NAME=VALUE, got {pair!r}")
        variables[name.strip()] = value.strip()
    return variables


def as_feature(value: str) -> int | float | str:
    """A -var value as a number when it is one (categorical values stay strings)."""
    for convert in (int, float):
        try:
            number = convert(value)
        except ValueError:
            continue
        if (isinstance(number, float) and number != number) or number in (
            float("inf"),
            float("-inf"),
        ):
            raise ConfigurationError(f"--var value {value!r} is not a finite number")
        return number
    return value


def _retry(args: argparse.Namespace) -> Retry:
    from streamml.client.delivery import Retry

    if args.retries < 1 or args.backoff < 0:
        raise ConfigurationError("--retries must be >= 1 and --backoff >= 0")
    return Retry(attempts=args.retries, initial_s=args.backoff)


def _run_trial(args: argparse.Namespace, settings: RunJobSettings) -> int:
    """One trial: check the options, prepare, run LAMMPS, deliver, write the result (longer
    than ~60 lines: one straight sequence whose steps are calls; the order is the contract)."""
    from streamml.client import delivery
    from streamml.clients import lammps

    server = args.server or settings.server
    trial = args.trial_id or settings.trial_id
    result_file = args.result_file or settings.result_file
    spool_dir = args.spool_dir or settings.spool_dir
    if not server:
        raise ConfigurationError("--server (or STREAMML_SERVER) is required")
    if not trial:
        raise ConfigurationError("--trial-id (or STREAMML_TRIAL_ID) is required")
    targets = _targets(args)
    variables = parse_vars(args.var)
    features: dict[str, Any] = {name: as_feature(v) for name, v in variables.items()}
    retry = _retry(args)
    username, token = settings.credentials_pair()
    input_dir: Path | None = args.input_dir or settings.input_dir
    kind: delivery.Kind = "predict" if args.test else "learn"
    document = JobResult(trial=trial, kind=kind, features=features, target_name=targets[0].name)
    try:  # what this host lacks fails the trial (with a reason code) ...
        run_dir, input_file = _prepare_run(args.input, input_dir, args.run_dir)
        container, flux = _launchers(args, input_file, document)
    except LammpsError as exc:
        return _lammps_failed(trial, exc, document, result_file)
    # ... while a bad option (e.g. an invalid variable name) stays a usage error (exit 2)
    command = lammps.build_command(
        input_file,
        variables,
        lmp=args.lmp or settings.lmp,
        mpirun=args.mpirun,
        srun=args.srun,
        flux_run=args.flux_run,
        flux=flux,
        container=container,
    )
    log.info("trial %s: %s", trial, " ".join(command))
    try:
        result = lammps.run_lammps(
            command, cwd=run_dir, timeout_s=args.timeout, log_file=args.log_file
        )
        # the whole job's wall time so far (start-up, container start, LAMMPS): a time limit's
        # model learns what the scheduler counts
        metrics = dataclasses.replace(result.metrics, job_wall_time=jobclock.job_age())
        values = lammps.target_values(metrics, result.output, targets)
    except LammpsError as exc:
        return _lammps_failed(trial, exc, document, result_file)
    document.metrics = metrics.as_dict()
    document.target = target = values[targets[0].name]
    if len(targets) > 1:
        document.targets = values
    if args.features == "vars+atoms":
        features["atoms"] = result.metrics.atoms
        document.features = dict(features)
    request = delivery.Request(
        kind=kind,
        server=server,
        trial=trial,
        features=features,
        ground_truth=None if args.test else target,
        models=learner_models(targets, args.models),
        result_file=str(result_file) if result_file else None,
        targets=None if args.test or len(targets) == 1 else _groups(targets, values),
        provenance=None if args.test else _provenance(args, settings, document, result.output),
    )
    outcome = asyncio.run(
        delivery.deliver(
            request,
            delivery.Credentials(username, token),
            retry=retry,
            spool_dir=spool_dir,
        )
    )
    document.delivered = outcome.delivered
    document.spooled = str(outcome.spooled) if outcome.spooled else None
    document.predictions = dict(outcome.predictions)
    document.error = outcome.error
    _write_result(result_file, document)
    return _exit_code(document, outcome)


def _targets(args: argparse.Namespace) -> list[TargetSpec]:
    """``--targets`` (checked as the sweep's schema checks it), else the one ``--target``."""
    from pydantic import ValidationError

    from streamml.clients import lammps

    if args.targets is None:
        name = args.target or "loop_time"
        if name not in lammps.TARGETS:
            raise ConfigurationError(f"--target must be one of {', '.join(lammps.TARGETS)}")
        return [TargetSpec(name=name, metric=name)]
    if args.target is not None:
        raise ConfigurationError("give --target or --targets, not both")
    try:
        targets = TARGET_LIST.validate_json(args.targets)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigurationError(f"--targets: {where}: {first['msg']}") from None
    problem = check_mapping(targets, args.models) if targets else "needs at least one target"
    if problem is not None:
        raise ConfigurationError(f"--targets: {problem}")
    return targets


def _provenance(
    args: argparse.Namespace, settings: RunJobSettings, document: JobResult, output: str
) -> dict[str, str]:
    """Where this sample comes from: sweep, trial, attempt, image digest, LAMMPS version, host
    (the ones known; each made a value the server accepts, ``delivery.provenance_value``)."""
    import socket

    from streamml.client.delivery import provenance_value
    from streamml.clients import lammps

    found = {
        "sweep": args.sweep or settings.sweep,
        "trial": document.trial,
        "attempt": args.attempt or settings.attempt,
        "image_digest": document.image_digest,
        "lammps_version": lammps.lammps_version(output),
        "host": socket.gethostname(),
    }
    clean = {key: provenance_value(value) for key, value in found.items()}
    return {key: value for key, value in clean.items() if value is not None}


def _groups(targets: list[TargetSpec], values: dict[str, float]) -> list[dict[str, Any]]:
    return [{"name": t.name, "models": t.models, "ground_truth": values[t.name]} for t in targets]


def _exit_code(document: JobResult, outcome: Outcome) -> int:
    """0 delivered or spooled while the server is away; EXIT_UNDELIVERED otherwise (said why)."""
    trial = document.trial
    if outcome.delivered:
        log.info(
            "trial %s: %s=%g delivered (%s)",
            trial,
            document.target_name,
            document.target,
            document.kind,
        )
        return 0
    if outcome.spooled is not None and outcome.unreachable:
        print(
            f"streamml run-lammps: trial {trial}: server unreachable ({outcome.error}); "
            f"result spooled to {outcome.spooled}",
            file=sys.stderr,
        )
        return 0
    where = (
        f"; spooled to {outcome.spooled}" if outcome.spooled else "; NOT spooled (no --spool-dir)"
    )
    print(
        f"streamml run-lammps: trial {trial}: not delivered: {outcome.error}{where}",
        file=sys.stderr,
    )
    return EXIT_UNDELIVERED


def _lammps_failed(
    trial: str, exc: LammpsError, document: JobResult, result_file: Path | None
) -> int:
    """Record a failed run: the status gets a fixed code and LAMMPS' words without input text;
    the full text (which may echo the input: "Unknown command: ...") only this job's own log."""
    document.error = error = f"{exc.code}: {exc}"
    document.reason = exc.code
    _write_result(result_file, document)
    if exc.detail != str(exc):
        print(f"streamml run-lammps: trial {trial}: {exc.detail}", file=sys.stderr)
    print(f"streamml run-lammps: trial {trial}: LAMMPS failed: {error}", file=sys.stderr)
    return EXIT_LAMMPS


def _prepare_run(
    script: Path | None, input_dir: Path | None, run_dir: Path | None
) -> tuple[Path | None, Path]:
    """(cwd of LAMMPS, its input file): a fresh copy of ``input_dir`` when one is given."""
    from streamml.clients import lammps
    from streamml.errors import SpecError
    from streamml.sweep import snapshot as sweep_inputs

    if input_dir is None:
        input_file = script or lammps.default_input()
        if not input_file.is_file():
            raise ConfigurationError(f"--input {input_file}: no such file")
        return None, input_file
    if script is None or script.is_absolute() or ".." in script.parts:
        raise ConfigurationError("--input-dir needs --input NAME, a file name in that directory")
    run_dir = (run_dir or Path("run")).resolve()
    try:
        if (run_dir / RUN_MARKER).is_file():  # ours, from an earlier run: start afresh
            shutil.rmtree(run_dir)
        elif run_dir.exists() and any(run_dir.iterdir()):
            raise SpecError(f"{run_dir} exists and is not a run directory of run-lammps")
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / RUN_MARKER).touch()
        sweep_inputs.stage(input_dir, run_dir)
    except (OSError, SpecError) as exc:
        raise LammpsError(
            f"cannot prepare the run directory from {input_dir}: {exc}", code="InputUnavailable"
        ) from exc
    input_file = run_dir / script
    if not input_file.is_file():
        raise LammpsError(f"the input directory has no {script}", code="InputUnavailable")
    return run_dir, input_file


def _launchers(
    args: argparse.Namespace, input_file: Path, document: JobResult
) -> tuple[list[str], str]:
    """(the container prefix, whose image digest goes in ``document``; the flux command)."""
    from streamml.sweep import container

    prefix: list[str] = []
    if args.container_image is not None:
        image = container.Container(
            args.container_runtime, args.container_image, tuple(args.container_bind)
        )
        prefix, document.image_digest = container.prepare(image, os.environ, [input_file])
    flux = "flux"
    if args.flux_run is not None:
        from streamml.errors import SchedulerError
        from streamml.sweep.schedulers.flux import resolve_flux

        try:
            flux = resolve_flux()
        except SchedulerError as exc:
            raise LammpsError(str(exc)) from exc
    return prefix, flux


def _write_result(path: Path | None, document: JobResult) -> None:
    if path is None:
        return
    text = document.to_json()
    if str(path).startswith("/dev/"):  # e.g. /dev/termination-log: no temp file beside it
        path.write_text(text)
        return
    write_atomic(path, text)


def _redeliver(args: argparse.Namespace, settings: RunJobSettings) -> int:
    from streamml.client import delivery

    spool_dir: Path = args.deliver_spool
    if not spool_dir.is_dir():
        raise ConfigurationError(f"--deliver-spool {spool_dir}: no such directory")
    username, token = settings.credentials_pair()
    report = asyncio.run(
        delivery.redeliver(
            spool_dir,
            delivery.Credentials(username, token),
            retry=_retry(args),
            server=args.server or None,
        )
    )
    print(json.dumps({"delivered": report.delivered, "failed": report.failed}, indent=1))
    for path, reason in report.failed.items():
        print(f"streamml run-lammps: {path}: not delivered: {reason}", file=sys.stderr)
    return 0 if not report.failed else EXIT_UNDELIVERED
