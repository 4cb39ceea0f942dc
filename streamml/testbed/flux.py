"""A real single-node Flux instance in a state directory, built from flux-core's source archive.

::

    flux = ensure_flux()                    # `flux` on PATH, else the cached build (built once)
    instance = start(Path("/tmp/my-flux"))  # a long-lived broker with a statedir; waits for `run`
    instance.env()                          # {"FLUX_URI": "local://...", "PATH": ...}
    stop(instance.state_dir)                # `flux shutdown`, then ends only the broker's PID

The broker runs ``flux start -Srundir=R -Sstatedir=S`` with an initial program that only waits,
so the instance lives until it is stopped; with its statedir, job history and output survive a
restart (``start`` on the same state dir). ``size`` > 1 starts that many brokers on this host
(``--test-size``), so multi-node shapes (``-N2``) can be exercised. ``fake_cores`` gives each of
them that many cores whatever the host has (a resource config: ``[[resource.config]] hosts =
"node[0-5]" cores = "0-7"``, ``noverify``, brokers named by ``--test-hosts``), so the prototype's
``flux run -N6 --ntasks 48`` shape fits on a 2-core machine (the ranks share its real cores;
Flux's cpu-affinity then warns and stays off).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from streamml import procs
from streamml.errors import InfrastructureError
from streamml.files import write_atomic
from streamml.testbed.k8sbuild import Progress
from streamml.testbed.vendorbuild import (
    Build,
    Recipe,
    ensure_build,
    finished_build,
)

FLUX_VERSION = "0.88.0"
#: Debian's interpreter: it has cffi, ply and yaml from apt (the image's default python3 lacks ply)
BUILD_PYTHON = "/usr/bin/python3"


def _flux_steps(source: Path, prefix: Path) -> list[tuple[list[str], dict[str, str]]]:
    # From an archive there is no .git: autogen/AC_INIT take the version from FLUX_VERSION.
    env = {"FLUX_VERSION": FLUX_VERSION, "PYTHON": BUILD_PYTHON}
    jobs = str(max(1, min(4, os.cpu_count() or 1)))
    return [
        (["./autogen.sh"], env),
        (["./configure", f"--prefix={prefix}", "--disable-docs", f"PYTHON={BUILD_PYTHON}"], env),
        (["make", f"-j{jobs}"], env),
        (["make", "install"], env),
    ]


FLUX_RECIPE = Recipe(
    tool="flux-core",
    archive_glob="flux-core-*-src.tar.*",
    steps=_flux_steps,
    version=FLUX_VERSION,
    product="bin/flux",
)


@dataclass(frozen=True)
class FluxInstall:
    """A usable ``flux`` command and, where known, its install prefix (for PMI binds)."""

    flux: Path
    prefix: Path

    @property
    def bin_dir(self) -> Path:
        return self.flux.parent


def _from_path() -> FluxInstall | None:
    found = shutil.which("flux")
    if found is None:
        return None
    flux = Path(found).resolve()
    return FluxInstall(flux, flux.parent.parent)


def ensure_flux(progress: Progress | None = None) -> FluxInstall:
    """``flux`` on PATH if there is one, else the cached build (building it the first time)."""
    found = _from_path()
    if found is not None:
        return found
    return _install(ensure_build(FLUX_RECIPE, progress))


def cached_flux() -> FluxInstall | None:
    """The project's finished build of flux-core, if there is one (builds nothing)."""
    build = finished_build(FLUX_RECIPE)
    return None if build is None else _install(build)


def _install(build: Build) -> FluxInstall:
    return FluxInstall(build.bin_dir / "flux", build.prefix)


@dataclass
class FluxInstance:
    state_dir: Path
    flux: Path
    prefix: Path
    uri: str
    size: int
    broker: procs.Daemon

    def env(self) -> dict[str, str]:
        """Environment for the ``flux`` CLI reaching this instance."""
        path = f"{self.flux.parent}{os.pathsep}{os.environ.get('PATH', '')}"
        return {"FLUX_URI": self.uri, "PATH": path}

    def to_data(self) -> dict[str, object]:
        return {
            "state_dir": str(self.state_dir),
            "flux": str(self.flux),
            "prefix": str(self.prefix),
            "uri": self.uri,
            "size": self.size,
            "broker": self.broker.to_json(),
        }

    @classmethod
    def load(cls, state_dir: Path) -> FluxInstance:
        try:
            data = json.loads((state_dir / "flux.json").read_text())
        except (OSError, ValueError) as exc:
            raise InfrastructureError(f"no Flux instance in {state_dir}: {exc}") from exc
        return cls(
            state_dir=Path(data["state_dir"]),
            flux=Path(data["flux"]),
            prefix=Path(data["prefix"]),
            uri=str(data["uri"]),
            size=int(data["size"]),
            broker=procs.Daemon.from_json(data["broker"]),
        )


