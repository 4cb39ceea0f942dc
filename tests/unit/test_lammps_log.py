"""The LAMMPS log parser and command builder, on real lmp output and on hostile logs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from streamml.clients import lammps
from streamml.errors import LammpsError
from streamml.vocabulary import jobresult


@pytest.fixture(scope="module")
def real_log(lammps_bin: str) -> str:
    command = lammps.build_command(
        lammps.default_input(), {"nx": "4", "ny": "5", "nz": "6", "steps": "20"}, lmp=lammps_bin
    )
    proc = subprocess.run(
        command, env=lammps.lammps_env(), capture_output=True, text=True, check=True
    )
    return proc.stdout


@pytest.mark.lammps
def test_parses_real_output(real_log: str) -> None:
    metrics = lammps.parse_log(real_log)
    assert metrics.atoms == 4 * 4 * 5 * 6
    assert metrics.steps == 20
    assert metrics.procs == 1
    assert metrics.mpi_tasks == 1 and metrics.omp_threads == 1
    assert metrics.loop_time > 0
    assert metrics.timesteps_per_s is not None and metrics.timesteps_per_s > 0
    assert metrics.tau_per_day is not None and metrics.tau_per_day > 0
    assert metrics.cpu_use is not None and 0 < metrics.cpu_use <= 100 * 2
    assert metrics.wall_time is not None and metrics.wall_time >= 0
    assert metrics.matom_steps_per_s is None  # LAMMPS 2021 does not print it
    assert metrics.target("loop_time") == metrics.loop_time
    assert metrics.target("atoms") == 480.0


@pytest.mark.lammps
@pytest.mark.parametrize("cut", [0.1, 0.5, 0.8])
def test_truncated_real_output_is_refused_or_partial(real_log: str, cut: float) -> None:
    """A log cut before the Loop line is refused; one cut after it parses without later fields."""
    text = real_log[: int(len(real_log) * cut)]
    if "Loop time of" not in text:
        with pytest.raises(LammpsError, match="no 'Loop time"):
            lammps.parse_log(text)
    else:
        metrics = lammps.parse_log(text)
        assert metrics.atoms == 480


NEWER = """\
Loop time of 1.5 on 4 procs for 100 steps with 32000 atoms

