"""Run the ``lmp`` binary and read its log: the measurements a trial reports.

Pure pieces (:func:`build_command`, :func:`parse_log`, :func:`find_error`) are kept apart from the
one side effect (:func:`run_lammps`, a subprocess), so the parser is tested on real and hostile
logs without running anything. The lines parsed (LAMMPS 2021; newer versions add Matom-step/s),
besides the thermo output and memory line of every run (:mod:`streamml.clients.thermo`)::

    Loop time of 0.0170414 on 1 procs for 50 steps with 384 atoms
    Performance: 1267499.860 tau/day, 2934.027 timesteps/s[, 1.127 Matom-step/s]
    51.3% CPU use with 1 MPI tasks x 1 OpenMP threads
    Total wall time: 0:00:01
"""

from __future__ import annotations

import os
import re
import subprocess
import typing
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from streamml import procs
from streamml.clients import thermo
from streamml.errors import LammpsError
from streamml.vocabulary.jobresult import public_error
from streamml.vocabulary.lammpssweep import Target
from streamml.vocabulary.targets import TargetSpec

#: the default input: LJ melt sized by integer cell counts nx, ny, nz (and ``steps``)
DEFAULT_INPUT = "in.lj"

#: names a trial may use as its target (numeric fields of :class:`LammpsMetrics`); the schema's
#: ``Target`` literal is the one list, so the CRD and the job client cannot disagree
TARGETS: tuple[str, ...] = typing.get_args(Target)

#: a log larger than this is read from its tail only (a runaway thermo output must not eat memory)
MAX_LOG_BYTES = 16 * 1024 * 1024

