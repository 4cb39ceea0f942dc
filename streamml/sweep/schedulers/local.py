"""The embedded scheduler: a bounded pool of local subprocesses that survives a driver restart.

Every job lives in its own directory under ``root`` (the job id is the directory name)::

    <root>/<id>/job.json     the request (name, command, env, workdir, time limit)
    <root>/<id>/pid          written by the wrapper shell when the job starts
    <root>/<id>/exitcode     written by the wrapper when the command ends
    <root>/<id>/cancelled    written by cancel() before it signals the process group
    <root>/<id>/output       the command's stdout + stderr

A job is started detached (``start_new_session``) through a small ``/bin/sh`` wrapper that
records its pid and exit code in files, so a RESTARTED driver (a new process with the same
root) still polls, cancels and finds (:meth:`LocalScheduler.lookup`) the jobs of the old one.
Jobs beyond ``max_parallel`` wait on disk (no pid yet) and are started by later polls, under a
file lock, so two drivers sharing a root never start a job twice.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

from streamml import procs
from streamml.errors import NotFoundError, SchedulerError
from streamml.files import write_atomic
from streamml.sweep.schedulers.base import JobRequest, JobState, JobStatus

# "$@" is the job's command; the exit code is written through a temp file so a poller never
# reads half a number. `timeout` enforces the time limit (exit 124 = TimeLimit).
_WRAPPER = (
    'd=$1; shift; echo $$ > "$d/pid"; "$@" > "$d/output" 2>&1; '
    'echo $? > "$d/exitcode.tmp"; mv "$d/exitcode.tmp" "$d/exitcode"'
)
_TIMEOUT_EXIT = 124


class LocalScheduler:
    name = "local"

    def __init__(self, root: Path, *, max_parallel: int = 2) -> None:
        if max_parallel < 1:
            raise SchedulerError(f"local scheduler needs max_parallel >= 1, got {max_parallel}")
        self.root = root
        self.max_parallel = max_parallel
        self.root.mkdir(parents=True, exist_ok=True)
        # children of THIS process: reaped here so they do not linger as zombies
        self._children: dict[str, subprocess.Popen[bytes]] = {}

    # -- the interface ---------------------------------------------------------------------

    async def submit(self, job: JobRequest) -> str:
        if not job.command:
            raise SchedulerError(f"job {job.name!r} has an empty command")
        job_id = f"{job.name}-{uuid.uuid4().hex[:8]}"
        jobdir = self.root / job_id
        jobdir.mkdir()
        spec = {
            "name": job.name,
            "command": list(job.command),
            "env": dict(job.env),
            "workdir": str(job.workdir) if job.workdir else None,
            "time_limit_s": job.time_limit_s,
            "submitted": time.time(),
        }
        write_atomic(jobdir / "job.json", json.dumps(spec))
        await asyncio.to_thread(self._start_pending)
        return job_id

    async def poll(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        await asyncio.to_thread(self._start_pending)
        return {job_id: self._status(job_id) for job_id in job_ids}

    async def lookup(self, name: str) -> str | None:
        found: list[tuple[float, str]] = []
        for spec_file in self.root.glob("*/job.json"):
            try:
                spec = json.loads(spec_file.read_text())
            except (OSError, ValueError):
                continue
            if spec.get("name") == name:
                found.append((float(spec.get("submitted", 0)), spec_file.parent.name))
        return max(found)[1] if found else None

    async def cancel(self, job_id: str) -> None:
        jobdir = self._jobdir(job_id, missing_ok=True)
        if jobdir is None or (jobdir / "exitcode").exists():
            return
        with self._lock():
            (jobdir / "cancelled").touch()
            pid = _read_int(jobdir / "pid")
        if pid is not None and _alive(pid):
            with suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)  # the wrapper leads its own session/group
        child = self._children.pop(job_id, None)
        if child is not None:
            await asyncio.to_thread(child.wait)

    async def close(self) -> None:
        # running jobs keep running; just reap the ones that already ended
        for job_id, child in list(self._children.items()):
            if child.poll() is not None:
                del self._children[job_id]

    # -- internals -------------------------------------------------------------------------

    def _jobdir(self, job_id: str, *, missing_ok: bool = False) -> Path | None:
        jobdir = self.root / job_id
        if "/" in job_id or job_id in ("", ".", "..") or not (jobdir / "job.json").is_file():
            if missing_ok:
                return None
            raise NotFoundError(f"no local job {job_id!r}")
        return jobdir

    @contextmanager
    def _lock(self) -> Iterator[None]:
        with open(self.root / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _start_pending(self) -> None:
        for job_id, child in list(self._children.items()):
            if child.poll() is not None:
                del self._children[job_id]
        with self._lock():
            jobdirs = [p.parent for p in self.root.glob("*/job.json")]
            running = 0
            pending: list[tuple[float, Path]] = []
            for jobdir in jobdirs:
                if (jobdir / "exitcode").exists() or (jobdir / "cancelled").exists():
                    continue
                if (jobdir / "started").exists():
                    pid = _read_int(jobdir / "pid")
                    if pid is None or _alive(pid):  # pid None: the wrapper is starting
                        running += 1
                    continue
                pending.append((_submitted(jobdir), jobdir))
            for _, jobdir in sorted(pending)[: max(0, self.max_parallel - running)]:
                self._start(jobdir)

    def _start(self, jobdir: Path) -> None:
        spec = json.loads((jobdir / "job.json").read_text())
        command: list[str] = list(spec["command"])
        if spec.get("time_limit_s"):
            # --foreground keeps `timeout` in the wrapper's process group, so cancel reaches it
            limit = str(int(spec["time_limit_s"]))
            command = ["timeout", "--foreground", "-s", "TERM", limit, *command]
        env = {**os.environ, **spec["env"]}
        env.setdefault("STREAMML_JOB_DIR", str(jobdir))
        (jobdir / "started").touch()
        child = procs.popen(
            ["/bin/sh", "-c", _WRAPPER, "streamml-job", str(jobdir.resolve()), *command],
            cwd=spec.get("workdir") or jobdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            detached=True,  # a restarted operator finds its jobs still running
        )
        self._children[jobdir.name] = child
        # also written by the wrapper; writing it here closes the window before the shell runs
        (jobdir / "pid").write_text(f"{child.pid}\n")

    def _status(self, job_id: str) -> JobStatus:
        jobdir = self._jobdir(job_id, missing_ok=True)
        if jobdir is None:
            return JobStatus(JobState.UNKNOWN, reason="the local scheduler has no such job")
        code = _read_int(jobdir / "exitcode")
        cancelled = (jobdir / "cancelled").exists()
        if code is not None:
            if cancelled:
                return JobStatus(JobState.CANCELLED, reason="cancelled", exit_code=code)
            if code == 0:
                return JobStatus(JobState.SUCCEEDED, exit_code=0)
            if code == _TIMEOUT_EXIT:
                return JobStatus(JobState.FAILED, reason="TimeLimit", exit_code=code)
            return JobStatus(
                JobState.FAILED,
                reason=f"NonZeroExitCode {code}: {_last_line(jobdir / 'output')}",
                exit_code=code,
            )
        if cancelled:
            return JobStatus(JobState.CANCELLED, reason="cancelled")
        if not (jobdir / "started").exists():
            return JobStatus(JobState.PENDING, reason="waiting for a free slot")
        pid = _read_int(jobdir / "pid")
        if pid is None or _alive(pid):
            return JobStatus(JobState.RUNNING)
        # the wrapper vanished without an exit code: killed from outside (e.g. SIGKILL, reboot)
        if _read_int(jobdir / "exitcode") is not None:
            return self._status(job_id)
        return JobStatus(JobState.FAILED, reason="the job's process died without an exit code")


def _submitted(jobdir: Path) -> float:
    """Submission time from job.json: pending jobs start in the order they were submitted."""
    try:
        return float(json.loads((jobdir / "job.json").read_text()).get("submitted", 0.0))
    except (OSError, ValueError, TypeError):
        return 0.0


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (PID 1 may reap late here)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X")


def _last_line(path: Path, limit: int = 300) -> str:
    """The job's last output line: run-lammps prints its one-line error there."""
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, path.stat().st_size - 8192))
            tail = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return "(no output)"
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return lines[-1][:limit] if lines else "(no output)"
