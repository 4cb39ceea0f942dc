"""The LammpsSweep resource: a parameter sweep of LAMMPS runs that teaches a StreamModel.

The same document drives the operator (a ``LammpsSweep`` custom resource) and the command line
(``streamml sweep FILE.yaml``)::

    apiVersion: streamml.io/v1alpha1
    kind: LammpsSweep
    metadata: {name: lj-size}
    spec:
      streamModelRef: {name: lj-runtime}
      parameters:
        - {name: nx, type: int, min: 8, max: 14}
        - {name: ny, type: int, min: 8, max: 14}
      sampling: {method: random, seed: 7}
      trials: 30
      testTrials: 10
      parallelism: 2
      scheduler: {type: local}

Every field is camelCase on the wire (``populate_by_name`` lets Python use snake_case). Schemas
stay structural (one type per node) so the CRD generated from them is accepted as is: parameter
values in status are strings, categorical values are strings.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from streamml.vocabulary.resource import PrinterColumn, ResourceInfo
from streamml.vocabulary.stopping import StopWhen
from streamml.vocabulary.sweepstatus import MAX_TRIALS, LammpsSweepStatus
from streamml.vocabulary.targets import (
    MAX_TARGETS,
    MetricName,
    TargetSpec,
    check_mapping,
    learner_models,
)
from streamml.vocabulary.timelimit import PredictedTimeLimit, check_time_model

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
VAR_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"
MAX_TEST_TRIALS = 1_000
MAX_PARALLELISM = 512
#: the largest magnitude of a range bound: beyond it a value is no physical parameter and
#: (as a feature) only poisons the models; integers up to it are exact as floats
MAX_MAGNITUDE = 1e15

# adaptive last: v1alpha1 only ever appends
SamplingMethod = Literal["random", "grid", "latinHypercube", "adaptive"]
#: what an adaptive sweep runs next: the candidate the models are least sure about (per unit of
#: predicted cost)
Acquisition = Literal["uncertainty", "uncertaintyPerCost"]
#: bounds of an adaptive sweep's candidate pool (every candidate is predicted once per decision)
MIN_CANDIDATES, MAX_CANDIDATES = 2, 20_000
# flux last: v1alpha1 only ever appends
SchedulerType = Literal["local", "slurm", "slurm-rest", "kubernetes", "flux"]
SCHEDULER_TYPES: tuple[SchedulerType, ...] = ("local", "slurm", "slurm-rest", "kubernetes", "flux")
ContainerRuntime = Literal["apptainer", "singularity"]
#: what a trial may learn: the numeric fields run-lammps parses from the LAMMPS log
Target = MetricName


class _Camel(BaseModel):
    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True
    )


class Parameter(_Camel):
    """One named dimension of the space: an integer or float range, or a list of categories."""

    name: str = Field(pattern=VAR_PATTERN, description="LAMMPS variable name (-var NAME value)")
    type: Literal["int", "float", "categorical"] = Field(description="kind of values")
    min: float | None = Field(
        default=None,
        allow_inf_nan=False,
        ge=-MAX_MAGNITUDE,
        le=MAX_MAGNITUDE,
        description="lowest value (int, float)",
    )
    max: float | None = Field(
        default=None,
        allow_inf_nan=False,
        ge=-MAX_MAGNITUDE,
        le=MAX_MAGNITUDE,
        description="highest value, inclusive (int, float)",
    )
    step: float | None = Field(
        default=None,
        allow_inf_nan=False,
        le=2 * MAX_MAGNITUDE,
        description="grid spacing > 0 (int: default 1; float: needed for grid)",
    )
    values: list[str] | None = Field(
        default=None, min_length=1, max_length=1000, description="categories (categorical)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> Parameter:
        if self.type == "categorical":
            if not self.values:
                raise ValueError(f"parameter {self.name!r}: categorical needs values")
            if self.min is not None or self.max is not None or self.step is not None:
                raise ValueError(f"parameter {self.name!r}: categorical takes only values")
            if not all(0 < len(v) <= 256 and _printable(v) for v in self.values):
                raise ValueError(f"parameter {self.name!r}: values are 1-256 printable characters")
            if len(set(self.values)) != len(self.values):
                raise ValueError(f"parameter {self.name!r}: duplicate values")
            return self
        if self.values is not None:
            raise ValueError(f"parameter {self.name!r}: {self.type} takes min/max, not values")
        if self.step is not None and not self.step > 0:
            raise ValueError(f"parameter {self.name!r}: step must be positive")
        if self.min is None or self.max is None:
            raise ValueError(f"parameter {self.name!r}: {self.type} needs min and max")
        if self.min > self.max:
            raise ValueError(f"parameter {self.name!r}: min {self.min} > max {self.max}")
        if self.type == "int":
            for label, v in (("min", self.min), ("max", self.max), ("step", self.step)):
                if v is not None and not float(v).is_integer():
                    raise ValueError(f"parameter {self.name!r}: int {label} must be whole")
        return self


class Sampling(_Camel):
    method: SamplingMethod = Field(default="random", description="how points are drawn")
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="seed: same seed, same plan")
    # the adaptive method's options (checked in streamml.sweep.acquisition, naming the field)
    candidates: int | None = Field(
        default=None,
        ge=MIN_CANDIDATES,
        le=MAX_CANDIDATES,
        description=f"adaptive: size of the seeded candidate pool the training runs after the "
        f"warm-up are chosen from ({MIN_CANDIDATES}-{MAX_CANDIDATES}; default: 20 per trial, at "
        "most 2000, at least trials - warmup)",
    )
    warmup: int | None = Field(
        default=None,
        ge=1,
        le=MAX_TRIALS,
        description="adaptive: training runs of the space-filling (Latin hypercube) warm-up "
        "before the models choose (1 to trials; default: max(parallelism, trials / 5))",
    )
    acquisition: Acquisition | None = Field(
        default=None,
        description="adaptive: uncertainty (the candidate the models are least sure about) or "
        "uncertaintyPerCost (that per unit of costModel's predicted cost); default uncertainty",
    )
    cost_model: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        max_length=63,
        description="adaptive, uncertaintyPerCost: the sweep's model whose prediction is a "
        "run's cost (a runtime model)",
    )


class ObjectRef(_Camel):
    name: str = Field(pattern=NAME_PATTERN, max_length=63)


class KeyRef(_Camel):
    """A key of a ConfigMap or Secret in the sweep's namespace."""

    name: str = Field(pattern=NAME_PATTERN, max_length=253)
    key: str = Field(pattern=r"^[-._a-zA-Z0-9]+$", max_length=253)


