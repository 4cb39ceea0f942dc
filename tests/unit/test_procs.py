"""One process helper (``streamml.procs``): no library is loaded between fork and exec anywhere,
and children get an explicit environment."""

from __future__ import annotations

import ast
import functools
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from streamml import procs
from streamml.procs import child_environment, die_with_parent
from streamml.pycommand import python_code

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("operator", "clients", "modelserver", "streamml")
HELPER = ROOT / "streamml" / "procs.py"
#: the standard library's ways to start a child; only the helper calls them
SPAWNS = {
    "subprocess.run",
    "subprocess.Popen",
    "subprocess.call",
    "subprocess.check_call",
    "subprocess.check_output",
    "asyncio.create_subprocess_exec",
    "asyncio.create_subprocess_shell",
    "os.system",
    "os.fork",
    "os.posix_spawn",
}


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


def _spawns_outside_the_helper(path: Path) -> list[str]:
    where = path.relative_to(ROOT)
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            name = f"{getattr(owner, 'id', getattr(owner, 'attr', '?'))}.{node.func.attr}"
            if name in SPAWNS:
                found.append(f"{where}:{node.lineno} {name}")
    return found


def test_every_child_is_started_through_the_helper() -> None:
    """The project (and its benchmarks) start children only through ``streamml.procs``, so
    every one follows its rules (dies with its parent unless detached)."""
    paths = _project_modules() + sorted((ROOT / "benchmarks").rglob("*.py"))
    offenders = [hit for p in paths if p != HELPER for hit in _spawns_outside_the_helper(p)]
    assert not offenders, offenders


def _probe(*, poison_cdll: bool) -> subprocess.CompletedProcess[str]:
    """A parent that starts, through the helper, a child reporting its parent-death signal.
    With ``poison_cdll`` every library load after the helper's import fails, as it may hang
    between fork and exec: the helper must not need one there."""
    code = (
        "import ctypes, sys\n"
        "from streamml import procs\n"
        "if sys.argv[1] == 'poison':\n"
        "    def refuse(*a, **k): raise OSError('a library was loaded after fork')\n"
        "    ctypes.CDLL = refuse\n"
        f"child = procs.run({python_code(REPORT)!r}, capture_output=True, text=True)\n"
        "print(child.stdout.strip() or child.stderr.strip())\n"
    )
    argv = python_code(code, "poison" if poison_cdll else "plain")
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


REPORT = (
    "import ctypes; v = ctypes.c_int(); ctypes.CDLL(None).prctl(2, ctypes.byref(v)); print(v.value)"
)


def test_die_with_parent_loads_no_library_in_the_child() -> None:
    """Tells the two former ``_die_with_parent`` copies apart: the one that loaded libc in the
    child (``ctypes.CDLL`` after fork, its failure swallowed) left the child without a
    parent-death signal when the load failed (and may hang when the loader's lock was held at
    fork); the kept one resolves ``prctl`` in the parent, so the child gets SIGTERM (15)."""
    for poison in (False, True):
        done = _probe(poison_cdll=poison)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == str(int(signal.SIGTERM)), (poison, done.stdout)


def test_detached_children_do_not_die_with_the_parent() -> None:
    done = procs.run(python_code(REPORT), detached=True, capture_output=True, text=True)
    assert done.stdout.strip() == "0"
    assert procs.parent_death_signal() == 0  # the test runner itself has none


def test_a_child_whose_parent_died_before_prctl_ends_itself() -> None:
    """The window between fork and ``prctl``: a parent gone by then is not the child's parent
    any more (``getppid`` differs) and the kernel will never signal; the hook ends the child."""
    hook = functools.partial(procs._die_with_parent, 1)  # "our parent" was PID 1: not so
    child = subprocess.Popen(["sleep", "30"], preexec_fn=hook)
    assert child.wait(timeout=30) == -signal.SIGTERM


def test_lifetime_is_chosen_by_detached_only() -> None:
    with pytest.raises(TypeError, match="detached"):
        procs.run(["true"], start_new_session=True)
    with pytest.raises(TypeError, match="detached"):
        procs.popen(["true"], preexec_fn=None)


def test_free_port_prefers_a_remembered_port_and_falls_back() -> None:
    port = procs.free_port()
    assert procs.free_port(port) == port
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = int(taken.getsockname()[1])
        assert procs.free_port(busy) != busy
