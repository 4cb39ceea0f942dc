"""Every process a command started, found again and stopped: nothing outlives the demo.

The demo's children start grandchildren that deliberately escape ordinary cleanup: the local
scheduler runs each LAMMPS job in a session of its own (so that a restarted operator finds its
jobs still running), and the operator's model servers are its children. A parent that dies is
no longer the parent of anything (its orphans are re-parented to PID 1), so the tree is sampled
*while it is alive* and every process ever seen is remembered by PID and start time; cleanup
then stops exactly those that still run (a recycled PID has another start time and is left
alone), together with members of the sessions they lead.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    ppid: int
    session: int
    start_ticks: int
    state: str


def read_proc(pid: int) -> ProcInfo | None:
    """One process' identity from ``/proc/PID/stat``, or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    return ProcInfo(pid, int(fields[1]), int(fields[3]), int(fields[19]), fields[0])


def all_processes() -> dict[int, ProcInfo]:
    found: dict[int, ProcInfo] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = read_proc(int(entry))
            if info is not None:
                found[info.pid] = info
    return found


class ProcessTracker:
    """Remembers every descendant of ``root`` seen by :meth:`sample`; stops them on demand."""

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
        running = []
        for pid, ticks in self.seen.items():
            info = read_proc(pid)
            if info is not None and info.start_ticks == ticks and info.state != "Z":
                running.append(pid)
        return sorted(running)

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
    info = read_proc(pid)
    if info is None or info.start_ticks != ticks:
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
