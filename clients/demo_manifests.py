"""The sample manifests (``config/samples/``) as data: load, resize the sweep, dump.

The demo applies the very files a user would ``kubectl apply``; only the sweep's size may be
changed from the command line (``--trials``, ``--test-trials``, ``--parallelism``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from streamml.errors import SpecError

MAX_SAMPLE_BYTES = 1_000_000


def load(directory: Path) -> list[dict[str, Any]]:
    """Every YAML document of ``directory/*.yaml`` (sorted by file name), kustomization aside."""
    docs: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        if path.stat().st_size > MAX_SAMPLE_BYTES:
            raise SpecError(f"{path}: larger than {MAX_SAMPLE_BYTES} bytes")
        try:
            loaded = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        except yaml.YAMLError as exc:
            raise SpecError(f"{path}: not valid YAML: {exc}") from exc
        for doc in loaded:
            if doc is None:
                continue
            if not isinstance(doc, dict) or not doc.get("kind") or not doc.get("metadata"):
                raise SpecError(f"{path}: every document needs kind and metadata")
            docs.append(doc)
    if not docs:
        raise SpecError(f"{directory}: no manifests found")
    return docs


def names(docs: list[dict[str, Any]], kind: str) -> list[str]:
    return [str(d["metadata"].get("name")) for d in docs if d.get("kind") == kind]


def resize(
    docs: list[dict[str, Any]],
    *,
    trials: int | None = None,
    test_trials: int | None = None,
    parallelism: int | None = None,
) -> list[dict[str, Any]]:
    """A copy with every LammpsSweep's counts replaced where a value is given."""
    changes = {"trials": trials, "testTrials": test_trials, "parallelism": parallelism}
    result = copy.deepcopy(docs)
    for doc in result:
        if doc.get("kind") != "LammpsSweep":
            continue
        spec = doc.setdefault("spec", {})
        for key, value in changes.items():
            if value is not None:
                spec[key] = value
    return result


def dump(docs: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False)


def link(docs: list[dict[str, Any]]) -> list[str]:
    """Point every LammpsSweep at the one StreamModel when its reference names another.

    Returns a warning per change; with zero or several StreamModels nothing is changed.
    """
    models = names(docs, "StreamModel")
    warnings: list[str] = []
    if len(models) != 1:
        return warnings
    for doc in docs:
        if doc.get("kind") != "LammpsSweep":
            continue
        ref = doc.setdefault("spec", {}).setdefault("streamModelRef", {})
        if ref.get("name") != models[0]:
            warnings.append(
                f"LammpsSweep {doc['metadata'].get('name')} refers to StreamModel "
                f"{ref.get('name')!r}; the samples define {models[0]!r}: using that"
            )
            ref["name"] = models[0]
    return warnings


def without_ingress(docs: list[dict[str, Any]]) -> list[str]:
    """Turn off every StreamModel's Ingress (no ingress controller runs on one machine).

    Without this, Ready would wait forever for an address. Returns a note per change.
    """
    notes = []
    for doc in docs:
        if doc.get("kind") != "StreamModel":
            continue
        ingress = doc.setdefault("spec", {}).setdefault("ingress", {})
        if ingress.get("enabled"):
            ingress["enabled"] = False
            notes.append(
                f"StreamModel {doc['metadata'].get('name')}: Ingress disabled "
                "(no ingress controller on this machine; jobs use status.address)"
            )
    return notes
