"""The design of an adaptive sweep: its warm-up, its held-out points and its candidate pool.

``sampling.method: adaptive`` runs a space-filling warm-up (a Latin hypercube of
``sampling.warmup`` training points), then lets the models choose every further training point
from a seeded pool of ``sampling.candidates`` points (:mod:`streamml.sweep.acquisition`). The
held-out test points are drawn as for any other method, apart from the warm-up; the pool holds
neither. All three are pure functions of the spec (parameters, seed, counts), so a restarted
driver recomputes them; only the choices depend on results, and those are recorded in the
status (``chosen``) before their runs are submitted.

The plan of an adaptive sweep (:func:`streamml.sweep.sampling.plan`) is *provisional*: the
warm-up points, one :data:`UNCHOSEN` marker per training point still to choose, then the test
points. The marker names the pool (its hash) and the acquisition, so the plan's fingerprint
describes everything a choice depends on apart from the results: an edited pool, seed, warm-up
or acquisition is a changed space.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from streamml.errors import SpecError
from streamml.sweep import sampling
from streamml.sweep.sampling import Point
from streamml.vocabulary.lammpssweep import (
    MAX_CANDIDATES,
    MIN_CANDIDATES,
    LammpsSweepSpec,
    Sampling,
)

#: the key of the marker that stands for a training point the models have not chosen yet (not a
#: LAMMPS variable name: a marker can never be run by mistake)
UNCHOSEN = "(adaptive)"
#: the default pool: this many candidates per training run, at most DEFAULT_POOL_LIMIT
POOL_PER_TRIAL, DEFAULT_POOL_LIMIT = 20, 2_000


@dataclass(frozen=True)
class AdaptiveDesign:
    """What an adaptive sweep runs apart from the choices themselves."""

    warmup: list[Point]
    pool: list[Point]
    test: list[Point]
    to_choose: int
    acquisition: str
    cost_model: str | None

    @property
    def provisional(self) -> list[Point]:
        """The plan: warm-up points, one marker per point still to choose, test points."""
        marker: Point = {UNCHOSEN: self.marker}
        return [*self.warmup, *([marker] * self.to_choose), *self.test]

    @property
    def marker(self) -> str:
        blob = json.dumps(
            [self.pool, self.acquisition, self.cost_model], sort_keys=True, separators=(",", ":")
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def warmup_size(spec: LammpsSweepSpec) -> int:
    s = spec.sampling
    if s.warmup is not None:
        return s.warmup
    return min(spec.trials, max(spec.parallelism, spec.trials // 5, 1))


def pool_size(spec: LammpsSweepSpec) -> int:
    s = spec.sampling
    if s.candidates is not None:
        return s.candidates
    to_choose = spec.trials - warmup_size(spec)
    default = min(POOL_PER_TRIAL * spec.trials, DEFAULT_POOL_LIMIT)
    return min(max(default, to_choose, MIN_CANDIDATES), MAX_CANDIDATES)


def adaptive_design(spec: LammpsSweepSpec) -> AdaptiveDesign:
    """The design of an adaptive sweep; SpecError naming ``sampling.*`` when it cannot be."""
    warmup, wanted = warmup_size(spec), pool_size(spec)
    to_choose = spec.trials - warmup
    # the warm-up and the held-out points: a Latin hypercube plan of the warm-up's size
    fixed = spec.model_copy(
        update={
            "trials": warmup,
            "sampling": Sampling(method="latinHypercube", seed=spec.sampling.seed),
        }
    )
    try:
        points = sampling.plan(fixed)
    except SpecError as exc:
        field = "sampling.warmup" if exc.field == "trials" else exc.field
        raise SpecError(str(exc), field=field) from exc
    taken = {_key(p) for p in points}
    pool = _pool(spec, wanted, taken)
    if len(pool) < to_choose:
        raise SpecError(
            f"the candidate pool has {len(pool)} points (sampling.candidates {wanted}, in the "
            f"room the space leaves beside the warm-up and held-out points) but trials - warmup"
            f" = {to_choose} runs are chosen from it",
            field="sampling.candidates",
        )
    return AdaptiveDesign(
        warmup=points[:warmup],
        pool=pool,
        test=points[warmup:],
        to_choose=to_choose,
        acquisition=spec.sampling.acquisition or "uncertainty",
        cost_model=spec.sampling.cost_model,
    )


def _key(point: Point) -> str:
    return json.dumps(point, sort_keys=True)


def _pool(spec: LammpsSweepSpec, wanted: int, taken: set[str]) -> list[Point]:
    """``wanted`` seeded random points of the space apart from ``taken`` (fewer when the space
    has no more room)."""
    size = sampling.space_size(spec.parameters)
    draw = wanted + len(taken)
    if size is not None:
        draw = min(draw, size)
    # its own stream of the seed: the warm-up and test points use seed and seed + 1
    drawn = sampling.sample(spec.parameters, draw, method="random", seed=spec.sampling.seed + 2)
    pool: list[Point] = []
    seen = set(taken)
    for point in drawn:
        key = _key(point)
        if key not in seen:
            seen.add(key)
            pool.append(point)
        if len(pool) == wanted:
            break
    return pool
