"""LAMMPS inside an Apptainer/Singularity image on the host that runs the trial.

``streamml run-lammps --container-image lammps.sif`` runs ``apptainer exec [--bind B]… IMAGE
lmp …`` instead of ``lmp …``, under whatever launcher the trial uses (``mpirun``, ``srun``,
``flux run``); the launcher stays outside, as on HPC sites (``flux run -n2 apptainer exec …``).
Under Flux the container needs Flux's PMI library: the Flux prefix is bound in.

Before anything runs, :func:`check` finds the runtime and the image and reads the image's SIF
header, so a runtime that is not installed, a missing image or a file that is no SIF fails the
trial at once with a fixed code (:data:`FATAL_CODES`), which the sweep engine does not retry: it
fails the sweep with a clear condition. Each trial's result records the image's sha256.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from streamml.errors import LammpsError

RUNTIME_MISSING = "ContainerRuntimeMissing"
IMAGE_MISSING = "ContainerImageMissing"
IMAGE_INVALID = "ContainerImageInvalid"
#: a trial failing with one of these fails every trial alike: the sweep stops, no retries
FATAL_CODES = (RUNTIME_MISSING, IMAGE_MISSING, IMAGE_INVALID)
RUNTIMES = ("apptainer", "singularity")
#: the SIF global header: a 32-byte launch line, then this magic
SIF_MAGIC = b"SIF_MAGIC"
SIF_MAGIC_OFFSET = 32


class ContainerError(LammpsError):
    """The container cannot run; ``code`` is one of :data:`FATAL_CODES`."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Container:
    runtime: str
    image: Path
    binds: Sequence[str] = field(default_factory=tuple)


def resolve_runtime(runtime: str) -> str:
    """The runtime's executable: ``$STREAMML_APPTAINER``, PATH, else the project's own build."""
    if runtime not in RUNTIMES:
        raise ContainerError(
            f"unknown container runtime {runtime!r}; choose {' or '.join(RUNTIMES)}",
            code=RUNTIME_MISSING,
        )
    explicit = os.environ.get("STREAMML_APPTAINER")
    if explicit:
        path = Path(explicit)
        candidate = path.with_name(runtime) if path.name in RUNTIMES else path
        if os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(runtime)
    if found:
        return found
    from streamml.testbed.apptainer import cached_apptainer

    build = cached_apptainer()
    if build is not None and os.access(build.bin_dir / runtime, os.X_OK):
        return str(build.bin_dir / runtime)
    raise ContainerError(
        f"container runtime {runtime!r} is not installed on this host (PATH, STREAMML_APPTAINER "
        "or `streamml hpc up --apptainer`)",
        code=RUNTIME_MISSING,
    )


def check_image(image: Path) -> None:
    """The image exists and is a SIF file (a corrupt download fails here, not in apptainer)."""
    try:
        with image.open("rb") as fh:
            head = fh.read(SIF_MAGIC_OFFSET + len(SIF_MAGIC))
    except FileNotFoundError as exc:
        raise ContainerError(f"container image {image} does not exist", code=IMAGE_MISSING) from exc
    except OSError as exc:
        raise ContainerError(
            f"container image {image} cannot be read: {exc.strerror}", code=IMAGE_MISSING
        ) from exc
    if head[SIF_MAGIC_OFFSET:] != SIF_MAGIC:
        raise ContainerError(
            f"container image {image} is not a SIF image (no SIF header)", code=IMAGE_INVALID
        )


def flux_prefix(env: Mapping[str, str]) -> Path | None:
    """Flux's install prefix inside a Flux job (its PMI library must be visible in the image)."""
    pmi = env.get("FLUX_PMI_LIBRARY_PATH")
    if pmi:
        return Path(pmi).resolve().parents[2]  # PREFIX/lib/flux/libpmi.so
    flux = env.get("STREAMML_FLUX") or shutil.which("flux")
    return Path(flux).resolve().parents[1] if flux else None


def exec_prefix(
    container: Container, runtime_path: str, *, extra_binds: Sequence[str] = ()
) -> list[str]:
    """``apptainer exec [--unsquash] --bind B … IMAGE``: put in front of ``lmp …``."""
    argv = [runtime_path, "exec"]
    if os.geteuid() != 0 and not os.access("/dev/fuse", os.R_OK | os.W_OK):
        argv.append("--unsquash")  # no FUSE for this user: extract the image instead
    for bind in [*container.binds, *extra_binds]:
        argv += ["--bind", bind]
    return [*argv, str(container.image)]


def image_digest(image: Path) -> str:
    """``sha256:<hex>`` of the image, cached per (path, size, mtime) so each trial reads it once."""
    from streamml.testbed.k8sbuild import cache_root

    stat = image.stat()
    key = hashlib.sha256(f"{image.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    cache = cache_root() / "image-digests" / f"{key.hexdigest()[:32]}.json"
    try:
        return str(json.loads(cache.read_text())["digest"])
    except (OSError, ValueError, KeyError):
        pass
    digest = hashlib.sha256()
    with image.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    value = f"sha256:{digest.hexdigest()}"
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".tmp-{os.getpid()}")
        tmp.write_text(json.dumps({"image": str(image), "digest": value}))
        tmp.replace(cache)
    except OSError:
        pass  # a read-only cache only costs the next trial another read
    return value


def prepare(
    container: Container, env: Mapping[str, str], inputs: Sequence[Path] = ()
) -> tuple[list[str], str]:
    """Check everything, then return the command prefix and the image digest.

    The folders of ``inputs`` (the input script) are bound in read-only at the same path; the
    working directory, ``$HOME`` and ``/tmp`` Apptainer binds itself.
    """
    runtime_path = resolve_runtime(container.runtime)
    check_image(container.image)
    binds: list[str] = []
    for folder in dict.fromkeys(str(path.resolve().parent) for path in inputs):
        binds.append(f"{folder}:{folder}:ro")
    prefix = flux_prefix(env) if "FLUX_URI" in env else None
    if prefix is not None:
        binds.append(str(prefix))
    return exec_prefix(container, runtime_path, extra_binds=binds), image_digest(container.image)
