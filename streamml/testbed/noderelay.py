"""The host's way into the node: a 127.0.0.1 port relayed over a unix socket, never an IP route.

Two ``socat`` processes per relay: one inside the node's network namespace listens on a unix
socket and connects to the target there (e.g. the API server on the node address); one on the
host listens on 127.0.0.1 and connects to that socket. A unix socket is a file, visible from both
network namespaces; no packet crosses between them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from streamml.errors import InfrastructureError


def relay_argvs(socket: Path, target: str, host_port: int) -> tuple[list[str], list[str]]:
    """(inside argv, host argv): ``127.0.0.1:host_port`` on the host -> ``target`` inside."""
    socat = shutil.which("socat")
    if socat is None:
        raise InfrastructureError("socat is needed for the relay into the node: apt install socat")
    inside = [socat, f"UNIX-LISTEN:{socket},fork,unlink-early,mode=600", f"TCP:{target}"]
    host = [
        socat,
        f"TCP-LISTEN:{host_port},bind=127.0.0.1,fork,reuseaddr",
        f"UNIX-CONNECT:{socket}",
    ]
    return inside, host
