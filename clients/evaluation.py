"""Held-out evaluation of the streamed models, next to the offline ceiling.

A LAMMPS Lennard-Jones run's time grows with its atom count (4·nx·ny·nz for an fcc box of
nx by ny by nz cells), and the same run varies by about ±15 % on a shared machine, which caps
any model's R².
The honest yardstick is therefore not R² = 1 but the *ceiling*: an ordinary least-squares fit of
the target on the atom count over the training runs, scored on the same held-out runs as the
models. A streamed model close to that ceiling has learned what there is to learn.

A sweep with several targets (an equation of state: pressure, energy, cost) is evaluated per
target (:func:`evaluate_targets`), each against the least-squares fit of the same polynomial
features of the parameters that its models see (:func:`polynomial_ceiling`).

The atom count is taken from the trial's ``atoms`` (parsed from the LAMMPS log) when present, else
as the product of the numeric parameters: for a linear fit a constant factor (the 4 atoms per fcc
cell) changes nothing.

Pure functions only: the demo, ``streamml plot`` and the benchmark feed them trial records.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamml.errors import SpecError
from streamml.vocabulary.targets import TARGET_NAME_PATTERN

TRAIN = "train"
TEST = "test"


@dataclass(frozen=True)
class FinishedTrial:
    """One finished trial: its parameters, its measured target and the models' predictions."""

    name: str
    split: str  # TRAIN or TEST
    parameters: Mapping[str, float]
    target: float
    atoms: float | None = None
    predictions: Mapping[str, float] = field(default_factory=dict)
    #: the target ``target`` is a value of (a sweep with several targets); None: the only one
    target_name: str | None = None

    @property
    def size(self) -> float:
        """The atom count (or a quantity proportional to it)."""
        if self.atoms is not None:
            return self.atoms
        return math.prod(self.parameters.values()) if self.parameters else 0.0


@dataclass(frozen=True)
class Scores:
    n: int
    mae: float
    rmse: float
    r2: float

    def as_dict(self) -> dict[str, float]:
        return {"n": self.n, "MAE": self.mae, "RMSE": self.rmse, "R2": self.r2}


@dataclass(frozen=True)
class Ceiling:
    """The offline least-squares fit ``target ≈ intercept + slope · atoms``, or (``features``
    given, :func:`polynomial_ceiling`) on every monomial of those parameters up to ``degree``,
    with ``coefficients`` in the order of :func:`polynomial_terms`."""

    intercept: float
    slope: float
    n_train: int
    scores: Scores
    features: tuple[str, ...] = ()
    degree: int = 0
    coefficients: tuple[float, ...] = ()

    @property
    def label(self) -> str:
        if not self.features:
            return "offline ceiling (LSQ on atoms)"
        return f"offline ceiling (LSQ on {', '.join(self.features)}, degree {self.degree})"

    def predict(self, size: float) -> float:
        return self.intercept + self.slope * size

    def predict_trial(self, trial: FinishedTrial) -> float:
        """The fit's value for ``trial`` (its atom count, or its parameters' monomials)."""
        if not self.features:
            return self.predict(trial.size)
        terms = polynomial_terms(trial.parameters, self.features, self.degree)
        return math.fsum(c * x for c, x in zip(self.coefficients, terms, strict=True))


@dataclass(frozen=True)
class HeldOutReport:
    models: dict[str, Scores]
    ceiling: Ceiling | None

    def best(self) -> tuple[str, Scores] | None:
        scored = [(name, s) for name, s in self.models.items() if math.isfinite(s.r2)]
        return max(scored, key=lambda item: item[1].r2) if scored else None

    def as_dict(self) -> dict[str, Any]:
        best = self.best()
        return {
            "models": {name: s.as_dict() for name, s in self.models.items()},
            "ceiling": None
            if self.ceiling is None
            else {
                "basis": self.ceiling.label,
                "intercept": self.ceiling.intercept,
                "slope": self.ceiling.slope,
                "n_train": self.ceiling.n_train,
                **self.ceiling.scores.as_dict(),
            },
            "best": None if best is None else {"model": best[0], "R2": best[1].r2},
        }


