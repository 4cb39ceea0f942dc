"""``streamml sweep FILE.yaml``: run a LammpsSweep without Kubernetes.

The file is a LammpsSweep manifest (or just its ``spec``). The same engine the operator uses
drives it, against a model server URL, with a progress bar; its state lives in a JSON file, so
an interrupted sweep resumes where it stopped (jobs in flight are adopted, never resubmitted).
At the end it prints the learning curve and the held-out evaluation.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from pathlib import Path
from typing import Any

from streamml.errors import ConfigurationError
from streamml.files import read_secret

EXIT_FAILED = 1


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="LammpsSweep YAML (manifest or spec)")
    parser.add_argument("--server", help="model server base URL (env STREAMML_SERVER)")
    parser.add_argument("--username", help="server username (env STREAMML_USERNAME)")
    parser.add_argument("--token", help="server token (env STREAMML_TOKEN; prefer --token-file)")
    parser.add_argument("--token-file", type=Path, help="file holding the server token")
    parser.add_argument("--workdir", type=Path, help="job files, spool, state (./NAME.sweep)")
    parser.add_argument("--state", type=Path, help="state file (default WORKDIR/state.json)")
    parser.add_argument("--interval", type=float, default=1.0, help="poll interval, s (1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--input-root",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="a directory the sweep's input paths may point into (repeatable; the sweep"
        " file's own directory always may); relative paths are taken from the sweep file's",
    )


def run(args: argparse.Namespace) -> int:
    import asyncio

    return asyncio.run(_run(args))


async def _run(args: argparse.Namespace) -> int:
    """The command's whole run: settings, engine, progress, report (longer than ~60 lines: one
    straight sequence with no branch worth a name of its own)."""
    import asyncio

    from pydantic_settings import BaseSettings, SettingsConfigDict

    from streamml.sweep import wiring as rt
    from streamml.sweep.access import ServerAccess
    from streamml.sweep.snapshot import Roots
    from streamml.sweep.spec import load_sweep_file
    from streamml.sweep.state import FileStore

    class Env(BaseSettings):
        model_config = SettingsConfigDict(env_prefix="STREAMML_", extra="ignore")
        server: str | None = None
        username: str | None = None
        token: str | None = None

    env = Env()
    name, spec = load_sweep_file(args.file)
    server = args.server or env.server
    if not server:
        raise ConfigurationError("--server (or STREAMML_SERVER) is required")
    token = args.token or env.token
    if args.token_file is not None:
        token = read_secret(args.token_file, "--token-file")
    if args.interval <= 0:
        raise ConfigurationError("--interval must be positive")
    access = ServerAccess(server.rstrip("/"), args.username or env.username, token)
    workdir: Path = (args.workdir or Path(f"{name}.sweep")).resolve()
    store = FileStore(args.state or workdir / "state.json")
    previous = await store.load()
    identity = (previous.identity if previous else None) or f"{name}-{uuid.uuid4().hex[:12]}"
    here = args.file.resolve().parent
    roots = Roots(
        allowed=(here, *(root.resolve() for root in args.input_root)),
        base=here,
        hint="; allow another directory with --input-root DIR",
    )
    scheduler = rt.build_scheduler(rt.scheduler_options(spec, workdir))
    engine = rt.build_engine(
        name,
        spec,
        store,
        access=access,
        workdir=workdir,
        identity=identity,
        scheduler=scheduler,
        roots=roots,
    )
    await engine.load()
    engine.status.identity = identity
    bar = _progress(engine.total, disabled=args.no_progress)
    try:
        while not await engine.tick():
            _show(bar, engine.status)
            await asyncio.sleep(args.interval)
        _show(bar, engine.status)
    except (KeyboardInterrupt, asyncio.CancelledError):
        print(
            f"\ninterrupted: state in {store.path}; jobs in flight keep running;"
            " run the same command to resume",
            file=sys.stderr,
        )
        raise
    finally:
        bar.close()
        await scheduler.close()
    print(report(engine.status))
    return 0 if engine.status.phase == "Succeeded" else EXIT_FAILED


def _progress(total: int, *, disabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="run", disable=disabled, dynamic_ncols=True)


def _show(bar: Any, status: Any) -> None:
    bar.n = status.succeeded
    bar.set_postfix(running=status.running, failed=status.failed, phase=status.phase)
    bar.refresh()


def report(status: Any) -> str:
    """The learning curve and the held-out evaluation as plain-text tables."""
    lines = [
        f"phase {status.phase}: {status.progress} runs, {status.failed} failed attempts,"
        f" {status.submitted} submitted"
    ]
    lines.append(f"runs {status.runs or '-'}, {status.core_seconds:.1f} simulation core-seconds")
    if status.held_out_checks:
        target = next((c for c in status.conditions if c.type == "TargetReached"), None)
        lines.append(
            f"held-out {status.held_out} after {len(status.held_out_checks)} checks"
            + (f": {target.reason}: {target.message}" if target else "")
        )
    failed = [t for t in status.trials if t.state in ("Failed", "Lost")]
    for trial in failed[-5:]:
        lines.append(f"  failed {trial.job_name}: {trial.reason}")
    if status.learning_curve:
        lines.append("")
        lines.append("learning curve (training runs learned -> metric)")
        for curve in status.learning_curve:
            step = max(1, len(curve.points) // 8)
            shown = curve.points[::step]
            if curve.points and shown[-1] is not curve.points[-1]:
                shown.append(curve.points[-1])
            cells = "  ".join(f"{p.trials}:{_fmt(p.value)}" for p in shown)
            lines.append(f"  {curve.model:<20} {curve.metric:<5} {cells}")
    if status.evaluation:
        # several targets: each model's row names the target it is scored against
        owner = {e.model: t.target for t in status.evaluation_by_target for e in t.evaluation}
        head = f"{'target':<16} " if owner else ""
        lines.append("")
        lines.append(f"held-out evaluation ({status.evaluation[0].n} runs)")
        lines.append(f"  {head}{'model':<20} {'n':>4} {'MAE':>12} {'RMSE':>12} {'R2':>8}")
        for e in status.evaluation:
            cell = f"{owner.get(e.model, '-'):<16} " if owner else ""
            lines.append(
                f"  {cell}{e.model:<20} {e.n:>4} {_fmt(e.mae):>12} {_fmt(e.rmse):>12}"
                f" {_fmt(e.r2):>8}"
            )
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"