class InputConfigMapRef(KeyRef):
    """The input script from a ConfigMap key, and more keys of it as the script's files."""

    files: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="more keys of the ConfigMap, written beside the script under their names "
        "(data files, potentials)",
    )

    @model_validator(mode="after")
    def _file_keys(self) -> InputConfigMapRef:
        for key in self.files:
            if not _is_file_name(key):
                raise ValueError(f"configMapRef.files: {key!r} is not a ConfigMap key")
        if len(set(self.files) | {self.key}) != len(self.files) + 1:
            raise ValueError("configMapRef.files: duplicate keys (or the script's own key)")
        return self


#: a name on PATH (``lmp``, ``lmp_mpi``, ``bin/lmp``) or an absolute path (``/opt/lammps/bin/lmp``,
#: also through hidden folders such as ``~/.cache``: a component may start with one or two dots,
#: but is never ``.`` or ``..``)
COMMAND_PATTERN = (
    r"^(?:[A-Za-z0-9_][A-Za-z0-9_./+-]{0,255}|(?:/\.{0,2}[A-Za-z0-9_][A-Za-z0-9_.+-]*)+)$"
)


class ContainerSpec(_Camel):
    """Run LAMMPS inside an Apptainer/Singularity image on the host (not on kubernetes)."""

    runtime: ContainerRuntime = Field(default="apptainer", description="the container runtime")
    image: str = Field(
        pattern=r"^[^\s,:]+$",
        max_length=4096,
        description="path of the image file (.sif) on the hosts that run the trials",
    )
    binds: list[str] = Field(
        default_factory=list,
        max_length=32,
        description="extra bind mounts, each SRC[:DST[:OPTS]] (no spaces or commas)",
    )

    @model_validator(mode="after")
    def _binds(self) -> ContainerSpec:
        import re

        for bind in self.binds:
            if not re.fullmatch(r"/[^\s,]{0,4095}", bind):
                raise ValueError(f"lammps.container.binds: {bind!r} is not an absolute SRC[:DST]")
        return self


