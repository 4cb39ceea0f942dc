"""The three images, built from the Dockerfiles with buildah, run with runc, loaded into containerd.

Each image's entrypoint runs from the image's own file system under ``runc run`` (no container
engine here): the server as the operator's Deployment runs it (its command and arguments, read-only
root, the data dir and /tmp on volumes, the image's non-root user) answers /healthz on 127.0.0.1
and exits cleanly on SIGTERM; the job image runs ``lmp -h`` and ``streamml run-lammps --help``; the
operator image imports kopf and prints ``streamml operator --help``. The tars import into a real
containerd the test starts (own root, state and socket; stopped by PID).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tarfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamml.operator import builders
from streamml.operator.builders import Owner
from streamml.procs import free_port
from streamml.testbed.imagebuild import IMAGE_NAMES, BuiltImage, ensure_images, load_images
from streamml.testbed.imagerun import Bundle, mounted
from streamml.vocabulary.streammodel import StreamModelSpec

pytestmark = [pytest.mark.integration, pytest.mark.images]


@pytest.fixture(scope="module")
def images() -> dict[str, BuiltImage]:
    return ensure_images(IMAGE_NAMES)


def _image(name: str) -> BuiltImage:
    return ensure_images([name])[name]  # cached: built by `make images` / scripts/test.sh


def _run(bundle: Bundle, spec: dict[str, object], tmp_path: Path) -> str:
    proc = bundle.popen(
        spec, tmp_path / "runc", f"t-{uuid.uuid4().hex[:10]}",
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    out, _ = proc.communicate(timeout=300)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text
    return text


def test_each_tar_is_the_image_that_is_run(images: dict[str, BuiltImage], tmp_path: Path) -> None:
    for image in images.values():
        with tarfile.open(image.tar) as tar:
            member = tar.extractfile("manifest.json")
            assert member is not None
            (manifest,) = json.loads(member.read())
        assert manifest["RepoTags"] == [image.qualified]
        assert manifest["Config"].removesuffix(".json") == image.image_id.removeprefix("sha256:")
        with mounted(image, tmp_path / image.name) as bundle:
            assert bundle.image_id == image.image_id


def test_the_server_image_serves_read_only_and_stops_on_sigterm(tmp_path: Path) -> None:
    image = _image("server")
    owner = Owner(name="m", namespace="ns", uid="u-1")
    spec = StreamModelSpec.model_validate({"models": []})
    deployment = builders.deployment(owner, spec, image.ref)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    port = free_port()
    args = [a.replace("$(STREAMML_AUTH_USER)", "scientist") for a in container["args"]]
    args[args.index("0.0.0.0")] = "127.0.0.1"  # runc keeps the host's netns: loopback only
    args[args.index(str(spec.server.port))] = str(port)
    binds: dict[str, Path] = {}
    for mount in container["volumeMounts"]:
        host = tmp_path / mount["name"]
        host.mkdir()
        os.chown(host, builders.SERVER_UID, builders.SERVER_UID)
        binds[mount["mountPath"]] = host
    token = binds[builders.AUTH_DIR] / "token"
    token.write_text("t" * 40)
    os.chown(token, builders.SERVER_UID, builders.SERVER_UID)
    with mounted(image, tmp_path / "bundle") as bundle:
        assert bundle.config["config"]["User"].split(":")[0] == str(builders.SERVER_UID)
        run_spec = bundle.spec(args, entrypoint=container["command"], read_only=True, binds=binds)
        log = (tmp_path / "server.log").open("wb")
        proc = bundle.popen(run_spec, tmp_path / "runc", f"t-{uuid.uuid4().hex[:10]}",
                            stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        try:
            body = _wait_healthz(port, proc)
        finally:
            proc.send_signal(signal.SIGTERM)  # runc forwards it to the server (PID 1)
            code = proc.wait(timeout=60)
    text = (tmp_path / "server.log").read_text()
    assert body == {"status": "ok"}, text
    assert code == 0, text
    assert "storage flushed and closed" in text
    assert list(binds["/data"].iterdir()), "the server keeps its store on the data volume"


def _wait_healthz(port: int, proc: subprocess.Popen[bytes]) -> object:
    for _ in range(600):
        assert proc.poll() is None, "the server exited"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as reply:
                return json.loads(reply.read())
        except OSError:
            time.sleep(0.5)
    raise AssertionError("no /healthz answer")


def test_the_job_image_runs_lmp_and_the_job_client(tmp_path: Path) -> None:
    with mounted(_image("lammps"), tmp_path / "bundle") as bundle:
        specs = [  # Open MPI (lmp) needs a writable /tmp: a tmpfs, as a pod's emptyDir
            bundle.spec(["-h"], entrypoint=["lmp"], read_only=True, tmpfs=("/tmp",)),
            bundle.spec(["run-lammps", "--help"], read_only=True, tmpfs=("/tmp",)),
        ]
        lmp, client = (_run(bundle, spec, tmp_path) for spec in specs)
    assert "Large-scale Atomic/Molecular Massively Parallel Simulator" in lmp
    assert "--trial-id" in client and "--server" in client


def test_the_operator_image_imports_kopf_and_prints_its_help(tmp_path: Path) -> None:
    code = ["import kopf, streamml.operator.streammodel_handlers; print('kopf', kopf.__version__)"]
    python = ["/opt/venv/bin/python", "-P", "-c"]
    with mounted(_image("operator"), tmp_path / "bundle") as bundle:
        specs = [  # each written before any runs (runc spec refuses an existing config.json)
            bundle.spec(code, entrypoint=python, read_only=True),
            bundle.spec(["operator", "--help"], read_only=True),
        ]
        imported, helped = (_run(bundle, spec, tmp_path) for spec in specs)
    assert imported.startswith("kopf ")
    assert "--liveness" in helped


@pytest.fixture
def containerd(tmp_path: Path) -> Iterator[Path]:
    """A containerd of the test's own: root, state and socket under tmp_path."""
    base = Path(f"/tmp/ctrd-{uuid.uuid4().hex[:8]}")
    base.mkdir()
    sock = base / "containerd.sock"
    config = base / "config.toml"
    config.write_text(
        f'version = 2\nroot = "{base}/root"\nstate = "{base}/state"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f'[grpc]\n  address = "{sock}"\n[ttrpc]\n  address = "{sock}.ttrpc"\n'
    )
    log = (tmp_path / "containerd.log").open("wb")
    proc = subprocess.Popen(["containerd", "--config", str(config)], stdout=log, stderr=log)
    try:
        for _ in range(200):
            if sock.exists() or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert proc.poll() is None, (tmp_path / "containerd.log").read_text()
        yield sock
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        subprocess.run(["umount", "-R", str(base / "root")], capture_output=True, check=False)
        subprocess.run(["rm", "-rf", str(base)], check=False)


def test_the_images_import_into_containerd(images: dict[str, BuiltImage], containerd: Path) -> None:
    load_images(images.values(), containerd)
    listed = subprocess.run(
        ["ctr", "--address", str(containerd), "-n", "k8s.io", "images", "ls", "-q"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert sorted(listed) == sorted(i.qualified for i in images.values())
