"""The server, operator and LAMMPS-job images, built from the project's Dockerfiles, no registry.

::

    built = ensure_images()                 # {"server": BuiltImage(ref, tar, ...), ...}
    load_images(built.values(), address)    # ctr --address SOCK -n k8s.io images import TAR

``buildah bud --isolation chroot`` runs each ``Dockerfile.<name>`` exactly as a user runs
``docker build -f Dockerfile.<name> .`` elsewhere; the result is pushed to a docker-archive tar
(``<cache>/images/<name>-<key>.tar``, named ``lammps-stream-ml/<name>:<version>``), keyed by the
Dockerfile's text, the sources it copies, the base image recipe and buildah's version. Nothing can
be pulled here, so the base the ``FROM`` lines name (``python:3.11-slim-bookworm``) is a stand-in
made from Debian packages (``mmdebstrap --variant=minbase`` with python3, python3-venv and
``python``) and tagged with that name in the project's own buildah storage
(``<cache>/images/buildah``; overlay driver, vfs where overlay cannot mount).

A RUN step reaches the package registries as the host does: when the host's pip trusts a CA
bundle of its own (``PIP_CERT`` or pip's ``cert`` setting, as on this machine), that bundle and a
``pip.conf`` naming it are bind-mounted for the build only (``buildah bud -v``): nothing of it
lands in an image.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from pydantic import BaseModel

from streamml import __version__, procs
from streamml.errors import InfrastructureError
from streamml.testbed.k8sbuild import Progress, _locked, cache_root

ROOT = Path(__file__).resolve().parents[2]
IMAGE_NAMES = ("server", "operator", "lammps")
REPOSITORY = "lammps-stream-ml"
#: the public base the Dockerfiles name, and the Debian packages of its local stand-in
BASE_IMAGE = "docker.io/library/python:3.11-slim-bookworm"
BASE_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates")
BASE_ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8")
#: never part of an image (the same as .dockerignore)
SKIPPED = ("__pycache__", ".pyc", ".pytest_cache", ".mypy_cache", ".ruff_cache")
BUILD_CA = "/etc/streamml-build-ca.crt"


class BuiltImage(BaseModel):
    """One image in the cache: what to import and what it is called."""

    name: str
    ref: str
    tar: Path
    key: str
    image_id: str
    build_seconds: float
    bytes: int

    @property
    def qualified(self) -> str:
        """The full name (in buildah storage, the tar and containerd): ``docker.io/<ref>``."""
        return qualified(self.ref)


def qualified(ref: str) -> str:
    return f"docker.io/{ref}"


def image_ref(name: str) -> str:
    """``lammps-stream-ml/<name>:<version>``: what manifests name (``docker.io/`` implied)."""
    return f"{REPOSITORY}/{name}:{__version__}"


def images_dir() -> Path:
    return cache_root() / "images"


def dockerfile(name: str) -> Path:
    if name not in IMAGE_NAMES:
        raise InfrastructureError(f"unknown image {name!r}: one of {', '.join(IMAGE_NAMES)}")
    return ROOT / f"Dockerfile.{name}"


def base_key() -> str:
    recipe = json.dumps([BASE_SUITE, BASE_PACKAGES, BASE_ENV, "minbase", BASE_IMAGE])
    return hashlib.sha256(recipe.encode()).hexdigest()[:16]


def copied_sources(text: str) -> list[str]:
    """The context paths the Dockerfile's ``COPY`` lines name (not ``COPY --from``)."""
    paths: list[str] = []
    for line in text.replace("\\\n", " ").splitlines():
        words = line.split()
        if not words or words[0].upper() != "COPY" or any(w.startswith("--from") for w in words):
            continue
        paths += [w for w in words[1:-1] if not w.startswith("--")]
    return sorted(set(paths))


def _context_files(paths: Iterable[str]) -> Iterator[Path]:
    for rel in paths:
        top = ROOT / rel
        found = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
        for path in found:
            if not any(part.endswith(SKIPPED) for part in path.relative_to(ROOT).parts):
                yield path


