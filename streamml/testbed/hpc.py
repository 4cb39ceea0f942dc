"""A real single-node Slurm cluster in a state directory: munge, slurmctld, slurmd, slurmrestd.

Everything an instance uses lives in its state dir (config, keys, munge socket, spool, logs, pid
files) and its ports are chosen free at start-up, so two test runs on one machine never collide::

    cluster = start(Path("/tmp/my-slurm"))
    env = cluster.env()                 # {"SLURM_CONF": ...} for sbatch/squeue/scontrol
    token = cluster.token("root")       # a JWT for slurmrestd at cluster.rest_url
    stop(cluster.state_dir)             # ends exactly the daemons this instance started

The daemons run as root (no systemd here) except munged (user ``munge``) and slurmrestd, which
refuses root and runs as its own system user. Stopping ends only the PIDs recorded in the state
dir, and only after checking that each still belongs to this instance (its command line names
the state dir), so a recycled PID is never hit.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import secrets
import shutil
import signal
import socket
import string
import subprocess
import time
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

from streamml import procs
from streamml.errors import InfrastructureError
from streamml.files import write_atomic
from streamml.procs import free_port

log = logging.getLogger(__name__)

REST_USER = "streamml-rest"  # slurmrestd refuses to run as root or as SlurmUser
REST_API = "v0.0.38"  # the only OpenAPI plugin of Slurm 22.05 that loads without slurmdbd
PARTITION = "debug"
BINARIES = ("munged", "slurmctld", "slurmd", "slurmrestd", "sbatch", "scontrol")
# Debian ships libpmix.so.2 without the libpmix.so link slurm's mpi/pmix plugin dlopens;
# without it `srun --mpi=pmix` hangs.
PMIX_DIR = Path("/usr/lib/x86_64-linux-gnu/pmix2/lib")


@dataclass
class SlurmCluster:
    state_dir: Path
    conf: Path
    cluster: str
    node: str
    partition: str
    ctld_port: int
    slurmd_port: int
    rest_port: int | None
    pids: dict[str, int] = field(default_factory=dict)
    detached: bool = False  # the daemons outlive the process that started them

    @property
    def rest_url(self) -> str | None:
        return f"http://127.0.0.1:{self.rest_port}" if self.rest_port else None

    def env(self) -> dict[str, str]:
        """Environment for the Slurm CLI (sbatch, squeue, scontrol, scancel, srun)."""
        return {"SLURM_CONF": str(self.conf)}

    def token(self, user: str = "root", lifespan_s: int = 3600) -> str:
        """A JWT for slurmrestd, minted by ``scontrol token``."""
        return mint_token(self.conf, user=user, lifespan_s=lifespan_s)

    def to_data(self) -> dict[str, object]:
        data = asdict(self)
        data["state_dir"] = str(self.state_dir)
        data["conf"] = str(self.conf)
        return data

    @classmethod
    def load(cls, state_dir: Path) -> SlurmCluster:
        try:
            data = json.loads((state_dir / "cluster.json").read_text())
        except (OSError, ValueError) as exc:
            raise InfrastructureError(f"no Slurm cluster state in {state_dir}: {exc}") from exc
        data["state_dir"] = Path(data["state_dir"])
        data["conf"] = Path(data["conf"])
        return cls(**data)


def mint_token(conf: Path, *, user: str = "root", lifespan_s: int = 3600) -> str:
    proc = procs.run(
        ["scontrol", "token", f"username={user}", f"lifespan={lifespan_s}"],
        env={**os.environ, "SLURM_CONF": str(conf)},
        capture_output=True,
        text=True,
        check=False,
    )
    out = proc.stdout.strip()
    if proc.returncode != 0 or not out.startswith("SLURM_JWT="):
        raise InfrastructureError(f"scontrol token failed: {(proc.stderr or out).strip()}")
    return str(out).removeprefix("SLURM_JWT=")


def check_installed() -> None:
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        raise InfrastructureError(
            f"missing {', '.join(missing)}: run scripts/bootstrap.sh (installs slurm-wlm, munge)"
        )


def node_resources() -> tuple[int, int]:
    """(CPUs, RealMemory in MB at 90 %) as ``slurmd -C`` reports this machine."""
    proc = procs.run(["slurmd", "-C"], capture_output=True, text=True, check=False)
    fields = dict(
        item.split("=", 1) for item in proc.stdout.split() if "=" in item and item[0].isupper()
    )
    try:
        return int(fields["CPUs"]), int(int(fields["RealMemory"]) * 0.9)
    except (KeyError, ValueError) as exc:
        raise InfrastructureError(f"slurmd -C gave no CPUs/RealMemory: {proc.stdout!r}") from exc


def ensure_rest_user() -> None:
    try:
        pwd.getpwnam(REST_USER)
    except KeyError:
        procs.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", REST_USER],
            check=True,
            capture_output=True,
        )


def ensure_pmix_link() -> None:
    target, link = PMIX_DIR / "libpmix.so.2", PMIX_DIR / "libpmix.so"
    if target.exists() and not link.exists():
        try:
            link.symlink_to(target.name)
        except FileExistsError:
            pass  # another instance made it meanwhile
        except OSError as exc:
            log.warning("cannot create %s (srun --mpi=pmix will hang): %s", link, exc)


def render_conf(**values: object) -> str:
    template = (resources.files("streamml.testbed") / "slurm.conf.in").read_text()
    return string.Template(template).substitute({k: str(v) for k, v in values.items()})


def start(
    state_dir: Path, *, rest: bool = True, timeout_s: float = 30.0, detached: bool = False
) -> SlurmCluster:
    """Start munged, slurmctld, slurmd (and slurmrestd) for a fresh cluster in ``state_dir``.

    The daemons die with the caller (a test run killed outright leaves none behind) unless
    ``detached`` (``streamml hpc up``): then they outlive it, in a session of their own.
    """
    check_installed()
    _prepare_state_dir(state_dir)
    ensure_pmix_link()
    if rest:
        ensure_rest_user()
    node = socket.gethostname().split(".")[0]
    cluster = SlurmCluster(
        state_dir=state_dir,
        conf=state_dir / "slurm.conf",
        cluster=f"sml{secrets.token_hex(3)}",
        node=node,
        partition=PARTITION,
        ctld_port=free_port(),
        slurmd_port=free_port(),
        rest_port=free_port() if rest else None,
        detached=detached,
    )
    _write_conf(cluster)
    try:
        _start_daemons(cluster, rest, timeout_s)
    except BaseException:
        stop(state_dir)
        raise
    log.info("Slurm cluster %s up in %s", cluster.cluster, state_dir)
    return cluster


def _prepare_state_dir(state_dir: Path) -> None:
    if (state_dir / "cluster.json").exists():
        raise InfrastructureError(f"{state_dir} already holds a cluster: stop it first")
    # munge and the REST user must traverse the state dir, so it is world-searchable
    for sub in ("", "ctld", "slurmd", "log", "run", "munge"):
        (state_dir / sub).mkdir(parents=True, exist_ok=True)
        (state_dir / sub).chmod(0o755)
    for parent in state_dir.resolve().parents:
        if parent.stat().st_mode & 0o001 == 0:
            raise InfrastructureError(
                f"{parent} is not searchable by other users; munged and slurmrestd could not "
                "reach the state dir (use a dir under /tmp, e.g. tempfile.mkdtemp)"
            )


def _write_conf(cluster: SlurmCluster) -> None:
    """slurm.conf and the JWT key, for this cluster's node, ports and state dir."""
    state_dir, node = cluster.state_dir, cluster.node
    cpus, memory = node_resources()
    munge_dir = state_dir / "munge"
    jwt_key = state_dir / "jwt.key"
    jwt_key.write_bytes(secrets.token_bytes(32))
    jwt_key.chmod(0o600)
    cluster.conf.write_text(
        render_conf(
            cluster=cluster.cluster,
            host=node,
            node=node,
            cpus=cpus,
            memory=memory,
            partition=PARTITION,
            ctld_port=cluster.ctld_port,
            slurmd_port=cluster.slurmd_port,
            munge_socket=munge_dir / "munge.socket",
            jwt_key=jwt_key,
            state=state_dir,
        )
    )
    cluster.conf.chmod(0o644)


