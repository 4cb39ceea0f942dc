"""Equation-of-state surrogates: held-out R² and MAE per target per model, against the ceiling.

For each seed and each number N of training runs: a fresh ``streamml serve`` with the models of
``config/samples/eos/streammodel.yaml``, then ``streamml sweep config/samples/eos/lammpssweep.yaml``
(real LAMMPS LJ fluid runs on the local scheduler; the sample's seed and trial count replaced,
its 10 held-out runs kept), then per target (pressure, pe_per_atom, cost) the held-out scores of
the target's models and the offline ceiling: an ordinary least-squares fit of the target on the
same degree-2 polynomial features of (rho, t) over the same training runs
(:func:`streamml.clients.evaluation.polynomial_ceiling`).

    nice -n 19 .venv/bin/python -P benchmarks/eos_quality.py --seeds 11 7 42 --trials 20 40 80
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from streamml.clients.evaluation import evaluate, polynomial_ceiling, trials_from_sweep_status

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "config" / "samples" / "eos"
sys.path.insert(0, str(ROOT / "benchmarks"))

from learning_quality import sample_sweep  # noqa: E402


def one_sweep(seed: int, trials: int, work: Path) -> dict[str, Any]:
    status, elapsed = sample_sweep(SAMPLE, work, seed=seed, trials=trials)
    targets: dict[str, Any] = {}
    for entry in status["evaluationByTarget"]:
        report = evaluate(trials_from_sweep_status(status, entry["target"]), polynomial_ceiling)
        targets[entry["target"]] = report.as_dict()
    return {"seed": seed, "trials": trials, "seconds": round(elapsed, 1), "targets": targets}


def table(runs: list[dict[str, Any]]) -> str:
    lines = [
        "| seed | N | target | model | R² | MAE | ceiling R² | ceiling MAE | gap R² |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        for target, report in run["targets"].items():
            ceiling = report["ceiling"] or {"R2": float("nan"), "MAE": float("nan")}
            for model, s in sorted(report["models"].items()):
                lines.append(
                    f"| {run['seed']} | {run['trials']} | {target} | {model} | {s['R2']:.4f} | "
                    f"{s['MAE']:.4g} | {ceiling['R2']:.4f} | {ceiling['MAE']:.4g} | "
                    f"{s['R2'] - ceiling['R2']:+.4f} |"
                )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[11, 7, 42])
    parser.add_argument("--trials", type=int, nargs="+", default=[20, 40, 80])
    parser.add_argument(
        "--json", type=Path, default=ROOT / "benchmarks" / "results" / "eos_quality.json"
    )
    parser.add_argument("--keep", type=Path, help="keep the sweeps' work directories here")
    args = parser.parse_args()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="eos-") as tmp:
        base = args.keep or Path(tmp)
        for seed in args.seeds:
            for trials in args.trials:
                runs.append(one_sweep(seed, trials, base / f"seed-{seed}-n{trials}"))
                print(f"seed {seed}, N {trials}: {runs[-1]['seconds']} s", flush=True)
    print(table(runs))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(runs, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
