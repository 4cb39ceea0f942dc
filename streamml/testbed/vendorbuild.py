"""Build an HPC tool (flux-core, Apptainer) from a source archive once, then reuse the build.

Neither tool is packaged in Debian 12 nor runnable from PyPI, so the project's own tests and
demos build them from the source archives in a vendor folder (setting ``STREAMML_VENDOR_DIR``,
default ``../shared/vendor`` relative to the project's root). Where the tool is already on PATH
(a real cluster), nothing is built.

A build installs into ``<cache>/<tool>-<digest>/`` where ``<digest>`` is the first 16 hex digits
of the archive's sha256 mixed with the recipe (so a new archive or a changed recipe builds again).
The prefix is baked into the installed files, so the build installs in place under a lock file,
and writes ``build-info.json`` last: a prefix without it is half-built and is removed and rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from streamml import procs
from streamml.errors import InfrastructureError
from streamml.testbed.k8sbuild import (
    Progress,
    _locked,
    cache_root,
    read_build_info,
    write_build_info,
)

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
#: a progress line at least this often while a build step runs
PROGRESS_INTERVAL_S = 30.0


def vendor_dir() -> Path:
    """The folder of source archives: ``$STREAMML_VENDOR_DIR`` or ``<project>/../shared/vendor``."""
    explicit = os.environ.get("STREAMML_VENDOR_DIR")
    if explicit:
        return Path(explicit).expanduser()
    return (PROJECT_ROOT / ".." / "shared" / "vendor").resolve()


def file_digest(path: Path) -> str:
    """The sha256 of a file, hex."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Recipe:
    """How one tool is built: its archive (a glob in the vendor folder) and its build steps.

    ``steps`` gets the unpacked source dir and the install prefix and returns the commands to run
    there, in order (each an argv with its environment additions).
    """

    tool: str
    archive_glob: str
    steps: Callable[[Path, Path], list[tuple[list[str], dict[str, str]]]]
    version: str
    #: a file under the prefix that must exist when the build is complete
    product: str
    #: bumped when the steps change, so an old build is not reused
    revision: str = "1"


@dataclass(frozen=True)
class Build:
    """One cached build: its install prefix and what made it."""

    tool: str
    prefix: Path

    @property
    def bin_dir(self) -> Path:
        return self.prefix / "bin"

    def info(self) -> dict[str, object]:
        return read_build_info(self.prefix)


def find_archive(recipe: Recipe) -> Path:
    """The recipe's archive in the vendor folder; a clear error where it is missing."""
    folder = vendor_dir()
    found = sorted(folder.glob(recipe.archive_glob))
    if not found:
        raise InfrastructureError(
            f"no {recipe.tool} on PATH and no source archive {recipe.archive_glob} in {folder} "
            "(set STREAMML_VENDOR_DIR to the folder of source archives)"
        )
    return found[-1]


def cached_build(recipe: Recipe, archive: Path) -> Build:
    """Where the build of ``archive`` is (or will be) cached; builds nothing."""
    key = hashlib.sha256(f"{file_digest(archive)}:{recipe.revision}".encode()).hexdigest()
    return Build(recipe.tool, cache_root() / f"{recipe.tool}-{recipe.version}-{key[:16]}")


def complete(build: Build, recipe: Recipe) -> bool:
    return bool(build.info()) and (build.prefix / recipe.product).exists()


def finished_build(recipe: Recipe) -> Build | None:
    """The finished cached build of ``recipe``, if there is one (builds nothing)."""
    try:
        archive = find_archive(recipe)
    except InfrastructureError:
        return None
    build = cached_build(recipe, archive)
    return build if complete(build, recipe) else None


def ensure_build(recipe: Recipe, progress: Progress | None = None) -> Build:
    """The cached build of the recipe's archive, building it first if needed."""
    say = progress or (lambda line: logger.info("%s", line))
    archive = find_archive(recipe)
    build = cached_build(recipe, archive)
    if complete(build, recipe):
        return build
    with _locked(build.prefix.with_name(build.prefix.name + ".lock"), say):
        if not complete(build, recipe):  # or built by whoever held the lock
            _build(recipe, archive, build, say)
    return build


def _build(recipe: Recipe, archive: Path, build: Build, say: Progress) -> None:
    shutil.rmtree(build.prefix, ignore_errors=True)
    started = time.monotonic()
    say(f"building {recipe.tool} {recipe.version} from {archive.name} into {build.prefix}")
    with tempfile.TemporaryDirectory(prefix=f"{recipe.tool}-build-") as work:
        with tarfile.open(archive) as tar:
            tar.extractall(work, filter="tar")
        entries = [p for p in Path(work).iterdir() if p.is_dir()]
        source = entries[0] if len(entries) == 1 else Path(work)
        tree_bytes = 0
        for argv, env in recipe.steps(source, build.prefix):
            _run(argv, source, env, started, say)
        tree_bytes = _du(Path(work))
    if not (build.prefix / recipe.product).exists():
        raise InfrastructureError(f"the {recipe.tool} build installed no {recipe.product}")
    elapsed = time.monotonic() - started
    info = {
        "tool": recipe.tool,
        "version": recipe.version,
        "archive": archive.name,
        "archive_sha256": file_digest(archive),
        "build_seconds": round(elapsed, 1),
        "build_tree_bytes": tree_bytes,
        "installed_bytes": _du(build.prefix),
    }
    write_build_info(build.prefix, info)
    say(f"built {recipe.tool} in {elapsed:.0f} s")


def _du(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(root) / name).lstat().st_size
    return total


def _run(
    argv: Sequence[str], cwd: Path, extra_env: dict[str, str], started: float, say: Progress
) -> None:
    env = {**os.environ, **extra_env}
    log = cwd / f".step-{os.getpid()}.log"
    say(f"  {' '.join(argv)[:120]}")
    with log.open("wb") as out:
        proc = procs.popen(
            list(argv), cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
        while True:
            try:
                proc.wait(timeout=PROGRESS_INTERVAL_S)
                break
            except subprocess.TimeoutExpired:
                say(f"  {time.monotonic() - started:.0f} s: still running {argv[0]}")
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise InfrastructureError(f"{' '.join(argv)[:200]} failed ({proc.returncode}):\n{tail}")
