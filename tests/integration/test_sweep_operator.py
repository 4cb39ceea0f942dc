"""The operator drives LammpsSweeps against the real control plane, with a local-runtime
StreamModel (a real ``streamml serve`` supervised by the operator), real ``lmp`` and the real
local scheduler: end to end, operator killed and restarted mid-sweep, deletion mid-way, invalid
specs.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamml.client.api import ModelServerClient
from streamml.clients import lammps
from streamml.sweep.schedulers.base import JobState
from streamml.sweep.schedulers.local import LocalScheduler
from streamml.testbed.controlplane import ControlPlane
from tests.fixtures.sweeps import sweep_doc
from tests.integration.operator_support import OperatorProcess, install_crds

pytestmark = [pytest.mark.integration, pytest.mark.controlplane, pytest.mark.lammps]

LJ_DATA = Path(__file__).resolve().parents[1] / "fixtures" / "lj_data"
SAMPLES = Path(__file__).resolve().parents[2] / "config" / "samples"

STREAMMODEL = {
    "apiVersion": "streamml.io/v1alpha1",
    "kind": "StreamModel",
    "metadata": {"name": "lj-runtime"},
    "spec": {
        "models": [
            {"name": "mean", "pipeline": [{"class": "dummy.StatisticRegressor",
                                           "params": {"statistic": {"class": "stats.Mean"}}}]},
            {"name": "linear", "pipeline": [{"class": "preprocessing.StandardScaler"},
                                            {"class": "linear_model.LinearRegression"}]},
        ],
    },
}  # fmt: skip


def sweep(name: str, **spec: Any) -> dict[str, Any]:
    defaults = {"sampling": {"method": "latinHypercube", "seed": 3}, "trials": 6, "maxFailures": 1}
    return sweep_doc(name, "lj-runtime", **{**defaults, **spec})


def gated_input(root: Path, name: str) -> tuple[str, Path]:
    """The LJ input behind a gate: its runs wait until the returned path exists.

    Tests that act on runs in flight (suspend, delete) must not race the runs finishing by
    themselves: a 1-second run once finished before a loaded operator cancelled it.
    """
    gate = root / f"{name}-gate-open"
    script = root / f"{name}-gate.sh"
    script.write_text(f"while [ ! -e {gate} ]; do sleep 0.1; done\n")
    lj = (Path(lammps.__file__).parent / "inputs" / "in.lj").read_text()
    return f"shell sh {script}\n{lj}", gate


@dataclass
class Operator:
    """The operator in local runtime (:class:`OperatorProcess`) and one namespace to work in."""

    cp: ControlPlane
    namespace: str
    root: Path
    process: OperatorProcess = field(init=False)

    def __post_init__(self) -> None:
        self.process = OperatorProcess(
            self.cp.kubeconfig, self.root,
            "--local-runtime", "-n", self.namespace, "--state-dir", str(self.root / "state"),
            env={"STREAMML_SWEEPS__WORK_DIR": str(self.root / "sweeps"),
                 "STREAMML_SWEEPS__INTERVAL": "0.5"},
        )  # fmt: skip

    @property
    def sweeps_dir(self) -> Path:
        return self.root / "sweeps" / self.namespace

    def start(self) -> None:
        self.process.start()

    def kill(self) -> None:
        self.process.kill()

    def stop(self) -> None:
        self.process.stop()

    def logs(self) -> str:
        return self.process.log()[-8000:]

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> str:
        return self.cp.kubectl(*args, "-n", self.namespace, check=check, input=input).stdout

    def apply(self, doc: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return self.cp.kubectl(
            "apply", "-n", self.namespace, "-f", "-", input=yaml.safe_dump(doc), check=False
        )

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        out = self.cp.kubectl("get", kind, name, "-n", self.namespace, "-o", "json", check=False)
        return json.loads(out.stdout) if out.returncode == 0 else None

    def status(self, name: str) -> dict[str, Any]:
        return (self.get("lammpssweep", name) or {}).get("status") or {}

    def wait_for(self, what: str, check: Callable[[], bool], timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            assert self.process.process is not None
            assert self.process.process.poll() is None, f"the operator exited:\n{self.logs()}"
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting for {what}\n{self.logs()}")

    def jobs_root(self, name: str) -> Path:
        found = list(self.sweeps_dir.glob(f"{name}-*/jobs"))
        assert len(found) == 1, found
        return found[0]

    def job_names(self, name: str) -> list[str]:
        root = self.jobs_root(name)
        return sorted(json.loads(p.read_text())["name"] for p in root.glob("*/job.json"))


@contextmanager
def running_operator(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory, prefix: str
) -> Iterator[Operator]:
    """An operator process watching a fresh namespace ``PREFIX-xxxxxx`` (CRDs installed);
    stopped and its namespace deleted afterwards."""
    root = tmp_path_factory.mktemp(f"{prefix}-operator")
    install_crds(control_plane)
    namespace = f"{prefix}-{uuid.uuid4().hex[:6]}"
    control_plane.kubectl("create", "namespace", namespace)
    op = Operator(control_plane, namespace, root)
    op.start()
    try:
        yield op
    finally:
        op.stop()
        control_plane.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


@pytest.fixture(scope="module")
def operator(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory, lammps_bin: str
) -> Iterator[Operator]:
    with running_operator(control_plane, tmp_path_factory, "sweeps") as op:
        yield op


def server_learns(op: Operator, model: str, streammodel: str = "lj-runtime") -> int:
    import asyncio

    sm = op.get("streammodel", streammodel) or {}
    address = sm["status"]["address"]
    secret = op.get("secret", sm["status"]["authSecretName"]) or {}
    import base64

    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}

    async def stats() -> int:
        async with ModelServerClient(
            address, username=data["username"], token=data["token"]
        ) as client:
            return (await client.stats(model)).learn.n_calls

    return asyncio.run(stats())


def test_sweep_waits_for_model_then_survives_an_operator_kill(operator: Operator) -> None:
    op = operator
    # the sweep comes first: it waits, saying why, and submits nothing
    assert op.apply(sweep("lj")).returncode == 0

    def waiting() -> bool:
        conds = {c["type"]: c for c in op.status("lj").get("conditions", [])}
        c = conds.get("StreamModelReady")
        return c is not None and c["status"] == "False" and c["reason"] == "StreamModelNotFound"

    op.wait_for("the sweep to wait for its StreamModel", waiting, timeout=120)
    assert op.status("lj")["phase"] == "Waiting"
    assert op.status("lj").get("submitted", 0) == 0

    assert op.apply(STREAMMODEL).returncode == 0
    op.wait_for("submissions", lambda: op.status("lj").get("submitted", 0) >= 3, timeout=300)
    op.kill()  # mid-sweep: runs in flight, others not started
    mid = op.status("lj")
    assert mid["phase"] == "Running" and mid["succeeded"] < 8
    op.start()
    op.wait_for("the sweep to finish", lambda: op.status("lj").get("phase") == "Succeeded")

    status = op.status("lj")
    names = op.job_names("lj")
    # no trial was submitted twice, none forgotten: one job per trial, and the count agrees
    assert len(names) == len(set(names)) == 8
    assert status["submitted"] == 8 and status["succeeded"] == 8 and status["failed"] == 0
    assert status["progress"] == "8/8"
    for model in ("mean", "linear"):
        assert server_learns(op, model) == 6  # each training run learned once
    evaluation = {e["model"]: e for e in status["evaluation"]}
    assert set(evaluation) == {"mean", "linear"} and evaluation["mean"]["n"] == 2
    assert {c["model"] for c in status["learningCurve"]} == {"mean", "linear"}
    conds = {c["type"]: c for c in status["conditions"]}
    assert conds["StreamModelReady"]["status"] == "True"
    assert conds["Complete"]["status"] == "True"
    table = op.kubectl("get", "lammpssweep", "lj")
    assert "Succeeded" in table and "8/8" in table and "lj-runtime" in table


def test_several_targets_per_run_through_the_operator(operator: Operator) -> None:
    """Issue 12: each model of the StreamModel learns its own target of every run, once; the
    CR status holds every target's value and the evaluation per target."""
    op = operator
    assert op.apply(STREAMMODEL).returncode == 0
    targets = [
        {"name": "cost", "metric": "cpu_time", "models": ["mean"]},
        {"name": "pressure", "thermo": {"column": "Press"}, "models": ["linear"]},
    ]
    assert op.apply(sweep("targets", trials=3, testTrials=1, targets=targets)).returncode == 0
    op.wait_for("the sweep to finish", lambda: op.status("targets").get("phase") == "Succeeded")
    status = op.status("targets")
    assert status["succeeded"] == 4 and status["failed"] == 0
    for model in ("mean", "linear"):
        assert server_learns(op, model) >= 3  # (the module's other sweeps teach them too)
    train = [t for t in status["trials"] if t["role"] == "train"]
    assert all(set(t["targets"]) == {"cost", "pressure"} for t in train)
    by_target = {e["target"]: e for e in status["evaluationByTarget"]}
    assert {t: [e["model"] for e in v["evaluation"]] for t, v in by_target.items()} == {
        "cost": ["mean"],
        "pressure": ["linear"],
    }
    (held_out,) = status["testResults"]
    assert set(held_out["targets"]) == {"cost", "pressure"}
    curves = {c["model"]: c.get("target") for c in status["learningCurve"]}
    assert curves == {"mean": "cost", "linear": "pressure"}


