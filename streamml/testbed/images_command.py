"""``streamml images build|list|load``: the project's images, built here, loaded into containerd.

``build`` builds (once per content of the Dockerfiles and sources) the server, operator and
LAMMPS-job images from ``Dockerfile.server|operator|lammps`` with ``buildah bud`` into
docker-archive tars under ``~/.cache/streamml/images``; ``list`` prints each image's name and tar
(``--json`` for scripts: ``{"server": {"ref": ..., "tar": ...}, ...}``; it builds what is
missing); ``load --containerd-address SOCK`` imports them with ``ctr -n k8s.io images import``, so
that pods naming ``lammps-stream-ml/server:VERSION`` start with ``imagePullPolicy: IfNotPresent``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    from streamml.testbed.imagebuild import IMAGE_NAMES

    parser.add_argument("action", choices=("build", "list", "load"))
    parser.add_argument(
        "--only",
        action="append",
        choices=IMAGE_NAMES,
        help="this image only (repeatable; default all: " + ", ".join(IMAGE_NAMES) + ")",
    )
    parser.add_argument("--containerd-address", type=Path, help="load: containerd's socket")
    parser.add_argument("--namespace", default="k8s.io", help="load: containerd namespace")
    parser.add_argument("--json", action="store_true", help="list: as JSON")


def run(args: argparse.Namespace) -> int:
    from streamml.errors import ConfigurationError
    from streamml.testbed.imagebuild import IMAGE_NAMES, ensure_images, load_images

    if args.action == "load" and args.containerd_address is None:
        raise ConfigurationError("images load needs --containerd-address SOCK (its socket)")
    images = ensure_images(args.only or IMAGE_NAMES)
    if args.action == "load":
        load_images(images.values(), args.containerd_address, args.namespace)
        for image in images.values():
            print(f"loaded {image.ref} into {args.containerd_address} ({args.namespace})")
    elif args.json:
        table = {n: {"ref": i.ref, "tar": str(i.tar)} for n, i in images.items()}
        print(json.dumps(table, indent=2))
    else:
        for image in images.values():
            print(f"{image.ref}\t{image.tar}\t{image.bytes / 2**20:.0f} MiB")
    return 0