Performance: 28800.000 tau/day, 66.667 timesteps/s, 2.133 Matom-step/s
98.9% CPU use with 2 MPI tasks x 2 OpenMP threads
Total wall time: 1:02:03
"""


def test_newer_format_with_matom_steps() -> None:
    metrics = lammps.parse_log(NEWER)
    assert (metrics.loop_time, metrics.procs, metrics.steps, metrics.atoms) == (1.5, 4, 100, 32000)
    assert metrics.matom_steps_per_s == 2.133
    assert metrics.timesteps_per_s == 66.667
    assert (metrics.mpi_tasks, metrics.omp_threads, metrics.cpu_use) == (2, 2, 98.9)
    assert metrics.wall_time == 3723.0


def test_several_runs_sum_times_and_steps() -> None:
    text = (
        NEWER.replace("1:02:03", "0:00:01")
        + "\nLoop time of 0.5 on 4 procs for 50 steps with 32000 atoms\n"
    )
    metrics = lammps.parse_log(text)
    assert metrics.loop_time == 2.0 and metrics.steps == 150


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\x00\xff garbage \n" * 1000,
        "Loop time of abc on 1 procs for 5 steps with 10 atoms",
        "loop time of 1.0 on 1 procs for 5 steps with 10 atoms",  # wrong case
        "Performance: 1 tau/day, 2 timesteps/s\n",
        "x" * 1_000_000,
    ],
)
def test_hostile_logs_are_refused(text: str) -> None:
    with pytest.raises(LammpsError, match="unparseable"):
        lammps.parse_log(text)


@pytest.mark.parametrize(
    ("line", "public"),
    [
        (
            "ERROR: Lost atoms: original 224 current 160 (src/thermo.cpp:439)",
            "Lost atoms: original 224 current 160",
        ),
        (
            "ERROR on proc 0: Cannot open input script x: No such file or directory",
            "Cannot open input script …: No such file or directory",
        ),
    ],
)
def test_error_line_wins_even_after_a_loop_line(line: str, public: str) -> None:
    with pytest.raises(LammpsError) as info:
        lammps.parse_log(NEWER + line + "\n")
    assert info.value.code == "LammpsError"
    assert str(info.value) == public  # what a status gets
    assert info.value.detail == line  # what the job's own log gets


def test_missing_optional_fields_and_targets() -> None:
    metrics = lammps.parse_log("Loop time of 0.25 on 1 procs for 10 steps with 4 atoms\n")
    assert metrics.timesteps_per_s is None and metrics.wall_time is None
    with pytest.raises(LammpsError, match="does not report 'timesteps_per_s'"):
        metrics.target("timesteps_per_s")
    with pytest.raises(LammpsError, match="unknown target"):
        metrics.target("__class__")


def test_build_command() -> None:
    command = lammps.build_command(Path("in.lj"), {"nx": "4"}, lmp="lmp", mpirun=2)
    assert command == [
        "mpirun", "--oversubscribe", "-np", "2", "lmp", "-in", "in.lj", "-var", "nx", "4",
        "-log", "none",
    ]  # fmt: skip
    assert lammps.build_command(Path("f"), {}, srun=True)[:2] == ["srun", "--mpi=pmix"]
    with pytest.raises(LammpsError, match="either mpirun or srun"):
        lammps.build_command(Path("f"), {}, mpirun=1, srun=True)
    with pytest.raises(LammpsError, match="at least 1"):
        lammps.build_command(Path("f"), {}, mpirun=0)
    for bad in ("", "1x", "a b", "x;rm", "-in"):
        with pytest.raises(LammpsError, match="invalid LAMMPS variable name"):
            lammps.build_command(Path("f"), {bad: "1"})


def test_default_input_uses_integer_cell_counts() -> None:
    text = lammps.default_input().read_text()
    assert "region          box block 0 ${nx} 0 ${ny} 0 ${nz}" in text
    assert "run             ${steps}" in text


@pytest.mark.lammps
def test_lost_atoms_is_surfaced(lammps_bin: str, tmp_path: Path) -> None:
    """A non-integer box: atoms are lost at the first re-neighboring (step 20); LAMMPS stops and
    its own ERROR line is the message."""
    command = lammps.build_command(
        lammps.default_input(), {"nx": "3.3", "ny": "4", "nz": "4", "steps": "50"}, lmp=lammps_bin
    )
    with pytest.raises(LammpsError, match=r"^Lost atoms: original \d+ current \d+$") as info:
        lammps.run_lammps(command, log_file=tmp_path / "log")
    assert info.value.code == "LammpsError"
    assert info.value.detail.startswith("ERROR: Lost atoms: original")
    assert "Lost atoms" in (tmp_path / "log").read_text()


@pytest.mark.lammps
def test_bad_input_and_missing_binary(lammps_bin: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.in"
    bad.write_text("units lj\nfrobnicate 1 2 3\n")
    with pytest.raises(LammpsError, match=r"^Unknown command$") as info:
        lammps.run_lammps(lammps.build_command(bad, {}, lmp=lammps_bin))
    assert "ERROR: Unknown command: frobnicate" in info.value.detail
    with pytest.raises(LammpsError, match="cannot run") as info:
        lammps.run_lammps(lammps.build_command(bad, {}, lmp=str(tmp_path / "no-lmp")))
    assert info.value.code == "LammpsNotRunnable"


SECRET = "hunter2-4f1c9e0b-not-a-real-token"


@pytest.mark.lammps
@pytest.mark.parametrize(
    "script",
    [
        "include {secret}\n",  # the secret's first line runs as a command
        "variable s file {secret}\nnext s\n${{s}}\n",
        "variable s file {secret}\nunits lj\npair_style ${{s}}\n",
        "variable s file {secret}\nunits lj\nlattice fcc ${{s}}\n",
        "variable s file {secret}\nread_restart ${{s}}\n",
        "variable s file {secret}\nprint ${{${{s}}}}\n",
        "variable s file {secret}\nunits lj\natom_style atomic\nread_data {secret}\n",
    ],
)
def test_lammps_echo_of_input_text_never_reaches_the_public_message(
    lammps_bin: str, tmp_path: Path, script: str
) -> None:
    """Real lmp on inputs that make it echo a file's text: the status message has none of it,
    the job's own log (the error's detail) keeps the whole line."""
    secret = tmp_path / "token"
    secret.write_text(f"{SECRET}\n{SECRET}\n")
    bad = tmp_path / "in.bad"
    bad.write_text(script.format(secret=secret))
    with pytest.raises(LammpsError) as info:
        lammps.run_lammps(lammps.build_command(bad, {}, lmp=lammps_bin), cwd=tmp_path)
    assert info.value.code == "LammpsError"
    assert "hunter2" not in str(info.value) and str(tmp_path) not in str(info.value)
    assert info.value.detail.startswith("ERROR")


@pytest.mark.parametrize(
    ("line", "public"),
    [
        ("ERROR: Unknown command: s3cret (src/input.cpp:274)", "Unknown command"),
        ("ERROR: Unrecognized pair style 's3cret' (src/force.cpp:278)",
         "Unrecognized pair style '…'"),
        ("ERROR: Expected floating point parameter instead of 's3cret' in input script or data"
         " file (src/lattice.cpp:85)",
         "Expected floating point parameter instead of '…' in input script or data file"),
        ("ERROR on proc 0: cannot open eam potential file s3cret.eam: No such file or directory",
         "cannot open eam potential file …: No such file or directory"),
        ("ERROR on proc 0: Substitution for illegal variable s3cret (src/input.cpp:617)",
         "Substitution for illegal variable …"),
        ("ERROR: Variable s3cret: Variable evaluation before simulation box is defined",
         "Variable …: Variable evaluation before simulation box is defined"),
        ("ERROR: Unknown identifier in data file: s3cret (src/read_data.cpp:1188)",
         "Unknown identifier in data file: …"),
        ("ERROR: Illegal units command (src/update.cpp:302)", "Illegal units command"),
    ],
)  # fmt: skip
def test_public_error_cuts_each_echo_form(line: str, public: str) -> None:
    assert jobresult.public_error(line) == public
    assert "s3cret" not in jobresult.scrub(f"NonZeroExitCode 1: {line}\nLast command: s3cret")
