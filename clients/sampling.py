"""Parameter spaces and sampling: which points of the space a sweep runs, and in what order.

A plan is a pure function of the spec: the same parameters, method, seed and counts always give
the same list of points, so a restarted operator or CLI recomputes it instead of storing it.
The plan lists the training points first, then the held-out test points; the two sets never
share a point. Points are distinct as long as the space has room for them; when the space is
smaller than the training count (say, three integer sizes and thirty trials), the test points
still stay apart and the training points cover the rest of the space before repeating.

>>> from streamml.vocabulary.lammpssweep import Parameter
>>> nx = Parameter(name="nx", type="int", min=1, max=3)
>>> [p["nx"] for p in sample([nx], 3, method="grid", seed=0)]
[1, 2, 3]
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
from collections.abc import Sequence

from streamml.errors import SpecError
from streamml.vocabulary.lammpssweep import LammpsSweepSpec, Parameter, SamplingMethod

Value = int | float | str
Point = dict[str, Value]

#: spaces up to this size are enumerated; larger ones are sampled by rejection
ENUMERATE_LIMIT = 200_000


def levels(param: Parameter, index: int = 0) -> list[Value] | None:
    """The discrete values of a parameter, or None for a continuous float range."""
    field = f"parameters[{index}]"
    if param.type == "categorical":
        return list(param.values or [])
    assert param.min is not None and param.max is not None  # checked by the schema
    if param.type == "int":
        lo, hi, step = int(param.min), int(param.max), int(param.step or 1)
        return list(range(lo, hi + 1, step))
    if param.step is None:
        return None
    count = math.floor((param.max - param.min) / param.step + 1e-9) + 1
    if count > ENUMERATE_LIMIT:
        raise SpecError(f"{field}: {count} float steps is too many", field=f"{field}.step")
    return [_round(param.min + k * param.step) for k in range(count)]


def space_size(parameters: Sequence[Parameter]) -> int | None:
    """Number of distinct points, or None when a dimension is continuous."""
    total = 1
    for i, param in enumerate(parameters):
        values = levels(param, i)
        if values is None:
            return None
        total *= len(values)
    return total


def sample(
    parameters: Sequence[Parameter], n: int, *, method: SamplingMethod, seed: int
) -> list[Point]:
    """``n`` points of the space, distinct where the space allows (no train/test split)."""
    if n < 0:
        raise SpecError(f"cannot sample a negative number of points ({n})", field="trials")
    if not parameters:
        raise SpecError("the parameter space is empty", field="parameters")
    rng = random.Random(seed)
    size = space_size(parameters)
    if method == "grid":
        return _grid(parameters, n, size, rng)
    if method == "latinHypercube":
        return _latin(parameters, n, size, rng)
    return _random(parameters, n, size, rng)


def plan(spec: LammpsSweepSpec) -> list[Point]:
    """All points of a sweep: the training points, then the held-out test points."""
    params, method, seed = spec.parameters, spec.sampling.method, spec.sampling.seed
    train_n, test_n = spec.trials, spec.test_trials
    if train_n < 1:
        raise SpecError("trials must be at least 1", field="trials")
    if test_n < 0:
        raise SpecError("testTrials cannot be negative", field="testTrials")
    size = space_size(params)
    total = train_n + test_n
    if size is not None and size < total:
        if method == "grid":
            raise SpecError(
                f"the grid has {size} points but trials + testTrials = {total}",
                field="trials",
            )
        if test_n >= size:
            raise SpecError(
                f"the space has only {size} distinct points: {test_n} held-out points would"
                " leave none for training",
                field="testTrials",
            )
        rng = random.Random(seed)
        every = _enumerate(params)
        rng.shuffle(every)
        test, rest = every[:test_n], every[test_n:]
        train = [rest[i % len(rest)] for i in range(train_n)]  # cover the rest, then repeat
        return train + test
    points = sample(params, total, method=method, seed=seed)
    # The held-out points are a seeded random subset, so they spread over the whole space even
    # for grid and Latin hypercube designs (whose order follows the space).
    rng = random.Random(seed + 1)
    test_idx = set(rng.sample(range(total), test_n))
    train = [p for i, p in enumerate(points) if i not in test_idx]
    test = [p for i, p in enumerate(points) if i in test_idx]
    return train + test


def fingerprint(points: Sequence[Point]) -> str:
    """A short stable hash of a plan (detects a spec edited after the sweep started)."""
    blob = json.dumps(list(points), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def as_vars(point: Point) -> dict[str, str]:
    """The ``-var`` strings of a point (also its display form in status)."""
    return {k: (repr(v) if isinstance(v, float) else str(v)) for k, v in point.items()}


# ---- methods -------------------------------------------------------------------------------


def _round(x: float) -> float:
    # six significant digits: the value LAMMPS reads from -var equals the feature the model sees
    return float(f"{x:.6g}")


def _key(point: Point) -> str:
    return json.dumps(point, sort_keys=True)


def _enumerate(parameters: Sequence[Parameter]) -> list[Point]:
    names = [p.name for p in parameters]
    grids = [levels(p, i) or [] for i, p in enumerate(parameters)]
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*grids)]


def _draw(param: Parameter, index: int, rng: random.Random) -> Value:
    values = levels(param, index)
    if values is None:
        assert param.min is not None and param.max is not None
        return _round(rng.uniform(param.min, param.max))
    return values[rng.randrange(len(values))]


def _random(
    parameters: Sequence[Parameter], n: int, size: int | None, rng: random.Random
) -> list[Point]:
    if size is not None and size <= ENUMERATE_LIMIT and size < 4 * n:
        every = _enumerate(parameters)
        if n <= size:
            return rng.sample(every, n)
        return [every[i % size] for i in _shuffled_cycle(size, n, rng)]
    points: list[Point] = []
    seen: set[str] = set()
    attempts = 0
    while len(points) < n:
        point = {p.name: _draw(p, i, rng) for i, p in enumerate(parameters)}
        attempts += 1
        key = _key(point)
        if key in seen and attempts < 50 * n:  # rejection; gives up only in pathological spaces
            continue
        seen.add(key)
        points.append(point)
    return points


def _shuffled_cycle(size: int, n: int, rng: random.Random) -> list[int]:
    order: list[int] = []
    while len(order) < n:
        block = list(range(size))
        rng.shuffle(block)
        order.extend(block)
    return order[:n]


def _grid(
    parameters: Sequence[Parameter], n: int, size: int | None, rng: random.Random
) -> list[Point]:
    for i, p in enumerate(parameters):
        if p.type == "float" and p.step is None:
            raise SpecError(
                f"grid sampling needs a step for float parameter {p.name!r}",
                field=f"parameters[{i}].step",
            )
    assert size is not None
    if size > ENUMERATE_LIMIT:
        raise SpecError(f"the grid has {size} points; too many to enumerate", field="parameters")
    if n > size:
        raise SpecError(f"the grid has {size} points but {n} were asked for", field="trials")
    every = _enumerate(parameters)
    if n == size:
        return every
    # an evenly strided subset keeps the coverage of the full grid
    return [every[math.floor(i * size / n)] for i in range(n)]


def _latin(
    parameters: Sequence[Parameter], n: int, size: int | None, rng: random.Random
) -> list[Point]:
    if n == 0:
        return []
    columns: list[list[Value]] = []
    for i, param in enumerate(parameters):
        strata = list(range(n))
        rng.shuffle(strata)
        values = levels(param, i)
        column: list[Value] = []
        for s in strata:
            u = (s + rng.random()) / n  # one point in each of n equal strata of [0, 1)
            if values is None:
                assert param.min is not None and param.max is not None
                column.append(_round(param.min + u * (param.max - param.min)))
            else:
                column.append(values[min(int(u * len(values)), len(values) - 1)])
        columns.append(column)
    names = [p.name for p in parameters]
    points = [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]
    if size is None or size < n:
        return points
    # Integer dimensions with few levels make collisions; replace them with unused points.
    seen: set[str] = set()
    out: list[Point] = []
    spare = iter(_random(parameters, min(size, 4 * n + 16), size, rng))
    for point in points:
        while _key(point) in seen:
            point = next(spare, {}) or _fresh(parameters, seen)
        seen.add(_key(point))
        out.append(point)
    return out


def _fresh(parameters: Sequence[Parameter], seen: set[str]) -> Point:
    for point in _enumerate(parameters):
        if _key(point) not in seen:
            return point
    raise SpecError("no unused point left in the space", field="trials")  # size >= n: unreachable