def test_deleting_a_sweep_cancels_its_jobs(operator: Operator) -> None:
    op = operator
    assert op.apply(STREAMMODEL).returncode == 0
    held, gate = gated_input(op.root, "doomed")
    long_runs = sweep("doomed", trials=10, testTrials=0, lammps={"input": held})
    assert op.apply(long_runs).returncode == 0

    def two_running() -> bool:
        return sum(t["state"] == "Running" for t in op.status("doomed").get("trials", [])) == 2

    op.wait_for("two runs in flight", two_running, timeout=300)
    ids = [t["jobId"] for t in op.status("doomed")["trials"] if t["state"] == "Running"]
    op.kubectl("delete", "lammpssweep", "doomed", "--wait=true", "--timeout=120s")
    assert op.get("lammpssweep", "doomed") is None
    local = LocalScheduler(op.jobs_root("doomed"), max_parallel=2)
    import asyncio

    states = asyncio.run(local.poll(ids))
    assert {s.state for s in states.values()} == {JobState.CANCELLED}, states
    assert len(op.job_names("doomed")) == 2  # nothing submitted after the delete
    gate.touch()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"trials": -1}, "spec.trials"),
        ({"parameters": []}, "spec.parameters"),
        ({"scheduler": {"type": "pbs"}}, "spec.scheduler.type"),
        ({"parallelism": 0}, "spec.parallelism"),
    ],
)
def test_schema_rejects_invalid_specs(operator: Operator, change: dict[str, Any], message: str):
    done = operator.apply(sweep("rejected", **change))
    assert done.returncode != 0
    assert message in done.stderr
    assert operator.get("lammpssweep", "rejected") is None


