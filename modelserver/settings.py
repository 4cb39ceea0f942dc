"""The model server's one settings object: command-line options over ``STREAMML_*`` env vars."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from streamml.errors import ConfigurationError
from streamml.modelserver.auth import Authenticator, derive_secret
from streamml.modelserver.capacity import Budget, memory_given
from streamml.vocabulary.modelcost import CostLimits


class ServerSettings(BaseSettings):
    """Everything ``streamml serve`` can be told; each field is also ``STREAMML_<FIELD>``."""

    model_config = SettingsConfigDict(
        env_prefix="STREAMML_", env_nested_delimiter="__", extra="ignore"
    )

    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(8000, ge=0, le=65535, description="port to listen on")
    data_dir: Path = Field(Path("data"), description="SQLite database, log and snapshots")
    auth_user: str | None = Field(None, description="username for Basic auth and tokens")
    auth_token: SecretStr | None = Field(None, description="the user's token (password)")
    auth_token_file: Path | None = Field(None, description="file holding the token")
    no_auth: bool = Field(False, description="serve without authentication (explicit opt-out)")
    auth_secret: SecretStr | None = Field(None, description="JWT HS256 signing secret")
    auth_secret_file: Path | None = Field(None, description="file holding the signing secret")
    token_ttl_seconds: int = Field(3600, ge=60, description="lifetime of issued bearer tokens")
    allow_pickle_upload: bool = Field(False, description="accept dill pickles (code execution!)")
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="request body limit")
    pending_ttl_seconds: float = Field(3600.0, gt=0, description="how long a prediction waits")
    pending_max: int = Field(100_000, ge=1, description="most predictions waiting for a label")
    idempotency_window: int = Field(100_000, ge=1, description="identifiers remembered per model")
    snapshot_every: int = Field(10_000, ge=1, description="snapshot after this many learns")
    snapshot_interval_seconds: float = Field(30.0, gt=0, description="or after this long")
    sse_queue_size: int = Field(256, ge=1, description="events buffered per stream client")
    # Byte bounds: None takes a share of the memory the server is given (capacity.Budget).
    memory_bytes: int | None = Field(
        None, ge=16 * 2**20, description="memory the server may use (default: cgroup limit, RAM)"
    )
    pending_max_bytes: int | None = Field(
        None, ge=1024, description="bytes of predictions waiting for a label (default: memory/8)"
    )
    sse_client_bytes: int | None = Field(
        None, ge=1024, description="bytes buffered per stream client (default: 4 MiB)"
    )
    sse_total_bytes: int | None = Field(
        None, ge=1024, description="bytes buffered for all stream clients (default: memory/16)"
    )
    #: bounds on what a declarative model may cost (max_model_bytes default: memory/8)
    limits: CostLimits = Field(default_factory=CostLimits)
    # WAL + NORMAL: a commit is written to the log file before the learn is acknowledged, so it
    # survives kill -9 and any crash of this process; FULL also fsyncs, surviving power loss,
    # at ~6 ms per group commit on this machine's disk (measured), which caps throughput.
    log_json: bool = Field(False, description="log one JSON object per line (for collectors)")
    sync: Literal["full", "normal"] = Field(
        "normal", description="SQLite synchronous: normal survives a process crash, full power loss"
    )

    def budget(self) -> Budget:
        return Budget(self.memory_bytes if self.memory_bytes is not None else memory_given())

    def cost_limits(self) -> CostLimits:
        """The cost model's limits; a model's state gets a share of the memory unless given."""
        if "max_model_bytes" in self.limits.model_fields_set:
            return self.limits
        return self.limits.model_copy(update={"max_model_bytes": self.budget().model_bytes})

    def authenticator(self) -> Authenticator | None:
        """None with --no-auth; otherwise the credentials, or a ConfigurationError."""
        token = self.auth_token.get_secret_value() if self.auth_token else None
        if self.auth_token_file is not None:
            token = _read_secret(self.auth_token_file, "--auth-token-file")
        if self.no_auth:
            return None
        if not self.auth_user or not token:
            raise ConfigurationError(
                "no credentials: give --auth-user and --auth-token (or --auth-token-file), "
                "or STREAMML_AUTH_USER/STREAMML_AUTH_TOKEN; or serve without authentication "
                "with an explicit --no-auth"
            )
        secret: bytes | None = None
        if self.auth_secret is not None:
            secret = self.auth_secret.get_secret_value().encode()
        if self.auth_secret_file is not None:
            secret = _read_secret(self.auth_secret_file, "--auth-secret-file").encode()
        if secret is None:
            secret = derive_secret(self.auth_user, token)
        return Authenticator(self.auth_user, token, secret, self.token_ttl_seconds)


def _read_secret(path: Path, option: str) -> str:
    try:
        value = path.read_text().strip()
    except OSError as exc:
        raise ConfigurationError(f"{option}: cannot read {path}: {exc.strerror}") from exc
    if not value:
        raise ConfigurationError(f"{option}: {path} is empty")
    return value
