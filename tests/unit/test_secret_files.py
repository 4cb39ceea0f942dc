"""One reader of secret files (``streamml.files.read_secret``) for the server, the job, the sweep
command and the slurm-rest scheduler: a missing or empty file is a clear error naming the option,
never its content, and an empty token is never sent."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from streamml.errors import ConfigurationError, SpecError
from streamml.files import read_secret
from streamml.sweep.command import configure, run
from streamml.sweep.schedulers import make_scheduler


def test_read_secret_strips_and_refuses_missing_or_empty(tmp_path: Path) -> None:
    (tmp_path / "t").write_text("s3cret-value\n")
    assert read_secret(tmp_path / "t", "--token-file") == "s3cret-value"
    with pytest.raises(ConfigurationError, match=r"^--token-file: cannot read .*missing"):
        read_secret(tmp_path / "missing", "--token-file")
    (tmp_path / "empty").write_text(" \n")
    with pytest.raises(ConfigurationError, match=r"^--token-file: .*empty is empty$"):
        read_secret(tmp_path / "empty", "--token-file")
    (tmp_path / "bin").write_bytes(b"\xff\xfe s3cret")
    with pytest.raises(ConfigurationError, match="not UTF-8") as info:
        read_secret(tmp_path / "bin", "--token-file")
    assert "s3cret" not in str(info.value)


def test_the_sweep_command_refuses_an_empty_token_file(tmp_path: Path) -> None:
    """It read the file its own way and sent an empty token (every learn then a 401)."""
    sweep = Path(__file__).resolve().parents[2] / "config" / "samples" / "lammpssweep.yaml"
    (tmp_path / "token").write_text("\n")
    parser = argparse.ArgumentParser()
    configure(parser)
    args = parser.parse_args(
        [str(sweep), "--server", "http://127.0.0.1:9", "--token-file", str(tmp_path / "token")]
    )
    with pytest.raises(ConfigurationError, match=r"--token-file: .* is empty"):
        run(args)


def test_the_slurm_rest_token_file_error_names_the_field(tmp_path: Path) -> None:
    settings = {"url": "http://127.0.0.1:9", "tokenFile": str(tmp_path / "missing")}
    with pytest.raises(SpecError, match="tokenFile: cannot read") as info:
        make_scheduler("slurm-rest", settings)
    assert info.value.field == "tokenFile"
