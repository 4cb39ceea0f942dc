"""The project's own Slurm testbed: ``streamml hpc up|env|down``, side-by-side instances."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamml import procs
from streamml.errors import InfrastructureError
from streamml.pycommand import python_code, streamml_command
from streamml.testbed import hpc
from tests.fixtures.hpc import SlurmFixture

pytestmark = [pytest.mark.integration, pytest.mark.slurm]


@pytest.fixture
def state_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="streamml-slurm-cli-"))
    path.chmod(0o755)
    yield path
    hpc.stop(path)
    shutil.rmtree(path, ignore_errors=True)


def streamml(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*streamml_command(), *args],
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_cli_up_env_down_beside_another_cluster(
    slurm_cluster: SlurmFixture, state_dir: Path
) -> None:
    """A second cluster on the same machine gets its own ports, keys and jobs."""
    up = streamml("hpc", "up", "--state-dir", str(state_dir))
    assert up.returncode == 0, up.stderr
    again = streamml("hpc", "up", "--state-dir", str(state_dir))
    assert again.returncode == 2 and "already holds a cluster" in again.stderr

    env = json.loads(streamml("hpc", "env", "--state-dir", str(state_dir), "--json").stdout)
    mine, other = env["cluster"], slurm_cluster.cluster
    assert mine["cluster"] != other.cluster
    assert {mine["ctld_port"], mine["slurmd_port"], mine["rest_port"]}.isdisjoint(
        {other.ctld_port, other.slurmd_port, other.rest_port}
    )
    assert "SLURM_JWT" not in env  # it would switch sbatch/srun to JWT auth
    for cluster_env, name in ((env, "on-second"), (slurm_cluster.env, "on-first")):
        run_env = {**os.environ, "SLURM_CONF": cluster_env["SLURM_CONF"]}
        submitted = subprocess.run(["sbatch", "--parsable", "-J", name, "-o", "/dev/null",
                                    "--wrap", "true"], env=run_env, capture_output=True,
                                   text=True, check=True)  # fmt: skip
        assert submitted.stdout.strip().isdigit()
    second_env = {**os.environ, "SLURM_CONF": env["SLURM_CONF"]}
    names = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%j"], capture_output=True,
                           text=True, env=second_env)  # fmt: skip
    assert "on-second" in names.stdout and "on-first" not in names.stdout

    pids = dict(mine["pids"])
    down = streamml("hpc", "down", "--state-dir", str(state_dir))
    assert down.returncode == 0 and "slurmctld" in down.stdout
    assert not any(procs.running(pid) for pid in pids.values())
    assert all(procs.running(pid) for pid in other.pids.values())  # the other cluster is untouched
    gone = streamml("hpc", "env", "--state-dir", str(state_dir))
    assert gone.returncode == 2 and "no Slurm cluster state" in gone.stderr


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a LISTEN socket on ``port`` (from /proc/net/tcp and tcp6)."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


def test_daemons_listen_on_loopback_only(slurm_cluster: SlurmFixture) -> None:
    cluster = slurm_cluster.cluster
    for port in (cluster.ctld_port, cluster.slurmd_port, cluster.rest_port):
        assert port is not None
        assert listening_addresses(port) == {"0100007F"}, port  # 127.0.0.1, nothing else


def test_private_state_dir_is_refused(tmp_path: Path) -> None:
    """pytest's tmp dirs are mode 700: munged (user munge) could not reach its socket there."""
    with pytest.raises(InfrastructureError, match="not searchable by other users"):
        hpc.start(tmp_path / "slurm")
    assert not (tmp_path / "slurm" / "cluster.json").exists()


def test_daemons_die_with_the_process_that_started_them(state_dir: Path) -> None:
    """A test run killed outright (SIGKILL: no teardown runs) leaves no Slurm daemon behind:
    ``hpc.start`` gives them die-with-parent unless ``detached`` (``streamml hpc up``)."""
    code = (
        "import json, sys, time; from pathlib import Path; from streamml.testbed import hpc\n"
        "cluster = hpc.start(Path(sys.argv[1]), rest=False)\n"
        "print(json.dumps(cluster.pids), flush=True); time.sleep(300)\n"
    )
    parent = procs.popen(python_code(code, str(state_dir)), stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        pids: dict[str, int] = json.loads(parent.stdout.readline())
        assert set(pids) == {"munged", "slurmctld", "slurmd"}
        started = {name: procs.read_proc(pid) for name, pid in pids.items()}
        ticks = {name: info.start_ticks for name, info in started.items() if info is not None}
        assert len(ticks) == 3 and all(procs.running(pids[n], t) for n, t in ticks.items())
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(procs.running(pids[n], t) for n, t in ticks.items()):
        time.sleep(0.1)
    assert [n for n, t in ticks.items() if procs.running(pids[n], t)] == []
