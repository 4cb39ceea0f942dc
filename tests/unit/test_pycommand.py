"""Every Python child the project starts is safe from the repository's ``operator/`` folder.

A Python started with ``-m``/``-c`` from the repository root puts the root first on ``sys.path``,
where ``operator/`` shadows the standard library's ``operator``: a bare interpreter (no editable
install importing the real one first) then dies at start-up. This failed ``make test`` on a fresh
machine (the old server's cold virtualenv ran ``python -m pip`` from the root).
"""

from __future__ import annotations

import ast
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from streamml.pycommand import python_code, python_module, streamml_command

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("operator", "clients", "modelserver", "streamml", "benchmarks", "tests")


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A fresh virtualenv with nothing installed: what a cold cache gives the benchmark."""
    home = tmp_path_factory.mktemp("bare-venv")
    venv.EnvBuilder(with_pip=False).create(home)
    return str(home / "bin" / "python")


def test_the_hazard_is_real_from_the_root(bare_python: str) -> None:
    """Without the safe flags, a bare Python started from the root cannot even start."""
    done = subprocess.run(
        [bare_python, "-c", "import collections"],  # unsafe on purpose
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0
    assert "operator" in done.stderr


def test_built_commands_start_from_the_root(bare_python: str) -> None:
    for argv in (
        python_code("import collections, operator; assert operator.eq(1, 1)", python=bare_python),
        python_module("json.tool", "--help", python=bare_python),
    ):
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, (argv, done.stderr)


def test_streamml_command_starts_from_the_root() -> None:
    done = subprocess.run(streamml_command("--help"), cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "run-lammps" in done.stdout


def test_old_server_pip_runs_from_the_root_with_a_cold_venv(tmp_path: Path) -> None:
    """The exact path that failed: the benchmark's pip, in a new venv, cwd the repository root."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import _oldserver
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    venv.EnvBuilder(with_pip=True).create(tmp_path / "v")
    argv = [*_oldserver.pip_install_command(tmp_path / "v" / "bin" / "python"), "--help"]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "pip install [options]" in done.stdout


def _unsafe_python_lists(path: Path) -> list[str]:
    """List/tuple literals ``[<interpreter>, "-m"|"-c", ...]``: a Python child without -P/-I."""
    found = []
    text = path.read_text()
    lines = text.splitlines()
    for node in ast.walk(ast.parse(text, str(path))):
        if isinstance(node, ast.List | ast.Tuple) and len(node.elts) >= 2:
            first, second = node.elts[0], node.elts[1]
            if (
                not isinstance(first, ast.Constant)
                and isinstance(second, ast.Constant)
                and second.value in ("-m", "-c")
                and "# unsafe on purpose" not in lines[node.lineno - 1]
            ):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_no_python_child_is_started_without_the_safe_flags() -> None:
    unsafe = [
        hit
        for folder in SCANNED
        for path in sorted((ROOT / folder).rglob("*.py"))
        for hit in _unsafe_python_lists(path)
    ]
    assert unsafe == [], "start Python children with streamml.pycommand (or -P): " + ", ".join(
        unsafe
    )


def test_the_scan_finds_an_unsafe_command(tmp_path: Path) -> None:
    sample = ROOT / "tests" / "unit" / "_scan_sample.py"
    sample.write_text('import sys\nARGV = [sys.executable, "-m", "pip"]\n')
    try:
        assert _unsafe_python_lists(sample) == ["tests/unit/_scan_sample.py:2"]
    finally:
        sample.unlink()
    assert sys.executable  # the scanned idiom is this interpreter
