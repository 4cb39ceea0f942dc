"""Slurm through slurmrestd's REST API (OpenAPI ``v0.0.38``, Slurm 22.05) with a JWT.

Authentication is the pair of headers ``X-SLURM-USER-NAME`` / ``X-SLURM-USER-TOKEN``; the token
comes from the sweep's settings (a Kubernetes Secret in the operator). Submit posts the same batch
script as the CLI backend (:func:`~streamml.sweep.schedulers.slurm_cli.batch_script`); in this
API version ``environment`` is required, so the job's environment goes there as well.
slurmrestd answers 500 for an unknown job id and for a bad token, so those are told apart by the
error text it returns.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import aiohttp

from streamml.errors import AuthError, SchedulerError, SchedulerUnavailable
from streamml.sweep.schedulers.base import JobRequest, JobState, JobStatus
from streamml.sweep.schedulers.slurm_cli import (
    batch_script,
    check_job,
    controller_down,
    last_output_line,
    map_state,
    time_limit_minutes,
)

API = "v0.0.38"


class SlurmRestScheduler:
    name = "slurm-rest"

    def __init__(
        self,
        url: str,
        *,
        user: str,
        token: str,
        partition: str | None = None,
        default_workdir: str = "/",
        timeout_s: float = 30.0,
    ) -> None:
        self.url = url.rstrip("/")
        #: slurmrestd needs a working directory; a job without one runs here
        self.default_workdir = default_workdir
        self.partition = partition
        self._headers = {"X-SLURM-USER-NAME": user, "X-SLURM-USER-TOKEN": token}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout, headers=self._headers)
        return self._session

    async def _call(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, Any]]:
        url = f"{self.url}/slurm/{API}{path}"
        try:
            async with self._http().request(method, url, json=body) as response:
                try:
                    payload = await response.json(content_type=None)
                except ValueError:
                    payload = {"errors": [{"error": (await response.text())[:300]}]}
                if response.status == 401:
                    raise AuthError(f"slurmrestd rejected the credentials ({method} {path})")
                return response.status, payload if isinstance(payload, dict) else {}
        # no answer (refused, dropped, timed out): a submit may or may not have been taken, so
        # it is "unavailable" (the engine looks the job up by name), never a refusal
        except aiohttp.ClientError as exc:
            raise SchedulerUnavailable(f"slurmrestd at {self.url} unreachable: {exc}") from exc
        except TimeoutError as exc:
            raise SchedulerUnavailable(
                f"slurmrestd at {self.url} timed out ({method} {path})"
            ) from exc

    async def submit(self, job: JobRequest) -> str:
        check_job(job)
        spec: dict[str, Any] = {
            "name": job.name,
            "tasks": job.cpus,  # one task per CPU, as the CLI backend (MPI ranks)
            # required (an object) in v0.0.38; PATH lets the script find sbatch-less tools
            "environment": {"PATH": "/usr/local/bin:/usr/bin:/bin", **job.env},
        }
        if self.partition:
            spec["partition"] = self.partition
        minutes = time_limit_minutes(job.time_limit_s)
        if minutes is not None:
            spec["time_limit"] = minutes
        if job.workdir is not None:
            spec["current_working_directory"] = str(job.workdir)
            spec["standard_output"] = f"{job.workdir}/slurm-%j.out"
        else:
            spec["current_working_directory"] = self.default_workdir
        status, payload = await self._call(
            "POST", "/job/submit", {"job": spec, "script": batch_script(job)}
        )
        job_id = payload.get("job_id")
        if status != 200 and controller_down(_errors(payload, status)):
            raise SchedulerUnavailable(
                f"slurmrestd: slurmctld unreachable: {_errors(payload, status)}"
            )
        if status != 200 or not isinstance(job_id, int):
            raise SchedulerError(f"slurmrestd refused job {job.name!r}: {_errors(payload, status)}")
        return str(job_id)

    async def _one(self, job_id: str) -> JobStatus:
        if not job_id.isdigit():
            return JobStatus(JobState.UNKNOWN, reason="not a Slurm job id")
        status, payload = await self._call("GET", f"/job/{job_id}")
        jobs = payload.get("jobs") or []
        if status != 200 or not jobs:
            text = _errors(payload, status)
            if "Invalid job id" in text or status == 200:
                return JobStatus(JobState.UNKNOWN, reason="Slurm does not know this job")
            raise SchedulerError(f"slurmrestd GET job {job_id}: {text}")
        info = jobs[0]
        mapped = map_state(str(info.get("job_state", "")), info.get("state_reason"))
        exit_code = _exit_code(info.get("exit_code"))
        reason = mapped.reason
        if mapped.state is JobState.FAILED:
            line = last_output_line(_expand(info.get("standard_output"), info))
            reason = f"{reason} (exit {exit_code})" + (f": {line}" if line else "")
        return JobStatus(mapped.state, reason=reason, exit_code=exit_code)

    async def poll(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        statuses = await asyncio.gather(*(self._one(job_id) for job_id in job_ids))
        return dict(zip(job_ids, statuses, strict=True))

    async def lookup(self, name: str) -> str | None:
        status, payload = await self._call("GET", "/jobs")
        if status != 200:
            text = _errors(payload, status)
            # v0.0.38 answers "HTTP 500: Unspecified error" when slurmctld is down; a read that
            # fails server-side is worth retrying (a submit's 500 may be a refusal: see submit)
            down = status >= 500 or controller_down(text)
            raise (SchedulerUnavailable if down else SchedulerError)(f"slurmrestd GET jobs: {text}")
        ids = [
            int(job["job_id"])
            for job in payload.get("jobs") or []
            if job.get("name") == name and isinstance(job.get("job_id"), int)
        ]
        return str(max(ids)) if ids else None

    async def cancel(self, job_id: str) -> None:
        if not job_id.isdigit():
            return
        status, payload = await self._call("DELETE", f"/job/{job_id}")
        text = _errors(payload, status)
        if status != 200 and "Invalid job id" not in text and "already complet" not in text:
            raise SchedulerError(f"slurmrestd cancel {job_id}: {text}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _errors(payload: dict[str, Any], status: int) -> str:
    errors = payload.get("errors") or []
    texts = [
        str(e.get("error") or e.get("description") or e) if isinstance(e, dict) else str(e)
        for e in errors
    ]
    return f"HTTP {status}: " + ("; ".join(texts) if texts else "no error text")


def _expand(pattern: object, info: dict[str, Any]) -> str | None:
    """v0.0.38 returns the output path unexpanded (``slurm-%j.out``); scontrol expands it."""
    if not isinstance(pattern, str) or not pattern:
        return None
    return pattern.replace("%j", str(info.get("job_id", ""))).replace("%x", str(info.get("name")))


def _exit_code(raw: object) -> int | None:
    """v0.0.38 reports the raw wait status: exit code in the high byte, signal in the low."""
    if not isinstance(raw, int) or isinstance(raw, bool):
        return None
    if raw & 0x7F:
        return 128 + (raw & 0x7F)
    return (raw >> 8) & 0xFF