class LammpsSpec(_Camel):
    command: str = Field(
        default="lmp",
        max_length=256,
        pattern=COMMAND_PATTERN,
        description="the LAMMPS binary: a name on PATH or a path (no spaces, no options)",
    )
    input: str | None = Field(
        default=None, max_length=65_536, description="the input script, inline"
    )
    config_map_ref: InputConfigMapRef | None = Field(
        default=None,
        description="the input script from a ConfigMap key, more keys as its files (operator)",
    )
    input_file: str | None = Field(
        default=None,
        max_length=4096,
        description="path of the input script (CLI; operator: under an allowed root); each "
        "trial gets the files of its directory too; with inputDir, its name in that directory",
    )
    input_dir: str | None = Field(
        default=None,
        max_length=4096,
        description="a directory whose files every trial gets beside its input (data files, "
        "potentials; copied per trial, bounded in size; CLI, operator: under an allowed root)",
    )
    files: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="more files every trial gets beside its input, by their base names "
        "(CLI; operator: under an allowed root)",
    )
    vars: dict[str, str] = Field(
        default_factory=dict, description="extra -var NAME VALUE pairs, the same for every trial"
    )
    mpi_procs: int = Field(default=1, ge=1, le=1024, description="MPI ranks per run")
    container: ContainerSpec | None = Field(
        default=None, description="run lmp in this image (local, slurm, slurm-rest, flux)"
    )
    target: Target = Field(default="loop_time", description="what the models learn to predict")
    features: Literal["vars", "vars+atoms"] = Field(
        default="vars", description="what the models see: the -var values (+ the atom count)"
    )

    @model_validator(mode="after")
    def _one_input(self) -> LammpsSpec:
        for name, value in self.vars.items():
            if len(value) > 256 or not _printable(value):
                raise ValueError(f"lammps.vars.{name}: at most 256 printable characters")
        given = [x for x in (self.input, self.config_map_ref, self.input_file) if x is not None]
        if len(given) > 1:
            raise ValueError("lammps: give at most one of input, configMapRef, inputFile")
        for name in self.vars:
            if not _is_var(name):
                raise ValueError(f"lammps.vars: {name!r} is not a valid variable name")
        for path in self.files:
            if not 0 < len(path) <= 4096 or not _printable(path):
                raise ValueError("lammps.files: paths are 1-4096 printable characters")
        return self


class Resources(_Camel):
    cpus: int = Field(default=1, ge=1, le=1024, description="CPUs per trial")
    nodes: int | None = Field(
        default=None, ge=1, le=4096, description="nodes to spread the MPI ranks over (flux)"
    )
    time_limit_seconds: int | None = Field(default=None, ge=1, le=7 * 86400)
    memory: str | None = Field(default=None, pattern=r"^[0-9]+(Ki|Mi|Gi|K|M|G)?$")
    predicted_time_limit: PredictedTimeLimit | None = Field(
        default=None,
        description="each job's limit from a wall-time model's upper bound, once it has seen "
        "enough runs (before: timeLimitSeconds)",
    )