def start(
    state_dir: Path,
    *,
    size: int = 1,
    install: FluxInstall | None = None,
    timeout_s: float = 60.0,
    detached: bool = True,
    fake_cores: int | None = None,
) -> FluxInstance:
    """Start a broker (or ``size`` brokers) in ``state_dir`` and wait until it runs jobs.

    ``fake_cores``: every broker ("node") gets that many cores, whatever the host has.
    """
    state_dir = state_dir.absolute()
    try:
        running = FluxInstance.load(state_dir)
    except InfrastructureError:
        running = None
    if running is not None and running.broker.alive():
        return running
    install = install or ensure_flux()
    rundir, statedir = state_dir / "run", state_dir / "state"
    shutil.rmtree(rundir, ignore_errors=True)  # sockets of a previous broker
    rundir.mkdir(parents=True)
    statedir.mkdir(parents=True, exist_ok=True)
    ready = state_dir / "ready"
    ready.unlink(missing_ok=True)
    argv = [str(install.flux), "start", f"-Sstatedir={statedir}"]
    if size > 1 or fake_cores:
        argv += [f"--test-size={size}", f"--test-rundir={rundir}"]
        uri = f"local://{rundir}/0/local"
        if fake_cores:
            argv += _fake_resources(state_dir / "conf", size, fake_cores)
    else:
        argv += [f"-Srundir={rundir}"]
        uri = f"local://{rundir}/local-0"
    # the initial program: note readiness, then wait until `flux shutdown` ends the instance
    argv += ["sh", "-c", f'echo "$FLUX_URI" > {ready}; exec sleep infinity']
    daemon, popen = procs.spawn(
        "flux-broker", argv, state_dir / "flux.log", detached=detached, env=_clean_env()
    )
    _wait_ready(install, ready, daemon, popen, timeout_s)
    uri = ready.read_text().strip() or uri
    instance = FluxInstance(state_dir, install.flux, install.prefix, uri, size, daemon)
    write_atomic(state_dir / "flux.json", json.dumps(instance.to_data(), indent=1) + "\n")
    return instance


def _fake_resources(conf: Path, size: int, cores: int) -> list[str]:
    """``flux start`` options for ``size`` nodes of ``cores`` cores each (not probed: noverify)."""
    if not 1 <= size <= 1024 or not 1 <= cores <= 1024:
        raise InfrastructureError(f"a fake resource set of {size} x {cores} cores is out of range")
    hosts = f"node[0-{size - 1}]" if size > 1 else "node0"
    conf.mkdir(parents=True, exist_ok=True)
    toml = "[resource]\nnoverify = true\n\n[[resource.config]]\n"
    toml += f'hosts = "{hosts}"\ncores = "0-{cores - 1}"\n'
    write_atomic(conf / "resource.toml", toml)
    return [f"--test-hosts={hosts}", f"--config-path={conf}"]


def _clean_env() -> dict[str, str]:
    # an instance started from inside another Flux job must not attach to the enclosing one
    return {k: v for k, v in os.environ.items() if not k.startswith(("FLUX_", "PMI_"))}


def _wait_ready(
    install: FluxInstall,
    ready: Path,
    daemon: procs.Daemon,
    popen: subprocess.Popen[bytes],
    timeout_s: float,
) -> None:
    # The socket appears before the instance is ready; the initial program runs once it is, and
    # `flux uptime` then says "run".
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if popen.poll() is not None or not daemon.alive():
            raise InfrastructureError(f"flux start exited early:\n{daemon.log_tail()}")
        if ready.exists() and ready.read_text().strip():
            uri = ready.read_text().strip()
            if _state(install.flux, uri) == "run":
                return
        time.sleep(0.2)
    procs.stop(daemon, popen)
    raise InfrastructureError(f"Flux was not ready within {timeout_s} s:\n{daemon.log_tail()}")


def _state(flux: Path, uri: str) -> str | None:
    """The instance's state from ``flux uptime`` (``run`` when it accepts jobs)."""
    env = {**_clean_env(), "FLUX_URI": uri}
    try:
        out = procs.run([str(flux), "uptime"], env=env, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    words = out.stdout.replace(",", " ").split()
    return words[words.index("run")] if "run" in words else (words[1] if len(words) > 1 else None)


def stop(state_dir: Path, *, timeout_s: float = 180.0) -> bool:
    """Shut the instance in ``state_dir`` down; True if one was running.

    ``flux shutdown`` cancels the running jobs and checkpoints the statedir: ~20-30 s on a loaded
    2-core machine, so the wait is long. Only past it is the broker killed (by PID), and a killed
    broker leaves its jobs' processes running, outside any instance.
    """
    state_dir = state_dir.absolute()
    try:
        instance = FluxInstance.load(state_dir)
    except InfrastructureError:
        return False
    if not instance.broker.alive():
        (state_dir / "flux.json").unlink(missing_ok=True)
        return False
    env = {**_clean_env(), "FLUX_URI": instance.uri}
    with contextlib.suppress(subprocess.TimeoutExpired):
        procs.run(
            [str(instance.flux), "shutdown", "--quiet"],
            env=env,
            capture_output=True,
            timeout=timeout_s,
        )
    deadline = time.monotonic() + timeout_s
    while instance.broker.alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    procs.stop(instance.broker)  # by PID and start time; a no-op once the broker has exited
    (state_dir / "flux.json").unlink(missing_ok=True)
    return True
