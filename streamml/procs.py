"""How the project starts, supervises and stops a child process: the one place for it.

Every child the project starts goes through :func:`run` (a command that finishes),
:func:`popen` / :func:`start_async` (a process we talk to or wait for) or :func:`spawn` (a
daemon with a log file, recorded as a :class:`Daemon`); a test (``tests/unit/test_procs.py``)
finds any other ``subprocess``/``asyncio`` spawn. The rules they follow:

1. **A child dies with its parent** unless it is started ``detached``. It asks the kernel for
   ``SIGTERM`` when its parent dies (``PR_SET_PDEATHSIG``) in a ``preexec_fn``. That hook runs in
   the child between fork and exec, where another thread of the parent may have held the dynamic
   loader's lock at fork time: loading a library there (``ctypes.CDLL(...)``) can hang the child
   for ever, and a copy that swallowed the failure left the child without the setting. So
   ``prctl`` is resolved once, here, in the parent, at import; the hook only calls it and then
   checks that the parent has not died already (the race between fork and ``prctl``). The signal
   follows the death of the parent *thread* that spawned the child: spawn from a thread that
   lives as long as the child should (the main thread, the event loop's).
2. **A detached child** gets a session of its own (``start_new_session``): it outlives the caller
   and the shell's ^C (``streamml cluster up``, the local scheduler's LAMMPS jobs).
3. **It gets an explicit environment** where it runs project code with settings:
   :func:`child_environment` passes what a process needs to run (``PATH``, locale, home,
   temporary directory, the virtualenv) and nothing else: a stray ``STREAMML_NO_AUTH`` in the
   parent's environment must not reach a server it starts.
4. **It is stopped by PID and start time** (field 22 of ``/proc/PID/stat``), never by name, so a
   later ``stop`` (possibly from another process, e.g. ``streamml cluster down``) never signals
   a recycled PID that now belongs to someone else. A zombie (state ``Z``) counts as stopped.
   :class:`ProcessTracker` remembers a whole tree of descendants so the demo can stop what its
   children started in sessions of their own.

Python children's argv is built with :mod:`streamml.pycommand`; this module only starts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

_PR_SET_PDEATHSIG = 1
_PR_GET_PDEATHSIG = 2

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


def parent_death_signal() -> int:
    """The signal this process gets when its parent dies (0: none)."""
    if _prctl is None:
        return 0
    value = ctypes.c_int(0)
    _prctl(_PR_GET_PDEATHSIG, ctypes.byref(value))
    return value.value


parent_death_signal()  # one call in the parent binds the foreign-call path before any fork


def _die_with_parent(parent: int) -> None:  # pragma: no cover - runs between fork and exec
    assert _prctl is not None
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before prctl: the kernel will not tell us
        os.kill(os.getpid(), signal.SIGTERM)


def die_with_parent() -> Callable[[], None] | None:
    """The ``preexec_fn`` that makes a child die with the caller (None where unsupported)."""
    return functools.partial(_die_with_parent, os.getpid()) if _prctl is not None else None


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


def free_port(preferred: int | None = None) -> int:
    """``preferred`` when it can be bound on 127.0.0.1 now, else any free port there.

    The port is free *now*: the caller binds it a moment later and retries if another process
    took it meanwhile. It is probed as aiohttp binds (``SO_REUSEADDR``), so a dead server's
    ``TIME_WAIT`` does not move a remembered port.
    """
    for port in (preferred, 0) if preferred else (0,):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise OSError("no free port on 127.0.0.1")


# -- starting ---------------------------------------------------------------------------------


def _lifetime(detached: bool, options: dict[str, Any]) -> dict[str, Any]:
    if "preexec_fn" in options or "start_new_session" in options:
        raise TypeError("the lifetime of a child is chosen with detached=, not preexec_fn")
    if detached:
        return {**options, "start_new_session": True}
    return {**options, "preexec_fn": die_with_parent()}


def run(
    argv: Sequence[str], *, detached: bool = False, **options: Any
) -> subprocess.CompletedProcess[Any]:
    """:func:`subprocess.run` of a command that finishes; it dies with us unless ``detached``."""
    return subprocess.run(list(argv), **_lifetime(detached, options))


def popen(argv: Sequence[str], *, detached: bool = False, **options: Any) -> subprocess.Popen[Any]:
    """:class:`subprocess.Popen`; the child dies with us unless ``detached``."""
    return subprocess.Popen(list(argv), **_lifetime(detached, options))


async def start_async(
    argv: Sequence[str], *, detached: bool = False, **options: Any
) -> asyncio.subprocess.Process:
    """:func:`asyncio.create_subprocess_exec`; the child dies with the event loop's thread
    unless ``detached``."""
    return await asyncio.create_subprocess_exec(*argv, **_lifetime(detached, options))


# -- recognising and stopping -----------------------------------------------------------------


@dataclass(frozen=True)
class ProcInfo:
    """One process' identity from ``/proc/PID/stat``."""

    pid: int
    ppid: int
    session: int
    start_ticks: int
    state: str


