"""Thermo-column and memory targets, read from real LAMMPS output and from hostile logs.

The expected values never come from our parser: the input makes LAMMPS itself print every
thermo step's values at full precision (``fix print`` lines ``CHECK step press pe v_pa``), and the
test takes them from those lines, run by run.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import pytest

from streamml.clients import lammps, thermo
from streamml.errors import LammpsError
from streamml.pycommand import python_code
from streamml.vocabulary.targets import ThermoSource

INPUT = """\
units lj
atom_style atomic
lattice fcc 0.8442
region box block 0 4 0 4 0 4
create_box 1 box
create_atoms 1 box
mass 1 1.0
velocity all create 1.44 87287 loop geom
pair_style lj/cut 2.5
pair_coeff 1 1 1.0 1.0 2.5
neighbor 0.3 bin
fix 1 all nve
variable pa equal pe/atoms
variable p equal press
thermo_style custom step temp press pe etotal vol v_pa
thermo 10
fix pr all print 10 "CHECK $(step) ${p} $(pe) $(v_pa)"
print "caf\xe9 \xff not UTF-8"
run 40
run 30
"""
#: CHECK columns, by the names a target may use
CHECKED = {"Press": 1, "press": 1, "PotEng": 2, "pe": 2, "v_pa": 3}


def _run(lmp: str, directory: Path, text: bytes | str, name: str = "in.t") -> str:
    script = directory / name
    script.write_bytes(text.encode("latin-1") if isinstance(text, str) else text)
    command = lammps.build_command(script, {}, lmp=lmp)
    return lammps.run_lammps(command, cwd=directory).output


@pytest.fixture(scope="module")
def real_log(lammps_bin: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    return _run(lammps_bin, tmp_path_factory.mktemp("thermo"), INPUT)


def checked(log: str) -> list[list[list[float]]]:
    """LAMMPS' own CHECK values, per run (the runs end at their 'Loop time' lines)."""
    runs: list[list[list[float]]] = [[]]
    for line in log.splitlines():
        if line.startswith("CHECK "):
            runs[-1].append([float(v) for v in line.split()[1:]])
        elif line.startswith("Loop time of"):
            runs.append([])
    return runs[:-1]


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=2e-7, abs_tol=1e-7)  # thermo prints 8 digits


@pytest.mark.lammps
@pytest.mark.parametrize("column", sorted(CHECKED))
@pytest.mark.parametrize("run", [1, 2, -1, -2])
def test_every_reduction_of_every_run_matches_what_lammps_printed(
    real_log: str, column: str, run: int
) -> None:
    runs = checked(real_log)
    assert [len(r) for r in runs] == [5, 4]  # steps 0..40, then 40..70, every 10
    values = [row[CHECKED[column]] for row in runs[run - 1 if run > 0 else run]]
    cases = {
        ThermoSource(column=column, run=run): values[-1],
        ThermoSource(column=column, run=run, reduce="mean"): statistics.fmean(values),
        ThermoSource(column=column, run=run, reduce="mean", rows=2): statistics.fmean(values[-2:]),
    }
    for source, expected in cases.items():
        assert close(thermo.thermo_value(real_log, source), expected), source


@pytest.mark.lammps
def test_the_default_run_is_the_last(real_log: str) -> None:
    last = checked(real_log)[-1][-1]
    assert close(thermo.thermo_value(real_log, ThermoSource(column="Press")), last[1])


@pytest.mark.lammps
def test_memory_target_is_the_largest_per_rank_max(real_log: str) -> None:
    lines = [ln for ln in real_log.splitlines() if ln.startswith("Per MPI rank memory")]
    assert len(lines) == 2
    expected = max(float(ln.split("=")[1].split("|")[2].split()[0]) for ln in lines)
    metrics = lammps.parse_log(real_log)
    assert metrics.memory_mb == expected
    assert metrics.target("memory_mb") == expected


@pytest.mark.lammps
def test_a_missing_column_names_it_and_the_columns(real_log: str) -> None:
    with pytest.raises(LammpsError, match=r"'Enthalpy'.*columns: Step Temp Press") as info:
        thermo.thermo_value(real_log, ThermoSource(column="Enthalpy"))
    assert info.value.code == "TargetMissing"
    with pytest.raises(LammpsError, match="'v_nope'"):  # a variable must match exactly
        thermo.thermo_value(real_log, ThermoSource(column="v_nope"))


@pytest.mark.lammps
@pytest.mark.parametrize("run", [3, -3])
def test_a_run_that_does_not_exist_is_named(real_log: str, run: int) -> None:
    with pytest.raises(LammpsError, match=rf"'Press'.*run {run} does not exist \(the log has 2"):
        thermo.thermo_value(real_log, ThermoSource(column="Press", run=run))


@pytest.mark.lammps
def test_too_few_rows_for_the_window_is_refused(real_log: str) -> None:
    with pytest.raises(LammpsError, match=r"'Temp'.*4 thermo rows; rows: 5"):
        thermo.thermo_value(real_log, ThermoSource(column="Temp", reduce="mean", rows=5))


@pytest.mark.lammps
def test_non_utf8_output_still_parses(real_log: str) -> None:
    assert "\ufffd not UTF-8" in real_log  # byte 0xff: decoded with replacement, not refused
    assert thermo.thermo_value(real_log, ThermoSource(column="Volume")) > 0


