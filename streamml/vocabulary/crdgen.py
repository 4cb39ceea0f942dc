"""``streamml crds``: CustomResourceDefinitions generated from the pydantic models.

The operator validates objects with the same pydantic models, so the API server and the operator
agree on one schema. Pydantic's JSON Schema is turned into a *structural* OpenAPI v3 schema as the
API server requires: ``$ref`` inlined, ``anyOf [X, null]`` becomes ``nullable``, recursive or mixed
unions (model-spec ``params``) become ``x-kubernetes-preserve-unknown-fields`` (the operator
validates those itself), nested objects get ``default: {}`` so that their own defaults apply.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any

from streamml.vocabulary.resource import ResourceInfo

#: JSON Schema keywords that OpenAPI v3 in a CRD accepts and that we keep.
_KEPT = {
    "description",
    "default",
    "enum",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "format",
}
_MAX_DESCRIPTION = 200

#: Rules on the whole object (they can see metadata): the operator derives owned objects' names
#: and label values from the CR's name, and a Service name must be a DNS-1035 label.
_ROOT_RULES: dict[str, list[dict[str, str]]] = {
    "StreamModel": [
        {
            "rule": "size(self.metadata.name) <= 52"
            " && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
            "message": "metadata.name must be a DNS-1035 label of at most 52 characters",
        }
    ]
}


def resources() -> list[ResourceInfo]:
    """Every custom resource of the project (LammpsSweep when its module is installed)."""
    from streamml.vocabulary.streammodel import STREAMMODEL

    found = [STREAMMODEL]
    try:
        from streamml.vocabulary import lammpssweep
    except ImportError:
        return found
    sweep = getattr(lammpssweep, "LAMMPSSWEEP", None)
    if isinstance(sweep, ResourceInfo):
        found.append(sweep)
    return found


def _exclusive_bounds(out: dict[str, Any]) -> None:
    """JSON Schema's numeric ``exclusiveMinimum: 0`` (pydantic's ``gt=0``) as OpenAPI v3.0, which
    a CRD speaks: ``minimum: 0`` with ``exclusiveMinimum: true`` (the API server refuses a number
    there, and with it the whole CRD)."""
    for exclusive, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        value = out.get(exclusive)
        if isinstance(value, bool) or value is None:
            continue
        out[bound], out[exclusive] = value, True


class _Converter:
    def __init__(self, defs: dict[str, Any]) -> None:
        self.defs = defs

    def convert(self, node: dict[str, Any], stack: tuple[str, ...] = ()) -> dict[str, Any]:
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[-1]
            if name in stack:  # recursion cannot be structural: the operator validates it
                return {"x-kubernetes-preserve-unknown-fields": True}
            target = dict(self.defs[name])
            target.update({k: v for k, v in node.items() if k != "$ref"})
            return self.convert(target, (*stack, name))
        for key in ("anyOf", "oneOf"):
            if key in node:
                return self._union(node, node[key], stack)
        if "allOf" in node and len(node["allOf"]) == 1:
            merged = {k: v for k, v in node.items() if k != "allOf"}
            return self.convert({**node["allOf"][0], **merged}, stack)
        out: dict[str, Any] = {k: copy.deepcopy(v) for k, v in node.items() if k in _KEPT}
        _exclusive_bounds(out)
        if "const" in node:
            out["enum"] = [node["const"]]
        if "description" in out:
            out["description"] = _short(out["description"])
        for key, value in node.items():
            if key.startswith("x-kubernetes-"):
                out[key] = copy.deepcopy(value)
        kind = node.get("type")
        if kind is None and "enum" in node:
            kind = _json_type(node["enum"][0])
        if kind is None:
            out["x-kubernetes-preserve-unknown-fields"] = True
            return out
        out["type"] = kind
        if kind == "object":
            self._object(node, out, stack)
        elif kind == "array":
            items = node.get("items", {})
            out["items"] = self.convert(items, stack) if items else _free()
        return out

    def _object(self, node: dict[str, Any], out: dict[str, Any], stack: tuple[str, ...]) -> None:
        props = node.get("properties")
        if props:
            out["properties"] = {}
            required = set(node.get("required", []))
            for name, sub in props.items():
                converted = self.convert(sub, stack)
                if (
                    name not in required
                    and "default" not in converted
                    and converted.get("type") == "object"
                    and "properties" in converted
                    and not converted.get("nullable")
                ):
                    converted["default"] = {}  # so that the object's own defaults apply
                out["properties"][name] = converted
            if node.get("required"):
                out["required"] = list(node["required"])
            return
        extra = node.get("additionalProperties")
        if isinstance(extra, dict) and extra:
            value = self.convert(extra, stack)
            if value.get("x-kubernetes-preserve-unknown-fields") and "type" not in value:
                out["x-kubernetes-preserve-unknown-fields"] = True
            else:
                out["additionalProperties"] = value
        else:
            out["x-kubernetes-preserve-unknown-fields"] = True

    def _union(
        self, node: dict[str, Any], options: list[dict[str, Any]], stack: tuple[str, ...]
    ) -> dict[str, Any]:
        rest = {k: v for k, v in node.items() if k not in ("anyOf", "oneOf")}
        non_null = [o for o in options if o.get("type") != "null"]
        if len(non_null) == 1:
            out = self.convert({**non_null[0], **rest}, stack)
            if len(non_null) < len(options):
                out["nullable"] = True
                if out.get("default") is None:
                    out.pop("default", None)
            return out
        out = {k: v for k, v in rest.items() if k in ("description",)}
        if "description" in out:
            out["description"] = _short(out["description"])
        out["x-kubernetes-preserve-unknown-fields"] = True
        return out


def _free() -> dict[str, Any]:
    return {"x-kubernetes-preserve-unknown-fields": True}


def _short(text: str) -> str:
    first = text.strip().split("\n\n", 1)[0].replace("\n", " ")
    return first[:_MAX_DESCRIPTION]


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "string"


def openapi_schema(model: type[Any]) -> dict[str, Any]:
    """A structural OpenAPI v3 schema for a pydantic model (aliases as field names)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return _Converter(raw.get("$defs", {})).convert(raw)


