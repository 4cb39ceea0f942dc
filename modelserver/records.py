"""What an applied learn leaves behind: its :class:`LearnRecord` (the learn log's row, replayed
on recovery) with the :class:`Prediction` progressive validation scored, and the plain numbers
both are made of."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any


def plain_number(value: Any) -> Any:
    """A regressor's output as a Python float: river's PARegressor returns ``numpy.float64``
    (and others may return numpy or int scalars), which the checks, metrics and JSON treat
    differently from the float they are. Anything that is not a real number is returned as is."""
    kind = type(value)
    if kind is float or kind is int or kind is bool or value is None:
        return value
    if isinstance(value, numbers.Real):
        return float(value)
    return value


def finite_number(value: Any) -> float | None:
    """``value`` as a finite float, or None when it is no finite real number (or a bool)."""
    value = plain_number(value)
    if type(value) is int:
        value = float(value)
    return value if type(value) is float and math.isfinite(value) else None


@dataclass(slots=True)
class Prediction:
    """What progressive validation compares with the truth: a label/number and, for
    classifiers, the class probabilities (for LogLoss/CrossEntropy)."""

    value: Any
    proba: dict[Any, float] | None = None

    def encode(self) -> Any:
        """A plain value as itself; with probabilities (or a list value) as
        ``[value, [[label, p], ...] | null]`` so that non-string labels survive JSON."""
        if self.proba is None and not isinstance(self.value, list):
            return self.value
        pairs = None if self.proba is None else [[k, v] for k, v in self.proba.items()]
        return [self.value, pairs]

    @classmethod
    def decode(cls, data: Any) -> Prediction:
        if isinstance(data, list):
            value, pairs = data
            return cls(value, None if pairs is None else {k: v for k, v in pairs})
        return cls(data)


@dataclass(slots=True)
class LearnRecord:
    """One applied learn, enough to replay it: ``[features, y, prediction, ns, identifier]``,
    plus ``provenance`` as a 6th element only when the learn carried one (a row without it,
    such as every row an earlier release wrote, decodes as before)."""

    features: dict[str, Any]
    ground_truth: Any
    prediction: Prediction | None
    duration_ns: int
    identifier: str | None
    #: where the sample came from (``wire.check_provenance``), None: not said
    provenance: dict[str, str] | None = None

    def encode(self) -> list[Any]:
        pred = None if self.prediction is None else self.prediction.encode()
        row = [self.features, self.ground_truth, pred, self.duration_ns, self.identifier]
        if self.provenance is not None:
            row.append(self.provenance)
        return row

    @classmethod
    def decode(cls, data: list[Any]) -> LearnRecord:
        features, y, pred, ns, identifier, *rest = data
        if len(rest) > 1 or (rest and type(rest[0]) is not dict):
            raise ValueError(f"a learn-log record has {len(data)} elements or a bad provenance")
        prediction = None if pred is None else Prediction.decode(pred)
        return cls(features, y, prediction, ns, identifier, rest[0] if rest else None)
