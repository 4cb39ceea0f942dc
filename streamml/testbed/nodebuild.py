"""Build (once, then cached) what a real node runs besides the control plane.

Three Go builds, each cached like the control plane (:mod:`streamml.testbed.k8sbuild`) in
``<cache>/<name>-<version>/bin/`` with a ``build-info.json`` (Go version, seconds, sizes, recipe):

- ``k8s-node-<version>``: kubelet, kube-proxy, kube-scheduler from the same ``k8s.io/kubernetes``
  module as the control plane, with ``go build -modfile=node.mod`` (``go.mod`` plus these
  commands' dependencies; ``go.mod`` and the control plane's cache key stay as they are).
- ``coredns-<version>``: CoreDNS from ``go/coredns`` (its own module; only the plugins a cluster
  DNS needs, no ``forward``).
- ``traefik-<version>``: the ingress controller, from a writable copy of its module (its
  ``go.mod`` has ``replace`` directives, so it must be the main module, not ``go install``),
  with :data:`TRAEFIK_PATCHES` applied: without lego's ACME DNS-challenge providers (about 150
  DNS vendors' cloud SDKs, 847 of its 2496 packages) it compiles a third fewer packages. An
  ingress on a test node has no public DNS zone to prove, so nothing it does is lost.

kube-controller-manager comes from the control-plane build (same module, same version).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import astuple, dataclass, field
from pathlib import Path

from streamml.errors import InfrastructureError
from streamml.testbed import k8sbuild
from streamml.testbed.k8sbuild import GO_MODULE_DIR, Progress

logger = logging.getLogger(__name__)

COREDNS_DIR = GO_MODULE_DIR / "coredns"
TRAEFIK_MODULE = "github.com/traefik/traefik/v3"
TRAEFIK_VERSION = "3.6.12"


@dataclass(frozen=True)
class SourcePatch:
    """One exact replacement in a file of a module's source; it must match exactly once."""

    path: str
    old: str
    new: str


#: Traefik without ``lego/providers/dns`` (its only importer is the ACME provider): a
#: certificate resolver that asks for a DNS challenge fails with this error at start.
TRAEFIK_PATCHES = (
    SourcePatch(
        "pkg/provider/acme/provider.go", '\t"github.com/go-acme/lego/v4/providers/dns"\n', ""
    ),
    SourcePatch(
        "pkg/provider/acme/provider.go",
        "provider, err = dns.NewDNSChallengeProviderByName(p.DNSChallenge.Provider)",
        'err = fmt.Errorf("ACME DNS challenge provider %q: not in this build of Traefik '
        "(streamml: built without lego's DNS providers)\", p.DNSChallenge.Provider)",
    ),
)


@dataclass(frozen=True)
class GoTarget:
    """One cached Go build: where its module is, what it builds, what its cache key covers."""

    name: str
    version: str
    packages: dict[str, str]
    ldflags: str
    key_parts: tuple[bytes, ...]
    #: the directory to build in; receives a scratch dir (for a writable copy of a module)
    module_dir: Callable[[Path, Progress], Path]
    modfile: str | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return k8sbuild.cache_root() / f"{self.name}-{self.version}"

    @property
    def bin_dir(self) -> Path:
        return self.root / "bin"

    def path(self, binary: str) -> Path:
        return self.bin_dir / binary

    def recipe(self) -> str:
        digest = hashlib.sha256()
        for part in (*self.key_parts, json.dumps(self.packages).encode(), self.ldflags.encode()):
            digest.update(part)
        return digest.hexdigest()[:16]

    def complete(self) -> bool:
        try:
            info = json.loads((self.root / "build-info.json").read_text())
        except (OSError, ValueError):
            return False
        return info.get("recipe") == self.recipe() and all(
            os.access(self.path(name), os.X_OK) for name in self.packages
        )


def _in_place(directory: Path) -> Callable[[Path, Progress], Path]:
    return lambda _scratch, _say: directory


def _traefik_source(scratch: Path, say: Progress) -> Path:
    go = k8sbuild._go()
    say(f"  downloading {TRAEFIK_MODULE}@v{TRAEFIK_VERSION} from the Go module proxy")
    out = k8sbuild._run(
        [go, "mod", "download", "-json", f"{TRAEFIK_MODULE}@v{TRAEFIK_VERSION}"],
        say,
        "go mod download",
        cwd=scratch,
    )
    source = Path(json.loads(out)["Dir"])
    copy = scratch / "traefik-src"
    shutil.copytree(source, copy)
    for path in (copy, *copy.rglob("*")):
        path.chmod(path.stat().st_mode | 0o200)  # the module cache is read-only
    apply_patches(copy, TRAEFIK_PATCHES)
    say(f"  patched {len(TRAEFIK_PATCHES)} places: without lego's ACME DNS-challenge providers")
    return copy


