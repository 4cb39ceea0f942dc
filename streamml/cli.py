"""The ``streamml`` command: one entry point, one subcommand per module.

Each subcommand lives in its own module exposing ``configure(parser)`` and ``run(args) -> int``.
Command modules import only the standard library (and light project modules) at import time;
heavy dependencies (river, kopf, matplotlib) are imported inside ``run`` so that, for example,
the server image does not need the operator's dependencies to print ``--help``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Protocol, cast

from streamml import __version__
from streamml.errors import StreamMLError

#: subcommand name -> (module path, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("streamml.modelserver.command", "run the river model server"),
    "archive": ("streamml.modelserver.archive_command", "export/import a server's data dir"),
    "operator": ("streamml.operator.command", "run the Kubernetes operator (kopf)"),
    "crds": ("streamml.vocabulary.crdgen", "generate the CRD manifests from the schemas"),
    "cluster": ("streamml.testbed.cluster_command", "local kube-apiserver + etcd: up|down|env"),
    "images": ("streamml.testbed.images_command", "build the images locally, load into containerd"),
    "hpc": ("streamml.testbed.hpc_command", "local Slurm (munge, slurmctld, slurmd, slurmrestd)"),
    "run-lammps": ("streamml.clients.runjob", "run LAMMPS and send its result to the server"),
    "sweep": ("streamml.sweep.command", "run a LammpsSweep file without Kubernetes"),
    "watch": ("streamml.clients.watch", "record models' metrics and stats over time"),
    "plot": ("streamml.clients.plot", "render learning curves and predictions to PNG"),
    "dashboard": ("streamml.clients.dashboard", "a StreamModel's live dashboard on 127.0.0.1"),
    "demo": ("streamml.clients.demo", "from a fresh machine to a learning curve"),
}


class CommandModule(Protocol):
    def configure(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


def _load(name: str) -> CommandModule | None:
    try:
        return cast(CommandModule, importlib.import_module(COMMANDS[name][0]))
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("streamml"):
            return None  # the command is not part of this installation
        raise


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamml", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_text) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        if only is None or only == name:
            module = _load(name)
            if module is not None:
                module.configure(sp)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Only the chosen subcommand's module is imported (keeps start-up fast and images lean).
    chosen = next((a for a in argv if a in COMMANDS), None)
    parser = build_parser(only=chosen)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    module = _load(args.command)
    if module is None:
        parser.error(f"command {args.command!r} is not available in this installation")
    try:
        return module.run(args)
    except StreamMLError as exc:
        print(f"streamml {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
