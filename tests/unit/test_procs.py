"""One process helper (``streamml.procs``): no library is loaded between fork and exec anywhere,
and children get an explicit environment."""

from __future__ import annotations

import ast
from pathlib import Path

from streamml.procs import child_environment, die_with_parent

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("operator", "clients", "modelserver", "streamml")
HELPER = ROOT / "streamml" / "procs.py"


def _project_modules() -> list[Path]:
    return [p for folder in SCANNED for p in sorted((ROOT / folder).rglob("*.py"))]


def _is_helper_hook(node: ast.expr) -> bool:
    """``die_with_parent()`` (however imported) or ``None``; for ``a if c else b``, both arms."""
    if isinstance(node, ast.IfExp):  # "None if detached else die_with_parent()"
        return _is_helper_hook(node.body) and _is_helper_hook(node.orelse)
    if isinstance(node, ast.Constant):
        return node.value is None
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
    return name == "die_with_parent"


def test_only_the_helper_touches_ctypes_or_builds_a_preexec_hook() -> None:
    """A ``preexec_fn`` runs between fork and exec, where loading a library (``ctypes.CDLL``)
    may hang the child; the one helper resolves ``prctl`` in the parent. Every spawn passes
    ``preexec_fn=die_with_parent()`` (or None), never a hook of its own."""
    offenders: list[str] = []
    for path in _project_modules():
        if path == HELPER:
            continue
        where = path.relative_to(ROOT)
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                if any(n == "ctypes" or n.startswith("ctypes.") for n in names):
                    offenders.append(f"{where}:{node.lineno} imports ctypes")
            hook = (
                node.value if isinstance(node, ast.keyword) and node.arg == "preexec_fn" else None
            )
            if hook is not None and not _is_helper_hook(hook):
                offenders.append(f"{where}: preexec_fn={ast.unparse(hook)}")
    assert not offenders, offenders


def test_child_environment_is_explicit() -> None:
    parent = {
        "PATH": "/usr/bin",
        "HOME": "/root",
        "LC_ALL": "C.UTF-8",
        "STREAMML_NO_AUTH": "true",
        "STREAMML_AUTH_TOKEN": "secret",
        "AWS_SECRET_ACCESS_KEY": "x",
        "KUBECONFIG": "/admin.conf",
    }
    env = child_environment({"EXTRA": "1"}, parent=parent)
    assert env == {"PATH": "/usr/bin", "HOME": "/root", "LC_ALL": "C.UTF-8", "EXTRA": "1"}


def test_the_hook_is_ready_made() -> None:
    hook = die_with_parent()
    assert hook is not None and callable(hook)
