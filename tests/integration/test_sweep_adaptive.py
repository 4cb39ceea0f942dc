"""Adaptive sampling end to end: a real model server process, real ``lmp``, ``streamml sweep``.

The server answers a batch predict with ``"uncertainty": true`` with each model's predictive
standard deviation (BayesianLinearRegression) or none (the others), keeping nothing for a label;
an adaptive sweep's driver killed with SIGKILL after its first choices resumes from its state
file, replays the recorded choices and submits no trial twice.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamml.sweep.design import adaptive_design
from streamml.sweep.spec import load_sweep_file
from tests.fixtures.server import ServerProcess, create_models, learn_calls
from tests.fixtures.sweeps import sweep_doc
from tests.integration.test_sweep_cli import clean_env, job_dirs, sweep_cmd

pytestmark = [pytest.mark.integration]

MODELS: list[dict[str, Any]] = [
    {"name": "bayes", "pipeline": [{"class": "preprocessing.StandardScaler"},
                                   {"class": "linear_model.BayesianLinearRegression"}]},
    {"name": "linear", "pipeline": [{"class": "preprocessing.StandardScaler"},
                                    {"class": "linear_model.LinearRegression"}]},
]  # fmt: skip


async def _post(server: ServerProcess, body: dict[str, Any]) -> tuple[int, Any]:
    import aiohttp

    url = f"{server.url}/api/predict/batch/"
    headers = server.auth_header()
    async with aiohttp.ClientSession(headers=headers) as session, session.post(url, json=body) as r:
        return r.status, await r.json()


async def test_batch_predict_gives_the_predictive_std_and_keeps_nothing(
    model_server: ServerProcess,
) -> None:
    from streamml.client.api import ModelServerClient

    await create_models(model_server, MODELS)
    async with ModelServerClient(
        model_server.url, username=model_server.username, token=model_server.token
    ) as client:
        for x in (1.0, 2.0, 3.0, 4.0):
            await client.learn({"x": x}, 2 * x + 1, models=["bayes", "linear"])
        near, far = {"features": {"x": 2.5}}, {"features": {"x": 40.0}}
        bayes = await client.predict_batch([near, far], model="bayes", uncertainty=True)
        linear = await client.predict_batch([near, far], model="linear", uncertainty=True)
        before = await client.stats("bayes")
    assert all(p.identifier is None for p in bayes + linear)
    assert bayes[0].std is not None and bayes[1].std is not None
    assert 0 < bayes[0].std < bayes[1].std  # less sure far from the data
    assert linear[0].std is None and isinstance(linear[0].prediction, float)
    # without the flag: riverapi's reply, identifiers kept for labels, no std key
    status, plain = await _post(model_server, {"model": "bayes", "samples": [near]})
    assert status == 200 and set(plain["predictions"][0]) == {"prediction", "identifier"}
    assert isinstance(plain["predictions"][0]["identifier"], str)
    # a look waits for no label: an identifier with it is refused, naming the field
    status, refused = await _post(
        model_server,
        {"model": "bayes", "uncertainty": True, "samples": [{**near, "identifier": "a"}]},
    )
    assert status == 400 and "samples[0].identifier" in json.dumps(refused)
    status, refused = await _post(
        model_server, {"model": "bayes", "uncertainty": "yes", "samples": [near]}
    )
    assert status == 400 and "uncertainty" in json.dumps(refused)
    assert before.learn.n_calls == 4


@pytest.mark.lammps
async def test_adaptive_sweep_resumes_after_sigkill_without_a_duplicate(
    model_server: ServerProcess, tmp_path: Path, lammps_bin: str
) -> None:
    await create_models(model_server, MODELS)
    doc = sweep_doc(
        "adaptive",
        "unused-by-the-cli",
        parameters=[
            {"name": "nx", "type": "int", "min": 4, "max": 9},
            {"name": "ny", "type": "int", "min": 4, "max": 9},
            {"name": "nz", "type": "int", "min": 4, "max": 5},
        ],
        sampling={"method": "adaptive", "seed": 3, "warmup": 3, "candidates": 30,
                  "acquisition": "uncertaintyPerCost", "costModel": "linear"},
        trials=8,
        testTrials=2,
        parallelism=2,
        lammps={"vars": {"steps": "1500"}},
    )  # fmt: skip
    file = tmp_path / "sweep.yaml"
    file.write_text(yaml.safe_dump(doc))
    workdir = tmp_path / "wd"
    state_file = workdir / "state.json"
    cmd = sweep_cmd(file, model_server.url, workdir, model_server.username, model_server.token)
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env())
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not _chosen(state_file):
            assert first.poll() is None, first.communicate()
            time.sleep(0.1)
        assert _chosen(state_file), "no choice was recorded"
    finally:
        first.kill()  # SIGKILL: a crash; the jobs in flight keep running (detached)
        first.communicate()
    killed = json.loads(state_file.read_text())
    assert killed["phase"] == "Running" and killed["succeeded"] < 10
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=clean_env())
    assert done.returncode == 0, done.stderr
    state = json.loads(state_file.read_text())
    assert state["phase"] == "Succeeded" and state["succeeded"] == 10
    names = job_dirs(workdir)
    assert len(names) == len(set(names)) == 10 == state["submitted"]  # no trial twice
    for model in ("bayes", "linear"):
        assert await learn_calls(model_server, model) == 8
    # the choices made before the kill were replayed, not made again
    assert state["chosen"][: len(killed["chosen"])] == killed["chosen"]
    assert len(state["chosen"]) == 5 == len(set(state["chosen"]))
    decisions = state["decisions"]
    assert [d["trial"] for d in decisions] == list(range(3, 8))
    assert {d["basis"] for d in decisions} == {"sigma"}
    assert all(d["cost"] is not None and d["cost"] > 0 for d in decisions)
    # every chosen run ran its recorded candidate
    _, spec = load_sweep_file(file)
    pool = adaptive_design(spec).pool
    params = {t["id"]: t["params"] for t in state["trials"]}
    for step, candidate in enumerate(state["chosen"]):
        want = {k: str(v) for k, v in pool[candidate].items()}
        assert params[3 + step] == want


def _chosen(state_file: Path) -> list[int]:
    try:
        return list(json.loads(state_file.read_text()).get("chosen") or [])
    except (FileNotFoundError, ValueError):
        return []
