"""The node's own images, made without a registry: the pod sandbox and a tiny HTTP responder.

Both are single static C programs (``nodeimage/*.c``, ``gcc -static``) packed into one
docker-save archive that ``ctr -n k8s.io images import`` loads into the node's containerd:

- ``streamml.local/pause:1``: containerd's CRI ``sandbox_image``, so nothing ever tries to pull
  ``registry.k8s.io/pause``;
- ``streamml.local/tinyhttp:1``: ``tinyhttp serve PORT`` answers ``pod=<hostname>``;
  ``tinyhttp get HOST PORT`` resolves HOST as any pod does (resolv.conf) and prints the reply.

The archive is cached in ``<cache>/node-images-<recipe>/images.tar`` (recipe: sources + gcc).
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from streamml import procs
from streamml.errors import InfrastructureError
from streamml.testbed.k8sbuild import cache_root

SOURCES = Path(__file__).resolve().parent / "nodeimage"
PAUSE_IMAGE = "streamml.local/pause:1"
TINYHTTP_IMAGE = "streamml.local/tinyhttp:1"


@dataclass(frozen=True)
class Image:
    tag: str
    binary: str  # the program in the image's root, also its entrypoint


IMAGES = (Image(PAUSE_IMAGE, "pause"), Image(TINYHTTP_IMAGE, "tinyhttp"))


def _gcc() -> str:
    gcc = shutil.which("gcc")
    if gcc is None:
        raise InfrastructureError("gcc is needed to build the node's pause image: apt install gcc")
    return gcc


def _recipe(gcc: str) -> str:
    digest = hashlib.sha256()
    digest.update(procs.run([gcc, "--version"], capture_output=True, check=True).stdout)
    for image in IMAGES:
        digest.update((SOURCES / f"{image.binary}.c").read_bytes())
    return digest.hexdigest()[:16]


def ensure_images() -> Path:
    """The docker-save archive of :data:`IMAGES`, built on first use."""
    gcc = _gcc()
    target = cache_root() / f"node-images-{_recipe(gcc)}" / "images.tar"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        binaries: dict[str, bytes] = {}
        for image in IMAGES:
            out = Path(tmp) / image.binary
            argv = [gcc, "-static", "-O2", "-o", str(out), str(SOURCES / f"{image.binary}.c")]
            proc = procs.run(argv, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise InfrastructureError(f"gcc {image.binary}.c failed: {proc.stderr[-2000:]}")
            binaries[image.binary] = out.read_bytes()
        partial = Path(tmp) / "images.tar"
        partial.write_bytes(docker_archive(binaries))
        partial.rename(target)
    return target


def _tar(members: dict[str, bytes], mode: int = 0o755) -> bytes:
    """A reproducible tar (mtime 0, root-owned) of ``name -> content``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in sorted(members.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 0
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def docker_archive(binaries: dict[str, bytes]) -> bytes:
    """A docker-save archive: one layer holding every binary, one image per :data:`IMAGES`."""
    layer = _tar(binaries)
    layer_id = hashlib.sha256(layer).hexdigest()
    files: dict[str, bytes] = {f"{layer_id}/layer.tar": layer}
    manifest = []
    for image in IMAGES:
        config = {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": [f"/{image.binary}"], "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_id}"]},
        }
        raw = json.dumps(config, sort_keys=True).encode()
        name = f"{hashlib.sha256(raw).hexdigest()}.json"
        files[name] = raw
        manifest.append(
            {"Config": name, "RepoTags": [image.tag], "Layers": [f"{layer_id}/layer.tar"]}
        )
    files["manifest.json"] = json.dumps(manifest).encode()
    return _tar(files, mode=0o644)
