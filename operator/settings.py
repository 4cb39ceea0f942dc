"""The operator's one settings object (env prefix ``STREAMML_``), loaded once at start-up."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from streamml.vocabulary.streammodel import DEFAULT_SERVER_IMAGE


def _default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "streamml" / "operator"


class SweepSettings(BaseModel):
    """LammpsSweep driving (env ``STREAMML_SWEEPS__<FIELD>``)."""

    work_dir: Path | None = Field(
        default=None,
        description="trial dirs, spool, credential files per sweep (default STATE_DIR/sweeps)",
    )
    interval: float = Field(default=2.0, gt=0, le=600, description="seconds between sweep ticks")
    job_command: list[str] = Field(
        default_factory=list,
        description="the job-side program (default: this python -m streamml.cli run-lammps)",
    )
    input_roots: list[Path] = Field(
        default_factory=list,
        description=(
            "directories whose files a LammpsSweep may name (lammps.inputFile, inputDir, files);"
            " default none: inputs come inline or from ConfigMaps. A path elsewhere (say a "
            "mounted Secret) is refused, so LAMMPS never echoes its first line into a status"
        ),
    )
    allow_local_jobs: bool | None = Field(
        default=None,
        description=(
            "let sweeps use scheduler type 'local' (trials run as the operator's own child "
            "processes, with its credentials); default: only with the local runtime. In a cluster "
            "that would hand anyone who can create a LammpsSweep code execution in the operator's "
            "pod, so it needs this explicit opt-in"
        ),
    )


class LeaderElectionSettings(BaseModel):
    """Exactly one active operator per scope: a ``coordination.k8s.io`` Lease (env
    ``STREAMML_LEADER_ELECTION__<FIELD>``). A second operator waits (live, doing nothing) until
    the holder releases the Lease on exit or stops renewing it for ``lease_duration`` seconds."""

    enabled: bool = Field(default=True, description="hold a Lease before handling anything")
    namespace: str | None = Field(
        default=None,
        description=(
            "the Lease's namespace; default: the pod's own (POD_NAMESPACE), else the first "
            "watched namespace, else streamml-system (default if that does not exist)"
        ),
    )
    name: str | None = Field(
        default=None,
        description="the Lease's name; default streamml-operator (+ a digest of the namespaces)",
    )
    identity: str | None = Field(default=None, description="holder identity (default host:pid)")
    lease_duration: float = Field(
        default=15.0, ge=1, le=600, description="seconds without renewal before others take over"
    )
    renew_deadline: float = Field(
        default=10.0, gt=0, le=600, description="the holder exits when it cannot renew this long"
    )
    retry_period: float = Field(default=2.0, gt=0, le=60, description="seconds between tries")

    @model_validator(mode="after")
    def _ordered(self) -> LeaderElectionSettings:
        if not self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError("needs retry_period < renew_deadline < lease_duration")
        return self


class OperatorSettings(BaseSettings):
    """Everything ``streamml operator`` can be told; CLI flags override the environment."""

    model_config = SettingsConfigDict(env_prefix="STREAMML_", env_nested_delimiter="__")

    namespaces: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="namespaces to watch; empty means cluster-wide",
    )
    local_runtime: bool = Field(
        default=False,
        description="supervise each StreamModel's server as a local process on 127.0.0.1",
    )
    state_dir: Path = Field(
        default_factory=_default_state_dir,
        description="local runtime: per-StreamModel data dirs and credential files",
    )
    server_image: str = Field(
        default=DEFAULT_SERVER_IMAGE,
        description=(
            "server image for StreamModels that keep the schema's default image "
            "(lammps-stream-ml/server:VERSION, the tag of Dockerfile.server and "
            "`streamml images build`): point it at your registry's copy"
        ),
    )
    server_command: list[str] = Field(
        default_factory=list,
        description="local runtime: the command that starts a server (default: this python)",
    )
    status_poll_interval: float = Field(
        default=10.0, gt=0, le=3600, description="seconds between status polls per StreamModel"
    )
    contact_servers: bool | None = Field(
        default=None,
        description=(
            "reach in-cluster servers through their Service DNS name to create models and poll "
            "metrics; default: only when the operator itself runs in a pod"
        ),
    )
    liveness: str | None = Field(
        default=None, description="kopf liveness endpoint, e.g. http://127.0.0.1:8081/healthz"
    )
    sweeps: SweepSettings = Field(default_factory=SweepSettings, description="LammpsSweep")
    leader_election: LeaderElectionSettings = Field(
        default_factory=LeaderElectionSettings, description="one active operator at a time"
    )
    api_timeout: float = Field(default=10.0, gt=0, description="seconds per HTTP call to servers")
    server_start_timeout: float = Field(
        default=60.0, gt=0, description="local runtime: seconds a new server may take to be ready"
    )
    retry_delay: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="first retry after the API server refused an owned object (then doubling)",
    )
    retry_max_delay: float = Field(
        default=300.0, gt=0, le=86_400, description="longest wait between such retries"
    )

    @field_validator("namespaces", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [n for n in value.replace(",", " ").split() if n]
        return value

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces

    @property
    def local_jobs_allowed(self) -> bool:
        """Whether a LammpsSweep may run its trials as the operator's child processes."""
        if self.sweeps.allow_local_jobs is not None:
            return self.sweeps.allow_local_jobs
        return self.local_runtime

    @property
    def reach_servers(self) -> bool:
        """Whether the operator sends HTTP to the servers it manages.

        The local runtime's servers are on loopback. In a cluster, only an operator inside the
        cluster can reach a Service; outside (tests, a laptop) it must never try.
        """
        if self.local_runtime:
            return True
        if self.contact_servers is not None:
            return self.contact_servers
        return "KUBERNETES_SERVICE_HOST" in os.environ
