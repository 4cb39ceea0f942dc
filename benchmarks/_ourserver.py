"""Our model server (`streamml serve`) as a separate process for the benchmark: auth on."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from _loadgen import fetch_jwt, http_json
from _proc import url_answers, wait_ready

from streamml import procs

#: The benchmark model, declared as data (the same pipeline the old server gets as a pickle).
PIPELINE = [
    {"class": "preprocessing.StandardScaler", "params": {}},
    {"class": "linear_model.LinearRegression", "params": {}},
]


def streamml_executable() -> str:
    """`streamml` next to the running interpreter (the project's .venv)."""
    candidate = Path(sys.executable).parent / "streamml"
    return str(candidate) if candidate.exists() else "streamml"


@dataclass
class OurServer:
    """`streamml serve` on 127.0.0.1:port with a user and a token, data in `root`."""

    root: Path
    port: int
    user: str = "bench"
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    sync: str = "full"  # SQLite durability: full survives power loss, normal a process crash
    #: run another version of the code (benchmarks/_codeversion.py) instead of the installed one
    pythonpath: Path | None = None
    extra_args: list[str] = field(default_factory=list)
    #: wrap the command (e.g. ``prlimit --as=...``) to cap what a runaway server may take
    wrapper: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.root / "streamml-serve.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        token_file = self.root / "token"
        token_file.write_text(self.token)
        token_file.chmod(0o600)
        if self.pythonpath is None:
            program = [streamml_executable()]
        else:
            from streamml.pycommand import python_module

            program = python_module("streamml.cli")
        env = dict(os.environ)
        if self.pythonpath is not None:
            env["PYTHONPATH"] = str(self.pythonpath)
        cmd = [
            *self.wrapper,
            *program,
            "serve",
            "--host=127.0.0.1",
            f"--port={self.port}",
            f"--data-dir={self.root / 'data'}",
            f"--auth-user={self.user}",
            f"--auth-token-file={token_file}",
            f"--sync={self.sync}",
            *self.extra_args,
        ]
        log = self.log_path.open("ab")
        self.process = procs.popen(cmd, stdout=log, stderr=log, env=env)
        log.close()
        what = f"streamml serve (log {self.log_path})"
        wait_ready(self.process, url_answers(f"{self.url}/readyz"), timeout, what)

    def bearer(self) -> dict[str, str]:
        """A fresh JWT through the handshake, as the Authorization header."""
        return {"Authorization": f"Bearer {fetch_jwt(self.url, self.user, self.token)}"}

    def create_model(self, name: str) -> None:
        status, reply = http_json(
            "POST",
            f"{self.url}/api/model/regression/{name}/",
            body={"pipeline": PIPELINE},
            headers=self.bearer(),
        )
        if status != 201:
            raise RuntimeError(f"declarative create of {name}: {status} {reply!r}")

    def stop(self, grace: float = 30.0) -> None:
        procs.stop_process(self.process, grace=grace)  # SIGTERM flushes and snapshots first


@dataclass
class EchoServer:
    """benchmarks/_echo_server.py as a process: the HTTP stack's ceiling, for reference."""

    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        script = Path(__file__).resolve().parent / "_echo_server.py"
        self.process = procs.popen(
            [sys.executable, str(script), str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def answers() -> bool:
            status, _ = http_json("POST", f"{self.url}/api/predict/", body={"model": "x"})
            return status == 200

        wait_ready(self.process, answers, timeout, "the echo server")

    def stop(self) -> None:
        procs.stop_process(self.process)
