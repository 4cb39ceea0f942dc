"""How the project starts a child process: one place for the two rules every spawn follows.

1. **It dies with its parent.** A child that must not outlive the process that started it (the
   operator's model servers, the test control plane) asks the kernel for ``SIGTERM`` when its
   parent dies (``PR_SET_PDEATHSIG``), in a ``preexec_fn``. That hook runs in the child between
   fork and exec, where another thread of the parent may have held the dynamic loader's lock at
   fork time: loading a library there (``ctypes.CDLL(...)``) can hang the child for ever. So
   ``prctl`` is resolved once, here, in the parent, at import; the hook only calls it.
   (The signal follows the death of the parent *thread* that spawned the child: spawn from a
   thread that lives as long as the child should, e.g. the event loop's.)
2. **It gets an explicit environment.** :func:`child_environment` passes what a process needs
   to run (``PATH``, locale, home, temporary directory, the virtualenv) and nothing else: a
   stray ``STREAMML_NO_AUTH`` in the parent's environment must not reach a server it starts.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable, Mapping

_PR_SET_PDEATHSIG = 1

#: what a child needs from the parent's environment to run at all (never settings or secrets)
INHERITED_VARIABLES = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TMPDIR",
    "VIRTUAL_ENV",
    "PYTHONPATH",
)
INHERITED_PREFIXES = ("LC_",)

_prctl: Callable[..., int] | None = (
    ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None
)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    assert _prctl is not None
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def die_with_parent() -> Callable[[], None] | None:
    """The ``preexec_fn`` that makes a child die with its parent (None where unsupported)."""
    return _die_with_parent if _prctl is not None else None


def child_environment(
    extra: Mapping[str, str] | None = None, *, parent: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of a child: the runtime basics of ``parent`` (default: ours) + ``extra``."""
    source = os.environ if parent is None else parent
    env = {
        key: value
        for key, value in source.items()
        if key in INHERITED_VARIABLES or key.startswith(INHERITED_PREFIXES)
    }
    env.update(extra or {})
    return env