def _start_daemons(cluster: SlurmCluster, rest: bool, timeout_s: float) -> None:
    """munged, slurmctld, slurmd (and slurmrestd), each recorded in the state as it starts."""
    _start_munge(cluster, cluster.state_dir / "munge")
    _write_state(cluster)
    env = {**os.environ, "SLURM_CONF": str(cluster.conf)}
    conf = str(cluster.conf)
    cluster.pids["slurmctld"] = _spawn(cluster, "slurmctld", ["slurmctld", "-D", "-f", conf], env)
    _write_state(cluster)
    cluster.pids["slurmd"] = _spawn(
        cluster, "slurmd", ["slurmd", "-D", "-f", conf, "-N", cluster.node], env
    )
    _write_state(cluster)
    _wait_idle(cluster, timeout_s)
    if not rest:
        return
    argv = ["slurmrestd", "-f", conf, "-s", f"openapi/{REST_API}", "-a", "rest_auth/jwt",
            f"127.0.0.1:{cluster.rest_port}"]  # fmt: skip
    cluster.pids["slurmrestd"] = _spawn(
        cluster, "slurmrestd", argv, {**env, "SLURM_JWT": "daemon"}, user=REST_USER
    )
    _write_state(cluster)
    _wait_port(cluster.rest_port or 0, timeout_s, cluster, "slurmrestd")


