"""The learning core: named river models, progressive validation, stats, idempotency, pending
predictions. It knows nothing of HTTP or storage; the views call it and persist what it returns.

Progressive validation (river's ``progressive_val_score`` on a live stream): for each sample the
model first predicts, then learns, then the metrics are updated with (truth, earlier prediction).
Learning before the metric update means a sample the model rejects leaves metrics untouched.
Every applied learn returns a :class:`LearnRecord`; replaying the records on a snapshot
reproduces model, metrics, stats and identifiers exactly (the prediction and the duration are in
the record, so replay does not depend on timing).
"""

from __future__ import annotations

import logging
import math
import numbers
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from river import metrics as _river_metrics

from streamml.errors import SpecError
from streamml.modelserver.pending import PendingPrediction, PendingSource

#: where a learn notes the waiting predictions it consumed (model, identifier, prediction), so
#: that they can be put back when its write is not made durable
Taken = list[tuple[str, str, PendingPrediction]]

log = logging.getLogger(__name__)

#: river is typed loosely; treat its metric classes as Any
river_metrics: Any = _river_metrics

#: weight of the newest call in the exponentially weighted mean duration
EWM_ALPHA = 0.1


class SampleError(SpecError):
    """A sample the model cannot use (wrong feature types, missing ground truth)."""


def human_duration(ns: int) -> str:
    """``1950828`` -> ``1ms950μs828ns`` (the old server's human form)."""
    if ns <= 0:
        return "0ns"
    parts = []
    for unit, size in (("h", 3_600_000_000_000), ("m", 60_000_000_000), ("s", 1_000_000_000)):
        if ns >= size:
            parts.append(f"{ns // size}{unit}")
            ns %= size
    for unit, size in (("ms", 1_000_000), ("μs", 1_000), ("ns", 1)):
        if ns >= size:
            parts.append(f"{ns // size}{unit}")
            ns %= size
    return "".join(parts)


@dataclass
class CallStats:
    """Count and durations of one kind of call (learn or predict), in nanoseconds."""

    n_calls: int = 0
    total_ns: int = 0
    ewm_ns: float = 0.0

    def record(self, ns: int) -> None:
        self.n_calls += 1
        self.total_ns += ns
        self.ewm_ns = (
            float(ns) if self.n_calls == 1 else EWM_ALPHA * ns + (1 - EWM_ALPHA) * self.ewm_ns
        )

    def record_many(self, ns: int, count: int) -> None:
        """``count`` calls of ``ns`` each, as ``count`` :meth:`record` calls would (bit for bit:
        a replay of the log records them one by one and must agree), one method call."""
        if count <= 0:
            return
        ewm = float(ns) if self.n_calls == 0 else self.ewm_ns
        keep = 1 - EWM_ALPHA
        weighted = EWM_ALPHA * ns
        for _ in range(count if self.n_calls else count - 1):
            ewm = weighted + keep * ewm
        self.n_calls += count
        self.total_ns += ns * count
        self.ewm_ns = ewm

    def to_data(self) -> dict[str, Any]:
        mean = self.total_ns // self.n_calls if self.n_calls else 0
        ewm = round(self.ewm_ns)
        return {
            "n_calls": self.n_calls,
            "mean_duration": mean,
            "mean_duration_human": human_duration(mean),
            "ewm_duration": ewm,
            "ewm_duration_human": human_duration(ewm),
        }


def default_metrics(flavor: str) -> list[Any]:
    """The flavor's metrics (the old server's, plus R2 for regression)."""
    if flavor == "regression":
        return [
            river_metrics.MAE(),
            river_metrics.RMSE(),
            river_metrics.SMAPE(),
            river_metrics.R2(),
        ]
    if flavor == "binary":
        return [
            river_metrics.Accuracy(),
            river_metrics.LogLoss(),
            river_metrics.Precision(),
            river_metrics.Recall(),
            river_metrics.F1(),
        ]
    if flavor == "multiclass":
        return [
            river_metrics.Accuracy(),
            river_metrics.CrossEntropy(),
            river_metrics.MacroPrecision(),
            river_metrics.MacroRecall(),
            river_metrics.MacroF1(),
            river_metrics.MicroPrecision(),
            river_metrics.MicroRecall(),
            river_metrics.MicroF1(),
        ]
    return []


