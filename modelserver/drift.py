"""Drift detection: each served model watches its own error stream (:class:`DriftWatch`).

The stream is what progressive validation already computes: the absolute residual of a
regressor, the 0/1 error of a classifier, one value per scored learn (live, batch, label and
replay alike: the hook is in ``ModelState.validate``). The test is river's Page-Hinkley, one-sided
(``mode="up"``): the model got worse. An error that drops (the model improving, a regime easier to
predict) is not drift. Page-Hinkley rather than ADWIN because ADWIN is two-sided (it cuts its
window on a drop as readily as on a rise) and assumes values in a known bounded range, which an
absolute residual is not.

The recursion of ``river.drift.PageHinkley(mode="up", min_instances=1)`` is inlined here, float
operation for float operation (tests/unit/test_drift.py checks it detects exactly where river's
does): calling river's object cost ~5 µs per learn on this machine, more than a tenth of a linear
model's ``learn_one``; inline it is a few float operations (benchmarks/drift_bench.py). It also
gives the running minimum's index, Page-Hinkley's estimate of the change point, which river's
object does not keep.

Page-Hinkley's threshold is in the units of its input, and a residual of ``cpu_time`` in seconds
and one of a pressure in bars differ by orders of magnitude. So the errors are measured in units
of the model's own error at the end of its warm-up: the first ``warmup`` scored samples arm
nothing; the mean error of their second half (the model is still poor in the first) is the unit.
Each error, so scaled, is capped at half the threshold: one outlier (a run slowed by another
user's load) cannot raise an alarm alone, at least three bad ones are needed. (A third, tried
first, missed a real two-rank change whose errors alternated high and low: the model, learning on,
half-fits the new regime; benchmarks/drift_bench.py.) After a
detection the watch warms up again on the new regime (policy ``keep``), or the model restarts from
a fresh copy of its pipeline and the watch with it (``reset``), or it restarts so and the model
as it was is kept beside it, frozen, for comparison (``fork``, :class:`Fork`).

Everything here is deterministic arithmetic on the logged samples, and the watch is pickled in
the model's snapshot: replaying the learn log after a snapshot reproduces the same detections at
the same samples with the same magnitudes. Only a detection's wall-clock time differs when it is
re-found on replay (the log has no clock): it is then the time of the replay.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from streamml.vocabulary.modelspec import DriftSettings

#: the flavors whose learns are scored (progressive validation): the ones a watch can follow
SCORED = ("regression", "binary", "multiclass")
#: detections kept in a watch's history (the newest; the count is kept in full)
HISTORY = 16
#: an error is capped at the threshold / CAP_PARTS: at least CAP_PARTS + 1 bad samples are needed
CAP_PARTS = 2
#: the smallest unit: a model that made no error at all in its warm-up
TINY = 1e-12
#: Page-Hinkley's forgetting factor (river's default)
ALPHA = 1 - 0.0001


@dataclass(frozen=True, slots=True)
class Detection:
    """One detection: at which scored sample, since which one the error is higher (Page-Hinkley's
    estimate of the change point), when, and how much higher: the mean error since the change in
    units of the warm-up's mean error (a 4.0 means errors four times as large)."""

    sample: int
    change_at: int
    time: float
    magnitude: float

    def to_data(self) -> dict[str, Any]:
        return {
            "sample": self.sample,
            "changeAtSample": self.change_at,
            "time": self.time,
            "magnitude": round(self.magnitude, 6),
        }


def error_of(classifier: bool, truth: Any, predicted: Any) -> float | None:
    """The error progressive validation scored: |y - ŷ| or 0/1 (None: not scorable)."""
    if predicted is None:
        return None
    if classifier:
        return 0.0 if predicted == truth else 1.0
    try:
        error = abs(float(truth) - float(predicted))
    except (TypeError, ValueError, OverflowError):
        return None
    return error if math.isfinite(error) else None


