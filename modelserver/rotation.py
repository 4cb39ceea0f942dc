"""Credential rotation without a restart (and without losing a model).

Tokens given as files (``--auth-token-file``, ``--auth-read-token-file``: a mounted Kubernetes
Secret, which the kubelet updates in place) are re-read when a file changes (its inode, size or
mtime; looked at every second, off the request path) and on SIGHUP. A new token replaces the old
one at once: bearer tokens and dashboard sessions of the old one stop working, the models and
their data are untouched. A file that cannot be read, or is empty, mid-rotation keeps the
current token (said in the log, without the secret).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from pathlib import Path

from streamml.errors import ConfigurationError
from streamml.files import read_secret
from streamml.modelserver.auth import Authenticator

log = logging.getLogger(__name__)

CHECK_SECONDS = 1.0
Stamp = tuple[int, int, int] | None


def _stamp(path: Path) -> Stamp:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class CredentialWatcher:
    def __init__(
        self, auth: Authenticator, *, token_file: Path | None, read_token_file: Path | None
    ) -> None:
        self.auth = auth
        self.files: dict[str, Path] = {}
        if token_file is not None:
            self.files["token"] = token_file
        if read_token_file is not None:
            self.files["read_token"] = read_token_file
        self._stamps: dict[str, Stamp] = {role: _stamp(p) for role, p in self.files.items()}
        self.rotations = 0

    def check(self, *, force: bool = False) -> bool:
        """Re-read the files that changed (all with ``force``); True when a token changed."""
        changed: dict[str, str] = {}
        for kind, path in self.files.items():
            stamp = _stamp(path)
            if not force and stamp == self._stamps[kind]:
                continue
            try:
                value = read_secret(path, f"--auth-{kind.replace('_', '-')}-file")
            except ConfigurationError as exc:
                log.warning("credential rotation: keeping the current token: %s", exc)
                continue  # the stamp stays old: the next look tries again
            self._stamps[kind] = stamp
            current = self.auth.token if kind == "token" else self.auth.read_token
            if value != current:
                changed[kind] = value
        if not changed:
            return False
        self.auth.rotate(token=changed.get("token"), read_token=changed.get("read_token"))
        self.rotations += 1
        log.warning(
            "credentials rotated (%s from %s): tokens and sessions of the old ones end now",
            ", ".join(sorted(changed)),
            ", ".join(str(self.files[k]) for k in sorted(changed)),
        )
        return True

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not on the main thread
            loop.add_signal_handler(signal.SIGHUP, lambda: self.check(force=True))
        try:
            while True:
                await asyncio.sleep(CHECK_SECONDS)
                try:
                    self.check()
                except Exception:  # keep serving with the current tokens
                    log.exception("credential rotation: checking the token files failed")
        finally:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signal.SIGHUP)
