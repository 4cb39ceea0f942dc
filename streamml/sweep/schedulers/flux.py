"""Flux through its command-line tool: ``flux submit``/``batch``, ``flux jobs --json``, ``cancel``.

The instance is reached by URI (``FLUX_URI``: ``local://…`` or ``ssh://host/…``, as Flux itself
supports). A job is named after the trial (``--job-name``), so a restarted driver finds it again
with :meth:`FluxScheduler.lookup` and never submits it twice. A serial trial is ``flux submit -n1
-c CPUS``; an MPI trial (``tasks`` > 1) is ``flux batch -n TASKS`` whose one script runs
``streamml run-lammps --flux-run TASKS``, i.e. ``flux run`` inside the trial's own allocation
(its output goes to ``flux-<id>.out`` in the trial's directory, as ``flux batch`` does).

A failure carries a fixed reason code (:data:`REASONS`) followed by Flux's own words:
``NonZeroExitCode (exit 1): ERROR: …`` (the last line of the job's output, from ``flux job
attach``), ``TIMEOUT``, ``Unsatisfiable: …`` (an ``alloc`` exception: more than the instance
has), ``FluxException (type): …`` for any other exception.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from streamml import procs
from streamml.errors import SchedulerError, SchedulerUnavailable
from streamml.sweep.schedulers.base import JobRequest, JobState, JobStatus
from streamml.sweep.schedulers.slurm_cli import check_job

REASON_EXIT = "NonZeroExitCode"
REASON_TIMEOUT = "TIMEOUT"
REASON_UNSATISFIABLE = "Unsatisfiable"
REASON_EXCEPTION = "FluxException"
REASON_CANCELLED = "Cancelled"
REASONS = (REASON_EXIT, REASON_TIMEOUT, REASON_UNSATISFIABLE, REASON_EXCEPTION, REASON_CANCELLED)

#: a job id as we print them (FLUX_F58_FORCE_ASCII: "f" + base58) or decimal
_ID = re.compile(r"^(f[1-9A-HJ-NP-Za-km-z]{1,16}|[0-9]{1,20})$")
#: what the CLI says when the instance cannot be reached or is mid-shutdown: no socket, the
#: connection dropped, or a service already unloaded ("[Errno 38] No service matching
#: job-ingest.submit is registered", seen on submits made during `flux shutdown`)
_UNREACHABLE = re.compile(
    r"Unable to connect to Flux|flux_open|Connection refused|Connection reset|Broken pipe"
    r"|No service matching|Errno (38|32|104|113)\b|Function not implemented|No route to host",
    re.I,
)


def unreachable(stderr: str) -> bool:
    """Whether a failed flux command's stderr says the instance is down or going down (try
    again later) rather than that it refused the request."""
    return _UNREACHABLE.search(stderr) is not None


def submit_unanswered(code: int, out: str, err: str) -> bool:
    """Whether a ``flux submit`` got no answer rather than a refusal: the instance is down or
    going down, or the command ended without a word (killed by a signal, or its connection cut
    mid-shutdown: seen in CI at stop 12 as an empty "flux refused job" that failed the trial).
    A refusal always says why; the engine looks an unanswered submit up by its name."""
    if code == 0:
        return not out.strip() and not err.strip()
    return unreachable(err) or code < 0 or not (out.strip() or err.strip())


_PENDING = {"NEW", "DEPEND", "PRIORITY", "SCHED"}
_RUNNING = {"RUN", "CLEANUP"}


F58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def job_int(job_id: str) -> int:
    """A job id (``f…`` in FLUX_F58_FORCE_ASCII form, or decimal) as Flux's integer id."""
    if job_id.isdigit():
        return int(job_id)
    value = 0
    for char in job_id[1:]:
        value = value * 58 + F58.index(char)
    return value


def resolve_flux(explicit: str | None = None) -> str:
    """The ``flux`` command: ``explicit``, ``$STREAMML_FLUX``, PATH, else the project's build."""
    import shutil

    for candidate in (explicit, os.environ.get("STREAMML_FLUX")):
        if candidate:
            return candidate
    found = shutil.which("flux")
    if found:
        return found
    from streamml.testbed.flux import cached_flux

    cached = cached_flux()
    if cached is None:
        raise SchedulerError(
            "flux is not installed: put it on PATH, set STREAMML_FLUX, or run "
            "`streamml hpc up --flux` to build it"
        )
    return str(cached.flux)


