"""Build (once, then cached) the control-plane binaries from the project's own Go module.

No registry this project reaches ships ``kube-apiserver`` as a binary, so it is compiled from the
``k8s.io/kubernetes`` Go module pinned in ``go/go.mod`` (package data next to this file). The
binaries land in ``<cache>/k8s-<version>/bin/``; ``<cache>`` is ``$STREAMML_CACHE_DIR`` or
``~/.cache/streamml``. Go's own module and build caches stay where Go keeps them, so a rebuild
after deleting our cache only links.

A build goes to a temporary directory that is renamed into place when complete, under a lock
file, so two test runs starting at once build once and never see half a directory.
"""

from __future__ import annotations

import collections
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from streamml import procs
from streamml.errors import InfrastructureError

logger = logging.getLogger(__name__)

GO_MODULE_DIR = Path(__file__).resolve().parent / "go"
#: binary name -> Go package, built from GO_MODULE_DIR
PACKAGES: dict[str, str] = {
    "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
    "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
    "kubectl": "k8s.io/kubernetes/cmd/kubectl",
    # etcd of the version kube-apiserver's own client is written against (see go/etcd/main.go).
    "etcd": "./etcd",
}
#: a progress line at least this often while the compiler is busy
PROGRESS_INTERVAL_S = 30.0

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Binaries:
    """Paths of one cached build."""

    version: str
    bin_dir: Path

    def path(self, name: str) -> Path:
        return self.bin_dir / name

    @property
    def kube_apiserver(self) -> Path:
        return self.path("kube-apiserver")

    @property
    def kube_controller_manager(self) -> Path:
        return self.path("kube-controller-manager")

    @property
    def kubectl(self) -> Path:
        return self.path("kubectl")

    @property
    def etcd(self) -> Path:
        return self.path("etcd")

    def complete(self) -> bool:
        """All binaries are there, built by the current recipe (go.mod, packages, flags)."""
        info = read_build_info(self.bin_dir.parent)
        return info.get("recipe") == recipe(self.version) and all(
            os.access(self.path(name), os.X_OK) for name in PACKAGES
        )


def _module_version(module: str, go_mod: Path = GO_MODULE_DIR / "go.mod") -> str:
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)} v(\S+)", go_mod.read_text(), re.M)
    if match is None:
        raise InfrastructureError(f"{go_mod} does not require {module}")
    return match.group(1)


def kubernetes_version() -> str:
    """The Kubernetes release the build module pins, e.g. ``1.34.4``."""
    return _module_version("k8s.io/kubernetes")


def ldflags(version: str) -> str:
    """Linker flags: stripped, and stamped with the release as Kubernetes' own build does.

    Without the stamp every binary reports ``v0.0.0-master`` and ``kubectl version`` fails.
    """
    major, minor, _ = version.split(".", 2)
    stamps = {"gitVersion": f"v{version}", "gitMajor": major, "gitMinor": minor}
    stamps["gitTreeState"] = "clean"
    flags = ["-s", "-w"]
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [f"-X {package}.{key}={value}" for key, value in stamps.items()]
    return " ".join(flags)


def recipe(version: str) -> str:
    """A digest of everything that determines the binaries: a change triggers a rebuild."""
    digest = hashlib.sha256()
    for part in (
        (GO_MODULE_DIR / "go.mod").read_bytes(),
        (GO_MODULE_DIR / "go.sum").read_bytes(),
        json.dumps(PACKAGES, sort_keys=True).encode(),
        ldflags(version).encode(),
    ):
        digest.update(part)
    return digest.hexdigest()[:16]


BUILD_INFO = "build-info.json"