@pytest.mark.parametrize(
    ("name", "change", "field"),
    [
        ("minmax", {"parameters": [{"name": "nx", "type": "int", "min": 9, "max": 3}]},
         "spec.parameters[0]"),
        ("tiny", {"parameters": [{"name": "nx", "type": "int", "min": 1, "max": 2}],
                  "testTrials": 2}, "testTrials"),
        ("norest", {"scheduler": {"type": "slurm-rest"}}, "spec.scheduler"),
        # issue 12: a target no model learns, a model with no target source
        ("unlearned", {"targets": [{"name": "cost", "metric": "cpu_time", "models": ["mean"]},
                                   {"name": "time", "metric": "loop_time"}]},
         "spec.targets[1].models"),
        ("orphan", {"models": ["mean", "linear"],
                    "targets": [{"name": "cost", "metric": "cpu_time", "models": ["mean"]}]},
         "spec.models[1]: model 'linear' has no target source"),
        ("stranger", {"targets": [{"name": "cost", "metric": "cpu_time", "models": ["mean"]},
                                  {"name": "time", "metric": "loop_time", "models": ["nope"]}]},
         "spec.targets[1].models: model 'nope' is not a model of StreamModel 'lj-runtime'"),
    ],
)  # fmt: skip
def test_invalid_specs_past_the_schema_fail_in_status(
    operator: Operator, name: str, change: dict[str, Any], field: str
) -> None:
    op = operator
    assert op.apply(STREAMMODEL).returncode == 0
    assert op.apply(sweep(name, **change)).returncode == 0

    def failed() -> bool:
        return op.status(name).get("phase") == "Failed"

    op.wait_for(f"{name} to fail", failed, timeout=120)
    status = op.status(name)
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "InvalidSpec"
    assert field in ready["message"]
    assert status.get("submitted", 0) == 0
    assert not list(op.sweeps_dir.glob(f"{name}-*/jobs/*"))
    # not a retry loop: the status stays put while the spec does not change
    before = op.get("lammpssweep", name)
    time.sleep(3)
    after = op.get("lammpssweep", name)
    assert before is not None and after is not None
    assert before["metadata"]["resourceVersion"] == after["metadata"]["resourceVersion"]


