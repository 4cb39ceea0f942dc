"""Run an image's entrypoint without a container engine: docker-archive -> OCI bundle -> ``runc``.

::

    with mounted(image, work / "bundle") as bundle:      # the image's rootfs + config (buildah)
        spec = bundle.spec(["--help"], read_only=True)   # user, env, cwd, entrypoint from the image
        proc = bundle.popen(spec, runc_root, "an-id")    # `runc run` in the foreground

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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamml import procs
from streamml.errors import InfrastructureError
from streamml.testbed.imagebuild import BuiltImage, buildah


@dataclass(frozen=True)
class Bundle:
    """An image's root file system and config; ``path/config.json`` is written per run."""

    path: Path
    rootfs: Path
    config: dict[str, Any]
    image_id: str

    def spec(
        self,
        args: list[str] | None = None,
        *,
        entrypoint: list[str] | None = None,
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
        entry = (image.get("Entrypoint") or []) if entrypoint is None else entrypoint
        cmd = image.get("Cmd") or []
        proc = procs.run(
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
        return procs.popen(argv, stdin=subprocess.DEVNULL, **kwargs)


@contextmanager
def mounted(image: BuiltImage, work: Path) -> Iterator[Bundle]:
    """The built image's file system (a buildah working container, mounted) as a bundle.

    It is the image of ``image.tar`` (same image ID), from the project's buildah storage;
    the container and its mount are removed on exit.
    """
    if shutil.which("runc") is None:
        raise InfrastructureError("runc is not installed (apt runc)")
    inspected = json.loads(_buildah("inspect", "--type", "image", image.qualified))
    container = _buildah("from", "--pull-never", image.qualified).strip()
    try:
        rootfs = Path(_buildah("mount", container).strip())
        work.mkdir(parents=True, exist_ok=True)
        yield Bundle(work, rootfs, inspected["OCIv1"], "sha256:" + inspected["FromImageID"])
    finally:
        _buildah("umount", container)
        _buildah("rm", container)


def _buildah(*args: str) -> str:
    proc = procs.run(buildah(*args), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise InfrastructureError(f"buildah {args[0]} failed: {proc.stderr.strip()[-1000:]}")
    return str(proc.stdout)