def read_proc(pid: int) -> ProcInfo | None:
    """One process' identity, or None when there is no such process (or it is not ours to see)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    return ProcInfo(pid, int(fields[1]), int(fields[3]), int(fields[19]), fields[0])


def running(pid: int, start_ticks: int | None = None) -> bool:
    """``pid`` runs (not a zombie) and, given ``start_ticks``, is still the process started then."""
    info = read_proc(pid)
    if info is None or info.state in ("Z", "X"):
        return False
    return start_ticks is None or info.start_ticks == start_ticks


@dataclass(frozen=True)
class Daemon:
    """A started process: enough to find it again and to stop only it."""

    name: str
    pid: int
    start_ticks: int
    argv: tuple[str, ...]
    log: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Daemon:
        return cls(
            name=str(data["name"]),
            pid=int(data["pid"]),
            start_ticks=int(data["start_ticks"]),
            argv=tuple(str(a) for a in data["argv"]),
            log=str(data["log"]),
        )

    def alive(self) -> bool:
        """Still running (not a zombie) and still the process we started."""
        return running(self.pid, self.start_ticks)

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = Path(self.log).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def spawn(
    name: str,
    argv: list[str],
    log: Path,
    *,
    detached: bool,
    env: dict[str, str] | None = None,
    **options: Any,
) -> tuple[Daemon, subprocess.Popen[bytes]]:
    """Start the daemon ``argv`` with its output appended to ``log``.

    ``detached`` daemons get their own session and outlive the caller (``cluster up``); the
    others die with the caller (if the test process is killed outright, none outlives the run
    that started it). ``options`` pass on to :class:`subprocess.Popen` (``cwd``, ``user``...).
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = popen(
            argv,
            detached=detached,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            **options,
        )
    info = read_proc(proc.pid)
    ticks = info.start_ticks if info else 0
    return Daemon(name, proc.pid, ticks, tuple(argv), str(log)), proc


def stop(daemon: Daemon, popen: subprocess.Popen[bytes] | None = None, grace: float = 10.0) -> None:
    """SIGTERM, wait up to ``grace`` seconds, then SIGKILL; returns when the process is gone."""
    for sig, wait_s in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        if not daemon.alive():
            break
        try:
            os.kill(daemon.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if popen is not None:
                popen.poll()  # reap our own child so it does not linger as a zombie
            if not daemon.alive():
                break
            time.sleep(0.05)
    if popen is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout=5)


def stop_process(process: subprocess.Popen[Any] | None, grace: float = 15.0) -> None:
    """SIGTERM our own child, SIGKILL after ``grace`` seconds; one already gone is fine."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


# -- a whole tree -----------------------------------------------------------------------------


def all_processes() -> dict[int, ProcInfo]:
    found: dict[int, ProcInfo] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = read_proc(int(entry))
            if info is not None:
                found[info.pid] = info
    return found


class ProcessTracker:
    """Every descendant of ``root`` seen by :meth:`sample`, stopped on demand.

    A parent that dies is no longer the parent of anything (its orphans are re-parented to
    PID 1), so the tree is sampled *while it is alive* and every process ever seen is remembered
    by PID and start time; :meth:`stop_all` then stops exactly those that still run, together
    with members of the sessions they lead (the local scheduler's LAMMPS jobs).
    """

    def __init__(self, root: int | None = None) -> None:
        self.root = os.getpid() if root is None else root
        me = read_proc(self.root)
        self._since = me.start_ticks if me else 0
        self.seen: dict[int, int] = {}  # pid -> start ticks
        self.sessions: set[int] = set()

    def sample(self) -> int:
        """Record the current descendants (and sessions they lead); returns how many live now."""
        table = all_processes()
        children: dict[int, list[int]] = {}
        for info in table.values():
            children.setdefault(info.ppid, []).append(info.pid)
        stack, count = list(children.get(self.root, [])), 0
        while stack:
            pid = stack.pop()
            info = table[pid]
            self.seen.setdefault(pid, info.start_ticks)
            if info.session == pid:
                self.sessions.add(pid)
            count += 1
            stack.extend(children.get(pid, []))
        # members of a session one of ours leads, even after their leader's parent died
        for info in table.values():
            if info.session in self.sessions and info.start_ticks >= self._since:
                self.seen.setdefault(info.pid, info.start_ticks)
        return count

    def alive(self) -> list[int]:
        """Remembered processes that still run (same PID *and* start time, not zombies)."""
        return sorted(pid for pid, ticks in self.seen.items() if running(pid, ticks))

    def stop_all(self, grace: float = 5.0, exclude: frozenset[int] = frozenset()) -> list[int]:
        """SIGTERM the rest (not ``exclude``), SIGKILL after ``grace``; returns the PIDs hit."""
        self.sample()

        def targets() -> list[int]:
            return [pid for pid in self.alive() if pid not in exclude]

        signalled = targets()
        for sig, wait_s in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            for pid in targets():
                _signal(pid, self.seen[pid], sig)
            deadline = time.monotonic() + wait_s
            while targets() and time.monotonic() < deadline:
                _reap()
                time.sleep(0.05)
            if not targets():
                break
        return signalled


def _signal(pid: int, ticks: int, sig: signal.Signals) -> None:
    if not running(pid, ticks):
        return  # gone, or the PID now belongs to someone else
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _reap() -> None:
    """Collect our own exited children so they do not linger as zombies."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