class SchedulerSpec(_Camel):
    type: SchedulerType = Field(default="local", description="where trials run")
    partition: str | None = Field(default=None, max_length=128, description="Slurm partition")
    rest_url: str | None = Field(
        default=None, max_length=2048, description="slurmrestd base URL (slurm-rest)"
    )
    rest_user: str | None = Field(default=None, max_length=128, description="Slurm user (REST)")
    jwt_secret_ref: KeyRef | None = Field(
        default=None, description="Secret key holding the Slurm JWT (slurm-rest)"
    )
    token_file: str | None = Field(
        default=None, max_length=4096, description="file holding the Slurm JWT (CLI, slurm-rest)"
    )
    image: str | None = Field(default=None, max_length=512, description="image (kubernetes)")
    flux_uri: str | None = Field(
        default=None,
        pattern=r"^(local|ssh)://[^\s]+$",
        max_length=4096,
        description="the Flux instance (local://… or ssh://…; default: the driver's FLUX_URI)",
    )
    max_local_jobs: int | None = Field(
        default=None, ge=1, le=256, description="local pool size (default: parallelism)"
    )

    @model_validator(mode="after")
    def _needs(self) -> SchedulerSpec:
        if self.type == "slurm-rest" and not self.rest_url:
            raise ValueError("scheduler.restUrl is required for slurm-rest")
        if self.type == "kubernetes" and not self.image:
            raise ValueError("scheduler.image is required for kubernetes")
        return self


def _container_on_hosts(spec: LammpsSweepSpec) -> None:
    if spec.lammps.container is not None and spec.scheduler.type == "kubernetes":
        raise ValueError(
            "lammps.container wraps lmp on hosts (local, slurm, slurm-rest, flux); on kubernetes "
            "the scheduler.image is the container"
        )


class LammpsSweepSpec(_Camel):
    stream_model_ref: ObjectRef = Field(description="the StreamModel whose server learns")
    models: list[str] | None = Field(
        default=None, max_length=64, description="models to teach (default: all on the server)"
    )
    parameters: list[Parameter] = Field(min_length=1, max_length=32)
    sampling: Sampling = Field(default_factory=Sampling)
    trials: int = Field(ge=1, le=MAX_TRIALS, description="training runs")
    test_trials: int = Field(default=0, ge=0, le=MAX_TEST_TRIALS, description="held-out runs")
    parallelism: int = Field(default=2, ge=1, le=MAX_PARALLELISM, description="runs in flight")
    max_failures: int = Field(
        default=3,
        ge=0,
        le=MAX_TRIALS,
        description="failed runs tolerated in total (each is retried); one more fails the sweep",
    )
    lammps: LammpsSpec = Field(default_factory=LammpsSpec)
    resources: Resources = Field(default_factory=Resources)
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec)
    suspend: bool = Field(default=False, description="stop submitting and cancel runs in flight")
    targets: list[TargetSpec] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_TARGETS,
        description="what each trial teaches, each target to its models (default: "
        "lammps.target to every model of models)",
    )
    stop_when: StopWhen | None = Field(
        default=None,
        description="stop once the held-out metric reaches a target (test trials run first; "
        "trials becomes the budget ceiling)",
    )

    @model_validator(mode="after")
    def _names(self) -> LammpsSweepSpec:
        _targets_map(self)
        names = [p.name for p in self.parameters]
        if len(set(names)) != len(names):
            raise ValueError("parameters: duplicate names")
        clash = set(names) & set(self.lammps.vars)
        if clash:
            raise ValueError(f"lammps.vars: {sorted(clash)} are also parameters")
        _container_on_hosts(self)
        problem = check_time_model(
            self.resources.predicted_time_limit, self.targets, self.lammps.features
        )
        if problem is not None:
            raise ValueError(problem)
        _adaptive_options(self)
        _stop_rule(self)
        return self


def _stop_rule(spec: LammpsSweepSpec) -> None:
    rule = spec.stop_when
    if rule is None:
        return
    if spec.test_trials < 2:
        raise ValueError("testTrials: stopWhen is measured on the held-out runs: give at least 2")
    taught = learner_models(resolved_targets(spec), spec.models)
    if rule.model is not None and taught is not None and rule.model not in taught:
        raise ValueError(
            f"stopWhen.model: model {rule.model!r} is not one this sweep teaches"
            f" ({', '.join(taught)})"
        )


