"""The local runtime: one ``streamml serve`` process per StreamModel, supervised by the operator.

On one machine without a kubelet the operator itself plays the kubelet's part for the model
server: it starts the process on 127.0.0.1 with a free port, a data dir under the state dir and
the credentials from the StreamModel's Secret; restarts it (with backoff) if it dies; stops it
when the StreamModel is deleted or the operator exits. A server is told everything by its command
line and gets an explicit environment (:func:`streamml.procs.child_environment`): nothing in the
operator's own environment (a stray ``STREAMML_NO_AUTH``, say) changes how it serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path

from streamml.files import write_atomic
from streamml.procs import child_environment, free_port, start_async
from streamml.pycommand import streamml_command

logger = logging.getLogger(__name__)

MAX_BACKOFF = 30.0


def _remembered_port(directory: Path) -> int | None:
    try:
        port = int((directory / "port").read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None
    return port if 1024 <= port <= 65535 else None


@dataclass
class ServerProcess:
    """One supervised server."""

    key: tuple[str, str]
    directory: Path
    port: int
    credentials_digest: str
    restarts: int = 0
    process: asyncio.subprocess.Process | None = None
    task: asyncio.Task[None] | None = None
    stopping: bool = False
    started: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def is_stopping(self) -> bool:
        return self.stopping

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None


class LocalRuntime:
    """All servers of one operator process, keyed by (namespace, name)."""

    def __init__(self, state_dir: Path, command: list[str] | None = None) -> None:
        self.state_dir = state_dir
        self.command = command or streamml_command("serve")
        self._servers: dict[tuple[str, str], ServerProcess] = {}
        self._lock = asyncio.Lock()

    def directory(self, namespace: str, name: str) -> Path:
        for part in (namespace, name):
            if not part or "/" in part or part.startswith("."):
                raise ValueError(f"unsafe name for a directory: {part!r}")
        return self.state_dir / namespace / name

    def get(self, namespace: str, name: str) -> ServerProcess | None:
        return self._servers.get((namespace, name))

    async def ensure(self, namespace: str, name: str, username: str, token: str) -> ServerProcess:
        """Start the server unless it runs with these credentials (then restart it)."""
        digest = hashlib.sha256(f"{username}\0{token}".encode()).hexdigest()
        async with self._lock:
            server = self._servers.get((namespace, name))
            if server is not None and server.credentials_digest == digest:
                return server
            if server is not None:
                logger.info("credentials of %s/%s changed: restarting its server", namespace, name)
                await self._stop(server)
            directory = self.directory(namespace, name)
            (directory / "data").mkdir(parents=True, exist_ok=True, mode=0o700)
            write_atomic(directory / "token", token, private=True)
            write_atomic(directory / "username", username)
            # The same address across operator restarts: jobs hold on to status.address.
            previous = server.port if server else _remembered_port(directory)
            server = ServerProcess((namespace, name), directory, free_port(previous), digest)
            self._servers[(namespace, name)] = server
            server.task = asyncio.create_task(self._supervise(server, username))
            return server

    async def _spawn(self, server: ServerProcess, username: str) -> asyncio.subprocess.Process:
        args = [
            *self.command,
            "--host",
            "127.0.0.1",
            "--port",
            str(server.port),
            "--data-dir",
            str(server.directory / "data"),
            "--auth-user",
            username,
            "--auth-token-file",
            str(server.directory / "token"),
        ]
        log = (server.directory / "server.log").open("ab")
        try:
            # dies with us: an operator killed with SIGKILL leaves no server holding ports and data
            return await start_async(
                args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env=child_environment(),
            )
        finally:
            log.close()

    async def _supervise(self, server: ServerProcess, username: str) -> None:
        backoff = 1.0
        while not server.stopping:
            (server.directory / "port").write_text(str(server.port), encoding="utf-8")
            try:
                server.process = await self._spawn(server, username)
            except OSError as exc:
                logger.error("cannot start the server of %s/%s: %s", *server.key, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            server.started.set()
            logger.info(
                "server of %s/%s: pid %d on %s", *server.key, server.process.pid, server.address
            )
            loop = asyncio.get_running_loop()
            began = loop.time()
            code = await server.process.wait()
            if server.is_stopping():
                return
            server.restarts += 1
            lived = loop.time() - began
            backoff = 1.0 if lived > MAX_BACKOFF else min(backoff * 2, MAX_BACKOFF)
            server.port = free_port(server.port)  # the same address, unless it was taken
            logger.warning(
                "server of %s/%s exited with %s; restart %d in %.0fs (log: %s)",
                *server.key,
                code,
                server.restarts,
                backoff,
                server.directory / "server.log",
            )
            await asyncio.sleep(backoff)

    async def _stop(self, server: ServerProcess) -> None:
        server.stopping = True
        process = server.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), timeout=10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if server.task is not None and server.task is not asyncio.current_task():
            server.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await server.task

    async def stop(self, namespace: str, name: str, *, remove_data: bool) -> None:
        """Stop the server (if any); with ``remove_data`` delete its state like a deleted PVC."""
        async with self._lock:
            server = self._servers.pop((namespace, name), None)
            if server is not None:
                await self._stop(server)
        if remove_data:
            await asyncio.to_thread(
                shutil.rmtree, self.directory(namespace, name), ignore_errors=True
            )

    async def close(self) -> None:
        async with self._lock:
            servers = list(self._servers.values())
            self._servers.clear()
        await asyncio.gather(*(self._stop(s) for s in servers), return_exceptions=True)

    def pids(self) -> dict[tuple[str, str], int]:
        return {
            key: s.process.pid
            for key, s in self._servers.items()
            if s.process is not None and s.process.returncode is None
        }
