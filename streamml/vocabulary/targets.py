"""What a trial teaches: its targets, each from a source in the LAMMPS log, each to its models.

A sweep's ``spec.targets`` is the one place that says which model learns what::

    targets:
      - name: pressure
        thermo: {column: Press, reduce: mean, rows: 10}   # mean of the last 10 thermo rows
        models: [p-poly]
      - name: pe_per_atom
        thermo: {column: PotEng}                          # the last row of the last run
        models: [pe-poly]
      - name: cost
        metric: cpu_time                                  # a timing of the log (or memory_mb)
        models: [cost-bayes]

Without ``targets`` a sweep teaches the one metric ``lammps.target`` to ``models`` (or every
model), as it always did. The job (``streamml run-lammps --targets JSON``) reads the same list.

Runs are chosen by position because LAMMPS runs have no names: ``run: 2`` is the second ``run``
command of the input (1-based, as a scientist counts them), ``run: -1`` the last (the default);
counting from the end keeps meaning when an input gains an equilibration run in front, and when a
huge log had its head cut (only its tail is kept), where a count from the start would be wrong
and is refused instead.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator
from pydantic.alias_generators import to_camel

#: the numeric measurements run-lammps parses from the log (v1alpha1 only ever appends)
MetricName = Literal[
    "loop_time",
    "wall_time",
    "timesteps_per_s",
    "tau_per_day",
    "matom_steps_per_s",
    "atoms",
    "steps",
    "cpu_use",
    "cpu_time",
    "memory_mb",
    "job_wall_time",
]
Reduction = Literal["last", "mean"]
TARGET_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
#: a thermo header word: a keyword (``Press``, ``PotEng``), ``v_name``, ``c_ID[2]``, ``f_ID``
COLUMN_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}(\[[0-9]{1,6}\])?$"
MAX_TARGETS = 16
MAX_RUN_INDEX = 100_000


class _Camel(BaseModel):
    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True
    )


class ThermoSource(_Camel):
    """A column of the thermo output of one run, reduced to one number."""

    column: str = Field(
        pattern=COLUMN_PATTERN,
        description="the thermo column: a header word (Press, PotEng, TotEng, Temp, Volume), "
        "its thermo_style keyword (press, pe, etotal, temp, vol) or a variable v_NAME",
    )
    reduce: Reduction = Field(
        default="last", description="last: the run's last row; mean: the mean of rows"
    )
    rows: int | None = Field(
        default=None,
        ge=1,
        le=10_000_000,
        description="mean over the last N rows of the run (default: every row of the run)",
    )
    run: int = Field(
        default=-1,
        ge=-MAX_RUN_INDEX,
        le=MAX_RUN_INDEX,
        description="which run command: 1 the first, 2 the second; -1 the last, -2 the one "
        "before (not 0)",
    )

    @model_validator(mode="after")
    def _consistent(self) -> ThermoSource:
        if self.run == 0:
            raise ValueError("thermo.run: 0 is no run (1 is the first, -1 the last)")
        if self.rows is not None and self.reduce != "mean":
            raise ValueError("thermo.rows: only with reduce: mean")
        return self

    def describe(self) -> str:
        how = "last row" if self.reduce == "last" else f"mean of {self.rows or 'all'} rows"
        return f"thermo {self.column} ({how} of run {self.run})"


class TargetSpec(_Camel):
    """One target: its name, where its value comes from (exactly one source), who learns it."""

    name: str = Field(
        pattern=TARGET_NAME_PATTERN, description="the target's name (status, results)"
    )
    metric: MetricName | None = Field(
        default=None,
        description="a measurement of the log (loop_time, cpu_time, memory_mb: the largest "
        "per-rank 'Per MPI rank memory allocation' max of the runs, in Mbytes; job_wall_time: "
        "seconds from the job's start, container start included, to the end of LAMMPS, ...)",
    )
    thermo: ThermoSource | None = Field(default=None, description="a thermo output column")
    models: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="the models that learn this target (needed when there are several "
        "targets; each model learns one target)",
    )

    @model_validator(mode="after")
    def _one_source(self) -> TargetSpec:
        if (self.metric is None) == (self.thermo is None):
            raise ValueError(f"target {self.name!r}: give exactly one source, metric or thermo")
        if self.models is not None and len(set(self.models)) != len(self.models):
            raise ValueError(f"target {self.name!r}: models lists a model twice")
        return self

    def describe(self) -> str:
        return self.thermo.describe() if self.thermo is not None else f"metric {self.metric}"


TARGET_LIST = TypeAdapter(list[TargetSpec])


def check_mapping(targets: list[TargetSpec], models: list[str] | None) -> str | None:
    """The first problem of ``targets`` against the sweep's ``models``, naming the field (or
    None): unique names, a model in one target only, every target learned by some model, every
    listed model teaching some target."""
    names = [t.name for t in targets]
    for i, name in enumerate(names):
        if name in names[:i]:
            return f"targets[{i}].name: {name!r} is used by another target"
    owner: dict[str, int] = {}
    for i, target in enumerate(targets):
        if target.models is None:
            if len(targets) > 1:
                return (
                    f"targets[{i}].models: with several targets each names its models "
                    f"(target {target.name!r} has none: no model would learn it)"
                )
            continue
        for model in target.models:
            if model in owner:
                return (
                    f"targets[{i}].models: model {model!r} already learns "
                    f"targets[{owner[model]}] ({targets[owner[model]].name!r}); a model "
                    "learns one target"
                )
            owner[model] = i
            if models is not None and model not in models:
                return f"targets[{i}].models: model {model!r} is not in spec.models"
    if models is not None and owner:
        for j, model in enumerate(models):
            if model not in owner:
                return (
                    f"models[{j}]: model {model!r} has no target source (list it under one "
                    "of spec.targets[].models)"
                )
    return None


def learner_models(targets: list[TargetSpec], models: list[str] | None) -> list[str] | None:
    """Every model the trial teaches (None: every model on the server)."""
    named = [m for t in targets for m in t.models or ()]
    return named or models


def model_targets(targets: list[TargetSpec]) -> dict[str, str]:
    """Model name -> the name of the target it learns (only models named by a target)."""
    return {m: t.name for t in targets for m in t.models or ()}


def check_served(targets: list[TargetSpec], served: list[str], where: str) -> str | None:
    """The first target model that ``where`` (e.g. the StreamModel) does not declare, or None."""
    for i, target in enumerate(targets):
        for model in target.models or ():
            if model not in served:
                return (
                    f"targets[{i}].models: model {model!r} is not a model of {where} "
                    f"(it has {', '.join(served) or 'none'})"
                )
    return None