def submit_argv(flux: str, job: JobRequest) -> list[str]:
    """``flux submit`` (one task) or ``flux batch`` (MPI: a script that runs ``flux run``)."""
    tasks = max(1, job.tasks)
    cores = max(1, job.cpus // tasks)
    if tasks > 1:  # an allocation of TASKS slots; `flux run` inside starts one rank per slot
        argv = [flux, "batch", f"--job-name={job.name}", f"--nslots={tasks}"]
        argv.append(f"--cores-per-slot={cores}")
    else:
        argv = [flux, "submit", f"--job-name={job.name}", "--ntasks=1", f"--cores-per-task={cores}"]
    if job.nodes:
        argv.append(f"--nodes={job.nodes}")
    if job.time_limit_s is not None:
        argv.append(f"--time-limit={job.time_limit_s}s")
    if job.workdir is not None:
        argv.append(f"--cwd={job.workdir}")
    if tasks > 1:
        # --wrap joins its words with spaces into a /bin/sh script: quote them
        argv += ["--wrap", "--", "exec", *(shlex.quote(word) for word in job.command)]
    else:
        argv += ["--", *job.command]
    return argv


def map_job(entry: Mapping[str, Any]) -> JobStatus:
    """One entry of ``flux jobs --json`` as a JobStatus (reason codes from :data:`REASONS`)."""
    state = str(entry.get("state", "")).upper()
    if state in _PENDING:
        return JobStatus(JobState.PENDING)
    if state in _RUNNING:
        return JobStatus(JobState.RUNNING)
    if state != "INACTIVE":
        return JobStatus(JobState.UNKNOWN, reason=f"unrecognised Flux state {state!r}")
    result = str(entry.get("result", "")).upper()
    code = entry.get("returncode")
    exit_code = code if isinstance(code, int) else None
    if result == "COMPLETED":
        return JobStatus(JobState.SUCCEEDED, exit_code=exit_code)
    if result in ("CANCELED", "CANCELLED"):
        return JobStatus(JobState.CANCELLED, reason=REASON_CANCELLED, exit_code=exit_code)
    if result == "TIMEOUT":
        return JobStatus(JobState.FAILED, reason=REASON_TIMEOUT, exit_code=exit_code)
    exception = entry.get("exception")
    exception = exception if isinstance(exception, dict) else {}
    kind = exception.get("type")
    note = str(exception.get("note") or "").strip()
    occurred = bool(exception.get("occurred"))
    if occurred and kind == "alloc":  # e.g. more cores than the instance has
        return JobStatus(JobState.FAILED, reason=f"{REASON_UNSATISFIABLE}: {note}", exit_code=None)
    if occurred and kind not in (None, "exec"):
        why = f"{REASON_EXCEPTION} ({kind})" + (f": {note}" if note else "")
        return JobStatus(JobState.FAILED, reason=why, exit_code=exit_code)
    return JobStatus(JobState.FAILED, reason=f"{REASON_EXIT} (exit {code})", exit_code=exit_code)


def last_output_line(text: str, limit: int = 300) -> str | None:
    lines = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith(("flux-job:", "flux-shell"))
    ]
    return lines[-1][:limit] if lines else None


