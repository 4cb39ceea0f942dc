"""Apptainer built from its source archive, and a LAMMPS image built locally from Debian packages.

::

    apptainer = ensure_apptainer()      # `apptainer` on PATH, else the cached build (built once)
    sif = ensure_lammps_sif()           # <cache>/images/lammps-<key>.sif: Debian's lmp, no registry

The image is a root file system from ``mmdebstrap --variant=minbase --include=lammps bookworm``
turned into a SIF by ``apptainer build`` (``Bootstrap: localimage`` from the directory). Both are
cached under ``~/.cache/streamml`` (``$STREAMML_CACHE_DIR``), keyed by the archive's digest and
the image recipe. This VM kind lacks CAP_SYS_RESOURCE, which Apptainer requests as root:
``APPTAINER_DROP_CAPS=CAP_SYS_RESOURCE`` is exported for every build and exec (harmless elsewhere).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from streamml import procs
from streamml.errors import InfrastructureError
from streamml.testbed.k8sbuild import Progress, _locked, cache_root
from streamml.testbed.vendorbuild import (
    Build,
    Recipe,
    ensure_build,
    finished_build,
)

APPTAINER_VERSION = "1.5.3+312-g917d6657"
GO_DIRS = ("/usr/local/go/bin", "/usr/lib/go/bin")
#: the Go module proxy refuses this version (403); the next one compiles unchanged
LIBRARY_CLIENT = "github.com/apptainer/container-library-client"
DROP_CAPS = {"APPTAINER_DROP_CAPS": "CAP_SYS_RESOURCE"}
IMAGE_SUITE = "bookworm"
IMAGE_PACKAGES = ("lammps",)
IMAGE_DEF = """Bootstrap: localimage
From: {rootfs}

%runscript
    exec /usr/bin/lmp "$@"
"""


def _go_env(cache: Path) -> dict[str, str]:
    """Apptainer's makefile runs ``go clean -cache`` before it builds its starter: with the
    user's Go build cache that wiped every package the control plane (and a node build after
    it) had compiled, so it builds with a cache of its own in its scratch tree."""
    path = os.pathsep.join([*GO_DIRS, os.environ.get("PATH", "")])
    return {
        "PATH": path,
        "GOTOOLCHAIN": "local",
        "GOFLAGS": "-buildvcs=false",
        "GOCACHE": str(cache),
    }


def _apptainer_steps(source: Path, prefix: Path) -> list[tuple[list[str], dict[str, str]]]:
    env = _go_env(source / ".go-build")  # inside the scratch tree; go ignores dot dirs
    steps: list[tuple[list[str], dict[str, str]]] = [
        (["sh", "-c", f"echo {APPTAINER_VERSION} > VERSION"], env)
    ]
    if f"{LIBRARY_CLIENT} v1.4.16" in (source / "go.mod").read_text():
        old, new = f"{LIBRARY_CLIENT}@v1.4.16", f"{LIBRARY_CLIENT}@v1.5.0"
        steps += [
            (["go", "mod", "edit", f"-replace={old}={new}"], env),
            (["go", "mod", "download"], env),
            (["go", "get", f"{LIBRARY_CLIENT}/client@v1.5.0"], env),
            (["go", "mod", "edit", f"-dropreplace={old}"], env),
        ]
    steps += [
        # no CNI plugins (fourteen more Go binaries, each linked externally): only `--net` uses them
        (["./mconfig", f"--prefix={prefix}", "--without-network"], env),
        (["make", "-C", "builddir"], env),
        (["make", "-C", "builddir", "install"], env),
    ]
    return steps


APPTAINER_RECIPE = Recipe(
    tool="apptainer",
    archive_glob="apptainer-src.tar.*",
    steps=_apptainer_steps,
    version=APPTAINER_VERSION.split("+")[0],
    product="bin/apptainer",
    revision="2",  # 2: --without-network
)


def cached_apptainer() -> Build | None:
    """The project's finished build of Apptainer, if there is one (builds nothing)."""
    return finished_build(APPTAINER_RECIPE)


def ensure_apptainer(progress: Progress | None = None) -> Path:
    """The ``apptainer`` executable: PATH, else the cached build (building it the first time)."""
    found = shutil.which("apptainer")
    if found:
        return Path(found)
    return ensure_build(APPTAINER_RECIPE, progress).bin_dir / "apptainer"


def image_key() -> str:
    recipe = json.dumps([IMAGE_SUITE, IMAGE_PACKAGES, IMAGE_DEF, "minbase"]).encode()
    return hashlib.sha256(recipe).hexdigest()[:16]


def cached_sif() -> Path:
    return cache_root() / "images" / f"lammps-{image_key()}.sif"


def ensure_lammps_sif(progress: Progress | None = None, *, apptainer: Path | None = None) -> Path:
    """The cached LAMMPS image, built from Debian packages the first time."""
    say = progress or print
    sif = cached_sif()
    if sif.is_file():
        return sif
    apptainer = apptainer or ensure_apptainer(progress)
    with _locked(sif.with_suffix(".lock"), say):
        if not sif.is_file():
            _build_sif(apptainer, sif, say)
    return sif


def _build_sif(apptainer: Path, sif: Path, say: Progress) -> None:
    if shutil.which("mmdebstrap") is None:
        raise InfrastructureError("mmdebstrap is not installed (scripts/bootstrap.sh)")
    started = time.monotonic()
    sif.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lammps-rootfs-", dir=sif.parent) as work:
        rootfs = Path(work) / "rootfs"
        say(f"building the LAMMPS image {sif.name}: mmdebstrap {IMAGE_SUITE} + lammps")
        _check(
            ["mmdebstrap", "--variant=minbase", f"--include={','.join(IMAGE_PACKAGES)}",
             IMAGE_SUITE, str(rootfs)],
            "mmdebstrap",
        )  # fmt: skip
        definition = Path(work) / "lammps.def"
        definition.write_text(IMAGE_DEF.format(rootfs=rootfs))
        tmp = sif.with_name(f"{sif.name}.tmp-{os.getpid()}")
        _check([str(apptainer), "build", "--force", str(tmp), str(definition)], "apptainer build")
        tmp.replace(sif)
    info = {"build_seconds": round(time.monotonic() - started, 1), "bytes": sif.stat().st_size}
    sif.with_suffix(".json").write_text(json.dumps(info) + "\n")
    say(f"built {sif} in {info['build_seconds']:.0f} s")


def _check(argv: list[str], what: str) -> None:
    env = {**os.environ, **DROP_CAPS}
    proc = procs.run(argv, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-20:])
        raise InfrastructureError(f"{what} failed ({proc.returncode}):\n{tail}")
