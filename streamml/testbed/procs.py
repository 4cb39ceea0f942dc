"""Local daemons started by the testbed: spawn, recognise by PID, stop.

A daemon is recorded as its PID *and* its start time (field 22 of ``/proc/PID/stat``), so a later
``stop`` (possibly from another process, e.g. ``streamml cluster down``) never signals a recycled
PID that now belongs to someone else. A daemon whose parent has exited is re-parented to PID 1,
which may reap it late: a zombie (state ``Z``) counts as stopped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from streamml.procs import die_with_parent


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
        stat = proc_stat(self.pid)
        return stat is not None and stat[1] == self.start_ticks and stat[0] != "Z"

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = Path(self.log).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks) of a PID, or None if there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[19])


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the caller retries if it is taken meanwhile)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn(
    name: str,
    argv: list[str],
    log: Path,
    *,
    detached: bool,
    env: dict[str, str] | None = None,
) -> tuple[Daemon, subprocess.Popen[bytes]]:
    """Start ``argv`` with output to ``log``.

    ``detached`` daemons get their own session and outlive the caller (``cluster up``); the
    others die with the caller (:func:`streamml.procs.die_with_parent`: if the test process is
    killed outright, none outlives the run that started it; start control planes from a thread
    that lives as long as they should, e.g. the main thread, as the pytest fixture does).
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=detached,
            preexec_fn=None if detached else die_with_parent(),
        )
    stat = proc_stat(proc.pid)
    ticks = stat[1] if stat else 0
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
