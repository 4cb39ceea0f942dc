"""Another version of this repository's code, runnable next to the working tree's (for
before/after benchmarks): ``git archive REF`` unpacked, and the view ``streamml`` imports from.

The repository maps top-level folders into the ``streamml`` namespace (pyproject.toml); a tree of
symlinks gives an interpreter the same namespace for the old code when its root is put first on
``PYTHONPATH`` (ahead of the editable install's finder, which only answers what ``sys.path`` does
not). The same virtualenv runs both versions, so only the code differs.
"""

from __future__ import annotations

import shutil
import tarfile
import tempfile
from pathlib import Path

from streamml import procs

ROOT = Path(__file__).resolve().parents[1]
MAPPED = ("operator", "modelserver", "clients")


def checkout(ref: str, into: Path | None = None) -> Path:
    """The ``PYTHONPATH`` entry for the code at ``ref`` (unpacked under ``into``)."""
    base = into or Path(tempfile.mkdtemp(prefix="streamml-code-"))
    src, view = base / "src", base / "view"
    shutil.rmtree(base / "src", ignore_errors=True)
    shutil.rmtree(view, ignore_errors=True)
    src.mkdir(parents=True)
    archive = base / "code.tar"
    with archive.open("wb") as out:
        procs.run(["git", "archive", ref], cwd=ROOT, stdout=out, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(src, filter="data")
    archive.unlink()
    package = view / "streamml"
    package.mkdir(parents=True)
    for entry in (src / "streamml").iterdir():
        (package / entry.name).symlink_to(entry)
    for folder in MAPPED:
        (package / folder).symlink_to(src / folder)
    return view


def describe(ref: str) -> str:
    done = procs.run(
        ["git", "rev-parse", "--short", ref], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()
