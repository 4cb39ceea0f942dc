"""Campaign cost to a held-out target: random vs Latin hypercube (vs adaptive, when present).

Real LAMMPS (the packaged LJ melt, ``in.lj``: nx, ny, nz whole fcc cells, ``steps`` fixed) is run
ONCE per point, in this benchmark run, for three sets drawn from one space:

* a candidate **pool** (``--pool`` points, uniform): every strategy picks its runs from it, and
  the pool is also the large **reference training set** of the offline ceiling;
* a **held-out** set (``--held-out`` points), shared by every strategy and seed;
* the **ceiling**: ordinary least squares of ``cpu_time`` on the atom count fitted on the pool,
  scored (R²) on the held-out set, as the README's ceiling is. Target = ceiling - ``--margin``.

Each strategy x seed then replays a campaign against a REAL model server (fresh models, learn
and batch predict over HTTP): it learns the pool runs it picks one by one (their measured
``cpu_time``), predicts the held-out set every ``--check-every`` runs and stops once the best
model's held-out R² has reached the target and stayed there ``--hold`` checks in a row. Its cost
is the sum of the measured core-seconds (``cpu_time`` x 1 rank) of the runs it picked, counted
up to the first of those checks, and the runs learned by then.

* random: a seeded permutation of the pool;
* latinHypercube: the project's own seeded LHS plan (:func:`streamml.sweep.sampling.plan`), each
  point snapped to the nearest unused pool point (normalised coordinates);
* adaptive: ``streamml.sweep.acquisition`` (issue 11 item 1) when the branch has it, picking
  from the unused pool; otherwise the row says it was skipped and why. One row per acquisition
  (``--acquisitions``): ``uncertaintyPerCost`` (the verdict's) and ``uncertainty``.

The models see what an adaptive sweep's models see: the parameters (``lammps.features: vars``;
a candidate's atom count is not known before it runs). ``--models`` picks the StreamModel:

* ``sample``: ``atoms-bayesian`` and ``poly-bayesian`` of ``config/samples/streammodel.yaml``.
  ``atoms-bayesian`` IS the ceiling's model (the cell product and a bias), so two runs teach it
  the law and every strategy reaches the target within a few runs;
* ``generic``: ``poly-bayesian`` only, the degree-3 interaction polynomial of the cell counts
  (8 coefficients): what a user writes who does not know the cost law. It must learn the law
  from the runs, which is where the choice of runs can matter.

Also the planning overhead per trial: a precomputed plan (the LHS ``plan`` call amortised over
its trials) against adaptive planning (per pick), p50/p95.

    .venv/bin/python -P benchmarks/campaign_bench.py            # full size
    .venv/bin/python -P benchmarks/campaign_bench.py --pool 16 --held-out 6 --seeds 2  # smoke

``--reuse FILE`` replays the pool and held-out measurements of an earlier result instead of
running LAMMPS (to explore options; the recorded figures come from runs that measured).

Prints a table and writes ``benchmarks/results/campaign.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.append(str(Path(__file__).resolve().parents[1]))  # tests.fixtures (after the stdlib)

from streamml import procs
from streamml.clients.lammps import parse_log
from streamml.sweep import jobs
from streamml.sweep.sampling import plan
from streamml.vocabulary.lammpssweep import LammpsSweepSpec
from streamml.vocabulary.modelspec import ModelSpec
from streamml.vocabulary.sweepstatus import HeldOutResult

RESULTS = Path(__file__).parent / "results" / "campaign.json"
IN_LJ = Path(__file__).parents[1] / "clients" / "inputs" / "in.lj"
#: the space: three cell counts (the cost grows with their product: ~0.2 s to ~3 s per run at
#: 1000 steps)
SPACE = {"nx": (4, 14), "ny": (4, 14), "nz": (4, 12)}
SAMPLE_MODELS: list[dict[str, Any]] = [
    {"name": "atoms-bayesian", "pipeline": [
        {"class": "feature_extraction.PolynomialExtender",
         "params": {"degree": 3, "interaction_only": True, "include_bias": True}},
        {"class": "compose.Select", "params": {"keys": ["nx*ny*nz", "bias"]}},
        {"class": "linear_model.BayesianLinearRegression", "params": {"alpha": 1, "beta": 10000}}]},
    {"name": "poly-bayesian", "pipeline": [
        {"class": "feature_extraction.PolynomialExtender",
         "params": {"degree": 3, "interaction_only": True, "include_bias": True}},
        {"class": "linear_model.BayesianLinearRegression"}]},
]  # fmt: skip
Point = dict[str, int]


# -- measuring real LAMMPS ---------------------------------------------------------------------


def measure(
    point: Point, steps: int, lmp: str, cache: dict[str, dict[str, float]]
) -> dict[str, float]:
    """One real LAMMPS run of ``point`` (cached per point within this benchmark run)."""
    key = json.dumps(point, sort_keys=True)
    if key in cache:
        return cache[key]
    with tempfile.TemporaryDirectory(prefix="campaign-") as work:
        args = [lmp, "-in", str(IN_LJ), "-log", "log.lammps", "-screen", "none"]
        for name, value in {**point, "steps": steps}.items():
            args += ["-var", name, str(value)]
        procs.run(args, cwd=work, check=True, timeout=600, capture_output=True)
        metrics = parse_log((Path(work) / "log.lammps").read_text())
    assert metrics.cpu_time is not None, "the log reports no CPU use"
    cache[key] = {"cpu_time": metrics.cpu_time, "atoms": float(metrics.atoms)}
    return cache[key]


def draw(n: int, rng: random.Random) -> list[Point]:
    return [{k: rng.randint(lo, hi) for k, (lo, hi) in SPACE.items()} for _ in range(n)]


def features(point: Point) -> dict[str, float]:
    """What the models see: the parameters (an adaptive sweep's ``lammps.features: vars``)."""
    return {k: float(v) for k, v in point.items()}


def model_set(name: str) -> tuple[list[dict[str, Any]], str]:
    """The StreamModel's models (``--models``) and the one that predicts the cost."""
    if name == "sample":
        return SAMPLE_MODELS, "atoms-bayesian"
    return [m for m in SAMPLE_MODELS if m["name"] == "poly-bayesian"], "poly-bayesian"


def least_squares_r2(
    train: Sequence[tuple[float, float]], test: Sequence[tuple[float, float]]
) -> float:
    """R² on ``test`` of y = a + b x fitted on ``train`` ((x, y) pairs)."""
    mx = statistics.fmean(x for x, _ in train)
    my = statistics.fmean(y for _, y in train)
    b = sum((x - mx) * (y - my) for x, y in train) / sum((x - mx) ** 2 for x, _ in train)
    a = my - b * mx
    mean = statistics.fmean(y for _, y in test)
    sse = sum((y - (a + b * x)) ** 2 for x, y in test)
    return 1 - sse / sum((y - mean) ** 2 for _, y in test)


# -- strategies: the order of pool points a campaign learns ------------------------------------

Chooser = Callable[[list[int], list[int]], int]  # (unused pool indices, learned) -> next index


def random_order(pool: list[Point], seed: int) -> list[int]:
    order = list(range(len(pool)))
    random.Random(seed).shuffle(order)
    return order


def _unit(point: Point) -> list[float]:
    return [(point[k] - lo) / max(hi - lo, 1) for k, (lo, hi) in SPACE.items()]


def lhs_order(pool: list[Point], seed: int) -> tuple[list[int], float]:
    """The project's LHS plan snapped to the pool; also the plan's seconds per trial."""
    spec = LammpsSweepSpec.model_validate({
        "streamModelRef": {"name": "m"}, "trials": len(pool), "sampling":
        {"method": "latinHypercube", "seed": seed},
        "parameters": [{"name": k, "type": "int", "min": lo, "max": hi}
                       for k, (lo, hi) in SPACE.items()]})  # fmt: skip
    started = time.perf_counter()
    planned = plan(spec)
    per_trial = (time.perf_counter() - started) / len(pool)
    unused, order = set(range(len(pool))), []
    for p in planned:
        target = _unit({k: int(p[k]) for k in SPACE})  # type: ignore[call-overload]
        best = min(sorted(unused), key=lambda i: math.dist(_unit(pool[i]), target))
        unused.discard(best)
        order.append(best)
    return order, per_trial


def adaptive_available() -> str | None:
    """None when issue 11 item 1's acquisition is on this branch, else why it is not."""
    try:
        from streamml.sweep import acquisition  # noqa: F401
        from streamml.vocabulary.replies import BatchPrediction
    except ImportError:
        return "streamml.sweep.acquisition is not on this branch (h-adaptive not merged)"
    if "std" not in BatchPrediction.model_fields:
        return "the server's batch predict gives no predictive std on this branch"
    return None


def _parameters() -> list[Any]:
    from streamml.vocabulary.lammpssweep import Parameter

    return [Parameter(name=k, type="int", min=lo, max=hi) for k, (lo, hi) in SPACE.items()]


class Adaptive:
    """uncertaintyPerCost over the unused pool (issue 11 item 1's acquisition functions): the
    models' predictive std (or disagreement) per predicted cost, one pick per trial; the
    warm-up is the first ``warmup`` points of the seed's LHS order. Times each decision."""

    def __init__(
        self, pool: list[Point], warm: list[int], cost_model: str, acquisition: str
    ) -> None:
        self.pool, self.warm, self.cost_model = pool, warm, cost_model
        self.acquisition = acquisition
        self.seconds: list[float] = []

    async def next(self, client: Any, names: list[str], learned: list[int]) -> int:
        from streamml.sweep import acquisition

        if len(learned) < len(self.warm):
            return self.warm[len(learned)]
        started = time.perf_counter()
        left = [i for i in range(len(self.pool)) if i not in set(learned)]
        samples = [{"features": features(self.pool[i])} for i in left]
        forecasts = {}
        for name in names:
            replies = await client.predict_batch(samples, model=name, uncertainty=True)
            forecasts[name] = acquisition.Forecast(
                mean=[_float(r.prediction) for r in replies], std=[r.std for r in replies]
            )
        params = _parameters()
        coords = acquisition.coordinates([self.pool[i] for i in left], params)  # type: ignore[arg-type]
        run = acquisition.coordinates([self.pool[i] for i in learned], params)  # type: ignore[arg-type]
        uncertain, _ = acquisition.uncertainty(forecasts, coords, run)
        cost = None
        if self.acquisition == "uncertaintyPerCost":
            # the campaign's models carry its tag: TAG-NAME
            mine = [m for m in names if m.endswith(f"-{self.cost_model}")]
            assert len(mine) == 1, (names, self.cost_model)
            cost = acquisition.costs(forecasts[mine[0]], len(left))
        best = acquisition.pick(acquisition.scores(uncertain, cost), coords, 1, [])[0]
        self.seconds.append(time.perf_counter() - started)
        return left[best]


def _float(value: Any) -> float | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


# -- one campaign against the real server ------------------------------------------------------


async def campaign(
    client: Any, tag: str, pool: list[Point], runs: list[dict[str, float]],
    order: list[int] | Adaptive, held_out: list[HeldOutResult], target: float,
    args: argparse.Namespace,
) -> dict[str, Any]:  # fmt: skip
    names = []
    for data in model_set(args.models)[0]:
        spec = ModelSpec.model_validate({**data, "name": f"{tag}-{data['name']}"})
        await client.create_model(spec)
        names.append(spec.name)
    samples = [{"features": dict(r.features or {})} for r in held_out]
    checks: list[dict[str, Any]] = []
    spent = 0.0
    learned: list[int] = []
    for n in range(1, len(pool) + 1):
        index = (
            order[n - 1] if isinstance(order, list) else await order.next(client, names, learned)
        )
        learned.append(index)
        run = runs[index]
        spent += run["cpu_time"]
        x = features(pool[index])
        await client.learn(x, run["cpu_time"], models=names, identifier=f"{tag}/{index}")
        if n % args.check_every and n != len(pool):
            continue
        for name in names:
            replies = await client.predict_batch(samples, model=name)
            for r, reply in zip(held_out, replies, strict=True):
                r.predictions[name] = float(reply.prediction)
        best = max((e.r2 for e in jobs.evaluate(held_out) if e.r2 is not None), default=-math.inf)
        checks.append({"trials": n, "core_seconds": round(spent, 4), "r2": best})
        streak = checks[-args.hold :]
        if len(streak) == args.hold and all(c["r2"] >= target for c in streak):
            first = streak[0]
            return {"reached": True, "trials": first["trials"],
                    "core_seconds": first["core_seconds"], "checks": checks}  # fmt: skip
    return {"reached": False, "trials": None, "core_seconds": None, "checks": checks}


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    cost = [r["core_seconds"] for r in rows if r["reached"]]
    trials = [r["trials"] for r in rows if r["reached"]]
    return {
        "reached": f"{len(cost)}/{len(rows)}",
        "core_seconds_median": statistics.median(cost) if cost else None,
        "core_seconds_min": min(cost, default=None),
        "core_seconds_max": max(cost, default=None),
        "trials_median": statistics.median(trials) if trials else None,
        "trials_min": min(trials, default=None),
        "trials_max": max(trials, default=None),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from streamml.client.api import ModelServerClient
    from tests.fixtures.server import running_server

    started = time.perf_counter()
    if args.reuse is not None:
        earlier = json.loads(args.reuse.read_text())
        pool, held = earlier["pool_points"], earlier["held_out_points"]
        runs, held_runs = earlier["pool_runs"], earlier["held_out_runs"]
    else:
        rng = random.Random(args.seed)
        pool, held = draw(args.pool, rng), draw(args.held_out, rng)
        cache: dict[str, dict[str, float]] = {}
        runs = [measure(p, args.steps, args.lmp, cache) for p in pool]
        held_runs = [measure(p, args.steps, args.lmp, cache) for p in held]
    measuring_s = time.perf_counter() - started
    ceiling = least_squares_r2(
        [(r["atoms"], r["cpu_time"]) for r in runs],
        [(r["atoms"], r["cpu_time"]) for r in held_runs],
    )
    target = ceiling - args.margin
    strategies: dict[str, list[dict[str, Any]]] = {"random": [], "latinHypercube": []}
    plan_s: list[float] = []
    adaptive_note = adaptive_available()
    adaptive_s: list[float] = []
    acquisitions = args.acquisitions.split(",") if adaptive_note is None else []
    for acq in acquisitions:
        strategies[f"adaptive-{acq}"] = []
    cost_model = model_set(args.models)[1]
    with (
        tempfile.TemporaryDirectory(prefix="campaign-server-") as data,
        running_server(Path(data)) as server,
    ):
        async with ModelServerClient(
            server.url, username=server.username, token=server.token, timeout=60
        ) as client:
            for seed in range(args.seeds):
                lhs, per_trial = lhs_order(pool, seed)
                plan_s.append(per_trial)
                orders: dict[str, list[int] | Adaptive] = {
                    "random": random_order(pool, seed),
                    "latinHypercube": lhs,
                }
                for acq in acquisitions:
                    warm = lhs[: args.warmup]
                    orders[f"adaptive-{acq}"] = Adaptive(pool, warm, cost_model, acq)
                for name, order in orders.items():
                    held_out = [
                        HeldOutResult(id=i, target=r["cpu_time"], features=features(p))
                        for i, (p, r) in enumerate(zip(held, held_runs, strict=True))
                    ]
                    row = await campaign(
                        client,
                        f"{args.models}-{name.lower()}-s{seed}",
                        pool,
                        runs,
                        order,
                        held_out,
                        target,
                        args,
                    )
                    strategies[name].append({"seed": seed, **row})
                    if isinstance(order, Adaptive):
                        adaptive_s += order.seconds
    return {
        "command": "benchmarks/campaign_bench.py " + " ".join(args.argv),
        "load": os.getloadavg(),
        "space": SPACE, "steps": args.steps, "pool": len(pool), "held_out": len(held),
        "models": args.models, "warmup": args.warmup, "reused": str(args.reuse or ""),
        "seeds": args.seeds, "check_every": args.check_every, "hold": args.hold,
        "measuring_s": round(measuring_s, 1),
        "pool_cpu_time": {"min": min(r["cpu_time"] for r in runs),
                          "max": max(r["cpu_time"] for r in runs),
                          "sum": sum(r["cpu_time"] for r in runs)},
        "ceiling_r2": ceiling, "target_r2": target,
        "summary": {k: _summary(v) for k, v in strategies.items()},
        "adaptive": adaptive_note or "measured",
        "verdict": verdict(strategies),
        "planning_per_trial_s": {"precomputed_p50": _quantile(plan_s, 0.5),
                                 "precomputed_p95": _quantile(plan_s, 0.95),
                                 "adaptive_p50": _quantile(adaptive_s, 0.5),
                                 "adaptive_p95": _quantile(adaptive_s, 0.95)},
        "runs": strategies,
        "pool_points": pool, "held_out_points": held,
        "pool_runs": runs, "held_out_runs": held_runs,
    }  # fmt: skip


def verdict(strategies: dict[str, list[dict[str, Any]]]) -> dict[str, Any] | None:
    """The issue's target: adaptive's (uncertaintyPerCost) median core-seconds <= 0.6 x Latin
    hypercube's, and on no seed more than 1.1 x Latin hypercube's (a seed that never reached
    counts as a miss)."""
    if "adaptive-uncertaintyPerCost" not in strategies:
        return None
    lhs = {r["seed"]: r["core_seconds"] for r in strategies["latinHypercube"]}
    ada = {r["seed"]: r["core_seconds"] for r in strategies["adaptive-uncertaintyPerCost"]}
    if None in lhs.values() or None in ada.values():
        return {"met": False, "why": "a seed did not reach the target"}
    ratio = statistics.median(ada.values()) / statistics.median(lhs.values())
    worst = max(ada[s] / lhs[s] for s in lhs)
    return {"median_ratio": ratio, "worst_seed_ratio": worst, "met": ratio <= 0.6 and worst <= 1.1}


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def table(result: dict[str, Any]) -> str:
    def cell(v: Any) -> str:
        return "-" if v is None else f"{v:.3g}" if isinstance(v, float) else str(v)

    lines = [
        f"ceiling R² {result['ceiling_r2']:.4f} (LSQ on atoms, {result['pool']} reference runs,"
        f" {result['held_out']} held-out); target R² {result['target_r2']:.4f}",
        f"models {result['models']}; adaptive warm-up {result['warmup']} LHS runs",
        f"{'strategy':<30} {'reached':>8} {'core-s p50':>11} {'min':>8} {'max':>8}"
        f" {'trials p50':>11} {'min':>5} {'max':>5}",
    ]
    for name, s in result["summary"].items():
        lines.append(
            f"{name:<30} {s['reached']:>8} {cell(s['core_seconds_median']):>11}"
            f" {cell(s['core_seconds_min']):>8} {cell(s['core_seconds_max']):>8}"
            f" {cell(s['trials_median']):>11} {cell(s['trials_min']):>5} {cell(s['trials_max']):>5}"
        )
    lines.append(f"adaptive: {result['adaptive']}; verdict: {result['verdict']}")
    p = result["planning_per_trial_s"]
    lines.append(
        f"planning per trial, precomputed LHS: p50 {cell(p['precomputed_p50'])} s,"
        f" p95 {cell(p['precomputed_p95'])} s; adaptive (predict over HTTP + pick):"
        f" p50 {cell(p['adaptive_p50'])} s, p95 {cell(p['adaptive_p95'])} s"
    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pool", type=int, default=60, help="candidate/reference runs (60)")
    parser.add_argument("--held-out", type=int, default=20, help="held-out runs (20)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per strategy (5)")
    parser.add_argument("--steps", type=int, default=1000, help="MD steps per run (1000)")
    parser.add_argument("--check-every", type=int, default=2, help="runs between checks (2)")
    parser.add_argument("--hold", type=int, default=3, help="checks in a row at target (3)")
    parser.add_argument("--margin", type=float, default=0.02, help="below the ceiling (0.02)")
    parser.add_argument("--seed", type=int, default=2026, help="seed of the pool and held-out set")
    parser.add_argument("--warmup", type=int, default=4, help="adaptive's LHS warm-up runs (4)")
    parser.add_argument("--lmp", default="lmp", help="the LAMMPS binary (lmp)")
    parser.add_argument(
        "--models",
        choices=["sample", "generic"],
        default="sample",
        help="the StreamModel's models (module docstring; sample)",
    )
    parser.add_argument(
        "--acquisitions",
        default="uncertaintyPerCost,uncertainty",
        help="adaptive rows, comma-separated (uncertaintyPerCost,uncertainty)",
    )
    parser.add_argument(
        "--reuse",
        type=Path,
        default=None,
        help="replay the measurements of an earlier result JSON (no LAMMPS)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.argv = sys.argv[1:]
    result = asyncio.run(run(args))
    print(table(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