def _write_state(cluster: SlurmCluster) -> None:
    write_atomic(cluster.state_dir / "cluster.json", json.dumps(cluster.to_data(), indent=1))


def _start_munge(cluster: SlurmCluster, munge_dir: Path) -> None:
    munge = pwd.getpwnam("munge")
    key = munge_dir / "munge.key"
    key.write_bytes(secrets.token_bytes(1024))
    for path in (munge_dir, key):
        os.chown(path, munge.pw_uid, munge.pw_gid)
    key.chmod(0o400)
    munge_dir.chmod(0o755)  # clients (root, slurmrestd's user) connect to the socket in it
    cluster.pids["munged"] = _spawn(
        cluster,
        "munged",
        [
            "munged",
            "--foreground",
            f"--key-file={key}",
            f"--socket={munge_dir / 'munge.socket'}",
            f"--pid-file={munge_dir / 'munged.pid'}",
            f"--log-file={munge_dir / 'munged.log'}",
            f"--seed-file={munge_dir / 'munged.seed'}",
        ],
        dict(os.environ),
        user="munge",
    )
    deadline = time.monotonic() + 10
    while not (munge_dir / "munge.socket").exists():
        _check_alive(cluster, "munged")
        if time.monotonic() > deadline:
            raise InfrastructureError(f"munged did not create its socket; see {munge_dir}")
        time.sleep(0.05)


def _spawn(
    cluster: SlurmCluster,
    name: str,
    command: list[str],
    env: dict[str, str],
    *,
    user: str | None = None,
) -> int:
    # drop root's groups too: slurmrestd refuses to run with the root group
    ids = pwd.getpwnam(user) if user is not None else None
    daemon, proc = procs.spawn(
        name,
        command,
        cluster.state_dir / "log" / f"{name}.out",
        detached=cluster.detached,
        env=env,
        user=ids.pw_uid if ids else None,
        group=ids.pw_gid if ids else None,
        extra_groups=[] if ids else None,
        cwd=cluster.state_dir,
    )
    (cluster.state_dir / "run" / f"{name}.pid").write_text(f"{daemon.pid}\n")
    _CHILDREN[daemon.pid] = proc
    return daemon.pid


#: daemons started by this process, reaped on stop (otherwise they linger as zombies)
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def _check_alive(cluster: SlurmCluster, name: str) -> None:
    pid = cluster.pids.get(name)
    if pid is None or not procs.running(pid):
        tail = _tail(cluster.state_dir / "log" / f"{name}.out")
        raise InfrastructureError(f"{name} exited during start-up: {tail}")


def _wait_idle(cluster: SlurmCluster, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    env = {**os.environ, "SLURM_CONF": str(cluster.conf)}
    state = ""
    while time.monotonic() < deadline:
        _check_alive(cluster, "slurmctld")
        _check_alive(cluster, "slurmd")
        proc = procs.run(
            ["sinfo", "-h", "-N", "-o", "%T"], env=env, capture_output=True, text=True, check=False
        )
        state = proc.stdout.strip() or proc.stderr.strip()
        if proc.returncode == 0 and state.rstrip("*") in ("idle", "mixed", "allocated"):
            return
        time.sleep(0.1)
    raise InfrastructureError(
        f"the Slurm node did not become idle within {timeout_s} s (last: {state!r}); "
        f"see {cluster.state_dir / 'log'}"
    )


def _wait_port(port: int, timeout_s: float, cluster: SlurmCluster, name: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _check_alive(cluster, name)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise InfrastructureError(f"{name} did not listen on 127.0.0.1:{port} within {timeout_s} s")


def stop(state_dir: Path, *, timeout_s: float = 15.0) -> list[str]:
    """End the daemons recorded in ``state_dir`` (newest first); return the names stopped."""
    stopped: list[str] = []
    for name in ("slurmrestd", "slurmd", "slurmctld", "munged"):
        pid_file = state_dir / "run" / f"{name}.pid"
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            continue
        if procs.running(pid) and _owned(pid, state_dir):
            os.kill(pid, signal.SIGTERM)
            if not _wait_gone(pid, timeout_s):
                log.warning("%s (pid %d) ignored SIGTERM; killing it", name, pid)
                os.kill(pid, signal.SIGKILL)
                _wait_gone(pid, 5.0)
            stopped.append(name)
        pid_file.unlink(missing_ok=True)
    (state_dir / "cluster.json").unlink(missing_ok=True)
    return stopped


def _wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        child = _CHILDREN.get(pid)
        if child is not None and child.poll() is not None:
            del _CHILDREN[pid]
            return True
        if not procs.running(pid):
            return True
        time.sleep(0.05)
    return False


def _owned(pid: int, state_dir: Path) -> bool:
    """The process's command line names this state dir (guards against a recycled PID)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    return str(state_dir) in cmdline


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"
