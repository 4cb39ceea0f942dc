"""Readiness of the processes a benchmark runs (started and stopped with :mod:`streamml.procs`)."""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable


def url_answers(url: str) -> Callable[[], bool]:
    """A readiness check: GET ``url`` answers 200."""

    def check() -> bool:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return bool(reply.status == 200)

    return check


def wait_ready(
    process: subprocess.Popen[bytes], ready: Callable[[], bool], timeout: float, what: str
) -> None:
    """Poll ``ready`` until it is true; RuntimeError naming ``what`` if it exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited")
        try:
            if ready():
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} not ready after {timeout}s")