class FluxScheduler:
    name = "flux"

    def __init__(
        self, *, uri: str, flux: str | None = None, env: Mapping[str, str] | None = None
    ) -> None:
        self.flux = resolve_flux(flux)
        self.uri = uri
        base = {k: v for k, v in os.environ.items() if not k.startswith("FLUX_")}
        self.env = {**base, **(env or {}), "FLUX_URI": uri, "FLUX_F58_FORCE_ASCII": "1"}

    async def _run(
        self, *args: str, env: Mapping[str, str] | None = None, timeout_s: float = 60.0
    ) -> tuple[int, str, str]:
        try:
            proc = await procs.start_async(
                args,
                env=dict(env or self.env),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except FileNotFoundError as exc:
            raise SchedulerError(f"{args[0]} is not installed") from exc
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
        except TimeoutError as exc:
            proc.kill()
            await proc.wait()
            # no answer: the instance may or may not have acted (a submit: look it up by name)
            raise SchedulerUnavailable(
                f"{shlex.join(args[:2])} did not answer in {timeout_s} s"
            ) from exc
        code = proc.returncode if proc.returncode is not None else 0  # < 0: killed by a signal
        return code, out.decode(errors="replace"), err.decode(errors="replace")

    async def submit(self, job: JobRequest) -> str:
        check_job(job)
        # `flux submit` copies the submitter's environment into the job; `run-lammps --flux-run`
        # inside it finds the same flux command
        env = {**self.env, **job.env, "STREAMML_FLUX": self.flux}
        code, out, err = await self._run(*submit_argv(self.flux, job), env=env)
        job_id = out.strip().splitlines()[-1].strip() if out.strip() else ""
        if submit_unanswered(code, out, err):
            raise SchedulerUnavailable(
                f"Flux at {self.uri} did not take job {job.name!r}: "
                f"{err.strip()[:300] or f'flux submit exited {code} and said nothing'}"
            )
        if code != 0 or not _ID.match(job_id):
            raise SchedulerError(f"flux refused job {job.name!r}: {(err or out).strip()[:500]}")
        return job_id

    async def _jobs(self, job_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """``flux jobs --json`` entries of the given ids (one call), keyed by the id as given."""
        if not job_ids:
            return {}
        # unknown ids are reported on stderr ("JobID f2zzz unknown"); the known ones still come
        # back (exit 1 if none). Anything else (the instance is down or restarting) is an error:
        # the engine polls again later instead of taking the jobs for lost.
        code, out, err = await self._run(self.flux, "jobs", "--json", *job_ids)
        unknown = set(re.findall(r"JobID (\S+) unknown", err))
        if code != 0 and not out.strip() and not set(job_ids) <= unknown:
            raise SchedulerError(f"flux jobs failed: {err.strip()[:300]}")
        try:
            doc = json.loads(out) if out.strip() else {}
        except ValueError as exc:
            raise SchedulerError(f"flux jobs --json: unreadable output: {out[:200]!r}") from exc
        entries = doc.get("jobs", []) if "jobs" in doc else [doc] if doc else []
        wanted = {job_int(job_id): job_id for job_id in job_ids}
        return {
            wanted[entry["id"]]: entry
            for entry in entries
            if isinstance(entry, dict) and entry.get("id") in wanted
        }

    async def poll(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        result = {
            job_id: JobStatus(JobState.UNKNOWN, reason="Flux does not know this job")
            for job_id in job_ids
        }
        valid = [job_id for job_id in job_ids if _ID.match(job_id)]
        for job_id, entry in (await self._jobs(valid)).items():
            status = map_job(entry)
            if status.state is JobState.FAILED and (status.reason or "").startswith(REASON_EXIT):
                line = await self._last_line(job_id)
                if line:
                    status = JobStatus(
                        status.state, reason=f"{status.reason}: {line}", exit_code=status.exit_code
                    )
            result[job_id] = status
        return result

    async def _last_line(self, job_id: str) -> str | None:
        _, out, err = await self._run(self.flux, "job", "attach", job_id)
        return last_output_line(out + "\n" + err)

    async def lookup(self, name: str) -> str | None:
        code, out, err = await self._run(
            self.flux, "jobs", "-a", "-n", f"--name={name}", "-o", "{id.f58}"
        )
        if code != 0:
            kind = SchedulerUnavailable if unreachable(err) else SchedulerError
            raise kind(f"flux jobs failed: {err.strip()[:300]}")
        ids = [line.strip() for line in out.splitlines() if line.strip()]
        return ids[0] if ids else None  # newest first; ASCII f58, as submit printed it

    async def cancel(self, job_id: str) -> None:
        if not _ID.match(job_id):
            return
        code, _, err = await self._run(self.flux, "cancel", job_id)
        if code != 0 and not re.search(r"inactive|unknown|not found|No such", err, re.I):
            raise SchedulerError(f"flux cancel {job_id} failed: {err.strip()[:300]}")

    async def close(self) -> None:
        return None