def read_build_info(prefix: Path) -> dict[str, object]:
    """What made the cached build in ``prefix``; {} when there is none (written last: a prefix
    without it is half-made)."""
    try:
        data = json.loads((prefix / BUILD_INFO).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_build_info(prefix: Path, info: Mapping[str, object]) -> None:
    """Mark the build in ``prefix`` complete (the last step of every build)."""
    (prefix / BUILD_INFO).write_text(json.dumps(info, indent=2) + "\n")


def cache_root() -> Path:
    explicit = os.environ.get("STREAMML_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "streamml"


def cached_binaries(version: str | None = None) -> Binaries:
    """Where the binaries of ``version`` are (or will be) cached; builds nothing."""
    version = version or kubernetes_version()
    return Binaries(version, cache_root() / f"k8s-{version}" / "bin")


def _go() -> str:
    found = shutil.which("go") or next(
        (p for p in ("/usr/local/go/bin/go", "/usr/lib/go/bin/go") if os.access(p, os.X_OK)), None
    )
    if found is None:
        raise InfrastructureError(
            "the Go toolchain is needed to build kube-apiserver (no registry ships it): "
            "install Go >= 1.24 and retry"
        )
    return found


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        CGO_ENABLED="0",
        # readonly: the build never edits go.mod/go.sum (they may sit in a read-only install)
        GOFLAGS="-mod=readonly -buildvcs=false",
        GOTOOLCHAIN="local",
    )
    return env


@contextmanager
def _locked(lock_path: Path, progress: Progress) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"waiting for another build to finish ({lock_path})")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_binaries(progress: Progress | None = None, *, force: bool = False) -> Binaries:
    """The cached binaries, building them first if they are missing (or ``force``)."""
    say = progress or (lambda line: logger.info("%s", line))
    binaries = cached_binaries()
    if binaries.complete() and not force:
        return binaries
    version_dir = binaries.bin_dir.parent
    with _locked(version_dir.with_name(version_dir.name + ".lock"), say):
        if binaries.complete() and not force:  # built by whoever held the lock
            return binaries
        _build(binaries, say)
    return binaries


def install_dir(tmp: Path, root: Path) -> None:
    """Put a finished build at ``root``. A stale build there is moved aside first, so the
    window without binaries is one rename long (running daemons keep their unlinked
    executables)."""
    if root.exists():
        old = root.with_name(f"{root.name}.old-{os.getpid()}")
        root.rename(old)
        tmp.rename(root)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(root)


def _run(argv: list[str], say: Progress, what: str, cwd: Path = GO_MODULE_DIR) -> str:
    proc = procs.run(argv, cwd=cwd, env=_go_env(), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise InfrastructureError(
            f"{what} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}"
        )
    return str(proc.stdout)


def _build(binaries: Binaries, say: Progress) -> None:
    go = _go()
    version_dir = binaries.bin_dir.parent
    tmp = version_dir.with_name(f"{version_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "bin").mkdir(parents=True)
    started = time.monotonic()
    go_version = _run([go, "version"], say, "go version").strip()
    say(f"building Kubernetes v{binaries.version} control plane with {go_version}")
    say("  downloading Go modules (cached after the first time)")
    _run([go, "mod", "download"], say, "go mod download")
    packages = list(PACKAGES.values())
    total = len(_run([go, "list", "-deps", *packages], say, "go list").split())
    say(f"  compiling {total} packages into {binaries.bin_dir} (several minutes on a cold cache)")
    flags = f"-ldflags={ldflags(binaries.version)}"
    argv = [go, "build", "-v", "-trimpath", flags, "-o", f"{tmp / 'bin'}/", *packages]
    _compile(argv, total, started, say)
    for name in PACKAGES:
        if not os.access(tmp / "bin" / name, os.X_OK):
            raise InfrastructureError(f"go build produced no {name}")
    elapsed = time.monotonic() - started
    info = {
        "kubernetes": binaries.version,
        "go": go_version,
        "build_seconds": round(elapsed, 1),
        "recipe": recipe(binaries.version),
    }
    write_build_info(tmp, info)
    install_dir(tmp, version_dir)
    say(f"built {', '.join(PACKAGES)} in {elapsed:.0f} s")


def _compile(
    argv: list[str], total: int, started: float, say: Progress, cwd: Path = GO_MODULE_DIR
) -> None:
    # `go build -v` names each package as it is compiled (cached ones are skipped). A reader
    # thread counts them; this thread prints a line every PROGRESS_INTERVAL_S, also while the
    # linker (which prints nothing) runs, so a CI log never looks hung.
    proc = procs.popen(argv, cwd=cwd, env=_go_env(), stderr=subprocess.PIPE, text=True)
    stderr = proc.stderr
    assert stderr is not None
    compiled: list[str] = []
    tail: collections.deque[str] = collections.deque(maxlen=40)

    def read() -> None:
        for line in stderr:
            tail.append(line.rstrip())
            if not line.startswith(("#", " ", "\t")):
                compiled.append(line)

    reader = threading.Thread(target=read, name="go-build-output", daemon=True)
    reader.start()
    while True:
        try:
            proc.wait(timeout=PROGRESS_INTERVAL_S)
            break
        except subprocess.TimeoutExpired:
            elapsed = time.monotonic() - started
            # cached packages are not named, so the count stays below the total on a warm cache
            say(f"  {elapsed:.0f} s: compiled {len(compiled)} of {total} packages (then linking)")
    reader.join(timeout=10)
    if proc.returncode != 0:
        raise InfrastructureError("go build failed:\n" + "\n".join(tail))
