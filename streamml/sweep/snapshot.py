"""A trial's input directory: the script and its files (data files, potentials), confined.

A driver (operator or CLI) prepares one snapshot per sweep, ``WORKDIR/input/``, from the spec:
the script (inline, a ConfigMap key, or ``inputFile``) and its files (more ConfigMap keys,
``inputDir``, ``files``; an ``inputFile`` alone brings the files of its own directory, where a
script's ``read_data`` and potentials usually are). Every trial then gets its own copy of the
snapshot as the directory LAMMPS runs in (``streamml run-lammps --input-dir``), so
``read_data data.lj`` finds its file and whatever one trial writes there never reaches another.
A scheduler only has to run the job in its working directory on a filesystem the driver shares
(local, Slurm, Flux); the kubernetes backend carries the snapshot to the Pod as a ConfigMap.

Paths a spec names are confined: each must resolve (symlinks followed) under an allowed root,
otherwise a spec could make LAMMPS read, say, a mounted Secret and echo its first line into the
status. The operator's roots come from its settings (none by default: only inline text and
ConfigMaps); the CLI's are the sweep file's directory plus ``--input-root``. A snapshot is
bounded in files and bytes, and holds regular files only.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from streamml.errors import SpecError
from streamml.vocabulary.lammpssweep import LammpsSpec

#: bounds of one snapshot (each trial copies it)
MAX_INPUT_BYTES = 64 * 1024 * 1024
MAX_INPUT_FILES = 256
MAX_INPUT_DEPTH = 8
#: the name of an inline (or ConfigMap, or inputFile) script in the snapshot when it has none
INLINE_NAME = "input.lammps"
SNAPSHOT = "input"


@dataclass(frozen=True)
class Roots:
    """Where a spec's paths may point; ``base`` anchors relative paths (None: refused)."""

    allowed: tuple[Path, ...] = ()
    base: Path | None = None
    #: said in the refusal: how to allow a path (an operator setting, a CLI flag)
    hint: str = ""

    def confine(self, raw: str, where: str) -> Path:
        """The resolved path, or SpecError naming ``where`` when it escapes every root."""
        path = Path(raw)
        if not path.is_absolute():
            if self.base is None:
                raise SpecError(f"{where}: {raw!r} must be an absolute path", field=where)
            path = self.base / path
        try:
            real = path.resolve(strict=True)
        except (OSError, RuntimeError) as exc:
            raise SpecError(f"{where}: {raw}: no such file or directory", field=where) from exc
        if not any(real.is_relative_to(root.resolve()) for root in self.allowed):
            allowed = ", ".join(str(r) for r in self.allowed) or "none"
            raise SpecError(
                f"{where}: {raw} is outside the allowed input roots ({allowed}){self.hint}",
                field=where,
            )
        return real


@dataclass
class Snapshot:
    """Files for a snapshot: relative name -> bytes, checked against the bounds as they come."""

    files: dict[str, bytes] = field(default_factory=dict)
    size: int = 0
    exclude: Path | None = None  # the sweep's work directory

    def add(self, name: str, data: bytes, where: str) -> None:
        parts = Path(name).parts
        if not parts or Path(name).is_absolute() or any(p in ("", ".", "..") for p in parts):
            raise SpecError(f"{where}: {name!r} is not a plain relative file name", field=where)
        if len(parts) > MAX_INPUT_DEPTH:
            raise SpecError(f"{where}: {name} is nested too deep", field=where)
        if name in self.files:
            raise SpecError(f"{where}: two input files are named {name!r}", field=where)
        self.size += len(data)
        if len(self.files) >= MAX_INPUT_FILES or self.size > MAX_INPUT_BYTES:
            raise SpecError(
                f"{where}: the input files exceed {MAX_INPUT_FILES} files or"
                f" {MAX_INPUT_BYTES // (1024 * 1024)} MiB",
                field=where,
            )
        self.files[name] = data


@dataclass(frozen=True)
class PreparedInput:
    directory: Path  # the snapshot (WORKDIR/input)
    script: str  # the script's name in it
    size: int


def same_input(a: LammpsSpec, b: LammpsSpec) -> bool:
    """Whether two specs name the same input (script and files): else the snapshot must be
    prepared again (:func:`prepare`), for the trials submitted from then on."""
    fields = ("input", "config_map_ref", "input_file", "input_dir", "files")
    return all(getattr(a, f) == getattr(b, f) for f in fields)


def prepare(
    lammps: LammpsSpec,
    workdir: Path,
    roots: Roots,
    *,
    config_map: Mapping[str, bytes] | None = None,
) -> PreparedInput | None:
    """The snapshot of a spec's input in ``workdir/input``, or None for the packaged input.

    ``config_map`` holds the referenced ConfigMap's keys (the operator reads it). Raises
    SpecError naming the field (``lammps.inputFile``, ``lammps.inputDir``, ...).
    """
    snap = Snapshot(exclude=workdir.resolve())
    if lammps.input_dir is not None:
        _add_tree(snap, roots.confine(lammps.input_dir, "lammps.inputDir"), roots)
    for i, raw in enumerate(lammps.files):
        where = f"lammps.files[{i}]"
        path = roots.confine(raw, where)
        snap.add(path.name, _read_file(path, where), where)
    script = _add_script(snap, lammps, roots, config_map)
    if script is None:
        if snap.files:
            raise SpecError(
                "lammps: files for the input need the input itself (input, configMapRef or"
                " inputFile)",
                field="lammps.inputDir" if lammps.input_dir else "lammps.files",
            )
        return None
    return PreparedInput(_write(snap, workdir / SNAPSHOT), script, snap.size)


