"""The thermo output of a LAMMPS log, run by run: a column reduced to one number, and memory.

Every ``run`` command prints the same block (all versions since 2016; the old memory line
``Memory usage per processor = X Mbytes`` is read too)::

    Per MPI rank memory allocation (min/avg/max) = 3.119 | 3.119 | 3.119 Mbytes
    Step Temp Press PotEng TotEng Volume v_pa
           0   1.44  -5.0196 -6.7733 -4.6133 303.24568 -0.0264
          50   0.70   0.5045 -5.6796 -4.6292 303.24568 -0.0222
    Loop time of 0.00255773 on 1 procs for 50 steps with 256 atoms

A run is the lines from its memory line to its ``Loop time`` line: the first line after the
memory line is its header (WARNING lines aside), and a row is a line of as many numbers as the
header has words (``nan``, ``-nan`` and ``inf`` included, so that they are refused by name
rather than skipped). Only one-line thermo styles are read (``one``, ``custom``; not ``multi``).

Pure functions of the log text; :mod:`streamml.clients.lammps` calls them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from streamml.errors import LammpsError
from streamml.vocabulary.targets import ThermoSource

NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
LOOP = re.compile(
    rf"^Loop time of ({NUM}) on (\d+) procs for (\d+) steps with (\d+) atoms", re.MULTILINE
)
MEMORY = re.compile(
    r"^(?:Per MPI rank memory allocation \(min/avg/max\) = [^|\n]*\|[^|\n]*\|\s*"
    rf"|Memory usage per processor = )({NUM}) Mbytes",
    re.MULTILINE,
)
_VALUE = re.compile(rf"^(?:{NUM}|[-+]?(?:nan|inf|infinity))$", re.IGNORECASE)
#: thermo_style keywords whose header word is spelled differently (the rest match ignoring case)
KEYWORD_HEADERS = {
    "pe": "PotEng",
    "ke": "KinEng",
    "etotal": "TotEng",
    "evdwl": "E_vdwl",
    "ecoul": "E_coul",
    "epair": "E_pair",
    "ebond": "E_bond",
    "eangle": "E_angle",
    "edihed": "E_dihed",
    "eimp": "E_impro",
    "emol": "E_mol",
    "elong": "E_long",
    "etail": "E_tail",
    "vol": "Volume",
    "cpuremain": "CPULeft",
}


@dataclass
class ThermoRun:
    """One run's block: its memory line, header, rows (as printed) and whether it ended."""

    memory_mb: float | None = None
    columns: tuple[str, ...] | None = None
    rows: list[list[str]] = field(default_factory=list)
    complete: bool = False


@dataclass
class ThermoLog:
    runs: list[ThermoRun]
    #: the first finished run began before the text did (a huge log keeps its tail only)
    head_cut: bool = False

    @property
    def finished(self) -> list[ThermoRun]:
        return [run for run in self.runs if run.complete]


def is_value(token: str) -> bool:
    return _VALUE.match(token) is not None


def split_runs(text: str) -> ThermoLog:
    """The log's runs, in order (a line-by-line pass: the log may be 16 MiB)."""
    log = ThermoLog(runs=[])
    current: ThermoRun | None = None
    want_header = False
    for line in text.splitlines():
        memory = MEMORY.match(line)
        if memory is not None:
            current = ThermoRun(memory_mb=_max_memory(line, memory))
            log.runs.append(current)
            want_header = True
            continue
        if line.startswith("Loop time of "):
            if current is None:  # its memory line and header were before the text began
                log.head_cut = log.head_cut or not log.runs
                current = ThermoRun()
                log.runs.append(current)
            current.complete = True
            current, want_header = None, False
            continue
        tokens = line.split()
        if current is None or not tokens or tokens[0].startswith("WARNING"):
            continue
        if want_header:
            want_header = False
            if not any(is_value(t) for t in tokens):
                current.columns = tuple(tokens)
        elif (
            current.columns is not None
            and len(tokens) == len(current.columns)
            and all(is_value(t) for t in tokens)
        ):
            current.rows.append(tokens)
    return log


def _max_memory(line: str, match: re.Match[str]) -> float | None:
    numbers = re.findall(NUM, line[line.index("=") + 1 :]) if "=" in line else []
    values = [float(n) for n in numbers] or [float(match.group(1))]
    top = max(values)
    return top if math.isfinite(top) else None


def memory_mb(text: str) -> float | None:
    """The largest per-rank memory any run of the log allocated (Mbytes), or None."""
    values = [_max_memory(m.group(0), m) for m in MEMORY.finditer(text)]
    finite = [v for v in values if v is not None]
    return max(finite) if finite else None


def column_index(column: str, columns: tuple[str, ...]) -> int | None:
    """Where ``column`` is in a header: exact, then a keyword's header word ignoring case
    (``press`` is ``Press``, ``pe`` is ``PotEng``); variables and computes match exactly."""
    if column in columns:
        return columns.index(column)
    if column[:2].lower() in ("v_", "c_", "f_"):
        return None
    wanted = KEYWORD_HEADERS.get(column.lower(), column).lower()
    for i, name in enumerate(columns):
        if name.lower() == wanted:
            return i
    return None


def _fail(source: ThermoSource, message: str, code: str = "TargetMissing") -> LammpsError:
    return LammpsError(f"thermo column {source.column!r}: {message}", code=code)


def pick_run(log: ThermoLog, source: ThermoSource) -> ThermoRun:
    """The run ``source.run`` names among the finished runs; LammpsError naming the column."""
    finished = log.finished
    if not finished:
        raise _fail(source, "the log has no finished run ('Loop time of ...')", "LogUnparseable")
    if log.runs and not log.runs[-1].complete and log.runs[-1].rows:
        raise _fail(source, "the log ends inside a run (truncated?)", "LogUnparseable")
    if source.run > 0 and log.head_cut:
        raise _fail(
            source,
            f"the log's head was cut (too large), so run {source.run} cannot be counted from "
            "the start; count from the end (run: -1 is the last)",
        )
    index = source.run - 1 if source.run > 0 else len(finished) + source.run
    if not 0 <= index < len(finished):
        raise _fail(source, f"run {source.run} does not exist (the log has {len(finished)})")
    return finished[index]


def thermo_value(text: str, source: ThermoSource) -> float:
    """``source``'s column in its run, reduced (last row, or mean of the last N / all rows)."""
    return reduce_run(pick_run(split_runs(text), source), source)


def reduce_run(run: ThermoRun, source: ThermoSource) -> float:
    where = f"run {source.run}"
    if run.columns is None:
        raise _fail(source, f"{where} printed no thermo header (a one-line thermo_style)")
    index = column_index(source.column, run.columns)
    if index is None:
        raise _fail(source, f"not in {where}'s thermo output (columns: {' '.join(run.columns)})")
    if not run.rows:
        raise _fail(source, f"{where} has no thermo rows")
    if source.reduce == "last":
        window = run.rows[-1:]
    elif source.rows is None:
        window = run.rows
    elif len(run.rows) < source.rows:
        raise _fail(source, f"{where} has {len(run.rows)} thermo rows; rows: {source.rows} is more")
    else:
        window = run.rows[-source.rows :]
    values = [float(row[index]) for row in window]
    if not all(math.isfinite(v) for v in values):
        raise _fail(source, f"{where} has a non-finite value (NaN or inf)", "TargetNotFinite")
    value = values[-1] if source.reduce == "last" else math.fsum(values) / len(values)
    if not math.isfinite(value):
        raise _fail(source, f"{where}: the mean overflows", "TargetNotFinite")
    return value
