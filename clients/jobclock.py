"""The job program's clock: how long this process has lived (the job's wall time so far).

A scheduler's time limit counts from the job's start, before the job program has imported
anything; the process's own start time (``/proc/self/stat``, in clock ticks since boot, the
clock of ``CLOCK_BOOTTIME``) covers the interpreter's start-up too. Where there is no ``/proc``
the program's first import of this module is the start.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

_IMPORTED = time.monotonic()


def process_start_age(stat: str, ticks_per_s: float, boot_clock: float) -> float | None:
    """Seconds since the process of ``stat`` (a ``/proc/PID/stat`` line) started, or None.

    >>> process_start_age("12 (a (b) c) S " + "0 " * 18 + "500 0", 100.0, 7.5)
    2.5
    """
    fields = stat.rpartition(")")[2].split()
    try:  # field 22 of the line, the 20th after the command's closing parenthesis
        started = int(fields[19]) / ticks_per_s
    except (IndexError, ValueError):
        return None
    age = boot_clock - started
    return age if age >= 0 else None


def job_age() -> float:
    """Seconds this job program has been running (its start-up included where measurable)."""
    try:
        stat = Path("/proc/self/stat").read_text()
        ticks = float(os.sysconf("SC_CLK_TCK"))
        age = process_start_age(stat, ticks, time.clock_gettime(time.CLOCK_BOOTTIME))
    except (OSError, ValueError, AttributeError):
        age = None
    return age if age is not None else time.monotonic() - _IMPORTED
