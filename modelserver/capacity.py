"""How much memory the server is given, so that its buffers' defaults fit inside it.

A pod's limit is its cgroup's (v2 ``memory.max``, v1 ``memory.limit_in_bytes``); without one the
machine's RAM. Buffers get fixed shares of it, far below the whole, so that a flood of requests is
answered with a 4xx while the process still has room, long before the kernel's OOM killer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: a cgroup "limit" at least this large means "no limit" (v1 writes 2**63 rounded to a page)
UNLIMITED = 2**60
FALLBACK_BYTES = 4 * 2**30

#: shares of the memory the server is given
PENDING_SHARE = 8  # predictions waiting for a label: 1/8
SSE_TOTAL_SHARE = 16  # all event-stream buffers together: 1/16
MODEL_SHARE = 8  # the estimated state of one model: 1/8
SSE_CLIENT_CAP = 4 * 2**20  # one event-stream client's buffer: at most 4 MiB


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if not text.isdigit():  # "max" (v2, no limit) or garbage
        return None
    value = int(text)
    return value if 0 < value < UNLIMITED else None


def cgroup_limit(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """The memory limit of this process's cgroup (v2, then v1), if it has one."""
    for candidate in (root / "memory.max", root / "memory" / "memory.limit_in_bytes"):
        value = _read_int(candidate)
        if value is not None:
            return value
    return None


def physical_memory(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def memory_given(root: Path = Path("/sys/fs/cgroup"), meminfo: Path = Path("/proc/meminfo")) -> int:
    """The cgroup limit, else the RAM, else 4 GiB; the smaller of a limit and the RAM."""
    limit = cgroup_limit(root)
    ram = physical_memory(meminfo)
    known = [value for value in (limit, ram) if value is not None]
    return min(known) if known else FALLBACK_BYTES


@dataclass(frozen=True)
class Budget:
    """Byte limits derived from the memory given (each may be overridden by a setting)."""

    memory: int

    @property
    def pending_bytes(self) -> int:
        return self.memory // PENDING_SHARE

    @property
    def sse_total_bytes(self) -> int:
        return self.memory // SSE_TOTAL_SHARE

    @property
    def sse_client_bytes(self) -> int:
        return min(SSE_CLIENT_CAP, self.sse_total_bytes)

    @property
    def model_bytes(self) -> int:
        return self.memory // MODEL_SHARE
