"""Acquisition: which candidates an adaptive sweep runs next, from the models' forecasts.

Pure functions of the pool, the forecasts and the points already run (no I/O, no clock, no
randomness), so a decision is the same wherever and whenever it is recomputed:

1. :func:`uncertainty` per candidate: the models' predictive standard deviation where they have
   one (river's ``BayesianLinearRegression``: ``predict_one(x, with_dist=True).sigma``), else the
   spread of the models' predictions (their disagreement), else, with no usable prediction, the
   distance to the nearest point run (space filling);
2. :func:`scores`: that uncertainty, or (``uncertaintyPerCost``) divided by the cost model's
   predicted cost;
3. :func:`pick`: the batch, greedily: the best score, then every score damped near the points
   picked and the points in flight (a kriging-believer style penalty
   ``1 - exp(-(d / DIVERSITY_LENGTH)^2)`` on the normalised distance ``d``), so a batch spreads
   instead of crowding one corner. Ties go to the lower pool index.

>>> from streamml.vocabulary.lammpssweep import Parameter
>>> nx = Parameter(name="nx", type="int", min=0, max=10)
>>> pool = [{"nx": v} for v in (0, 1, 5, 9, 10)]
>>> sd = Forecast(mean=[0.0] * 5, std=[3.0, 2.9, 1.0, 2.9, 3.0])
>>> u, basis = uncertainty({"bayes": sd}, coordinates(pool, [nx]), [])
>>> basis, pick(u, coordinates(pool, [nx]), 2, [])
('sigma', [0, 4])
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from streamml.sweep.sampling import Point
from streamml.vocabulary.lammpssweep import Parameter

#: the normalised distance (0: same point, 1: opposite corners) within which a picked point
#: damps its neighbours' scores noticeably (the penalty is 63% at this distance)
DIVERSITY_LENGTH = 0.15
#: the smallest cost a prediction counts as, relative to the largest predicted (a model that
#: predicts zero or a negative runtime early on must not make a candidate infinitely cheap)
COST_FLOOR = 1e-3

Coordinates = tuple[float, ...]


@dataclass(frozen=True)
class Forecast:
    """One model's predictions of the candidates: the means, and the predictive standard
    deviations where the model has a predictive distribution (None otherwise)."""

    mean: Sequence[float | None]
    std: Sequence[float | None]


def coordinates(points: Sequence[Point], parameters: Sequence[Parameter]) -> list[Coordinates]:
    """Each point in the unit cube: a range scaled to [0, 1], a categorical one-hot scaled so
    two different values are 1 apart; the whole scaled by 1/sqrt(dimensions), so a distance is
    0 (same point) to 1 (opposite corners)."""
    scale = 1 / math.sqrt(len(parameters))
    out: list[Coordinates] = []
    for point in points:
        row: list[float] = []
        for param in parameters:
            value = point[param.name]
            if param.type == "categorical":
                hot = math.sqrt(0.5) * scale
                row.extend(hot if v == value else 0.0 for v in param.values or ())
                continue
            assert param.min is not None and param.max is not None  # the schema's rule
            span = param.max - param.min
            row.append((float(value) - param.min) / span * scale if span else 0.0)
        out.append(tuple(row))
    return out


def distance(a: Coordinates, b: Coordinates) -> float:
    return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b, strict=True)))


def uncertainty(
    forecasts: Mapping[str, Forecast], coords: Sequence[Coordinates], run: Sequence[Coordinates]
) -> tuple[list[float], str]:
    """Per candidate, how unsure the models are, and on what basis (``sigma``,
    ``disagreement`` or ``distance``); models in name order, so the result is reproducible."""
    n = len(coords)
    names = sorted(forecasts)
    with_std = [forecasts[m].std for m in names if _complete(forecasts[m].std, n)]
    if with_std:
        return [statistics.fmean(s[i] or 0.0 for s in with_std) for i in range(n)], "sigma"
    means = [forecasts[m].mean for m in names if _complete(forecasts[m].mean, n)]
    if len(means) >= 2:
        spread = [statistics.pstdev(m[i] or 0.0 for m in means) for i in range(n)]
        return spread, "disagreement"
    # nothing to go by: the candidate farthest from every point run (a space-filling choice)
    far = [min((distance(c, r) for r in run), default=1.0) for c in coords]
    return far, "distance"


def _complete(values: Sequence[float | None], n: int) -> bool:
    return len(values) == n and all(v is not None and math.isfinite(v) for v in values)


def costs(forecast: Forecast | None, n: int) -> list[float] | None:
    """The cost model's predicted costs, floored (None: it predicted no usable cost)."""
    if forecast is None or not _complete(forecast.mean, n):
        return None
    values = [float(v or 0.0) for v in forecast.mean]
    top = max(values)
    if top <= 0:
        return None
    floor = COST_FLOOR * top
    return [max(v, floor) for v in values]


def scores(uncertain: Sequence[float], cost: Sequence[float] | None) -> list[float]:
    """The acquisition score: the uncertainty, per unit of cost when a cost is given."""
    if cost is None:
        return list(uncertain)
    return [u / c for u, c in zip(uncertain, cost, strict=True)]


def pick(
    score: Sequence[float],
    coords: Sequence[Coordinates],
    k: int,
    busy: Sequence[Coordinates],
    length: float = DIVERSITY_LENGTH,
) -> list[int]:
    """Up to ``k`` candidate indices, best first: greedy on the score damped near the points
    already picked and the ``busy`` ones (in flight: their results are not learned yet)."""
    damp = [1.0] * len(coords)
    for b in busy:
        _damp(damp, coords, b, length)
    chosen: list[int] = []
    left = set(range(len(coords)))
    for _ in range(min(k, len(coords))):
        # the damping breaks ties among equal (e.g. zero) scores too: farther from the picked
        best = max(left, key=lambda i: (score[i] * damp[i], damp[i], -i))
        chosen.append(best)
        left.discard(best)
        _damp(damp, coords, coords[best], length)
    return chosen


def _damp(damp: list[float], coords: Sequence[Coordinates], at: Coordinates, length: float) -> None:
    for i, c in enumerate(coords):
        damp[i] *= 1.0 - math.exp(-((distance(c, at) / length) ** 2))
