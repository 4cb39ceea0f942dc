"""The vendor builds' environments: Apptainer's makefile cleans the Go build cache it is given."""

from __future__ import annotations

from pathlib import Path

from streamml.testbed import apptainer


def test_every_apptainer_step_builds_with_a_go_cache_inside_its_scratch_tree(
    tmp_path: Path,
) -> None:
    # its mlocal/frags/build_runtime.mk runs `go clean -cache` before the starter: with the
    # user's cache that deleted the control plane's compiled packages (found at stop 12: a node
    # build started during a cold `make test` failed on a missing cache entry)
    source = tmp_path / "apptainer"
    source.mkdir()
    (source / "go.mod").write_text("module github.com/apptainer/apptainer\n")
    steps = apptainer._apptainer_steps(source, tmp_path / "prefix")
    caches = {env.get("GOCACHE") for _argv, env in steps}
    assert caches == {str(source / ".go-build")}
    assert any(argv[:2] == ["make", "-C"] for argv, _env in steps)
