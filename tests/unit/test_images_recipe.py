"""The image recipe without building: names, cache key, build-time CA mounts, default images."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

from streamml.operator.reconcile import OperatorContext
from streamml.operator.settings import OperatorSettings
from streamml.testbed import imagebuild
from streamml.vocabulary.streammodel import (
    DEFAULT_SERVER_IMAGE,
    LEGACY_DEFAULT_SERVER_IMAGE,
    StreamModelSpec,
)

ROOT = Path(__file__).resolve().parents[2]
needs_buildah = pytest.mark.skipif(shutil.which("buildah") is None, reason="apt buildah")


def test_each_image_has_its_dockerfile_and_a_local_name() -> None:
    for name in imagebuild.IMAGE_NAMES:
        assert imagebuild.dockerfile(name).is_file()
        assert imagebuild.image_ref(name) == f"lammps-stream-ml/{name}:0.1.0"
    # the server default of the schema and the operator's image in config/ are those names
    assert imagebuild.image_ref("server") == DEFAULT_SERVER_IMAGE
    manager = yaml.safe_load((ROOT / "config/manager/deployment.yaml").read_text())
    (container,) = manager["spec"]["template"]["spec"]["containers"]
    assert container["image"] == imagebuild.image_ref("operator")
    assert container["imagePullPolicy"] == "IfNotPresent"


def test_the_dockerfiles_base_is_the_one_the_local_stand_in_is_named() -> None:
    for name in imagebuild.IMAGE_NAMES:
        froms = [
            line.split()[1]
            for line in imagebuild.dockerfile(name).read_text().splitlines()
            if line.upper().startswith("FROM ")
        ]
        assert froms and all(f"docker.io/library/{f}" == imagebuild.BASE_IMAGE for f in froms)


def test_copied_sources_are_read_from_the_copy_lines() -> None:
    text = "FROM a AS b\nCOPY pyproject.toml README.md ./\nCOPY --from=b /opt /opt\nCOPY x/ x/\n"
    assert imagebuild.copied_sources(text) == ["README.md", "pyproject.toml", "x/"]
    server = imagebuild.copied_sources(imagebuild.dockerfile("server").read_text())
    assert {"pyproject.toml", "streamml/", "modelserver/"} <= set(server)


@needs_buildah
def test_the_key_follows_the_copied_sources_and_not_bytecode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py").write_text("A = 1\n")
    (tmp_path / "Dockerfile.server").write_text("FROM a AS b\nCOPY pkg/ pkg/\nFROM b\n")
    monkeypatch.setattr(imagebuild, "ROOT", tmp_path)
    first = imagebuild.image_key("server")
    (tmp_path / "pkg" / "__pycache__").mkdir()
    (tmp_path / "pkg" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"\0")
    (tmp_path / "unrelated.txt").write_text("not copied\n")
    assert imagebuild.image_key("server") == first
    (tmp_path / "pkg" / "mod.py").write_text("A = 2\n")
    changed = imagebuild.image_key("server")
    assert changed != first
    (tmp_path / "Dockerfile.server").write_text("FROM a AS b\nCOPY pkg/ pkg/\nFROM b\nUSER 1\n")
    assert imagebuild.image_key("server") not in (first, changed)


def test_the_hosts_pip_ca_is_mounted_for_the_build_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("PIP_CERT", str(ca))
    args = imagebuild.registry_mounts(tmp_path)
    assert args == [
        "-v", f"{ca}:{imagebuild.BUILD_CA}:ro", "-v", f"{tmp_path / 'pip.conf'}:/etc/pip.conf:ro"
    ]  # fmt: skip
    assert f"cert = {imagebuild.BUILD_CA}" in (tmp_path / "pip.conf").read_text()
    monkeypatch.setenv("PIP_CERT", str(tmp_path / "missing.crt"))
    monkeypatch.setattr(imagebuild, "_pip_config_cert", lambda: "")
    assert imagebuild.registry_mounts(tmp_path) == []


def test_an_unknown_image_is_refused_by_name() -> None:
    with pytest.raises(imagebuild.InfrastructureError, match="unknown image 'web'"):
        imagebuild.dockerfile("web")


@pytest.mark.parametrize("named", [None, DEFAULT_SERVER_IMAGE, LEGACY_DEFAULT_SERVER_IMAGE])
def test_the_operator_setting_names_the_server_image_unless_the_spec_does(
    named: str | None,
) -> None:
    settings = OperatorSettings(server_image="registry.example.org/me/server:1")
    context = OperatorContext(settings=settings, kube=None)  # type: ignore[arg-type]
    server = {} if named is None else {"image": named}
    spec = StreamModelSpec.model_validate({"server": server, "models": []})
    assert context.image(spec) == "registry.example.org/me/server:1"
    own = StreamModelSpec.model_validate({"server": {"image": "mine:2"}, "models": []})
    assert context.image(own) == "mine:2"


def test_only_the_newest_builds_of_an_image_are_kept_and_nothing_else_is_touched(
    tmp_path: Path,
) -> None:
    keys = ["1" * 16, "2" * 16, "3" * 16]
    for age, key in enumerate(reversed(keys)):  # keys[2] is the newest
        for name in ("server", "lammps"):
            for suffix in (".tar", ".json"):
                path = tmp_path / f"{name}-{key}{suffix}"
                path.write_text(key)
                os.utime(path, (1_000_000 - age * 10, 1_000_000 - age * 10))
    others = [
        tmp_path / f"lammps-{'a' * 16}.sif",  # the SIF and its record are not image builds
        tmp_path / f"lammps-{'a' * 16}.json",
        tmp_path / f"base-python-{'b' * 16}.tar",
        tmp_path / f"server-{'c' * 16}.tar.tmp-123",  # another build's unfinished push
        tmp_path / "server-notakey.tar",
    ]
    for path in others:
        path.write_text("x")
        os.utime(path, (1, 1))
    removed = imagebuild.prune_builds(tmp_path, "server", 2)
    assert [p.name for p in removed] == [f"server-{keys[0]}.tar"]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert f"server-{keys[0]}.json" not in left
    for key in keys[1:]:
        assert {f"server-{key}.tar", f"server-{key}.json"} <= set(left)
    assert all(p.exists() for p in others)
    assert all((tmp_path / f"lammps-{key}.tar").exists() for key in keys)  # another image's
    imagebuild.prune_builds(tmp_path, "lammps", 1)
    assert not (tmp_path / f"lammps-{keys[1]}.tar").exists()
    assert (tmp_path / f"lammps-{keys[2]}.tar").exists()
    assert all(p.exists() for p in others)