def test_suspend_cancels_then_resume_finishes_with_configmap_input(operator: Operator) -> None:
    op = operator
    assert op.apply(STREAMMODEL).returncode == 0
    lj, gate = gated_input(op.root, "pausable")
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "lj-input"},
                 "data": {"in.lj": lj}}  # fmt: skip
    assert op.apply(configmap).returncode == 0
    doc = sweep(
        "pausable",
        trials=4,
        testTrials=0,
        lammps={"configMapRef": {"name": "lj-input", "key": "in.lj"}, "vars": {"steps": "200"}},
    )
    assert op.apply(doc).returncode == 0

    def two_running() -> bool:
        return sum(t["state"] == "Running" for t in op.status("pausable").get("trials", [])) == 2

    op.wait_for("two runs in flight", two_running)
    ids = [t["jobId"] for t in op.status("pausable")["trials"] if t["state"] == "Running"]
    op.kubectl(
        "patch", "lammpssweep", "pausable", "--type=merge", "-p", '{"spec":{"suspend":true}}'
    )
    op.wait_for("Suspended", lambda: op.status("pausable").get("phase") == "Suspended")
    local = LocalScheduler(op.jobs_root("pausable"), max_parallel=2)
    import asyncio

    assert {s.state for s in asyncio.run(local.poll(ids)).values()} == {JobState.CANCELLED}
    submitted = op.status("pausable")["submitted"]
    time.sleep(2)
    assert op.status("pausable")["submitted"] == submitted  # nothing new while suspended
    assert op.status("pausable")["failed"] == 0  # a suspension is not a failure
    gate.touch()
    op.kubectl(
        "patch", "lammpssweep", "pausable", "--type=merge", "-p", '{"spec":{"suspend":false}}'
    )
    op.wait_for("the sweep to finish", lambda: op.status("pausable").get("phase") == "Succeeded")
    status = op.status("pausable")
    assert status["succeeded"] == 4 and status["failed"] == 0
    # the input came from the ConfigMap: the jobs read the materialised copy
    workdir = op.jobs_root("pausable").parent
    assert (workdir / "input" / "in.lj").read_text() == lj
    assert all("--input-dir" in json.loads(p.read_text())["command"]
               for p in op.jobs_root("pausable").glob("*/job.json"))  # fmt: skip