def _check_number(value: Any) -> float:
    if type(value) not in (int, float) or not math.isfinite(value):
        raise SampleError("ground_truth must be a finite number for a regression model")
    return float(value)


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
    """One applied learn, enough to replay it: ``[features, y, prediction, ns, identifier]``."""

    features: dict[str, Any]
    ground_truth: Any
    prediction: Prediction | None
    duration_ns: int
    identifier: str | None

    def encode(self) -> list[Any]:
        pred = None if self.prediction is None else self.prediction.encode()
        return [self.features, self.ground_truth, pred, self.duration_ns, self.identifier]

    @classmethod
    def decode(cls, data: list[Any]) -> LearnRecord:
        features, y, pred, ns, identifier = data
        return cls(features, y, None if pred is None else Prediction.decode(pred), ns, identifier)


@dataclass
class ModelState:
    """One named model with its metrics, stats and the identifiers it has learned."""

    name: str
    flavor: str
    model: Any
    metrics: list[Any] = field(default_factory=list)
    learn_stats: CallStats = field(default_factory=CallStats)
    predict_stats: CallStats = field(default_factory=CallStats)
    #: identifiers already learned (the idempotency window), oldest first
    seen: OrderedDict[str, None] = field(default_factory=OrderedDict)
    #: learns applied since the last snapshot (not pickled: reset on load)
    dirty: int = 0
    #: the cost model's bound on distinct input feature names (None: unbounded, e.g. a pickle)
    max_features: int | None = None
    #: the input feature names learned so far (tracked only under a bound)
    known_features: set[str] = field(default_factory=set)
    #: expensive per sample (trees, ensembles, neighbours, kernels): never on the event loop
    heavy: bool = True

    @property
    def classifier(self) -> bool:
        return self.flavor in ("binary", "multiclass")

    @property
    def supervised(self) -> bool:
        return self.flavor not in ("cluster",)

    def new_features(self, features: dict[str, Any]) -> set[str] | None:
        """The names this sample adds to the model's inputs (None: nothing to record);
        :class:`SampleError` when they would take it past its cost model's bound."""
        cap = self.max_features
        if cap is None:
            return None
        known = self.known_features
        if len(features) <= len(known) and features.keys() <= known:
            return None
        new = features.keys() - known
        if len(known) + len(new) > cap:
            raise SampleError(
                f"model {self.name!r} accepts at most {cap} distinct feature names (its "
                f"pipeline's cost within the server's limits); it has {len(known)} and this "
                f"sample adds {len(new)}"
            )
        return new

    def predict(self, features: dict[str, Any]) -> Prediction:
        """Predict without learning; model input errors become :class:`SampleError`."""
        if self.max_features is not None and len(features) > self.max_features:
            raise SampleError(
                f"model {self.name!r} accepts at most {self.max_features} features per sample "
                "(its pipeline's cost within the server's limits)"
            )
        try:
            if self.classifier:
                proba = self.model.predict_proba_one(features)
                label = max(proba, key=proba.__getitem__) if proba else None
                return Prediction(label, dict(proba))
            if hasattr(self.model, "predict_one"):
                value = self.model.predict_one(features)
                if type(value) is not float and self.flavor == "regression":
                    value = plain_number(value)
                return Prediction(value)
            return Prediction(None)
        except Exception as exc:  # whatever river raises on this input, it is about the input
            raise SampleError(f"model {self.name!r} cannot use these features: {exc}") from exc

    def predict_timed(self, features: dict[str, Any]) -> Prediction:
        start = time.perf_counter_ns()
        prediction = self.predict(features)
        self.predict_stats.record(time.perf_counter_ns() - start)
        return prediction

    def check_target(self, ground_truth: Any) -> Any:
        if self.flavor == "cluster":
            return None  # clusterers learn from features alone; a target is ignored
        if ground_truth is None:
            if self.supervised and self.flavor != "custom":
                raise SampleError(f"ground_truth is required to learn model {self.name!r}")
            return None
        if self.flavor == "regression":
            return _check_number(ground_truth)
        return ground_truth

    def learn(
        self,
        features: dict[str, Any],
        ground_truth: Any,
        identifier: str | None = None,
        prediction: Prediction | None = None,
        *,
        supplied: bool = True,
    ) -> LearnRecord | None:
        """Progressive validation of one sample; None when ``identifier`` was already learned.

        ``prediction`` is the client's (``supplied``) or the model's own from an earlier predict;
        only the client's can be the client's mistake. The model's own, when it is no finite
        number (a model driven to NaN), is simply not scored."""
        if identifier is not None and identifier in self.seen:
            return None
        y = self.check_target(ground_truth)
        new = self.new_features(features)
        if prediction is not None and self.flavor == "regression":
            value = finite_number(prediction.value)
            if value is None and supplied:
                raise SampleError("prediction must be a finite number for a regression model")
            prediction = Prediction(value)
        start = time.perf_counter_ns()
        if prediction is None and y is not None and self.metrics:
            prediction = self.predict(features)
        try:
            if y is None:
                self.model.learn_one(features)
            else:
                self.model.learn_one(features, y)
        except Exception as exc:  # whatever river raises on this input, it is about the input
            raise SampleError(f"model {self.name!r} cannot learn this sample: {exc}") from exc
        if new:
            self.known_features |= new
        if prediction is not None:
            self._update_metrics(y, prediction)
        record = LearnRecord(features, y, prediction, time.perf_counter_ns() - start, identifier)
        self._account(record)
        return record

    def learn_many(
        self,
        samples: list[tuple[dict[str, Any], Any, str | None]],
        pending: PendingSource,
        *,
        update_metrics: bool = True,
        taken: Taken | None = None,
    ) -> tuple[list[list[Any]], int, list[tuple[int, str]]]:
        """The batch fast path of :meth:`learn`: same semantics, encoded records out, no
        per-sample objects; a sample the model rejects is skipped and reported, not fatal.
        Without ``update_metrics`` the samples are learned only (no prediction, no metric
        update; a waiting prediction is dropped), and logged so that a replay does the same.

        A waiting prediction is taken only for a sample that is then learned (a rejected
        sample leaves it for the corrected retry); the ones taken are noted in ``taken``.

        Returns (encoded records, duplicates, [(index, reason)] of rejected samples).
        """
        encoded: list[list[Any]] = []
        rejected: list[tuple[int, str]] = []
        duplicates = 0
        seen = self.seen
        learn_one = self.model.learn_one
        with_metrics = bool(self.metrics) and update_metrics
        cap, known = self.max_features, self.known_features
        start = time.perf_counter_ns()
        if self.flavor == "regression":
            # the common case, inlined: numbers in, numbers out
            predict_one = self.model.predict_one
            updates = [metric.update for metric in self.metrics]
            for index, (features, y, identifier) in enumerate(samples):
                if identifier is not None and identifier in seen:
                    duplicates += 1
                    continue
                if (type(y) is not float and type(y) is not int) or not math.isfinite(y):
                    rejected.append((index, "ground_truth must be a finite number"))
                    continue
                waiting = None if identifier is None else pending.take(self.name, identifier)
                try:
                    # the common case inline: every name already known (or no bound)
                    new = (
                        None
                        if cap is None or features.keys() <= known
                        else self.new_features(features)
                    )
                    if waiting is not None and update_metrics:
                        value = finite_number(waiting.prediction.value)
                    else:
                        value = predict_one(features) if with_metrics else None
                        if type(value) is not float and value is not None:
                            value = plain_number(value)
                    learn_one(features, y)
                except Exception as exc:  # whatever river raises, it is about this sample
                    if waiting is not None:
                        pending.restore(self.name, identifier, waiting)  # type: ignore[arg-type]
                    reason = str(exc) if isinstance(exc, SampleError) else None
                    rejected.append((index, reason or f"model {self.name!r} cannot use it: {exc}"))
                    continue
                if new:
                    self.known_features |= new
                if waiting is not None and taken is not None:
                    taken.append((self.name, identifier, waiting))  # type: ignore[arg-type]
                if value is not None:
                    for update in updates:
                        try:  # noqa: SIM105 - contextlib.suppress costs more per sample
                            update(y, value)
                        except (ArithmeticError, TypeError, ValueError):
                            pass  # as in _update_metrics: that metric skips this sample
                encoded.append([features, y, value, 0, identifier])
                if identifier is not None:
                    seen[identifier] = None
        else:
            for index, (features, ground_truth, identifier) in enumerate(samples):
                if identifier is not None and identifier in seen:
                    duplicates += 1
                    continue
                waiting = None
                try:
                    y = self.check_target(ground_truth)
                    prediction = None
                    if identifier is not None:
                        waiting = pending.take(self.name, identifier)
                        if waiting is not None and update_metrics:
                            prediction = waiting.prediction
                    new = self.new_features(features)
                    if prediction is None and y is not None and with_metrics:
                        prediction = self.predict(features)
                    try:
                        if y is None:
                            learn_one(features)
                        else:
                            learn_one(features, y)
                    except Exception as exc:  # whatever river raises, it is about this sample
                        raise SampleError(f"model {self.name!r} cannot use it: {exc}") from exc
                except SampleError as exc:
                    if waiting is not None:
                        pending.restore(self.name, identifier, waiting)  # type: ignore[arg-type]
                    rejected.append((index, str(exc)))
                    continue
                if new:
                    self.known_features |= new
                if waiting is not None and taken is not None:
                    taken.append((self.name, identifier, waiting))  # type: ignore[arg-type]
                if prediction is not None:
                    self._update_metrics(y, prediction)
                pred = None if prediction is None else prediction.encode()
                encoded.append([features, y, pred, 0, identifier])
                if identifier is not None:
                    seen[identifier] = None
        if encoded:
            # one clock reading per batch; each sample is charged the batch's mean duration
            each = (time.perf_counter_ns() - start) // len(encoded)
            for item in encoded:
                item[3] = each
            self.learn_stats.record_many(each, len(encoded))
            self.dirty += len(encoded)
        return encoded, duplicates, rejected

    def replay(self, record: LearnRecord) -> None:
        """Re-apply a logged learn on top of a snapshot (after a restart). It succeeded live, so
        an exception here means a damaged record: start-up quarantines the model (recovery)."""
        if record.ground_truth is None:
            self.model.learn_one(record.features)
        else:
            self.model.learn_one(record.features, record.ground_truth)
        if self.max_features is not None:
            self.known_features.update(record.features)
        if record.prediction is not None:
            self._update_metrics(record.ground_truth, record.prediction)
        self._account(record)

    def _account(self, record: LearnRecord) -> None:
        self.learn_stats.record(record.duration_ns)
        self.dirty += 1
        if record.identifier is not None:
            self.seen[record.identifier] = None

    def forget_old_identifiers(self, window: int) -> None:
        while len(self.seen) > window:
            self.seen.popitem(last=False)

    def _update_metrics(self, y: Any, prediction: Prediction) -> None:
        # `is None`, not falsiness: a prediction of exactly 0.0 is a prediction (old-server bug).
        if prediction.value is None and prediction.proba is None:
            return
        for metric in self.metrics:
            if not self.classifier or metric.requires_labels:
                argument = prediction.value
            else:
                argument = prediction.proba or None
            if argument is None:
                continue
            try:
                metric.update(y, argument)
            except (ArithmeticError, TypeError, ValueError):
                # A finite but huge value overflows Python's float power (RMSE's square); that
                # metric skips the sample. Deterministic, so a replay skips it the same way.
                log.debug(
                    "metric %s skipped a sample of model %s", type(metric).__name__, self.name
                )

    def metric_values(self) -> dict[str, float | None]:
        values: dict[str, float | None] = {}
        for metric in self.metrics:
            value = metric.get()
            values[type(metric).__name__] = float(value) if math.isfinite(value) else None
        return values

    def stats(self) -> dict[str, Any]:
        return {"predict": self.predict_stats.to_data(), "learn": self.learn_stats.to_data()}
