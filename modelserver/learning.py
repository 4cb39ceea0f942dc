"""The learning core: one named river model with its metrics, stats and the identifiers it has
learned (:class:`ModelState`); the record of each applied learn is
:class:`~streamml.modelserver.records.LearnRecord`, its timings :mod:`.callstats`. It
knows nothing of HTTP, storage or threads: the registry joins learns to waiting predictions and
the model service orders, logs and commits what it returns.

Progressive validation (river's ``progressive_val_score`` on a live stream) has one body,
:meth:`ModelState.validate`, which single learns, batches, labels and replays all go through:
the model first predicts, then learns, then the metrics are updated with (truth, earlier
prediction). Learning before the metric update means a sample the model rejects leaves metrics
untouched. Idempotency lives here too: a learn under an identifier already learned is a
duplicate, and the window of remembered identifiers is applied as each one is learned, live and
on replay alike. Every applied learn returns a :class:`LearnRecord` (a batch: its encoded
form); replaying the records on a snapshot reproduces model, metrics, stats and identifiers
exactly (the prediction and the duration are in the record, so replay does not depend on
timing).
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from river import metrics as _river_metrics

from streamml.errors import SpecError
from streamml.modelserver.callstats import CallStats
from streamml.modelserver.drift import DriftWatch, Fork, error_of, fresh_model, metric_values
from streamml.modelserver.pending import PendingPrediction, PendingSource
from streamml.modelserver.provenance import Origins
from streamml.modelserver.records import LearnRecord, Prediction, finite_number, plain_number

#: where a learn notes the waiting predictions it consumed (model, identifier, prediction), so
#: that they can be put back when its write is not made durable
Taken = list[tuple[str, str, PendingPrediction]]

log = logging.getLogger(__name__)

#: river is typed loosely; treat its metric classes as Any
river_metrics: Any = _river_metrics

CLASSIFIERS = ("binary", "multiclass")


class SampleError(SpecError):
    """A sample the model cannot use (wrong feature types, missing ground truth)."""


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
    #: the drift test on the error stream (None: off); a snapshot written before drift
    #: detection loads with a fresh one (``snapshots.load_snapshot``)
    drift: DriftWatch | None = None
    #: policy ``fork``: the model as it was at the last detection, scored beside the served one
    fork: Fork | None = None
    #: where its samples came from (``provenance``); a snapshot written before provenance
    #: loads with an empty index (none of its samples said)
    origins: Origins = field(default_factory=Origins)
    #: each metric's bound update and whether it takes the label (else the probabilities);
    #: made on first use (the metrics of a state never change)
    _scorers: list[tuple[Any, bool]] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    @property
    def classifier(self) -> bool:
        return self.flavor in CLASSIFIERS

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
        return self.predict_with(self.model, features)

    def predict_with(self, model: Any, features: dict[str, Any]) -> Prediction:
        """:meth:`predict` by ``model`` (the served one, or a fork's frozen one)."""
        flavor = self.flavor
        try:
            if flavor == "regression":  # the common case first (every regressor has one)
                value = model.predict_one(features)
                return Prediction(value if type(value) is float else plain_number(value))
            if flavor in CLASSIFIERS:
                proba = model.predict_proba_one(features)
                label = max(proba, key=proba.__getitem__) if proba else None
                return Prediction(label, dict(proba))
            if hasattr(model, "predict_one"):
                return Prediction(model.predict_one(features))
            return Prediction(None)
        except Exception as exc:  # whatever river raises on this input, it is about the input
            raise SampleError(f"model {self.name!r} cannot use these features: {exc}") from exc

    def predict_timed(self, features: dict[str, Any]) -> Prediction:
        start = time.perf_counter_ns()
        prediction = self.predict(features)
        self.predict_stats.record(time.perf_counter_ns() - start)
        return prediction

    def check_target(self, ground_truth: Any) -> Any:
        if (
            type(ground_truth) is float
            and self.flavor == "regression"
            and math.isfinite(ground_truth)
        ):
            return ground_truth  # the common case
        if self.flavor == "cluster":
            return None  # clusterers learn from features alone; a target is ignored
        if ground_truth is None:
            if self.supervised and self.flavor != "custom":
                raise SampleError(f"ground_truth is required to learn model {self.name!r}")
            return None
        if self.flavor == "regression":
            return _check_number(ground_truth)
        return ground_truth

    def scored_with(self, prediction: Prediction | None, *, supplied: bool) -> Prediction | None:
        """The prediction a learn is scored with: the client's (``supplied``) or the model's own
        from an earlier predict. Only the client's can be the client's mistake; the model's
        own, when it is no finite number (a model driven to NaN), is simply not scored."""
        if prediction is None or self.flavor != "regression":
            return prediction
        value = finite_number(prediction.value)
        if value is None and supplied:
            raise SampleError("prediction must be a finite number for a regression model")
        return Prediction(value)

    def validate(
        self, features: dict[str, Any], y: Any, prediction: Prediction | None, *, predict: bool
    ) -> Prediction | None:
        """Progressive validation of one checked sample, the one body every learn goes through
        (single, batch, label, replay): predict first (unless ``prediction`` is given, or not
        ``predict``), learn, then score the prediction against ``y``. A sample the model cannot
        use raises :class:`SampleError` before anything changed: learning comes before the
        metric update, so a rejected sample leaves the metrics as they were. Returns the
        prediction it was scored with."""
        # the common case inline: no bound, or every name already known
        new = (
            None
            if self.max_features is None or features.keys() <= self.known_features
            else self.new_features(features)
        )
        if prediction is None and predict:
            # predict() less its per-sample bound: the check above already holds it (a sample
            # within the distinct-name bound has at most that many features)
            prediction = self.predict_with(self.model, features)
        learn_one = self.model.learn_one  # a model without one is a bug, not the sample's fault
        try:
            if y is None:
                learn_one(features)
            else:
                learn_one(features, y)
        except Exception as exc:  # whatever river raises on this input, it is about the input
            raise SampleError(f"model {self.name!r} cannot learn this sample: {exc}") from exc
        if new:
            self.known_features |= new
        if prediction is not None:
            self._update_metrics(y, prediction)
            watch = self.drift
            if watch is not None:
                value = prediction.value
                if (
                    type(value) is float
                    and type(y) is float
                    and self.fork is None
                    and self.flavor == "regression"
                ):
                    # _watch's common case inline (a regressor's float residual, no fork): the
                    # same error as error_of, one call per sample instead of four
                    error = abs(y - value)
                    if math.isfinite(error) and watch.observe(error):
                        self._drifted(watch)
                else:
                    self._watch(features, y, prediction)
        return prediction

    def _watch(self, features: dict[str, Any], y: Any, prediction: Prediction) -> None:
        """The drift hook: the scored error into the watch; policy ``reset`` restarts the model
        from a fresh copy at a detection (after it learned the sample that completed it),
        ``fork`` too, keeping the model as it was (:class:`Fork`)."""
        watch = self.drift
        if self.fork is not None:
            self._score_fork(self.fork, features, y, prediction)
        error = error_of(self.classifier, y, prediction.value)
        if watch is None or error is None or not watch.observe(error):
            return
        self._drifted(watch)

    def _drifted(self, watch: DriftWatch) -> None:
        """A detection just completed: act on the watch's policy."""
        log.info("model %s: drift detected at sample %d", self.name, watch.observed)
        if watch.policy == "fork":
            self.fork = Fork.of(watch.observed, self.model, self.metrics)
        if watch.policy in ("reset", "fork"):
            self.model = fresh_model(self.model)

    def _score_fork(self, fork: Fork, features: dict[str, Any], y: Any, served: Prediction) -> None:
        try:
            before = self.predict_with(fork.before, features)
        except SampleError:
            return  # the old model cannot use this sample: it is scored on neither
        fork.samples += 1
        self._score(fork.fresh_metrics, y, served)
        self._score(fork.before_metrics, y, before)

    def learn(
        self,
        features: dict[str, Any],
        ground_truth: Any,
        identifier: str | None = None,
        prediction: Prediction | None = None,
        *,
        supplied: bool = True,
        window: int | None = None,
        provenance: dict[str, str] | None = None,
    ) -> LearnRecord | None:
        """One sample (:meth:`validate`); None when ``identifier`` was already learned.
        ``prediction``: see :meth:`scored_with`; ``window``: how many identifiers the model
        remembers (None: all); ``provenance``: where the sample came from (logged, indexed)."""
        if identifier is not None and identifier in self.seen:
            return None
        y = self.check_target(ground_truth)
        prediction = self.scored_with(prediction, supplied=supplied)
        start = time.perf_counter_ns()
        prediction = self.validate(
            features, y, prediction, predict=y is not None and bool(self.metrics)
        )
        record = LearnRecord(
            features, y, prediction, time.perf_counter_ns() - start, identifier, provenance
        )
        self._account(record, window)
        return record

    def learn_many(
        self,
        samples: list[tuple[dict[str, Any], Any, str | None]],
        pending: PendingSource,
        *,
        update_metrics: bool = True,
        taken: Taken | None = None,
        window: int | None = None,
        provenance: dict[str, str] | None = None,
    ) -> tuple[list[list[Any]], int, list[tuple[int, str]]]:
        """Many samples, each as :meth:`learn` does it, encoded records out; a sample the model
        rejects is skipped and reported, not fatal. Without ``update_metrics`` the samples are
        learned only (no prediction, no metric update; a waiting prediction is dropped), and
        logged so that a replay does the same. ``provenance``: the origin of every sample.

        A waiting prediction is taken only for a sample that is then learned (a rejected
        sample leaves it for the corrected retry); the ones taken are noted in ``taken``.

        Returns (encoded records, duplicates, [(index, reason)] of rejected samples).

        The batch path's loop, longer than ~60 lines on purpose: the plain-float cases of the
        target check, the drift hook and the record encoding are inlined per sample (BENCHMARKS.md,
        "Issue 14: server figures after the hot-path fixes"); a call per sample is what they cost.
        """
        encoded: list[list[Any]] = []
        rejected: list[tuple[int, str]] = []
        duplicates = 0
        seen, name = self.seen, self.name
        check_target, validate, remember = self.check_target, self.validate, self._remember
        predict = bool(self.metrics) and update_metrics
        regression = self.flavor == "regression"
        isfinite = math.isfinite
        start = time.perf_counter_ns()
        for index, (features, ground_truth, identifier) in enumerate(samples):
            if identifier is not None and identifier in seen:
                duplicates += 1
                continue
            waiting = None
            try:
                # check_target's common case inline (a finite float for a regressor)
                if regression and type(ground_truth) is float and isfinite(ground_truth):
                    y = ground_truth
                else:
                    y = check_target(ground_truth)
                prediction = None
                if identifier is not None:
                    waiting = pending.take(name, identifier)
                    if waiting is not None and update_metrics:
                        prediction = self.scored_with(waiting.prediction, supplied=False)
                prediction = validate(features, y, prediction, predict=predict and y is not None)
            except SampleError as exc:
                if waiting is not None:
                    pending.restore(name, identifier, waiting)  # type: ignore[arg-type]
                rejected.append((index, str(exc)))
                continue
            if waiting is not None and taken is not None:
                taken.append((name, identifier, waiting))  # type: ignore[arg-type]
            if prediction is None:
                pred = None
            elif prediction.proba is None and type(prediction.value) is float:
                pred = prediction.value  # what encode() gives a plain float, without the call
            else:
                pred = prediction.encode()
            encoded.append([features, y, pred, 0, identifier])
            if identifier is not None:
                remember(identifier, window)
        if encoded:
            # one clock reading per batch; each sample is charged the batch's mean duration
            each = (time.perf_counter_ns() - start) // len(encoded)
            for item in encoded:
                item[3] = each
            base = self.learn_stats.n_calls
            self.learn_stats.record_many(each, len(encoded))
            self.dirty += len(encoded)
            if provenance is not None:
                add = self.origins.add
                for position, item in enumerate(encoded, start=base + 1):
                    item.append(provenance)
                    add(provenance, position)
        return encoded, duplicates, rejected

    def replay(self, record: LearnRecord, window: int | None = None) -> None:
        """Re-apply a logged learn on top of a snapshot (after a restart), with the prediction
        it was scored with live. It succeeded live, so an exception here means a damaged
        record: start-up quarantines the model (recovery)."""
        self.validate(record.features, record.ground_truth, record.prediction, predict=False)
        self._account(record, window)

    def _account(self, record: LearnRecord, window: int | None) -> None:
        self.learn_stats.record(record.duration_ns)
        self.dirty += 1
        if record.identifier is not None:
            self._remember(record.identifier, window)
        if record.provenance is not None:  # the sample's index: the learn count after it
            self.origins.add(record.provenance, self.learn_stats.n_calls)

    def _remember(self, identifier: str, window: int | None) -> None:
        """The one place an identifier enters the idempotency window (live and on replay, so
        both forget the same ones in the same order)."""
        seen = self.seen
        seen[identifier] = None
        if window is not None and len(seen) > window:
            self.forget_old_identifiers(window)

    def forget_old_identifiers(self, window: int) -> None:
        """Keep the newest ``window`` identifiers (also after a restart with a smaller one)."""
        while len(self.seen) > window:
            self.seen.popitem(last=False)

    def _update_metrics(self, y: Any, prediction: Prediction) -> None:
        # `is None`, not falsiness: a prediction of exactly 0.0 is a prediction (old-server bug).
        value, proba = prediction.value, prediction.proba
        if value is None and proba is None:
            return
        scorers = self._scorers
        if scorers is None:
            scorers = self._scorers = [
                (metric.update, not self.classifier or metric.requires_labels)
                for metric in self.metrics
            ]
        for update, with_label in scorers:  # _apply, inline (once per scored learn)
            argument = value if with_label else proba or None
            if argument is None:
                continue
            try:
                update(y, argument)
            except (ArithmeticError, TypeError, ValueError):
                log.debug("a metric skipped a sample of model %s", self.name)  # see _apply

    def _score(self, metrics: list[Any], y: Any, prediction: Prediction) -> None:
        """Score ``prediction`` into ``metrics`` (a fork's), as :meth:`_update_metrics` does."""
        scorers = [(m.update, not self.classifier or m.requires_labels) for m in metrics]
        if prediction.value is not None or prediction.proba is not None:
            self._apply(scorers, y, prediction.value, prediction.proba)

    def _apply(
        self, scorers: list[tuple[Any, bool]], y: Any, value: Any, proba: dict[Any, float] | None
    ) -> None:
        for update, with_label in scorers:
            argument = value if with_label else proba or None
            if argument is None:
                continue
            try:
                update(y, argument)
            except (ArithmeticError, TypeError, ValueError):
                # A finite but huge value overflows Python's float power (RMSE's square); that
                # metric skips the sample. Deterministic, so a replay skips it the same way.
                log.debug("a metric skipped a sample of model %s", self.name)

    def metric_values(self) -> dict[str, float | None]:
        return metric_values(self.metrics)

    def stats(self) -> dict[str, Any]:
        data = {"predict": self.predict_stats.to_data(), "learn": self.learn_stats.to_data()}
        if self.drift is not None:
            data["drift"] = self.drift.to_data()
        if self.fork is not None:
            data["fork"] = self.fork.to_data()
        return data