@pytest.mark.lammps
def test_nan_and_inf_columns_fail_naming_the_column(lammps_bin: str, tmp_path: Path) -> None:
    text = INPUT.replace(
        "variable pa equal pe/atoms",
        "variable pa equal pe/atoms\nvariable big equal 1e308*10\nvariable bad equal v_big-v_big",
    ).replace("v_pa\n", "v_pa v_big v_bad\n", 1)
    log = _run(lammps_bin, tmp_path, text)
    assert thermo.thermo_value(log, ThermoSource(column="v_pa")) < 0  # the others still read
    for column in ("v_big", "v_bad"):
        with pytest.raises(LammpsError, match=f"'{column}'.*non-finite") as info:
            thermo.thermo_value(log, ThermoSource(column=column, reduce="mean"))
        assert info.value.code == "TargetNotFinite"


@pytest.mark.lammps
def test_a_log_truncated_inside_a_run_is_refused(real_log: str) -> None:
    second = real_log.index("Loop time of")
    inside = real_log.index("CHECK 60", second)
    with pytest.raises(LammpsError, match="ends inside a run") as info:
        thermo.thermo_value(real_log[:inside], ThermoSource(column="Press"))
    assert info.value.code == "LogUnparseable"
    with pytest.raises(LammpsError, match="no finished run"):
        thermo.thermo_value(real_log[:second], ThermoSource(column="Press"))


@pytest.mark.lammps
def test_a_log_whose_head_was_cut_counts_runs_from_the_end_only(real_log: str) -> None:
    tail = real_log[real_log.index("CHECK 20") :]  # inside run 1: its header is gone
    last = checked(real_log)[-1][-1][1]
    assert close(thermo.thermo_value(tail, ThermoSource(column="Press")), last)
    with pytest.raises(LammpsError, match=r"head was cut.*count from the end"):
        thermo.thermo_value(tail, ThermoSource(column="Press", run=2))
    with pytest.raises(LammpsError, match="run -2 printed no thermo header"):
        thermo.thermo_value(tail, ThermoSource(column="Press", run=-2))


@pytest.mark.lammps
def test_a_run_with_a_header_and_no_rows_is_refused(real_log: str) -> None:
    start = real_log.index("Per MPI rank memory")
    header_end = real_log.index("\n", real_log.index("Step", start)) + 1
    loop = real_log.index("Loop time of", start)
    cut = real_log[:header_end] + real_log[loop:]
    with pytest.raises(LammpsError, match="'Press': run 1 has no thermo rows"):
        thermo.thermo_value(cut, ThermoSource(column="Press", run=1))


def test_a_log_without_thermo_output_names_the_column() -> None:
    text = "Loop time of 0.5 on 1 procs for 50 steps with 2048 atoms\n"
    with pytest.raises(LammpsError, match="'PotEng': run -1 printed no thermo header"):
        thermo.thermo_value(text, ThermoSource(column="PotEng"))
    assert lammps.parse_log(text).memory_mb is None


@pytest.mark.lammps
def test_a_huge_log_keeps_its_tail_and_the_last_run(real_log: str, tmp_path: Path) -> None:
    """Output beyond MAX_LOG_BYTES: run_lammps keeps the tail; run -1 is still right."""
    source = tmp_path / "log.txt"
    second = real_log.index("Loop time of")
    junk_row = "     10   1.1   -2.6   -6.3   -4.6   303.2  -0.0246\n"
    copies = lammps.MAX_LOG_BYTES // len(junk_row) + 1000
    source.write_text(real_log[:second] + junk_row * copies + real_log[second:])
    code = f"import sys; sys.stdout.write(open({str(source)!r}).read())"
    run = lammps.run_lammps(python_code(code))
    assert len(run.output) <= lammps.MAX_LOG_BYTES
    last = checked(real_log)[-1][-1][1]
    assert close(thermo.thermo_value(run.output, ThermoSource(column="Press")), last)
    with pytest.raises(LammpsError, match="head was cut"):
        thermo.thermo_value(run.output, ThermoSource(column="Press", run=1))


def test_keywords_match_their_header_words() -> None:
    columns = ("Step", "Temp", "E_pair", "PotEng", "TotEng", "Volume", "v_pa", "c_msd[4]")
    assert thermo.column_index("pe", columns) == 3
    assert thermo.column_index("etotal", columns) == 4
    assert thermo.column_index("epair", columns) == 2
    assert thermo.column_index("vol", columns) == 5
    assert thermo.column_index("TEMP", columns) == 1
    assert thermo.column_index("c_msd[4]", columns) == 7
    assert thermo.column_index("V_PA", columns) is None  # variables are case-sensitive


def test_nonsense_rows_are_not_thermo_rows() -> None:
    log = thermo.split_runs(
        "Per MPI rank memory allocation (min/avg/max) = 1 | 2 | 3.5 Mbytes\n"
        "Step Press\n"
        "WARNING: something\n"
        "0 1.5\n"
        "x 2.5\n"
        "1 2.5 7\n"
        "2 nan\n"
        "Loop time of 0.1 on 1 procs for 2 steps with 4 atoms\n"
    )
    (run,) = log.runs
    assert run.memory_mb == 3.5 and run.columns == ("Step", "Press")
    assert run.rows == [["0", "1.5"], ["2", "nan"]]


def test_the_thermo_source_schema() -> None:
    with pytest.raises(ValueError, match="0 is no run"):
        ThermoSource(column="Press", run=0)
    with pytest.raises(ValueError, match="only with reduce: mean"):
        ThermoSource(column="Press", rows=3)
    for bad in ("Pr ess", "1abc", "v_a;rm", "T/CPU"):
        with pytest.raises(ValueError):
            ThermoSource(column=bad)


def test_the_memory_line_of_old_lammps() -> None:
    text = "Memory usage per processor = 2.05 Mbytes\nLoop time of 1 on 1 procs for 1 steps"
    assert thermo.memory_mb(text + " with 4 atoms\n") == 2.05