def scores(actual: Sequence[float], predicted: Sequence[float]) -> Scores:
    """MAE, RMSE and R² (1 - SS_res/SS_tot; NaN when the actual values do not vary)."""
    if len(actual) != len(predicted):
        raise ValueError("actual and predicted differ in length")
    n = len(actual)
    if n == 0:
        return Scores(0, math.nan, math.nan, math.nan)
    errors = [a - p for a, p in zip(actual, predicted, strict=True)]
    mean = sum(actual) / n
    ss_tot = sum((a - mean) ** 2 for a in actual)
    ss_res = sum(e * e for e in errors)
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else math.nan
    return Scores(n, sum(abs(e) for e in errors) / n, math.sqrt(ss_res / n), r2)


def least_squares(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """(intercept, slope) of the ordinary least-squares line through the points."""
    n = len(xs)
    if n < 2:
        raise ValueError("a line needs at least two points")
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return my, 0.0
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    return my - slope * mx, slope


def offline_ceiling(trials: Iterable[FinishedTrial]) -> Ceiling | None:
    """Fit on the training trials, score on the held-out ones; None without enough of either."""
    trials = list(trials)
    train = [t for t in trials if t.split == TRAIN]
    test = [t for t in trials if t.split == TEST]
    if len(train) < 2 or not test:
        return None
    intercept, slope = least_squares([t.size for t in train], [t.target for t in train])
    predicted = [intercept + slope * t.size for t in test]
    return Ceiling(intercept, slope, len(train), scores([t.target for t in test], predicted))


def evaluate(
    trials: Iterable[FinishedTrial],
    ceiling: Callable[[list[FinishedTrial]], Ceiling | None] | None = None,
) -> HeldOutReport:
    """Score every model's held-out predictions and compute the ceiling on the same runs
    (``ceiling``: :func:`offline_ceiling` on the atom count unless given, e.g.
    :func:`polynomial_ceiling` for a smooth target of the parameters)."""
    trials = list(trials)
    test = [t for t in trials if t.split == TEST]
    names = sorted({name for t in test for name in t.predictions})
    models: dict[str, Scores] = {}
    for name in names:
        pairs = [(t.target, t.predictions[name]) for t in test if name in t.predictions]
        pairs = [(a, p) for a, p in pairs if math.isfinite(p)]
        models[name] = scores([a for a, _ in pairs], [p for _, p in pairs])
    return HeldOutReport(models, (ceiling or offline_ceiling)(trials))


def format_evaluation(evaluation: HeldOutReport, label: str | None = None) -> str:
    """A plain-text table: one row per model, then the ceiling (``label``: the ceiling's own
    unless given), sorted by held-out R²."""
    if label is None:
        label = evaluation.ceiling.label if evaluation.ceiling else "offline ceiling"
    rows = sorted(
        evaluation.models.items(),
        key=lambda item: item[1].r2 if math.isfinite(item[1].r2) else -math.inf,
        reverse=True,
    )
    width = max([len("MODEL"), len(label)] + [len(n) for n, _ in rows])
    header = f"{'N':>3}  {'MAE':>9}  {'RMSE':>9}  {'R2':>7}  {'vs CEILING':>10}"
    lines = [f"{'MODEL':<{width}}  {header}"]
    ceiling = evaluation.ceiling
    for name, s in rows:
        gap = s.r2 - ceiling.scores.r2 if ceiling is not None else math.nan
        lines.append(
            f"{name:<{width}}  {s.n:>3}  {s.mae:>9.4f}  {s.rmse:>9.4f}  {s.r2:>7.3f}  {gap:>+10.3f}"
        )
    if ceiling is not None:
        c = ceiling.scores
        lines.append(f"{label:<{width}}  {c.n:>3}  {c.mae:>9.4f}  {c.rmse:>9.4f}  {c.r2:>7.3f}")
    return "\n".join(lines)


# -- trial records on disk -----------------------------------------------------------------


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SpecError(f"{what} must be a number, got {value!r}", field=what)
    number = float(value)
    if not math.isfinite(number):
        raise SpecError(f"{what} must be finite, got {value!r}", field=what)
    return number


def trial_from_data(data: Mapping[str, Any]) -> FinishedTrial:
    """A :class:`FinishedTrial` from its JSON form, with clear errors for malformed input."""
    if not isinstance(data, Mapping):
        raise SpecError(f"a trial record must be an object, got {type(data).__name__}")
    name = str(data.get("name") or data.get("trial") or "")
    split = data.get("split", TRAIN)
    if split not in (TRAIN, TEST):
        raise SpecError(f"trial {name!r}: split must be 'train' or 'test'", field="split")
    raw_params = data.get("parameters")
    if not isinstance(raw_params, Mapping):
        raise SpecError(f"trial {name!r}: parameters must be an object", field="parameters")
    params = {str(k): _number(v, f"parameters.{k}") for k, v in raw_params.items()}
    target = _number(data.get("target"), "target")
    atoms = data.get("atoms")
    raw_pred = data.get("predictions") or {}
    if not isinstance(raw_pred, Mapping):
        raise SpecError(f"trial {name!r}: predictions must be an object", field="predictions")
    predictions = {
        str(k): float(v)
        for k, v in raw_pred.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    target_name = data.get("target_name")
    if target_name is not None and (
        not isinstance(target_name, str) or not re.fullmatch(TARGET_NAME_PATTERN, target_name)
    ):
        raise SpecError(
            f"trial {name!r}: target_name must match {TARGET_NAME_PATTERN}, got {target_name!r}",
            field="target_name",
        )
    return FinishedTrial(
        name=name,
        split=split,
        parameters=params,
        target=target,
        atoms=None if atoms is None else _number(atoms, "atoms"),
        predictions=predictions,
        target_name=target_name,
    )


def trial_to_data(trial: FinishedTrial) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": trial.name,
        "split": trial.split,
        "parameters": dict(trial.parameters),
        "target": trial.target,
        "predictions": dict(trial.predictions),
    }
    if trial.atoms is not None:
        data["atoms"] = trial.atoms
    if trial.target_name is not None:
        data["target_name"] = trial.target_name
    return data


def load_trials(path: Path) -> list[FinishedTrial]:
    """Trial records from a JSONL file (one object a line) or a JSON list."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        if text.lstrip().startswith("["):
            items = json.loads(text)
        else:
            items = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise SpecError(f"{path}: not JSON/JSONL: {exc}") from exc
    return [trial_from_data(item) for item in items]


def write_trials(path: Path, trials: Iterable[FinishedTrial]) -> None:
    with path.open("w", encoding="utf-8") as out:
        for trial in trials:
            out.write(json.dumps(trial_to_data(trial), sort_keys=True) + "\n")


def trials_from_sweep_status(
    status: Mapping[str, Any], target: str | None = None
) -> list[FinishedTrial]:
    """Trial records from a LammpsSweep's ``status`` (camelCase, as the API server returns it).

    Training runs are the succeeded ``train`` trials with a target; held-out runs are the
    ``testResults`` (target and every model's prediction) joined to their trial's parameters.
    ``target`` (a sweep with several targets): that target's values, and only the predictions
    of the models that learn it (``evaluationByTarget``).
    """
    if not isinstance(status, Mapping):
        raise SpecError("a LammpsSweep status must be an object")
    params_of: dict[tuple[str, int], dict[str, float]] = {}
    trials: list[FinishedTrial] = []
    value = _target_reader(target)
    learners = _learners(status, target)
    for record in status.get("trials") or []:
        if not isinstance(record, Mapping) or not isinstance(record.get("id"), int):
            continue
        params = _numeric_params(record.get("params"))
        role = str(record.get("role", ""))
        params_of[(role, record["id"])] = params
        y = value(record)
        if role == TRAIN and record.get("state") == "Succeeded" and y is not None:
            name = str(record.get("jobName") or f"train-{record['id']}")
            trials.append(FinishedTrial(name, TRAIN, params, y, target_name=target))
    for result in status.get("testResults") or []:
        y = value(result) if isinstance(result, Mapping) else None
        if y is None:
            continue
        ident = result.get("id")
        predictions = {
            str(k): float(v)
            for k, v in (result.get("predictions") or {}).items()
            if _is_number(v) and (learners is None or k in learners)
        }
        trials.append(
            FinishedTrial(
                f"test-{ident}",
                TEST,
                params_of.get((TEST, ident), {}) if isinstance(ident, int) else {},
                y,
                predictions=predictions,
                target_name=target,
            )
        )
    return trials


def _target_reader(target: str | None) -> Callable[[Mapping[str, Any]], float | None]:
    """A record's value of ``target`` (``targets[target]``; ``target`` when None), or None."""

    def read(record: Mapping[str, Any]) -> float | None:
        y: Any
        if target is None:
            y = record.get("target")
        else:
            values = record.get("targets")
            y = values.get(target) if isinstance(values, Mapping) else None
        return float(y) if _is_number(y) else None

    return read


def _learners(status: Mapping[str, Any], target: str | None) -> set[str] | None:
    if target is None:
        return None
    for entry in status.get("evaluationByTarget") or []:
        if isinstance(entry, Mapping) and entry.get("target") == target:
            return {str(e.get("model")) for e in entry.get("evaluation") or [] if e}
    raise SpecError(f"the sweep status has no target {target!r}", field="target")


# -- per target ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TargetReport:
    """One target's trial records and its models' held-out evaluation against its ceiling."""

    target: str | None  # None: a sweep of one target
    trials: list[FinishedTrial]
    report: HeldOutReport

    @property
    def models(self) -> list[str]:
        """The models that predicted this target's held-out runs."""
        return sorted({m for t in self.trials if t.split == TEST for m in t.predictions})


def sweep_targets(status: Mapping[str, Any]) -> list[str]:
    """The targets of a sweep with several (``evaluationByTarget``, in the spec's order); []
    for a sweep of one target."""
    entries = status.get("evaluationByTarget") or []
    return [str(e["target"]) for e in entries if isinstance(e, Mapping) and e.get("target")]


def trials_of_every_target(status: Mapping[str, Any]) -> list[FinishedTrial]:
    """Every target's trial records from a sweep status, each naming its target (a sweep of
    one target: its records, naming none)."""
    names = sweep_targets(status)
    if not names:
        return trials_from_sweep_status(status)
    return [t for name in names for t in trials_from_sweep_status(status, name)]


def evaluate_targets(trials: Iterable[FinishedTrial]) -> list[TargetReport]:
    """The held-out evaluation of each target (in the order the records first name it).

    A target of a sweep with several is a smooth function of the parameters (the equation of
    state's pressure and energy) or a cost whose box the parameters do not size (the atom count
    is the same in every run): its ceiling is the least-squares fit of the same degree-2
    polynomial features its models see (:func:`polynomial_ceiling`). The one target of a
    runtime sweep is measured against the fit on the atom count (:func:`offline_ceiling`).
    """
    groups: dict[str | None, list[FinishedTrial]] = {}
    for trial in trials:
        groups.setdefault(trial.target_name, []).append(trial)
    return [
        TargetReport(name, group, evaluate(group, None if name is None else polynomial_ceiling))
        for name, group in groups.items()
    ]


def polynomial_terms(
    parameters: Mapping[str, float], features: Sequence[str], degree: int
) -> list[float]:
    """A constant, then every monomial of ``features`` up to ``degree`` (as river's
    ``PolynomialExtender`` builds them); a missing parameter counts as 0."""
    import itertools

    x = [parameters.get(n, 0.0) for n in features]
    terms = [1.0]
    for d in range(1, degree + 1):
        for combo in itertools.combinations_with_replacement(range(len(x)), d):
            terms.append(math.prod(x[i] for i in combo))
    return terms


def polynomial_ceiling(trials: Iterable[FinishedTrial], degree: int = 2) -> Ceiling | None:
    """The offline ceiling of a smooth target of the parameters (an equation of state): an
    ordinary least-squares fit on the polynomial features of the numeric parameters
    (:func:`polynomial_terms`), fitted on the training trials, scored on the held-out ones.
    ``intercept``/``slope`` are not meaningful here (NaN); None without more training runs than
    features."""
    import numpy as np

    trials = list(trials)
    train = [t for t in trials if t.split == TRAIN]
    test = [t for t in trials if t.split == TEST]
    names = tuple(sorted(train[0].parameters)) if train else ()

    def row(t: FinishedTrial) -> list[float]:
        return polynomial_terms(t.parameters, names, degree)

    if not test or not names or len(train) <= len(row(train[0])):
        return None
    coef, *_ = np.linalg.lstsq(
        np.array([row(t) for t in train]), np.array([t.target for t in train]), rcond=None
    )
    coefficients = tuple(float(c) for c in coef)
    unscored = Scores(0, math.nan, math.nan, math.nan)
    fit = Ceiling(math.nan, math.nan, len(train), unscored, names, degree, coefficients)
    predicted = [fit.predict_trial(t) for t in test]
    return dataclasses.replace(fit, scores=scores([t.target for t in test], predicted))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _numeric_params(raw: Any) -> dict[str, float]:
    """Status parameters are strings (structural schema); keep those that are numbers."""
    params: dict[str, float] = {}
    if not isinstance(raw, Mapping):
        return params
    for key, value in raw.items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            params[str(key)] = number
    return params