_NUM = thermo.NUM
_LOOP = thermo.LOOP
_PERF = re.compile(
    rf"^Performance:(?:.*?({_NUM}) tau/day)?(?:.*?({_NUM}) timesteps/s)?"
    rf"(?:.*?({_NUM}) Matom-step/s)?",
    re.MULTILINE,
)
_CPU = re.compile(rf"^({_NUM})% CPU use with (\d+) MPI tasks x (\d+) OpenMP threads", re.MULTILINE)
_WALL = re.compile(r"^Total wall time: (\d+):(\d{2}):(\d{2})", re.MULTILINE)
_ERROR = re.compile(r"^ERROR(?: on proc \d+)?: .*$", re.MULTILINE)
#: the log's first line: ``LAMMPS (29 Aug 2024 - Update 1)``
_VERSION = re.compile(r"^LAMMPS \(([^()\n]{1,200})\)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class LammpsMetrics:
    """What one LAMMPS run measured. Several ``run`` commands: times and steps are summed."""

    loop_time: float
    procs: int
    steps: int
    atoms: int
    tau_per_day: float | None = None
    timesteps_per_s: float | None = None
    matom_steps_per_s: float | None = None
    cpu_use: float | None = None
    mpi_tasks: int | None = None
    omp_threads: int | None = None
    wall_time: float | None = None  # whole seconds only: prefer loop_time as a target
    memory_mb: float | None = None  # the largest per-rank max of the runs' memory lines
    #: the job program's wall time to the end of LAMMPS, from its start (set by run-lammps)
    job_wall_time: float | None = None

    @property
    def cpu_time(self) -> float | None:
        """CPU seconds of the loop per rank (loop time x CPU use).

        On a shared machine the wall-clock loop time of one run varies by ±50 % with the load
        (measured: 0.44-1.16 s for the same 12x12x12 run at load 10); its CPU time varied by
        ±12 %. A model of cost learns from this far better than from the wall time.
        """
        if self.cpu_use is None:
            return None
        return self.loop_time * self.cpu_use / 100.0

    def as_dict(self) -> dict[str, float | int | None]:
        return {**asdict(self), "cpu_time": self.cpu_time}

    def target(self, name: str) -> float:
        """The value of target ``name``; LammpsError when the log did not report it."""
        if name not in TARGETS:
            raise LammpsError(f"unknown target {name!r}; choose one of {', '.join(TARGETS)}")
        value = getattr(self, name)
        if value is None:
            raise LammpsError(f"the LAMMPS log does not report {name!r}", code="TargetMissing")
        return float(value)


def target_values(
    metrics: LammpsMetrics, output: str, targets: Sequence[TargetSpec]
) -> dict[str, float]:
    """Each target's value, by name (the log's runs are split once for all thermo targets);
    LammpsError naming the first target the log does not report (or reports as NaN)."""
    log = thermo.split_runs(output) if any(t.thermo is not None for t in targets) else None
    values: dict[str, float] = {}
    for target in targets:
        if target.thermo is not None:
            assert log is not None
            source = target.thermo
            values[target.name] = thermo.reduce_run(thermo.pick_run(log, source), source)
        else:
            assert target.metric is not None
            values[target.name] = metrics.target(target.metric)
    return values


def find_error(text: str) -> str | None:
    """The first ``ERROR:`` line LAMMPS wrote (its own words for why it stopped), or None.

    The full line, for the job's own log; a status gets
    :func:`~streamml.vocabulary.jobresult.public_error` of it.
    """
    match = _ERROR.search(text)
    return match.group(0).strip() if match else None


def lammps_version(text: str) -> str | None:
    """The version LAMMPS names on its first line (``29 Aug 2024 - Update 1``), or None."""
    match = _VERSION.search(text)
    return match.group(1).strip() if match else None


def lammps_failure(error_line: str) -> LammpsError:
    """The error of a run that stopped on ``error_line``: public message, full detail."""
    return LammpsError(public_error(error_line), code="LammpsError", detail=error_line)


def parse_log(text: str) -> LammpsMetrics:
    """Parse a LAMMPS screen/log output; LammpsError naming the ERROR line or what is missing."""
    error = find_error(text)
    loops = _LOOP.findall(text)
    if error is not None:
        raise lammps_failure(error)
    if not loops:
        raise LammpsError(
            "unparseable LAMMPS log: no 'Loop time of ...' line (did the run finish?)",
            code="LogUnparseable",
        )
    try:
        loop_time = sum(float(t) for t, _, _, _ in loops)
        steps = sum(int(s) for _, _, s, _ in loops)
        procs, atoms = int(loops[-1][1]), int(loops[-1][3])
    except (ValueError, OverflowError) as exc:
        raise LammpsError(
            f"unparseable LAMMPS log: bad 'Loop time' line ({exc})", code="LogUnparseable"
        ) from exc
    perf = _last(_PERF, text)
    cpu = _last(_CPU, text)
    wall = _last(_WALL, text)
    return LammpsMetrics(
        loop_time=loop_time,
        procs=procs,
        steps=steps,
        atoms=atoms,
        tau_per_day=_float(perf.group(1)) if perf else None,
        timesteps_per_s=_float(perf.group(2)) if perf else None,
        matom_steps_per_s=_float(perf.group(3)) if perf else None,
        cpu_use=_float(cpu.group(1)) if cpu else None,
        mpi_tasks=int(cpu.group(2)) if cpu else None,
        omp_threads=int(cpu.group(3)) if cpu else None,
        wall_time=(
            float(int(wall.group(1)) * 3600 + int(wall.group(2)) * 60 + int(wall.group(3)))
            if wall
            else None
        ),
        memory_mb=thermo.memory_mb(text),
    )


def _last(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    match = None
    for match in pattern.finditer(text):  # noqa: B007 - we want the last one
        pass
    return match


def _float(value: str | None) -> float | None:
    return float(value) if value is not None else None


def default_input() -> Path:
    """The packaged LJ input (a real file on disk: lmp must be able to open it)."""
    path = Path(str(resources.files("streamml.clients") / "inputs" / DEFAULT_INPUT))
    if not path.is_file():
        raise LammpsError(f"the packaged default input {path} is missing")
    return path


def build_command(
    input_file: Path,
    variables: Mapping[str, str],
    *,
    lmp: str = "lmp",
    mpirun: int | None = None,
    srun: bool = False,
    flux_run: int | None = None,
    flux: str = "flux",
    container: Sequence[str] = (),
) -> list[str]:
    """``[mpirun -np N | srun --mpi=pmix | flux run -n N] [CONTAINER] lmp -in F -var K V ...``.

    ``container`` is the runtime's prefix (``apptainer exec … IMAGE``, :mod:`.container`): the
    launcher starts the runtime, which starts ``lmp`` inside the image.
    """
    if sum((mpirun is not None, srun, flux_run is not None)) > 1:
        raise LammpsError("choose either mpirun or srun or flux run, not two")
    prefix: list[str] = []
    for name, count in (("mpirun", mpirun), ("flux run", flux_run)):
        if count is not None and count < 1:
            raise LammpsError(f"{name} needs at least 1 process, got {count}")
    if mpirun is not None:
        prefix = ["mpirun", "--oversubscribe", "-np", str(mpirun)]
    elif srun:
        prefix = ["srun", "--mpi=pmix"]
    elif flux_run is not None:
        prefix = [flux, "run", f"--ntasks={flux_run}"]
    command = [*prefix, *container, lmp, "-in", str(input_file)]
    for name, value in variables.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise LammpsError(f"invalid LAMMPS variable name {name!r}")
        command += ["-var", name, str(value)]
    # the screen output is captured; a log file next to it would only duplicate it
    return [*command, "-log", "none"]


def lammps_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for lmp: one OpenMP thread unless set; Open MPI on loopback, allowed as root.

    Open MPI opens TCP on every interface unless told otherwise: every MPI run the project starts
    (mpirun, srun, flux run; bare or in a container) talks over 127.0.0.1 only.
    """
    env = dict(os.environ if base is None else base)
    # Inside a Flux job the process has the job's PMI handle (PMI_FD, closed for our children)
    # and FLUX_* variables: Open MPI in lmp would take it for its own launch and abort. A launcher
    # (flux run, mpirun, srun) hands lmp a fresh PMI; FLUX_URI stays for `flux run`.
    for name in [k for k in env if k.startswith("PMI_") or k.startswith("FLUX_")]:
        if name != "FLUX_URI":
            del env[name]
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("OMPI_MCA_oob_tcp_if_include", "lo")
    env.setdefault("OMPI_MCA_btl_tcp_if_include", "lo")
    env.setdefault("APPTAINER_DROP_CAPS", "CAP_SYS_RESOURCE")  # harmless without a container
    if os.geteuid() == 0:  # mpirun refuses root without these (containers, this testbed)
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    return env


@dataclass(frozen=True)
class LammpsRun:
    command: list[str]
    returncode: int
    output: str
    metrics: LammpsMetrics


def run_lammps(
    command: Sequence[str],
    *,
    cwd: Path | None = None,
    timeout_s: float | None = None,
    log_file: Path | None = None,
) -> LammpsRun:
    """Run LAMMPS, keep its output (also in ``log_file``), parse it; LammpsError on failure."""
    try:
        proc = procs.run(
            list(command),
            cwd=cwd,
            env=lammps_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout_s,
            check=False,
        )
    except OSError as exc:  # not found, not executable
        raise LammpsError(
            f"cannot run {command[0]!r}: {exc.strerror}", code="LammpsNotRunnable"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise LammpsError(
            f"LAMMPS did not finish within {timeout_s} s", code="LammpsTimeout"
        ) from exc
    raw = proc.stdout[-MAX_LOG_BYTES:]
    output = raw.decode("utf-8", errors="replace")
    if log_file is not None:
        log_file.write_text(output)
    error = find_error(output)
    if proc.returncode != 0:
        if error is not None:
            raise lammps_failure(error)
        # its last line may be anything the input printed: only the job's log gets it
        raise LammpsError(
            f"LAMMPS exited with code {proc.returncode} and no ERROR line (see the job's log)",
            code="LammpsExitCode",
            detail=f"LAMMPS exited with code {proc.returncode}: {_tail(output)}",
        )
    return LammpsRun(list(command), proc.returncode, output, parse_log(output))


def _tail(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(no output)"
