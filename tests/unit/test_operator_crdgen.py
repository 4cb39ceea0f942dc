"""CRD generation: structural schemas from the pydantic models, and the committed YAML is fresh."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamml.vocabulary import crdgen
from streamml.vocabulary.streammodel import STREAMMODEL

ROOT = Path(__file__).parents[2]


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = []
    if isinstance(node, dict):
        out.append((path, node))
        for key in ("properties",):
            for name, sub in (node.get(key) or {}).items():
                out.extend(_walk(sub, f"{path}.{name}"))
        if isinstance(node.get("items"), dict):
            out.extend(_walk(node["items"], f"{path}[]"))
        if isinstance(node.get("additionalProperties"), dict):
            out.extend(_walk(node["additionalProperties"], f"{path}{{}}"))
    return out


@pytest.mark.parametrize("info", crdgen.resources(), ids=lambda i: i.kind)
def test_schema_is_structural(info: Any) -> None:
    schema = crdgen.crd(info)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        assert "$ref" not in node and "anyOf" not in node and "allOf" not in node, path
        assert "title" not in node, path
        if not node.get("x-kubernetes-preserve-unknown-fields"):
            assert "type" in node, f"{path} has no type"
        if "default" in node and node.get("type") == "object" and node["default"] == {}:
            assert "properties" in node or path == "", path


def test_streammodel_crd_details() -> None:
    doc = crdgen.crd(STREAMMODEL)
    names = doc["spec"]["names"]
    assert names["shortNames"] == ["sm", "smodel"]
    assert names["categories"] == ["streamml"]
    [version] = doc["spec"]["versions"]
    assert version["subresources"]["status"] == {}
    assert version["subresources"]["scale"]["specReplicasPath"] == ".spec.server.replicas"
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    for wanted in ("Ready", "URL", "Models", "Samples", "Best", "Metric", "Score", "Age"):
        assert wanted in columns
    schema = version["schema"]["openAPIV3Schema"]
    spec = schema["properties"]["spec"]["properties"]
    server = spec["server"]["properties"]
    assert server["replicas"]["minimum"] == 0 and server["replicas"]["maximum"] == 1
    assert server["replicas"]["default"] == 1
    assert spec["server"]["default"] == {}  # nested defaults apply when server is omitted
    assert spec["models"]["x-kubernetes-list-type"] == "map"
    pipeline = spec["models"]["items"]["properties"]["pipeline"]
    params = pipeline["items"]["properties"]["params"]
    assert params["x-kubernetes-preserve-unknown-fields"] is True  # recursive components
    assert spec["models"]["items"]["properties"]["flavor"]["enum"][0] == "regression"
    assert spec["ingress"]["x-kubernetes-validations"]
    assert schema["x-kubernetes-validations"][0]["rule"].startswith("size(self.metadata.name)")
    status = schema["properties"]["status"]["properties"]
    for field in (
        "conditions",
        "observedGeneration",
        "url",
        "address",
        "authSecretName",
        "models",
        "samplesLearned",
        "best",
        "replicas",
        "selector",
    ):
        assert field in status, field
    conditions = status["conditions"]["items"]["properties"]
    assert conditions["status"]["enum"] == ["True", "False", "Unknown"]


@pytest.mark.parametrize("folder", ["crds", "config/crd"])
def test_committed_crds_match_the_generator(folder: str) -> None:
    for info in crdgen.resources():
        path = ROOT / folder / crdgen.file_name(info)
        assert path.exists(), f"{path} missing: run `make crds`"
        assert path.read_text() == crdgen.render(info), f"{path} is stale: run `make crds`"


def test_render_is_valid_yaml_and_cli_writes(tmp_path: Path) -> None:
    import argparse

    parser = argparse.ArgumentParser()
    crdgen.configure(parser)
    assert crdgen.run(parser.parse_args(["--out", str(tmp_path)])) == 0
    files = sorted(p.name for p in tmp_path.iterdir())
    assert "streamml.io_streammodels.yaml" in files
    loaded = yaml.safe_load((tmp_path / "streamml.io_streammodels.yaml").read_text())
    assert loaded["metadata"]["name"] == "streammodels.streamml.io"


def test_yaml_is_unambiguous_for_go_readers() -> None:
    # kubectl reads YAML 1.1: a bare `n` or `y` (e.g. a field named n) would become a boolean
    for info in crdgen.resources():
        for line in crdgen.render(info).splitlines():
            bare = line.strip().removeprefix("- ").rstrip(":")
            assert bare not in {"y", "n", "Y", "N", "yes", "no", "on", "off"}, line


def test_exclusive_bounds_are_openapi_v3_booleans() -> None:
    """pydantic's gt=0 is JSON Schema's numeric exclusiveMinimum; the API server takes only the
    OpenAPI v3.0 form (a number there made it refuse the whole StreamModel CRD)."""
    import json

    from streamml.vocabulary import crdgen

    for info in crdgen.resources():
        text = json.dumps(crdgen.crd(info))
        for key in ("exclusiveMinimum", "exclusiveMaximum"):
            for value in re.findall(rf'"{key}": ([^,}}]+)', text):
                assert value == "true", (info.kind, key, value)