def _adaptive_options(spec: LammpsSweepSpec) -> None:
    """The adaptive method's options agree with the rest of the spec (the pool's size against
    the space is checked where the pool is drawn: ``streamml.sweep.design``)."""
    s = spec.sampling
    options: dict[str, object] = {"candidates": s.candidates, "warmup": s.warmup}
    options |= {"acquisition": s.acquisition, "costModel": s.cost_model}
    if s.method != "adaptive":
        for name, value in options.items():
            if value is not None:
                raise ValueError(f"sampling.{name}: only for method adaptive, not {s.method}")
        return
    if s.warmup is not None and s.warmup > spec.trials:
        raise ValueError(f"sampling.warmup: {s.warmup} warm-up runs > trials {spec.trials}")
    if s.acquisition == "uncertaintyPerCost" and s.cost_model is None:
        raise ValueError("sampling.costModel: uncertaintyPerCost needs the model of the cost")
    models = learner_models(resolved_targets(spec), spec.models)
    if s.cost_model is not None and models is not None and s.cost_model not in models:
        raise ValueError(
            f"sampling.costModel: {s.cost_model!r} is not among the sweep's models "
            f"({', '.join(models)})"
        )
    if spec.lammps.features != "vars":
        raise ValueError(
            "lammps.features: adaptive sampling needs vars (a candidate's atom count is not "
            "known before it runs)"
        )


def _targets_map(spec: LammpsSweepSpec) -> None:
    if spec.targets is None:
        return
    # the API server writes the CRD's default into lammps.target: only another value clashes
    if spec.lammps.target != LammpsSpec.model_fields["target"].default:
        raise ValueError("lammps.target: give lammps.target or targets, not both")
    problem = check_mapping(spec.targets, spec.models)
    if problem is not None:
        raise ValueError(problem)


def resolved_targets(spec: LammpsSweepSpec) -> list[TargetSpec]:
    """The sweep's targets: ``targets``, or the one metric ``lammps.target`` for ``models``."""
    if spec.targets is not None:
        return list(spec.targets)
    return [TargetSpec(name=spec.lammps.target, metric=spec.lammps.target, models=spec.models)]


def _printable(text: str) -> bool:
    # a -var value must not smuggle a newline or control characters into a command line / log
    return all(ch.isprintable() for ch in text)


def _is_var(name: str) -> bool:
    import re

    return re.fullmatch(VAR_PATTERN, name) is not None


def _is_file_name(key: str) -> bool:
    import re

    return re.fullmatch(r"[-._a-zA-Z0-9]{1,253}", key) is not None and key not in (".", "..")


# ---- status --------------------------------------------------------------------------------


LAMMPSSWEEP = ResourceInfo(
    kind="LammpsSweep",
    plural="lammpssweeps",
    singular="lammpssweep",
    short_names=("lsw", "sweep"),
    spec_model=LammpsSweepSpec,
    status_model=LammpsSweepStatus,
    printer_columns=(
        PrinterColumn("Phase", ".status.phase"),
        PrinterColumn("Progress", ".status.progress", description="finished/all runs"),
        PrinterColumn("Succeeded", ".status.succeeded", "integer"),
        PrinterColumn("Failed", ".status.failed", "integer"),
        PrinterColumn("Model", ".spec.streamModelRef.name"),
        PrinterColumn("Strategy", ".spec.sampling.method", description="how points are drawn"),
        PrinterColumn("Runs", ".status.runs", description="training runs learned/budget"),
        PrinterColumn("R2", ".status.heldOutR2", "number", "held-out R² of the best model"),
        PrinterColumn("HeldOut", ".status.heldOut", description="stop metric vs its target"),
        PrinterColumn("CoreSec", ".status.coreSeconds", "number", "simulation core-seconds"),
        PrinterColumn("Best", ".status.bestModel", priority=1),
        PrinterColumn("Age", ".metadata.creationTimestamp", "date"),
    ),
)
