"""Every command shown in the README is run here, so the README cannot rot.

Each fenced ``bash`` block of README.md is preceded by ``<!-- readme-test: SCENARIO -->``; the
blocks of one scenario run in order as one ``bash -euo pipefail`` script, in a temporary working
directory (with ``config/`` linked in), with the project's ``streamml`` first on PATH. The only
edit made to the text is the port: the README says 8000, the test uses a free one (tests never
use fixed ports on this shared machine). ``quickstart`` (``make demo`` / ``make test``) is run by
``test_demo.py`` and CI respectively; here it is checked to be exactly those two commands.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from streamml.testbed.k8sbuild import ensure_binaries
from tests.fixtures.server import free_port

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MARKER = re.compile(r"<!--\s*readme-test:\s*([a-z-]+)\s*-->\s*\n```bash\n(.*?)\n```", re.S)
SCENARIOS = ("quickstart", "kubernetes", "local")


def scenarios(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for name, body in MARKER.findall(text):
        found.setdefault(name, []).append(body)
    return found


def test_every_bash_block_belongs_to_a_tested_scenario() -> None:
    text = README.read_text()
    blocks = re.findall(r"```bash\n", text)
    found = scenarios(text)
    assert sum(len(v) for v in found.values()) == len(blocks), "a bash block has no marker"
    assert set(found) == set(SCENARIOS)


def test_quickstart_is_the_two_make_targets() -> None:
    text = README.read_text()
    assert text.index("make demo") < 1200, "the first screen must show the two commands"
    (block,) = scenarios(text)["quickstart"]
    commands = [line.split("#")[0].strip() for line in block.splitlines()]
    assert commands == ["make demo", "make test"]
    # both targets exist and do what the README says (the real runs: test_demo.py and CI)
    for target, script in (("demo", "bootstrap.sh"), ("test", "scripts/test.sh")):
        dry = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True)
        assert dry.returncode == 0 and script in dry.stdout, dry.stdout + dry.stderr


def _run(name: str, tmp_path: Path, env: dict[str, str], timeout: float) -> str:
    script = "\n".join(scenarios(README.read_text())[name])
    port = str(free_port())
    script = script.replace("--port 8000", f"--port {port}").replace(":8000", f":{port}")
    (tmp_path / "config").symlink_to(ROOT / "config")
    (tmp_path / "out").mkdir()
    path = tmp_path / "scenario.sh"
    path.write_text("set -euo pipefail\nset -x\n" + script + "\n")
    bin_dir = str(Path(sys.executable).parent)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMML_", "KUBE"))}
    full_env.update(env)
    full_env["PATH"] = f"{bin_dir}{os.pathsep}{full_env.get('PATH', '')}"
    proc = subprocess.Popen(
        ["bash", str(path)],
        cwd=tmp_path,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # so a failure can stop the whole scenario's process group
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        output, _ = proc.communicate()
        pytest.fail(f"scenario {name} timed out:\n{output[-5000:]}")
    finally:
        _stop_group(proc.pid)
    assert proc.returncode == 0, output[-8000:]
    return output


def _stop_group(pgid: int) -> None:
    # background processes of the scenario (server, operator) share its process group
    try:
        os.killpg(pgid, 15)
    except ProcessLookupError:
        return


@pytest.mark.integration
@pytest.mark.lammps
def test_local_scenario(tmp_path: Path) -> None:
    output = _run("local", tmp_path, {}, timeout=1500)
    assert '"name": "atoms-bayesian"' in output or '"name":"atoms-bayesian"' in output
    rows = (tmp_path / "out" / "watch" / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("time,model,samples")
    samples = {int(line.split(",")[2]) for line in rows[1:]}
    assert max(samples) >= 31  # the single run plus the sweep's 30 training runs
    pngs = sorted(p.name for p in (tmp_path / "out" / "plots").glob("*.png"))
    assert "learning_curve_RMSE.png" in pngs
    assert '"RMSE"' in output


@pytest.mark.integration
@pytest.mark.controlplane
@pytest.mark.lammps
def test_kubernetes_scenario(tmp_path: Path) -> None:
    ensure_binaries()  # a cold build shows its own progress; the scenario then finds the cache
    output = _run("kubernetes", tmp_path, {}, timeout=2400)
    assert "streammodel.streamml.io/lammps-time" in output or "lammps-time" in output
    assert re.search(r"lj-size\s+Succeeded", output), output[-4000:]
    assert (tmp_path / "out" / "watch" / "metrics.csv").exists()
    assert not (tmp_path / "out" / "cluster" / "state.json").exists()  # cluster down ran
