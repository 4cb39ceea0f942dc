"""The command line of a Python child process, safe from the repository's own folder names.

The repository's top-level ``operator/`` folder is a package, and so shadows the standard
library's ``operator`` for any Python that puts the repository root first on ``sys.path``: that
is what ``python -m ...`` and ``python -c ...`` do with their working directory. Such a child dies
at start-up (``cannot import name 'eq' from 'operator'``) whenever it runs from the root, unless
something imported the real ``operator`` first (the editable install's path hook does, in our own
virtualenv, which is why it passes there and fails in a bare one). ``-P`` (Python >= 3.11) keeps
the working directory off ``sys.path``; every Python child the project starts is built here.
"""

from __future__ import annotations

import sys

#: flags every Python child gets: never put the working directory first on ``sys.path``
SAFE_FLAGS: tuple[str, ...] = ("-P",)


def python_module(module: str, *args: str, python: str | None = None) -> list[str]:
    """``python -P -m module args...`` with this interpreter unless ``python`` names another."""
    return [python or sys.executable, *SAFE_FLAGS, "-m", module, *args]


def python_code(code: str, *args: str, python: str | None = None) -> list[str]:
    """``python -P -c code args...``."""
    return [python or sys.executable, *SAFE_FLAGS, "-c", code, *args]


def streamml_command(*args: str) -> list[str]:
    """This interpreter running the ``streamml`` command line: ``python -P -m streamml.cli ...``."""
    return python_module("streamml.cli", *args)