def _add_script(
    snap: Snapshot,
    lammps: LammpsSpec,
    roots: Roots,
    config_map: Mapping[str, bytes] | None,
) -> str | None:
    ref = lammps.config_map_ref
    if ref is not None:
        if config_map is None:
            raise SpecError(
                "lammps.configMapRef: ConfigMaps are read by the operator only",
                field="lammps.configMapRef",
            )
        for key in (ref.key, *ref.files):
            if key not in config_map:
                raise SpecError(
                    f"lammps.configMapRef: ConfigMap {ref.name!r} has no key {key!r}",
                    field="lammps.configMapRef",
                )
            snap.add(key, config_map[key], "lammps.configMapRef")
        return ref.key
    if lammps.input is not None:
        snap.add(INLINE_NAME, lammps.input.encode(), "lammps.input")
        return INLINE_NAME
    if lammps.input_file is None:
        return None
    if lammps.input_dir is not None and not Path(lammps.input_file).is_absolute():
        if lammps.input_file not in snap.files:  # the script is one of the directory's files
            raise SpecError(
                f"lammps.inputFile: {lammps.input_file!r} is not a file of lammps.inputDir",
                field="lammps.inputFile",
            )
        return lammps.input_file
    # a script's data files and potentials sit beside it: its directory is the input's
    path = roots.confine(lammps.input_file, "lammps.inputFile")
    _read_file(path, "lammps.inputFile")  # a regular file, within the bound
    _add_tree(snap, path.parent, roots, "lammps.inputFile")
    return path.name


def _read_file(path: Path, where: str) -> bytes:
    if not path.is_file():
        raise SpecError(f"{where}: {path} is not a regular file", field=where)
    if path.stat().st_size > MAX_INPUT_BYTES:
        raise SpecError(f"{where}: {path} is larger than the input bound", field=where)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SpecError(f"{where}: cannot read {path}: {exc.strerror}", field=where) from exc


def _add_tree(snap: Snapshot, top: Path, roots: Roots, where: str = "lammps.inputDir") -> None:
    if not top.is_dir():
        raise SpecError(f"{where}: {top} is not a directory", field=where)
    for rel in _tree(top, where, exclude=snap.exclude):
        real = roots.confine(str(top / rel), where)  # a symlink inside must not lead out
        snap.add(rel, _read_file(real, where), where)


def _tree(top: Path, where: str, exclude: Path | None = None) -> list[str]:
    """Relative names of the files under ``top`` (bounded; ConfigMap volume internals skipped).

    ``exclude`` (the sweep's own work directory, often beside its input) is never entered.
    """
    names: list[str] = []
    # links are followed (a ConfigMap volume's directories are links into its ..data), each
    # file is confined by its caller, and the depth bound ends any link loop
    for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
        depth = len(Path(dirpath).relative_to(top).parts)
        keep = depth < MAX_INPUT_DEPTH
        dirnames[:] = sorted(
            d
            for d in dirnames
            if keep
            and not d.startswith("..")
            and (exclude is None or Path(dirpath, d).resolve() != exclude)
        )
        for name in sorted(filenames):
            if name.startswith(".."):
                continue
            names.append(str(Path(dirpath, name).relative_to(top)))
            if len(names) > MAX_INPUT_FILES:
                raise SpecError(f"{where}: more than {MAX_INPUT_FILES} files", field=where)
    return names


def _write(snap: Snapshot, directory: Path) -> Path:
    """Replace ``directory`` with the snapshot, unless it holds these files already (a
    restarted driver: trials in flight may be copying it right now)."""
    if directory.is_dir() and _same(directory, snap.files):
        return directory
    staging = directory.with_name(directory.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    for name, data in snap.files.items():
        target = staging / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    staging.mkdir(parents=True, exist_ok=True)
    old = directory.with_name(directory.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        directory.rename(old)
    staging.rename(directory)
    shutil.rmtree(old, ignore_errors=True)
    return directory


def _same(directory: Path, files: Mapping[str, bytes]) -> bool:
    try:
        present = _tree(directory, "input")
        return sorted(present) == sorted(files) and all(
            (directory / name).read_bytes() == data for name, data in files.items()
        )
    except (OSError, SpecError):
        return False


def stage(source: Path, run_dir: Path) -> int:
    """Copy a snapshot into a trial's run directory (job side); the number of bytes copied.

    Copies, never links: LAMMPS may write a file of the same name (``write_data``) and must not
    change the snapshot other trials copy. Symlinks are followed only within ``source`` (a
    ConfigMap volume's keys are symlinks into its ``..data``). Raises SpecError on a breach.
    """
    top = source.resolve(strict=True)
    roots = Roots(allowed=(top,))
    snap = Snapshot()
    for rel in _tree(top, "input-dir"):
        real = roots.confine(str(top / rel), "input-dir")
        snap.add(rel, _read_file(real, "input-dir"), "input-dir")
    for name, data in snap.files.items():
        target = run_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return snap.size
