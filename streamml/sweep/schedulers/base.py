"""The one small interface every scheduler backend implements (local, Slurm CLI/REST, Kubernetes).

A backend submits a job (one trial: a command line plus environment), polls many jobs at once, and
cancels; its own states are mapped onto :class:`JobState`, and a failure carries the scheduler's
own reason (e.g. Slurm's ``NonZeroExitCode``, a Pod's ``OOMKilled``, LAMMPS' ``ERROR:`` line).
Job ids are strings that survive a restart of the process that submitted them: a restarted
operator polls the ids it recorded in status.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol, runtime_checkable


class JobState(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"
    UNKNOWN = "Unknown"  # the scheduler no longer knows the job (e.g. purged)

    @property
    def finished(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.UNKNOWN)


@dataclass(frozen=True)
class JobRequest:
    """One job to run: a trial of a sweep."""

    name: str  # unique per sweep, e.g. "<sweep>-t0007"; DNS-label safe
    command: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    workdir: Path | None = None
    cpus: int = 1
    time_limit_s: int | None = None
    image: str | None = None  # container image (kubernetes backend only)
    #: the trial's input snapshot on the submitter's filesystem. A backend on a shared
    #: filesystem (local, Slurm, Flux) needs nothing: the command copies it (run-lammps
    #: --input-dir). A backend whose jobs cannot see it (kubernetes) carries it to the job and
    #: sets STREAMML_INPUT_DIR there.
    input_dir: Path | None = None
    #: MPI ranks the scheduler itself launches (flux: ``flux batch -n``); 1 = one process
    tasks: int = 1
    nodes: int | None = None  # nodes to spread the tasks over (flux), None = the scheduler's pick


@dataclass(frozen=True)
class JobStatus:
    state: JobState
    reason: str | None = None  # the scheduler's own words for a failure
    exit_code: int | None = None
    #: the job's result document when the backend transports it (e.g. a Pod's termination
    #: message); backends on a shared filesystem leave it None and the job writes a result file
    output: str | None = None


@runtime_checkable
class Scheduler(Protocol):
    """Submit, poll, cancel. Implementations must be safe to call from one asyncio task."""

    name: str

    async def submit(self, job: JobRequest) -> str:
        """Start the job; return its id. Raises SchedulerError with the scheduler's reason."""
        ...

    async def poll(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """Current status of each id (unknown ids map to JobState.UNKNOWN)."""
        ...

    async def lookup(self, name: str) -> str | None:
        """The id of a job previously submitted under ``name``, or None.

        Lets a restarted driver find a job whose submission it recorded but whose id it never
        saw (crash between submit and the status write): it never submits that trial twice.
        """
        ...

    async def cancel(self, job_id: str) -> None:
        """Cancel the job; cancelling a finished or unknown job is not an error."""
        ...

    async def close(self) -> None:
        """Release connections; running jobs keep running."""
        ...