def image_key(name: str) -> str:
    """Digest of the Dockerfile, every source file it copies, the base recipe and buildah."""
    text = dockerfile(name).read_text()
    digest = hashlib.sha256(text.encode())
    digest.update(base_key().encode() + _buildah_version().encode())
    for path in _context_files(copied_sources(text)):
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def cached_image(name: str) -> BuiltImage | None:
    """The cached image of the current sources, if built (builds nothing)."""
    meta = images_dir() / f"{name}-{image_key(name)}.json"
    if not meta.is_file():
        return None
    image = BuiltImage.model_validate_json(meta.read_text())
    return image if image.tar.is_file() else None


def ensure_images(
    names: Iterable[str] = IMAGE_NAMES, progress: Progress | None = None
) -> dict[str, BuiltImage]:
    """Every named image, from the cache or built now (one build at a time per machine)."""
    say = progress or print
    result: dict[str, BuiltImage] = {}
    for name in names:
        found = cached_image(name)
        if found is None:
            with _locked(images_dir() / "build.lock", say):
                found = cached_image(name) or _build(name, say)
        result[name] = found
    return result


def _buildah_version() -> str:
    if shutil.which("buildah") is None:
        raise InfrastructureError("buildah is not installed (scripts/bootstrap.sh installs it)")
    proc = procs.run(["buildah", "--version"], capture_output=True, text=True, check=False)
    return str(proc.stdout).strip()


def _storage_driver() -> str:
    """overlay where it mounts here, else vfs (slower and bigger, but works everywhere)."""
    choice = images_dir() / "buildah" / "driver"
    if choice.is_file():
        return choice.read_text().strip()
    choice.parent.mkdir(parents=True, exist_ok=True)
    driver = "overlay"
    probe = _run(["buildah", *_storage_args(driver), "from", "scratch"], "buildah", check=False)
    if probe.returncode != 0:
        driver = "vfs"
    else:
        _run(["buildah", *_storage_args(driver), "rm", probe.stdout.strip()], "buildah rm")
    choice.write_text(driver + "\n")
    return driver


def _storage_args(driver: str) -> list[str]:
    store = images_dir() / "buildah"
    return ["--root", str(store / "root"), "--runroot", str(store / "run"),
            "--storage-driver", driver]  # fmt: skip


def buildah(*args: str) -> list[str]:
    """argv of buildah on the project's own storage."""
    return ["buildah", *_storage_args(_storage_driver()), *args]


def _run(argv: list[str], what: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = procs.run(argv, capture_output=True, text=True, check=False, cwd=ROOT)
    if check and proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-25:])
        raise InfrastructureError(f"{what} failed ({proc.returncode}):\n{tail}")
    return proc


def ensure_base(say: Progress) -> str:
    """The stand-in for the Dockerfiles' base, in buildah storage under the name they use."""
    tar = images_dir() / f"base-python-{base_key()}.tar"
    if not tar.is_file():
        if shutil.which("mmdebstrap") is None:
            raise InfrastructureError("mmdebstrap is not installed (scripts/bootstrap.sh)")
        say(f"making the base image from Debian packages: mmdebstrap {BASE_SUITE}")
        tmp = tar.with_name(f"{tar.stem}.tmp-{os.getpid()}.tar")  # mmdebstrap: by its suffix
        _run(["mmdebstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
              BASE_SUITE, str(tmp)], "mmdebstrap")  # fmt: skip
        tmp.replace(tar)
    label = f"io.streamml.base-key={base_key()}"
    found = _run(buildah("images", "--json", "--filter", f"label={label}"), "buildah", check=False)
    if found.returncode == 0 and BASE_IMAGE in found.stdout:
        return BASE_IMAGE
    say(f"importing the base into buildah storage as {BASE_IMAGE}")
    container = _run(buildah("from", "scratch"), "buildah from").stdout.strip()
    _run(buildah("add", container, str(tar), "/"), "buildah add")
    config = [arg for env in BASE_ENV for arg in ("--env", env)]
    _run(buildah("config", *config, "--label", label, "--cmd", "python3", container), "config")
    _run(buildah("commit", "--rm", container, BASE_IMAGE), "buildah commit")
    return BASE_IMAGE


