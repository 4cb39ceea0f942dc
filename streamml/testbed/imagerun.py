"""Run an image's entrypoint without a container engine: docker-archive -> OCI bundle -> ``runc``.

::

    bundle = unpack(image.tar, work / "bundle")          # rootfs + the image's config
    spec = bundle.spec(["--help"], read_only=True)       # user, env, cwd, entrypoint from the image
    proc = bundle.popen(spec, runc_root)                 # `runc run` in the foreground

The spec is ``runc spec``'s default (new pid, mount, ipc and uts namespaces; ``RLIMIT_NOFILE``
lowered to 1024 and no other rlimit, which is what runs on a VM without CAP_SYS_RESOURCE) with
the image's user, environment and working directory. By default it keeps the host's network
namespace, so a server inside that binds 127.0.0.1 is reached on the host's 127.0.0.1. ``runc
run`` forwards the signals it gets to the container's process (SIGTERM reaches PID 1).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamml.errors import InfrastructureError

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


@dataclass(frozen=True)
class Bundle:
    """An unpacked image: ``rootfs/`` and the image config (``config.json`` is written per run)."""

    path: Path
    config: dict[str, Any]

    @property
    def rootfs(self) -> Path:
        return self.path / "rootfs"

    def spec(
        self,
        args: list[str] | None = None,
        *,
        read_only: bool = False,
        binds: dict[str, Path] | None = None,
        tmpfs: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """An OCI runtime spec: the image's ENTRYPOINT + (``args`` or its CMD), user, env.

        ``binds`` maps container paths to host directories (read-write), ``tmpfs`` lists
        container paths that get a fresh tmpfs (as a pod's emptyDir on /tmp).
        """
        image = self.config.get("config") or {}
        entry, cmd = image.get("Entrypoint") or [], image.get("Cmd") or []
        proc = subprocess.run(
            ["runc", "spec", "--bundle", str(self.path)], capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise InfrastructureError(f"runc spec failed: {proc.stderr.strip()}")
        spec_file = self.path / "config.json"
        spec: dict[str, Any] = json.loads(spec_file.read_text())
        spec_file.unlink()
        uid, _, gid = str(image.get("User") or "0:0").partition(":")
        spec["process"].update(
            terminal=False,
            args=[*entry, *(cmd if args is None else args)],
            env=[*(image.get("Env") or []), *(f"{k}={v}" for k, v in (env or {}).items())],
            cwd=image.get("WorkingDir") or "/",
            user={"uid": int(uid), "gid": int(gid or uid)},
        )
        spec["root"] = {"path": str(self.rootfs), "readonly": read_only}
        linux = spec["linux"]
        linux["namespaces"] = [n for n in linux["namespaces"] if n["type"] != "network"]
        spec["mounts"] += [
            {"destination": "/etc/resolv.conf", "type": "bind", "source": "/etc/resolv.conf",
             "options": ["rbind", "ro"]},
        ] + [
            {"destination": dest, "type": "bind", "source": str(src), "options": ["rbind", "rw"]}
            for dest, src in (binds or {}).items()
        ] + [
            {"destination": dest, "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "nodev", "mode=1777", "size=64m"]}
            for dest in tmpfs
        ]  # fmt: skip
        return spec

    def popen(
        self, spec: dict[str, Any], runc_root: Path, container_id: str, **kwargs: Any
    ) -> subprocess.Popen[bytes]:
        """``runc run`` of ``spec`` in the foreground; stop it with SIGTERM to the Popen's PID."""
        (self.path / "config.json").write_text(json.dumps(spec, indent=2))
        runc_root.mkdir(parents=True, exist_ok=True)
        argv = ["runc", "--root", str(runc_root), "run", "--bundle", str(self.path), container_id]
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, **kwargs)


def unpack(archive: Path, dest: Path) -> Bundle:
    """Apply the layers of a docker-archive (``docker save`` format) to ``dest/rootfs``.

    GNU tar extracts each layer (owners and modes as stored); the layer's whiteouts
    (``.wh.NAME``, ``.wh..wh..opq``) first remove what lower layers put there.
    """
    for tool in ("runc", "tar"):
        if shutil.which(tool) is None:
            raise InfrastructureError(f"{tool} is not installed")
    rootfs, layers = dest / "rootfs", dest / "layers"
    rootfs.mkdir(parents=True)
    layers.mkdir()
    _tar(["-xf", str(archive), "-C", str(layers)])
    manifest = json.loads((layers / "manifest.json").read_text())[0]
    config = json.loads((layers / manifest["Config"]).read_text())
    for layer in manifest["Layers"]:
        with tarfile.open(layers / layer) as tar:  # headers only: data is skipped by seeking
            whiteouts = [Path(m.name) for m in tar if Path(m.name).name.startswith(WHITEOUT)]
        for path in whiteouts:
            _whiteout(rootfs, path)
        _tar(["-xpf", str(layers / layer), "--numeric-owner", "--exclude", f"{WHITEOUT}*",
              "-C", str(rootfs)])  # fmt: skip
    shutil.rmtree(layers)
    return Bundle(dest, config)


def _tar(args: list[str]) -> None:
    proc = subprocess.run(["tar", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise InfrastructureError(f"tar {' '.join(args)} failed: {proc.stderr.strip()[-1000:]}")


def _whiteout(rootfs: Path, path: Path) -> None:
    target = rootfs / path
    if path.name == OPAQUE:
        for child in target.parent.iterdir() if target.parent.is_dir() else ():
            _remove(child)
    else:
        _remove(target.with_name(path.name[len(WHITEOUT) :]))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
