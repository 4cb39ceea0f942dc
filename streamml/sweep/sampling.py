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
import json
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction

from streamml.errors import SpecError
from streamml.vocabulary.lammpssweep import LammpsSweepSpec, Parameter, SamplingMethod

Value = int | float | str
Point = dict[str, Value]

#: spaces up to this size may be enumerated (small spaces, grids); larger ones are only drawn from
ENUMERATE_LIMIT = 200_000


@dataclass(frozen=True)
class Levels:
    """The discrete values of one dimension, never materialised: ``count`` and ``at(k)``.

    A range of 10**8 integers (or of 10**300 float steps) costs nothing until a point is drawn.
    """

    count: int
    start: Fraction = Fraction(0)
    step: Fraction = Fraction(1)
    kind: str = "int"  # "int", "float" or "categorical"
    values: tuple[str, ...] = ()

    def at(self, k: int) -> Value:
        if not 0 <= k < self.count:
            raise IndexError(k)
        if self.kind == "categorical":
            return self.values[k]
        if self.kind == "int":
            return int(self.start + k * self.step)
        if k < 2**53:  # float arithmetic, as the plans of running sweeps were computed
            return _round(float(self.start) + k * float(self.step))
        return _round(float(self.start + k * self.step))  # exact: k beyond a float's reach

    def index(self, u: float) -> int:
        """The level of a uniform ``u`` in [0, 1): exact for any count."""
        if self.count < 2**53:
            return min(int(u * self.count), self.count - 1)
        return min(int(Fraction(u) * self.count), self.count - 1)


def levels(param: Parameter, index: int = 0) -> Levels | None:
    """The discrete values of a parameter, or None for a continuous float range."""
    if param.type == "categorical":
        values = tuple(param.values or [])
        return Levels(count=len(values), kind="categorical", values=values)
    assert param.min is not None and param.max is not None  # checked by the schema
    lo, hi = Fraction(param.min), Fraction(param.max)
    if param.type == "int":
        step = Fraction(int(param.step or 1))
        return Levels(count=int((hi - lo) // step) + 1, start=lo, step=step)
    if param.step is None:
        return None
    step = Fraction(param.step)
    # the tolerance keeps the end point of e.g. 0..1 by 0.1 (0.1 is a hair above 1/10)
    count = math.floor((hi - lo) / step + Fraction(1, 10**9)) + 1
    return Levels(count=count, start=lo, step=step, kind="float")


def space_size(parameters: Sequence[Parameter]) -> int | None:
    """Number of distinct points, or None when a dimension is continuous."""
    total = 1
    for i, param in enumerate(parameters):
        values = levels(param, i)
        if values is None:
            return None
        total *= values.count
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
    if method == "adaptive":  # chosen as results come in; the design builds on this module
        from streamml.sweep.design import adaptive_design

        return adaptive_design(spec).provisional
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


def _dimensions(parameters: Sequence[Parameter]) -> list[Levels]:
    dims = [levels(p, i) for i, p in enumerate(parameters)]
    if any(d is None for d in dims):
        raise SpecError("a continuous float dimension cannot be enumerated", field="parameters")
    return [d for d in dims if d is not None]


def _point_at(names: Sequence[str], dims: Sequence[Levels], index: int) -> Point:
    """Point number ``index`` of the space in mixed radix, the last dimension fastest."""
    point: Point = {}
    for name, dim in zip(reversed(names), reversed(dims), strict=True):
        index, k = divmod(index, dim.count)
        point[name] = dim.at(k)
    return {name: point[name] for name in names}


def _iterate(parameters: Sequence[Parameter]) -> Iterator[Point]:
    """Every point of a discrete space, lazily, in grid order."""
    names, dims = [p.name for p in parameters], _dimensions(parameters)
    size = math.prod(d.count for d in dims)
    return (_point_at(names, dims, i) for i in range(size))


def _enumerate(parameters: Sequence[Parameter]) -> list[Point]:
    size = space_size(parameters)
    if size is None or size > ENUMERATE_LIMIT:  # callers check; a guard, not a code path
        raise SpecError(f"the space has {size} points; too many to list", field="parameters")
    return list(_iterate(parameters))


def _draw(param: Parameter, values: Levels | None, rng: random.Random) -> Value:
    if values is None:
        assert param.min is not None and param.max is not None
        return _round(rng.uniform(param.min, param.max))
    return values.at(rng.randrange(values.count))


def _random(
    parameters: Sequence[Parameter], n: int, size: int | None, rng: random.Random
) -> list[Point]:
    return list(_random_points(parameters, n, size, rng))


def _random_points(
    parameters: Sequence[Parameter], n: int, size: int | None, rng: random.Random
) -> Iterator[Point]:
    """The points of :func:`_random`, drawn as they are asked for (same order, same draws)."""
    if size is not None and size <= ENUMERATE_LIMIT and size < 4 * n:
        every = _enumerate(parameters)
        if n <= size:
            yield from rng.sample(every, n)
            return
        yield from (every[i % size] for i in _shuffled_cycle(size, n, rng))
        return
    dims = [(p, levels(p, i)) for i, p in enumerate(parameters)]
    seen: set[str] = set()
    attempts = made = 0
    while made < n:
        point = {p.name: _draw(p, values, rng) for p, values in dims}
        attempts += 1
        key = _key(point)
        if key in seen and attempts < 50 * n:  # rejection; gives up only in pathological spaces
            continue
        seen.add(key)
        made += 1
        yield point


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
        dim = levels(p, i)
        if dim is None:
            raise SpecError(
                f"grid sampling needs a step for float parameter {p.name!r}",
                field=f"parameters[{i}].step",
            )
        if p.type == "float" and dim.count > ENUMERATE_LIMIT:
            raise SpecError(
                f"parameters[{i}]: {dim.count} float steps is too many for a grid",
                field=f"parameters[{i}].step",
            )
    assert size is not None
    if size > ENUMERATE_LIMIT:
        raise SpecError(f"the grid has {size} points; too many to enumerate", field="parameters")
    if n > size:
        raise SpecError(f"the grid has {size} points but {n} were asked for", field="trials")
    names, dims = [p.name for p in parameters], _dimensions(parameters)
    # an evenly strided subset keeps the coverage of the full grid
    return [_point_at(names, dims, math.floor(i * size / n)) for i in range(n)]


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
                column.append(values.at(values.index(u)))
        columns.append(column)
    names = [p.name for p in parameters]
    points = [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]
    if size is None or size < n:
        return points
    # Integer dimensions with few levels make collisions; replace them with unused points.
    seen: set[str] = set()
    out: list[Point] = []
    # drawn only when a collision asks for one: nothing else uses rng after this point, so the
    # spares are the same as if they had all been drawn up front
    spare = _random_points(parameters, min(size, 4 * n + 16), size, rng)
    for point in points:
        while _key(point) in seen:
            point = next(spare, {}) or _fresh(parameters, seen)
        seen.add(_key(point))
        out.append(point)
    return out


def _fresh(parameters: Sequence[Parameter], seen: set[str]) -> Point:
    for point in _iterate(parameters):  # lazy: stops within len(seen) + 1 points
        if _key(point) not in seen:
            return point
    raise SpecError("no unused point left in the space", field="trials")  # size >= n: unreachable