def test_an_edited_input_reaches_the_runs_submitted_after_the_edit(operator: Operator) -> None:
    """``kubectl edit`` of a running sweep's script: the runs submitted from then on get the new
    script, the run in flight keeps its copy (the operator once applied an edit only when it
    happened to restart)."""
    op = operator
    assert op.apply(STREAMMODEL).returncode == 0
    lj, gate = gated_input(op.root, "edited")
    doc = sweep("edited", trials=3, testTrials=0, parallelism=1,
                lammps={"input": lj, "vars": {"steps": "20"}})  # fmt: skip
    assert op.apply(doc).returncode == 0

    def copies() -> list[Path]:
        return sorted(op.sweeps_dir.glob("edited-*/trials/*/run/input.lammps"))

    def snapshot() -> str:
        return next(op.sweeps_dir.glob("edited-*/input/input.lammps")).read_text()

    edited = f"# edited mid-sweep\n{lj}"
    try:
        op.wait_for("the first run to copy its input", lambda: len(copies()) == 1)
        patch = json.dumps({"spec": {"lammps": {"input": edited}}})
        op.kubectl("patch", "lammpssweep", "edited", "--type=merge", "-p", patch)
        op.wait_for("the snapshot to take the edit", lambda: snapshot() == edited)
    finally:
        gate.touch()  # the run in flight ends whatever happened
    op.wait_for("the sweep to finish", lambda: op.status("edited").get("phase") == "Succeeded")
    status = op.status("edited")
    assert status["succeeded"] == 3 and status["failed"] == 0
    scripts = [p.read_text() for p in copies()]
    assert scripts == [lj, edited, edited]


def test_configmap_keys_are_the_trials_files(operator: Operator) -> None:
    """A script that reads a data file and includes a potential, all keys of one ConfigMap: the
    old operator gave each trial the script alone ("Cannot open file data.lj")."""
    op = operator
    assert op.apply(STREAMMODEL).returncode == 0
    files = {name: (LJ_DATA / name).read_text() for name in ("in.lj-data", "data.lj", "pair.lj")}
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "lj-data"},
                 "data": files}  # fmt: skip
    assert op.apply(configmap).returncode == 0
    ref = {"name": "lj-data", "key": "in.lj-data", "files": ["data.lj", "pair.lj"]}
    cells = [{"name": n, "type": "int", "min": 1, "max": 2} for n in ("nx", "ny", "nz")]
    doc = sweep("withdata", parameters=cells, trials=3, testTrials=0, maxFailures=0,
                lammps={"configMapRef": ref, "vars": {"steps": "20"}})  # fmt: skip
    assert op.apply(doc).returncode == 0

    def done() -> bool:
        return op.status("withdata").get("phase") in ("Succeeded", "Failed")

    op.wait_for("the sweep with data files to finish", done)
    status = op.status("withdata")
    assert status["phase"] == "Succeeded", [t.get("reason") for t in status["trials"]]
    assert status["succeeded"] == 3 and status["failed"] == 0
    run_dirs = list(op.sweeps_dir.glob("withdata-*/trials/*/run"))
    assert len(run_dirs) == 3 and all((d / "data.lj").is_file() for d in run_dirs)


def test_an_input_file_outside_the_allowed_roots_is_an_invalid_spec(operator: Operator) -> None:
    """The old operator ran LAMMPS on any file it could read (say a mounted Secret) and put the
    ERROR line quoting its first line into the status, readable with kubectl."""
    op = operator
    assert op.apply(STREAMMODEL).returncode == 0
    secret = op.root / "mounted-secret"
    secret.write_text("hunter2-5e1d-not-a-real-token\n")
    assert op.apply(sweep("peek", trials=1, testTrials=0, maxFailures=0,
                          lammps={"inputFile": str(secret)})).returncode == 0  # fmt: skip
    op.wait_for("peek to fail", lambda: op.status("peek").get("phase") == "Failed", timeout=120)
    status = op.status("peek")
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "InvalidSpec" and "lammps.inputFile" in ready["message"]
    assert "outside the allowed input roots" in ready["message"]
    assert "hunter2" not in json.dumps(op.get("lammpssweep", "peek"))
    assert status.get("submitted", 0) == 0


