"""Atomic file replacement: a reader sees the old content or the new, never an empty or half file.

Several processes read the files this project writes while they are being rewritten: jobs read
their credential files while a resumed sweep writes them again, the operator reads a sweep's
state, users tail a watch table. Truncating in place opens a window in which a reader finds an
empty file (a job then sent no credentials and got a 401). So every rewrite goes to a unique
temporary file in the same directory, which then replaces the target in one ``rename``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from streamml.errors import ConfigurationError


@contextlib.contextmanager
def replacing(path: Path, *, private: bool = False) -> Iterator[IO[str]]:
    """Open a temporary file beside ``path``; on success it atomically becomes ``path``.

    ``private`` files are created 0600 (credentials); the others 0644. On an exception the
    temporary file is removed and ``path`` is left as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600 if private else 0o644)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_atomic(path: Path, text: str, *, private: bool = False) -> Path:
    """Replace ``path`` with ``text`` atomically (see :func:`replacing`)."""
    with replacing(path, private=private) as handle:
        handle.write(text)
    return path


def read_secret(path: Path, what: str) -> str:
    """A credential kept in a file (a token, a JWT, a signing secret): its text, stripped.

    The one reader of secret files. :class:`~streamml.errors.ConfigurationError` naming ``what``
    (the option or field that named the file) when the file cannot be read or holds nothing: an
    empty credential would only earn a 401 later. The message never contains the file's content.
    """
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigurationError(f"{what}: cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigurationError(f"{what}: {path} is not UTF-8 text") from None
    if not value:
        raise ConfigurationError(f"{what}: {path} is empty")
    return value