def registry_mounts(work: Path) -> list[str]:
    """``-v`` arguments that let RUN steps trust the CA bundle the host's pip trusts."""
    cert = os.environ.get("PIP_CERT") or _pip_config_cert()
    if not cert or not Path(cert).is_file():
        return []
    conf = work / "pip.conf"
    conf.write_text(f"[global]\ncert = {BUILD_CA}\n")
    return ["-v", f"{cert}:{BUILD_CA}:ro", "-v", f"{conf}:/etc/pip.conf:ro"]


def _pip_config_cert() -> str:
    for path in (Path("/etc/pip.conf"), Path.home() / ".config" / "pip" / "pip.conf"):
        if path.is_file():
            for line in path.read_text().splitlines():
                key, _, value = line.partition("=")
                if key.strip() == "cert":
                    return value.strip()
    return ""


def _build(name: str, say: Progress) -> BuiltImage:
    started = time.monotonic()
    ensure_base(say)
    key, ref = image_key(name), qualified(image_ref(name))  # not buildah's localhost/NAME
    tar = images_dir() / f"{name}-{key}.tar"
    say(f"building {ref} from {dockerfile(name).name} (buildah bud --isolation chroot)")
    with tempfile.TemporaryDirectory(prefix="imagebuild-", dir=images_dir()) as work:
        _run(buildah("bud", "--isolation", "chroot", "--pull-never", "--layers=false",
                     *registry_mounts(Path(work)), "-f", str(dockerfile(name)), "-t", ref,
                     str(ROOT)), f"buildah bud {dockerfile(name).name}")  # fmt: skip
        tmp = tar.with_name(f"{tar.name}.tmp-{os.getpid()}")
        _run(buildah("push", ref, f"docker-archive:{tmp}:{ref}"), "buildah push")
        tmp.replace(tar)
    _run(buildah("rmi", "--prune"), "buildah rmi --prune", check=False)  # the build stages
    image_id = archive_image_id(tar)
    image = BuiltImage(name=name, ref=image_ref(name), tar=tar, key=key, image_id=image_id,
                       build_seconds=round(time.monotonic() - started, 1),
                       bytes=tar.stat().st_size)  # fmt: skip
    tar.with_suffix(".json").write_text(image.model_dump_json(indent=2) + "\n")
    say(f"built {ref} in {image.build_seconds:.0f} s: {tar} ({image.bytes / 2**20:.0f} MiB)")
    for old in prune_builds(images_dir(), name, KEEP_BUILDS):
        say(f"removed an older build of {name}: {old.name}")
    return image


#: builds kept per image: this one and the one before (another checkout may still want it);
#: every source change makes a new key, and a set of the three images is 1.7 GB
KEEP_BUILDS = 2


def prune_builds(directory: Path, name: str, keep: int) -> list[Path]:
    """Remove all but the ``keep`` newest ``<name>-<key>.tar`` (and their ``.json``).

    Only docker archives with a key of 16 hex digits: the LAMMPS SIF (``lammps-<key>.sif``,
    its ``.json``) and the base image are not builds of ``name``.
    """
    pattern = re.compile(rf"{re.escape(name)}-[0-9a-f]{{16}}\.tar")
    tars = [p for p in directory.iterdir() if pattern.fullmatch(p.name)]
    tars.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    removed = []
    for tar in tars[keep:]:
        tar.with_suffix(".json").unlink(missing_ok=True)
        tar.unlink(missing_ok=True)
        removed.append(tar)
    return removed


def archive_image_id(tar: Path) -> str:
    """The image ID (digest of its config) of a docker-archive, from its ``manifest.json``."""
    with tarfile.open(tar) as archive:
        member = archive.extractfile("manifest.json")
        if member is None:
            raise InfrastructureError(f"{tar}: no manifest.json")
        (manifest,) = json.loads(member.read())
    return "sha256:" + str(manifest["Config"]).removesuffix(".json")


def load_images(images: Iterable[BuiltImage], address: Path, namespace: str = "k8s.io") -> None:
    """Import each image tar into the containerd at ``address`` (what the CRI plugin serves)."""
    if shutil.which("ctr") is None:
        raise InfrastructureError("ctr is not installed (apt containerd)")
    for image in images:
        _run(["ctr", "--address", str(address), "-n", namespace, "images", "import",
              str(image.tar)], f"ctr images import {image.tar.name}")  # fmt: skip