@pytest.mark.parametrize("name", ["lammpssweep.yaml", "adaptive/lammpssweep.yaml"])
def test_the_samples_are_accepted_by_the_api_server(operator: Operator, name: str) -> None:
    sample = SAMPLES / name
    out = operator.kubectl("apply", "--dry-run=server", "-o", "json", "-f", str(sample))
    applied = json.loads(out)
    written = yaml.safe_load(sample.read_text())
    for key, value in written["spec"].items():  # nothing pruned (the schema adds defaults)
        assert _within(value, applied["spec"].get(key)), key


def _within(written: Any, applied: Any) -> bool:
    """Every field written is in ``applied`` with its value (defaults may be added)."""
    if isinstance(written, dict):
        return isinstance(applied, dict) and all(
            _within(v, applied.get(k)) for k, v in written.items()
        )
    return bool(written == applied)


def test_the_adaptive_sample_stops_at_its_target_across_an_operator_kill(
    operator: Operator,
) -> None:
    """config/samples/adaptive/, smaller, with the atom count as the target: the sample's
    atoms-bayesian model (the cell product and a bias) learns it exactly, so the held-out R²
    reaches the target after a few training runs whatever the machine's load."""
    op = operator
    model = yaml.safe_load((SAMPLES / "streammodel.yaml").read_text())
    doc = yaml.safe_load((SAMPLES / "adaptive" / "lammpssweep.yaml").read_text())
    spec = doc["spec"]
    spec.update(trials=20, testTrials=3)
    spec["sampling"].update(warmup=3, candidates=80)
    spec["stopWhen"].update(threshold=0.99, consecutive=3)
    spec["lammps"].update(target="atoms", vars={"steps": "1000"})
    assert op.apply(model).returncode == 0
    assert op.apply(doc).returncode == 0
    name = doc["metadata"]["name"]
    op.wait_for("a recorded choice", lambda: bool(op.status(name).get("chosen")), timeout=600)
    op.kill()  # after the first choices, before the target held
    mid = op.status(name)
    assert mid["phase"] == "Running" and mid.get("runsToTarget") is None, mid
    op.start()
    op.wait_for("the sweep to finish", lambda: op.status(name).get("phase") == "Succeeded")
    status = op.status(name)
    trials = status["trials"]
    assert [t["role"] for t in trials[:3]] == ["test"] * 3  # the held-out runs first
    names = op.job_names(name)
    assert len(names) == len(set(names)) == status["submitted"]  # no trial twice
    # the choices made before the kill were replayed; each chosen run ran its candidate
    assert status["chosen"][: len(mid["chosen"])] == mid["chosen"]
    assert len(status["chosen"]) == len(set(status["chosen"]))
    assert [d["trial"] for d in status["decisions"]] == list(range(3, 3 + len(status["chosen"])))
    conds = {c["type"]: c for c in status["conditions"]}
    assert conds["TargetReached"]["status"] == "True", conds
    checks = status["heldOutChecks"]
    assert [c["holds"] for c in checks[-3:]] == [True] * 3
    assert status["runsToTarget"] == checks[-1]["trials"]
    learned = sum(t["role"] == "train" and t["state"] == "Succeeded" for t in trials)
    assert status["runsToTarget"] <= learned < spec["trials"]  # stopped inside the budget
    assert server_learns(op, "atoms-bayesian", "lammps-time") == learned
    table = op.kubectl("get", "lammpssweep", name)
    assert "adaptive" in table and f"{learned}/20" in table
