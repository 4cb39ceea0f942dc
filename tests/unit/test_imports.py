"""The import rules of docs/architecture.md, checked over the source tree (AST, nothing imported).

Every arrow points down: the core (``streamml/`` outside its sub-packages: errors, files, procs,
docgen, the testbed) imports none of the rooms above it (``streamml.cli`` dispatches to them by
name); the vocabulary imports nothing of the project's other packages; the
operator and the model server never import each other; the sweep engine (``streamml.sweep``)
imports neither the operator nor ``clients/``; the operator imports nothing from ``clients/``.

The model server's HTTP client and its delivery (retry, spool, re-delivery) are in their own
room below everyone who talks to a server (``streamml.client``): it imports only the core and
the vocabulary, and the operator, the engine and ``clients/`` import it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: folder -> the package it is mapped to (pyproject.toml's package-dir)
FOLDERS = {
    "streamml": "streamml",
    "operator": "streamml.operator",
    "modelserver": "streamml.modelserver",
    "clients": "streamml.clients",
}


@dataclass(frozen=True)
class Rule:
    """Modules under ``source`` may not import modules under any of ``forbidden`` (or must
    import only ``allowed`` project modules when ``allowed`` is given)."""

    source: str
    forbidden: tuple[str, ...] = ()
    allowed: tuple[str, ...] | None = None
    exceptions: tuple[str, ...] = ()
    #: sub-packages of ``source`` the rule does not cover (they have rules of their own)
    excluded: tuple[str, ...] = ()


UPPER = (
    "streamml.operator",
    "streamml.modelserver",
    "streamml.clients",
    "streamml.sweep",
    "streamml.client",
)

RULES = {
    "core-no-upper-rooms": Rule(
        "streamml", forbidden=UPPER, excluded=(*UPPER, "streamml.cli", "streamml.vocabulary")
    ),
    "operator-no-clients": Rule("streamml.operator", forbidden=("streamml.clients",)),
    "operator-no-modelserver": Rule("streamml.operator", forbidden=("streamml.modelserver",)),
    "modelserver-no-operator": Rule("streamml.modelserver", forbidden=("streamml.operator",)),
    "vocabulary-only-itself": Rule(
        "streamml.vocabulary", allowed=("streamml.vocabulary", "streamml.errors")
    ),
    "sweep-no-clients-no-operator": Rule(
        "streamml.sweep",
        forbidden=("streamml.clients", "streamml.operator", "streamml.modelserver"),
    ),
    "client-only-core-and-vocabulary": Rule(
        "streamml.client",
        forbidden=(
            "streamml.clients",
            "streamml.operator",
            "streamml.modelserver",
            "streamml.sweep",
        ),
    ),
}


def module_name(path: Path, root: Path) -> str | None:
    rel = path.relative_to(root)
    package = FOLDERS.get(rel.parts[0])
    if package is None:
        return None
    parts = [package, *rel.parts[1:-1]]
    if rel.stem != "__init__":
        parts.append(rel.stem)
    return ".".join(parts)


def modules(root: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder in FOLDERS:
        for path in sorted((root / folder).rglob("*.py")):
            name = module_name(path, root)
            if name is not None:
                found[name] = path
    return found


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def imports(path: Path, name: str, known: set[str]) -> Iterator[tuple[int, str]]:
    """(line, imported project module) for every import in the file, lazy ones included."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                yield node.lineno, full if full in known else base


def violations(root: Path, rule: Rule) -> list[str]:
    found = modules(root)
    known = set(found)
    bad = []
    for name, path in found.items():
        if not _within(name, rule.source) or any(_within(name, e) for e in rule.excluded):
            continue
        for line, target in imports(path, name, known):
            if not _within(target, "streamml") or any(_within(target, e) for e in rule.exceptions):
                continue
            if rule.allowed is not None:
                wrong = not any(_within(target, a) for a in rule.allowed)
            else:
                wrong = any(_within(target, f) for f in rule.forbidden)
            if wrong:
                bad.append(f"{path.relative_to(root)}:{line} imports {target}")
    return bad


@pytest.mark.parametrize("rule", sorted(RULES))
def test_import_rule(rule: str) -> None:
    assert violations(ROOT, RULES[rule]) == []


def test_the_rules_cover_every_room() -> None:
    """A rule about a package that does not exist would pass vacuously."""
    names = set(modules(ROOT))
    for rule in RULES.values():
        assert any(_within(n, rule.source) for n in names), rule.source


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_the_checker_sees_every_kind_of_import(tmp_path: Path) -> None:
    """Absolute, from-package, relative and lazy (in a function) imports are all caught."""
    root = _tree(
        tmp_path,
        {
            "operator/__init__.py": "",
            "operator/a.py": "from streamml.clients import sweep as engine\n",
            "operator/b.py": "def f():\n    import streamml.clients.watch\n",
            "operator/c.py": "from streamml.client.api import ModelServerClient\n",
            "clients/__init__.py": "",
            "clients/sweep.py": "",
            "clients/watch.py": "",
            "streamml/client/api.py": "",
            "streamml/vocabulary/__init__.py": "",
            "streamml/vocabulary/x.py": "from ..errors import E\nfrom . import y\n",
            "streamml/vocabulary/y.py": "from streamml.operator import crdgen\n",
            "streamml/errors.py": "",
        },
    )
    assert violations(root, RULES["operator-no-clients"]) == [
        "operator/a.py:1 imports streamml.clients.sweep",
        "operator/b.py:2 imports streamml.clients.watch",
    ]
    assert violations(root, RULES["vocabulary-only-itself"]) == [
        "streamml/vocabulary/y.py:1 imports streamml.operator",
    ]
