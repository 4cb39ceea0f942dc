"""``make demo`` end to end (with a small sweep), and Ctrl-C in the middle of a demo.

Everything is real: the control plane binaries, the operator in local runtime, the model server
it starts, LAMMPS runs on the local scheduler. The process tree below the demo is sampled all
along, so the tests can tell that nothing it started is left running afterwards.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from streamml.clients.evaluation import evaluate, trials_from_sweep_status
from streamml.procs import ProcessTracker
from streamml.pycommand import streamml_command
from streamml.testbed.k8sbuild import ensure_binaries

pytestmark = [pytest.mark.integration, pytest.mark.controlplane, pytest.mark.lammps]

ROOT = Path(__file__).resolve().parents[2]


class TreeSampler:
    """Samples the process tree below ``pid`` in a thread; remembers command lines too."""

    def __init__(self, pid: int) -> None:
        self.tracker = ProcessTracker(pid)
        #: every command line each process had: a child read between its fork and its exec
        #: still shows the parent's, so live processes are read again on every sample
        self.commands: dict[int, set[str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.tracker.sample()
            for pid in self.tracker.seen:
                try:
                    raw = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue
                if raw:  # empty for a zombie
                    command = raw.replace(b"\0", b" ").decode(errors="replace")
                    self.commands.setdefault(pid, set()).add(command)
            time.sleep(0.1)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def seen(self, needle: str) -> bool:
        return any(needle in cmd for cmds in list(self.commands.values()) for cmd in list(cmds))


def _wait_gone(sampler: TreeSampler, timeout: float = 30.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while sampler.tracker.alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    return sampler.tracker.alive()


#: the demo as a new user runs it: no settings or kubeconfig inherited from this environment
DEMO_ENV = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMML_", "KUBE"))}


def start_sampled(command: list[str]) -> tuple[subprocess.Popen[str], TreeSampler]:
    """Start ``command`` in a session of its own, its process tree sampled from the start."""
    proc = subprocess.Popen(
        command,
        cwd=ROOT,
        env=DEMO_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        # as from a terminal: a runner that ignores SIGINT (a background job of a shell
        # without job control) passes the ignore on, and a demo that inherits it cannot be
        # interrupted by the Ctrl-C this module sends
        preexec_fn=_default_sigint,
    )
    return proc, TreeSampler(proc.pid)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(scope="module", autouse=True)
def _binaries() -> None:
    ensure_binaries()  # a cold build is minutes, once; the demos then reuse the cache


def test_make_demo_with_a_small_sweep(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc, sampler = start_sampled(
        ["make", "demo", f"ARGS=--trials 4 --test-trials 2 --parallelism 2 --out {out}"]
    )
    try:
        output, _ = proc.communicate(timeout=1200)
    finally:
        sampler.stop()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, output[-6000:]

    # what it printed: the table, the evaluation next to the ceiling, the plots
    assert "$ kubectl get streammodels,lammpssweeps" in output
    assert "streammodel.streamml.io/lammps-time" in output
    assert "lammpssweep.streamml.io/lj-size" in output
    assert "Held-out evaluation: 2 runs, models trained on 4 runs" in output
    assert "offline ceiling (LSQ on atoms)" in output
    assert "sweep Running" in output  # live progress was shown
    assert re.search(r"\[demo\] dashboard: http://127\.0\.0\.1:\d+/dashboard/ ", output)

    # what it wrote agrees with the sweep's own status
    sweep = json.loads((out / "sweep.json").read_text())
    assert sweep["status"]["phase"] == "Succeeded"
    recomputed = evaluate(trials_from_sweep_status(sweep["status"])).as_dict()
    written = json.loads((out / "evaluation.json").read_text())
    assert set(written["models"]) == set(recomputed["models"])
    assert len(written["models"]) == 6
    for name, scores in recomputed["models"].items():
        assert written["models"][name]["n"] == scores["n"] == 2
        assert written["models"][name]["MAE"] == pytest.approx(scores["MAE"])
        assert f"\n{name} " in output
    rows = (out / "watch" / "metrics.csv").read_text().splitlines()
    models_seen = {line.split(",")[1] for line in rows[1:]}
    assert models_seen == set(written["models"])
    assert max(int(line.split(",")[2]) for line in rows[1:]) == 4
    for name in ("learning_curve_RMSE.png", "predicted_vs_actual.png", "runtime_vs_atoms.png"):
        path = out / "plots" / name
        assert path.stat().st_size > 10_000
        assert str(path) in output

    # and it stopped everything it started
    assert sampler.seen("kube-apiserver") and sampler.seen("streamml.cli operator")
    assert sampler.seen(" serve ")
    assert _wait_gone(sampler) == []
    assert not (out / "cluster" / "state.json").exists()


def test_demo_sample_eos_evaluates_each_target_against_its_own_ceiling(tmp_path: Path) -> None:
    """``streamml demo --sample eos``: the equation-of-state sweep (three targets) through the
    real operator; the summary and evaluation.json are per target and agree with the sweep's
    own status, the plots are per target. 8 training runs: the degree-2 ceiling needs > 6."""
    out = tmp_path / "demo"
    argv = ["demo", "--sample", "eos", "--trials", "8", "--test-trials", "2", "--out", str(out)]
    proc, sampler = start_sampled([*streamml_command(), *argv])
    try:
        output, _ = proc.communicate(timeout=1200)
        sampler.stop()
        leftovers = _wait_gone(sampler)
    finally:
        sampler.stop()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        sampler.tracker.stop_all(grace=2.0)  # never leave the machine dirty, even on failure
    assert proc.returncode == 0, output[-6000:]
    assert leftovers == [], {pid: sampler.commands.get(pid) for pid in leftovers}
    assert "lammpssweep.streamml.io/lj-eos" in output
    assert "Held-out evaluation: 2 runs, models trained on 8 runs" in output
    sweep = json.loads((out / "sweep.json").read_text())
    status = sweep["status"]
    assert status["phase"] == "Succeeded"
    written = json.loads((out / "evaluation.json").read_text())["targets"]
    by_target = {e["target"]: e for e in status["evaluationByTarget"]}
    assert list(written) == list(by_target) == ["pressure", "pe_per_atom", "cost"]
    sections = output.split("\ntarget ")[1:]
    assert [s.split()[0] for s in sections] == list(by_target)
    for section, (target, entry) in zip(sections, by_target.items(), strict=True):
        models = {e["model"]: e for e in entry["evaluation"]}
        # the table lists this target's models (the status' own), then its ceiling
        table = section.split("\nbest streamed model")[0].splitlines()[2:]
        assert {row.split()[0] for row in table[:-1]} == set(models), section
        assert table[-1].startswith("offline ceiling (LSQ on rho, t, degree 2)")
        for model, scores in written[target]["models"].items():
            assert scores["n"] == models[model]["n"] == 2
            assert scores["MAE"] == pytest.approx(models[model]["MAE"], rel=1e-9)
        assert written[target]["ceiling"]["n_train"] == 8
    names = {p.name for p in (out / "plots").iterdir()}
    for target in by_target:
        for name in (
            f"predicted_vs_actual_{target}.png",
            f"heatmap_{target}.png",
            f"learning_curve_RMSE_{target}.png",
        ):
            assert name in names and (out / "plots" / name).stat().st_size > 10_000
    assert not names & {"predicted_vs_actual.png", "runtime_vs_atoms.png"}


def test_ctrl_c_during_the_sweep_leaves_nothing_running(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc, sampler = start_sampled(
        [*streamml_command(), "demo", "--out", str(out), "--interval", "0.5"]
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 900
        for line in proc.stdout:
            lines.append(line)
            # interrupt once the sweep runs: its first jobs (in sessions of their own) are
            # submitted by then. Not "once `lmp` was sampled": under load a sampler missed all
            # 40 sub-second runs of a CI run, and the demo finished before the interrupt
            if "sweep Running" in line:
                break
            assert time.monotonic() < deadline, "".join(lines[-50:])
        assert sampler.seen("kube-apiserver") and sampler.seen(" serve "), "".join(lines)
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends to the demo
        rest, _ = proc.communicate(timeout=180)
        lines.append(rest)
        sampler.stop()
        leftovers = _wait_gone(sampler, timeout=15.0)
    finally:
        sampler.stop()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        sampler.tracker.stop_all(grace=2.0)  # never leave the machine dirty, even on failure
    output = "".join(lines)
    assert proc.returncode == 130, output[-4000:]
    assert "interrupted: stopping everything the demo started" in output
    assert leftovers == [], {pid: sampler.commands.get(pid) for pid in leftovers}
    assert not (out / "cluster" / "state.json").exists()


def _dashboard_answers(url: str) -> bool:
    """The dashboard's URL answers as the server's page does without a session: 303 to login."""
    import urllib.error
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    try:
        urllib.request.build_opener(NoRedirect).open(url, timeout=30)
    except urllib.error.HTTPError as exc:
        return exc.code == 303 and exc.headers["Location"].endswith("/dashboard/login")
    return False


def test_keep_running_then_stop(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    demo = [*streamml_command(), "demo", "--out", str(out)]
    proc, sampler = start_sampled([*demo, "--trials", "2", "--test-trials", "1", "--keep-running"])
    try:
        output, _ = proc.communicate(timeout=900)
        assert proc.returncode == 0, output[-4000:]
        assert f"stop it with: streamml demo --stop --out {out}" in output
        # the dashboard is left up with the rest: its page answers (login first)
        found = re.search(
            r"The dashboard stays up: dashboard: (http://127\.0\.0\.1:\d+/dashboard/)", output
        )
        assert found, output[-4000:]
        assert _dashboard_answers(found.group(1))
        time.sleep(1.0)
        sampler.stop()
        # still up after the demo exited: the API server answers, the operator runs
        state = json.loads((out / "demo-state.json").read_text())
        cluster = json.loads((out / "cluster" / "state.json").read_text())
        assert os.path.exists(f"/proc/{state['operator']['pid']}")
        assert sampler.tracker.alive(), "nothing kept running"
        stop = subprocess.run(
            [*demo, "--stop"], cwd=ROOT, env=DEMO_ENV, capture_output=True, text=True, timeout=120
        )
        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert "stopped" in stop.stdout
        assert _wait_gone(sampler) == [], {
            p: sampler.commands.get(p) for p in sampler.tracker.alive()
        }
        assert not (out / "demo-state.json").exists()
        assert cluster["server"].startswith("https://127.0.0.1:")
    finally:
        sampler.stop()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        sampler.tracker.stop_all(grace=2.0)