def crd(info: ResourceInfo) -> dict[str, Any]:
    """The CustomResourceDefinition manifest of one resource.

    One manifest as one literal (longer than ~60 lines on purpose: the CRD reads as the YAML
    it becomes).
    """
    spec_schema = openapi_schema(info.spec_model)
    if info.cel_rules:
        spec_schema.setdefault("x-kubernetes-validations", []).extend(
            {"rule": rule, "message": message} for rule, message in info.cel_rules
        )
    status_schema = openapi_schema(info.status_model)
    subresources: dict[str, Any] = {"status": {}}
    if info.scale_spec_path and info.scale_status_path:
        scale = {
            "specReplicasPath": info.scale_spec_path,
            "statusReplicasPath": info.scale_status_path,
        }
        if info.scale_selector_path:
            scale["labelSelectorPath"] = info.scale_selector_path
        subresources["scale"] = scale
    columns = []
    for column in info.printer_columns:
        entry: dict[str, Any] = {
            "name": column.name,
            "type": column.type,
            "jsonPath": column.json_path,
        }
        if column.description:
            entry["description"] = column.description
        if column.priority:
            entry["priority"] = column.priority
        columns.append(entry)
    schema: dict[str, Any] = {
        "type": "object",
        "description": f"{info.kind} ({info.api_version}): "
        + _short(info.spec_model.__doc__ or ""),
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec_schema if "required" in spec_schema else {**spec_schema, "default": {}},
            "status": status_schema,
        },
    }
    if "required" in spec_schema:
        schema["required"] = ["spec"]
    if info.kind in _ROOT_RULES:
        schema["x-kubernetes-validations"] = _ROOT_RULES[info.kind]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": info.crd_name,
            "labels": {"app.kubernetes.io/part-of": "streamml"},
        },
        "spec": {
            "group": info.group,
            "scope": "Namespaced",
            "names": {
                "kind": info.kind,
                "listKind": f"{info.kind}List",
                "plural": info.plural,
                "singular": info.singular,
                "shortNames": list(info.short_names),
                "categories": list(info.categories),
            },
            "versions": [
                {
                    "name": info.version,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                    "subresources": subresources,
                    "additionalPrinterColumns": columns,
                }
            ],
        },
    }


#: Plain scalars that YAML 1.1 readers (kubectl's Go YAML) take for booleans or null.
_AMBIGUOUS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"}


def render(info: ResourceInfo) -> str:
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        style = "'" if value.lower() in _AMBIGUOUS else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    header = "# Generated by `streamml crds` from the pydantic models. Do not edit.\n"
    return header + yaml.dump(crd(info), Dumper=Dumper, sort_keys=False, width=100)


def file_name(info: ResourceInfo) -> str:
    return f"{info.group}_{info.plural}.yaml"


def write_all(out: Path) -> list[Path]:
    """Write one YAML file per resource into ``out``; returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for info in resources():
        path = out / file_name(info)
        path.write_text(render(info), encoding="utf-8")
        written.append(path)
    return written


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        type=Path,
        action="append",
        help="directory to write CRD YAML into (repeatable; default: crds and config/crd)",
    )


def run(args: argparse.Namespace) -> int:
    outs: list[Path] = args.out or [Path("crds"), Path("config/crd")]
    for out in outs:
        for path in write_all(out):
            print(path)
    return 0