@dataclass(slots=True)
class DriftWatch:
    """A model's drift test on its error stream, with its settings and the detections so far."""

    warmup: int
    threshold: float
    delta: float
    policy: str
    #: scored samples seen (the index a detection names)
    observed: int = 0
    detections: int = 0
    history: list[Detection] = field(default_factory=list)
    #: the warm-up: errors seen since (re)arming began, and the sum of its second half
    _warm_n: int = 0
    _warm_sum: float = 0.0
    #: the unit (None: warming up)
    _unit: float | None = None
    #: the Page-Hinkley test since arming: count (a float, as river's Mean keeps it), mean of
    #: the scaled errors, the cumulative sum and its running minimum
    _count: float = 0.0
    _mean: float = 0.0
    _cusum: float = 0.0
    _cusum_min: float = math.inf
    #: raw errors since arming (count, sum) and at the running minimum (the change point)
    _n: int = 0
    _sum: float = 0.0
    _min_at: int = 0
    _min_n: int = 0
    _min_sum: float = 0.0

    @classmethod
    def from_settings(
        cls, settings: DriftSettings | None, flavor: str = "regression"
    ) -> DriftWatch | None:
        """The watch a model spec asks for (None: switched off, or a flavor never scored)."""
        settings = settings or DriftSettings()
        if not settings.enabled or flavor not in SCORED:
            return None
        return cls(settings.warmup, settings.threshold, settings.delta, settings.policy)

    @property
    def armed(self) -> bool:
        return self._unit is not None

    @property
    def last(self) -> Detection | None:
        return self.history[-1] if self.history else None

    def observe(self, error: float) -> bool:
        """One scored sample's error; True when it completes a detection."""
        self.observed = observed = self.observed + 1
        unit = self._unit
        if unit is None:
            self._warm(error)
            return False
        # every attribute read once and kept in a local (this runs once per scored learn); the
        # float operations are the same, in the same order
        threshold = self.threshold
        x = error / unit
        cap = threshold / CAP_PARTS
        if x > cap:
            x = cap
        # river.drift.PageHinkley.update, mode "up", alpha 1 - 1e-4, min_instances 1
        self._count = count = self._count + 1.0
        mean = self._mean
        self._mean = mean = mean + (1.0 / count) * (x - mean)
        self._cusum = cusum = ALPHA * self._cusum + (x - mean) - self.delta
        self._n = n = self._n + 1
        self._sum = total = self._sum + error
        low = self._cusum_min
        if cusum < low:
            self._cusum_min = low = cusum
        if cusum <= low:
            self._min_at, self._min_n, self._min_sum = observed, n, total
        if not cusum - low > threshold:
            return False
        self._detected(unit)
        return True

    def _warm(self, error: float) -> None:
        self._warm_n += 1
        half = self.warmup // 2
        if self._warm_n > self.warmup - half:
            self._warm_sum += error
        if self._warm_n < self.warmup:
            return
        self._unit = max(self._warm_sum / half, TINY)
        self._count, self._mean, self._cusum, self._cusum_min = 0.0, 0.0, 0.0, math.inf
        self._n, self._sum = 0, 0.0
        self._min_at, self._min_n, self._min_sum = self.observed, 0, 0.0

    def _detected(self, unit: float) -> None:
        since = self._n - self._min_n
        mean_since = (self._sum - self._min_sum) / since if since else 0.0
        detection = Detection(self.observed, self._min_at + 1, time.time(), mean_since / unit)
        self.detections += 1
        self.history.append(detection)
        del self.history[:-HISTORY]
        self.rearm()

    def rearm(self) -> None:
        """Warm up again (after a detection: the new regime is the reference)."""
        self._warm_n, self._warm_sum, self._unit = 0, 0.0, None

    def to_data(self) -> dict[str, Any]:
        """The stats reply's ``drift`` field (``DriftStats``)."""
        last = self.last
        return {
            "policy": self.policy,
            "warmup": self.warmup,
            "threshold": self.threshold,
            "delta": self.delta,
            "observed": self.observed,
            "armed": self.armed,
            "detections": self.detections,
            "last": None if last is None else last.to_data(),
            "history": [d.to_data() for d in self.history],
        }


@dataclass(slots=True)
class Fork:
    """Policy ``fork``: at a detection the served model restarts from a fresh copy (it learns
    only the new regime) and the model as it was is kept, frozen: it learns nothing more, but
    every later sample is scored on both, each into its own copy of the model's metrics. The
    stats reply's ``fork`` compares them on the new regime: had the old model gone on, would it
    predict as well? A later detection forks again from the then-served model."""

    #: the watch's sample index at the detection
    sample: int
    #: the model as it was at the detection (the sample completing it learned)
    before: Any
    before_metrics: list[Any]
    fresh_metrics: list[Any]
    #: samples scored on both since the fork
    samples: int = 0

    @classmethod
    def of(cls, sample: int, model: Any, metrics: list[Any]) -> Fork:
        return cls(sample, model, [m.clone() for m in metrics], [m.clone() for m in metrics])

    def to_data(self) -> dict[str, Any]:
        """The stats reply's ``fork`` field (``ForkStats``)."""
        return {
            "sinceSample": self.sample,
            "samples": self.samples,
            "before": metric_values(self.before_metrics),
            "fresh": metric_values(self.fresh_metrics),
        }


def metric_values(metrics: list[Any]) -> dict[str, float | None]:
    """Each metric's value by its class name (None: not finite)."""
    values: dict[str, float | None] = {}
    for metric in metrics:
        value = metric.get()
        values[type(metric).__name__] = float(value) if math.isfinite(value) else None
    return values


def fresh_model(model: Any) -> Any:
    """A fresh, unlearned copy of a river model with the same parameters (policy ``reset``)."""
    return model.clone()
