"""Learning quality: held-out R² of every sample model next to the offline ceiling.

For each seed: a fresh ``streamml serve`` with the models of ``config/samples/streammodel.yaml``,
then ``streamml sweep config/samples/lammpssweep.yaml`` (real LAMMPS LJ runs on the local
scheduler, the sample's sampling seed replaced), then the evaluation of the held-out runs
(:mod:`streamml.clients.evaluation`): per model MAE/RMSE/R², and the ceiling, an offline
least-squares fit of runtime on atom count over the same training runs.

    .venv/bin/python benchmarks/learning_quality.py --seeds 42 7 11
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from streamml import procs
from streamml.client.api import ModelServerClient
from streamml.clients.evaluation import evaluate, format_evaluation, trials_from_sweep_status
from streamml.procs import free_port
from streamml.pycommand import streamml_command
from streamml.vocabulary.modelspec import ModelSpec

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "config" / "samples"


def _wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("server exited")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("server not ready")


async def _create_models(url: str, user: str, token: str, specs: list[ModelSpec]) -> None:
    async with ModelServerClient(url, username=user, token=token) as client:
        for spec in specs:
            await client.create_model(spec)


def sample_sweep(
    samples: Path,
    work: Path,
    *,
    seed: int,
    trials: int | None = None,
    test_trials: int | None = None,
) -> tuple[dict[str, Any], float]:
    """A sample's sweep (``samples``: its streammodel.yaml and lammpssweep.yaml) run by the CLI
    against a fresh ``streamml serve`` holding the sample's models: the sweep's final state and
    the sweep's wall seconds."""
    model_doc = yaml.safe_load((samples / "streammodel.yaml").read_text())
    specs = [ModelSpec.model_validate(m) for m in model_doc["spec"]["models"]]
    sweep_doc = yaml.safe_load((samples / "lammpssweep.yaml").read_text())
    sweep_doc["spec"]["sampling"]["seed"] = seed
    if trials:
        sweep_doc["spec"]["trials"] = trials
    if test_trials:
        sweep_doc["spec"]["testTrials"] = test_trials
    sweep_doc["spec"]["streamModelRef"]["name"] = model_doc["metadata"]["name"]
    work.mkdir(parents=True)
    sweep_file = work / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump(sweep_doc))
    token = secrets.token_urlsafe(16)
    (work / "token").write_text(token)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = procs.popen(
        [
            *streamml_command("serve", "--port", str(port)),
            *("--data-dir", str(work / "data"), "--auth-user", "bench"),
            *("--auth-token-file", str(work / "token")),
        ],
        stdout=(work / "server.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_ready(url, server)
        asyncio.run(_create_models(url, "bench", token, specs))
        started = time.monotonic()
        procs.run(
            [
                *streamml_command("sweep", str(sweep_file), "--server", url),
                *("--username", "bench", "--token-file", str(work / "token")),
                *("--workdir", str(work / "sweep"), "--no-progress"),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        elapsed = time.monotonic() - started
    finally:
        server.terminate()
        server.wait(timeout=30)
    return json.loads((work / "sweep" / "state.json").read_text()), elapsed


def one_seed(seed: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    status, elapsed = sample_sweep(
        SAMPLES, work, seed=seed, trials=args.trials, test_trials=args.test_trials
    )
    evaluation = evaluate(trials_from_sweep_status(status))
    print(f"\n== seed {seed} ({elapsed:.0f} s)")
    print(format_evaluation(evaluation))
    return {"seed": seed, "seconds": round(elapsed, 1), **evaluation.as_dict()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 7, 11])
    parser.add_argument("--trials", type=int)
    parser.add_argument("--test-trials", type=int)
    parser.add_argument(
        "--json", type=Path, default=ROOT / "benchmarks" / "results" / "learning_quality.json"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lq-") as tmp:
        runs = [one_seed(seed, args, Path(tmp) / f"seed-{seed}") for seed in args.seeds]
    print("\n| seed | ceiling R² | best model | best R² | gap | linear R² | bayesian R² |")
    print("|---|---|---|---|---|---|---|")
    for run in runs:
        models = run["models"]
        ceiling = run["ceiling"]["R2"] if run["ceiling"] else float("nan")
        best = run["best"] or {"model": "-", "R2": float("nan")}
        raw = {
            name: models.get(name, {}).get("R2", float("nan")) for name in ("linear", "bayesian")
        }
        print(
            f"| {run['seed']} | {ceiling:.3f} | {best['model']} | {best['R2']:.3f} | "
            f"{best['R2'] - ceiling:+.3f} | {raw['linear']:.3f} | {raw['bayesian']:.3f} |"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(runs, indent=2))
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
