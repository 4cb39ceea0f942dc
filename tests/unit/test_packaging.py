"""Packaging: extras keep each image lean, versions are pinned where behaviour depends on them."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
EXTRAS: dict[str, list[str]] = PROJECT["optional-dependencies"]


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0].lower() for r in requirements}


def test_the_four_extras_exist() -> None:
    assert {"server", "operator", "clients", "dev"} <= set(EXTRAS)


def test_each_image_extra_leaves_out_the_others_heavy_dependencies() -> None:
    server, operator = _names(EXTRAS["server"]), _names(EXTRAS["operator"])
    assert not server & {"kopf", "kubernetes", "matplotlib", "tqdm"}
    assert not operator & {"river", "matplotlib", "dill"}
    core = _names(PROJECT["dependencies"])
    assert not core & {"river", "kopf", "kubernetes", "matplotlib", "aiohttp"}


def test_versions_that_change_behaviour_are_pinned() -> None:
    pins = {r.split("==")[0]: r for r in EXTRAS["server"] + EXTRAS["operator"] if "==" in r}
    # model JSON and snapshots depend on river's internals; kopf's handler semantics on kopf's
    assert "river" in pins and "kopf" in pins


def test_the_images_install_only_their_extra() -> None:
    for dockerfile, extra in (("Dockerfile.server", "server"), ("Dockerfile.operator", "operator")):
        installs = re.findall(r"pip install ([^\n]+)", (ROOT / dockerfile).read_text())
        assert installs == [f'".[{extra}]"'], (dockerfile, installs)