def apply_patches(root: Path, patches: tuple[SourcePatch, ...]) -> None:
    """Apply ``patches`` under ``root``; a patch that no longer matches exactly once is an error."""
    for patch in patches:
        path = root / patch.path
        text = path.read_text()
        found = text.count(patch.old)
        if found != 1:
            raise InfrastructureError(
                f"a source patch matches {found} times, not once, in {path}: {patch.old[:60]!r}"
            )
        path.write_text(text.replace(patch.old, patch.new))


def node_target() -> GoTarget:
    version = k8sbuild.kubernetes_version()
    return GoTarget(
        name="k8s-node",
        version=version,
        packages={
            "kubelet": "k8s.io/kubernetes/cmd/kubelet",
            "kube-proxy": "k8s.io/kubernetes/cmd/kube-proxy",
            "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
        },
        ldflags=k8sbuild.ldflags(version),
        key_parts=(
            (GO_MODULE_DIR / "node.mod").read_bytes(),
            (GO_MODULE_DIR / "node.sum").read_bytes(),
        ),
        module_dir=_in_place(GO_MODULE_DIR),
        modfile="node.mod",
    )


def coredns_target() -> GoTarget:
    version = k8sbuild._module_version("github.com/coredns/coredns", COREDNS_DIR / "go.mod")
    return GoTarget(
        name="coredns",
        version=version,
        packages={"coredns": "."},
        ldflags="-s -w",
        key_parts=tuple((COREDNS_DIR / f).read_bytes() for f in ("go.mod", "go.sum", "main.go")),
        module_dir=_in_place(COREDNS_DIR),
    )


def traefik_target() -> GoTarget:
    return GoTarget(
        name="traefik",
        version=TRAEFIK_VERSION,
        packages={"traefik": "./cmd/traefik"},
        ldflags=f"-s -w -X {TRAEFIK_MODULE}/pkg/version.Version=v{TRAEFIK_VERSION}",
        key_parts=(
            f"{TRAEFIK_MODULE}@v{TRAEFIK_VERSION}".encode(),
            json.dumps([astuple(patch) for patch in TRAEFIK_PATCHES]).encode(),
        ),
        module_dir=_traefik_source,
    )


def targets() -> tuple[GoTarget, ...]:
    return (node_target(), coredns_target(), traefik_target())


def ensure(target: GoTarget, progress: Progress | None = None, *, force: bool = False) -> GoTarget:
    """``target``'s cached binaries, building them first if missing (or ``force``)."""
    say = progress or (lambda line: logger.info("%s", line))
    if target.complete() and not force:
        return target
    with k8sbuild._locked(target.root.with_name(target.root.name + ".lock"), say):
        if target.complete() and not force:
            return target
        _build(target, say)
    return target


def ensure_all(progress: Progress | None = None, *, force: bool = False) -> tuple[GoTarget, ...]:
    return tuple(ensure(t, progress, force=force) for t in targets())


def _build(target: GoTarget, say: Progress) -> None:
    go = k8sbuild._go()
    root = target.root
    tmp = root.with_name(f"{root.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "bin").mkdir(parents=True)
    started = time.monotonic()
    try:
        go_version = k8sbuild._run([go, "version"], say, "go version").strip()
        say(f"building {target.name} {target.version} with {go_version}")
        cwd = target.module_dir(tmp, say)
        mod = [f"-modfile={target.modfile}"] if target.modfile else []
        packages = list(target.packages.values())
        total = len(
            k8sbuild._run([go, "list", *mod, "-deps", *packages], say, "go list", cwd).split()
        )
        say(f"  compiling {total} packages into {target.bin_dir}")
        # one invocation: the output names are the packages' last path elements (the keys)
        argv = [go, "build", "-v", "-trimpath", *mod, f"-ldflags={target.ldflags}"]
        argv += ["-o", f"{tmp / 'bin'}/", *packages]
        k8sbuild._compile(argv, total, started, say, cwd)
        shutil.rmtree(tmp / "traefik-src", ignore_errors=True)
        sizes = {name: (tmp / "bin" / name).stat().st_size for name in target.packages}
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    elapsed = time.monotonic() - started
    info = {
        "target": target.name,
        "version": target.version,
        "go": go_version,
        "build_seconds": round(elapsed, 1),
        "sizes": sizes,
        "recipe": target.recipe(),
    }
    (tmp / "build-info.json").write_text(json.dumps(info, indent=2) + "\n")
    k8sbuild.install_dir(tmp, root)
    say(f"built {', '.join(target.packages)} in {elapsed:.0f} s")
    if not all(os.access(target.path(n), os.X_OK) for n in target.packages):
        raise InfrastructureError(f"go build of {target.name} produced no binaries")
