"""The model server's one settings object: command-line options over ``STREAMML_*`` env vars."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streamml.errors import ConfigurationError
from streamml.files import read_secret
from streamml.modelserver.auth import MIN_SECRET_CHARS, Authenticator, data_dir_secret
from streamml.modelserver.capacity import Budget, memory_given
from streamml.vocabulary.modelcost import CostLimits

#: an external URL fit to be quoted in a header: http(s), host[:port], a plain path, no quotes
_PUBLIC_URL = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$")


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
    auth_read_user: str | None = Field(
        None, description="a read-only user (watch, dashboard: GET only; not learn or delete)"
    )
    auth_read_token: SecretStr | None = Field(None, description="the read-only user's token")
    auth_read_token_file: Path | None = Field(
        None, description="file holding the read-only token (re-read when it changes)"
    )
    session_ttl_seconds: int = Field(
        8 * 3600, ge=60, le=30 * 86400, description="lifetime of a dashboard login session"
    )
    history_points: int = Field(
        1000, ge=10, le=100_000, description="metrics history points kept per model"
    )
    history_interval_seconds: float = Field(
        1.0, ge=0.05, le=3600, description="how often a model that learned gets a history point"
    )
    sweep_bytes: int = Field(
        1024 * 1024, ge=1024, le=16 * 2**20, description="largest sweep summary accepted"
    )
    no_auth: bool = Field(False, description="serve without authentication (explicit opt-out)")
    allow_remote_no_auth: bool = Field(
        False, description="with no_auth, also listen on a non-loopback address (second opt-in)"
    )
    auth_secret: SecretStr | None = Field(None, description="JWT HS256 signing secret")
    auth_secret_file: Path | None = Field(None, description="file holding the signing secret")
    token_ttl_seconds: int = Field(3600, ge=60, description="lifetime of issued bearer tokens")
    token_max_ttl_seconds: int = Field(
        86_400, ge=60, description="longest lifetime (exp - iat) an accepted bearer token may have"
    )
    public_url: str | None = Field(
        None,
        description="the server's external URL (e.g. behind an ingress), named in the 401 "
        "challenge; without it the challenge names the request's host when that is well formed",
    )
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

    @field_validator("public_url")
    @classmethod
    def _plain_url(cls, value: str | None) -> str | None:
        if value is not None and not _PUBLIC_URL.match(value):
            raise ValueError("must be http(s)://host[:port][/path] (letters, digits, . - _ ~ /)")
        return value.rstrip("/") if value else value

    def authenticator(self) -> Authenticator | None:
        """None with --no-auth; otherwise the credentials, or a ConfigurationError."""
        if self.no_auth:
            self._check_no_auth()
            return None
        token = self.auth_token.get_secret_value() if self.auth_token else None
        if self.auth_token_file is not None:
            token = read_secret(self.auth_token_file, "--auth-token-file")
        if not self.auth_user or not token:
            raise ConfigurationError(
                "no credentials: give --auth-user and --auth-token (or --auth-token-file), "
                "or STREAMML_AUTH_USER/STREAMML_AUTH_TOKEN; or serve without authentication "
                "with an explicit --no-auth"
            )
        read_token = self.auth_read_token.get_secret_value() if self.auth_read_token else None
        if self.auth_read_token_file is not None:
            read_token = read_secret(self.auth_read_token_file, "--auth-read-token-file")
        if bool(self.auth_read_user) != bool(read_token):
            raise ConfigurationError(
                "a read-only credential needs both --auth-read-user and --auth-read-token "
                "(or --auth-read-token-file)"
            )
        return Authenticator(
            self.auth_user,
            token,
            self._signing_secret(),
            token_ttl=self.token_ttl_seconds,
            max_token_ttl=self.token_max_ttl_seconds,
            read_username=self.auth_read_user or None,
            read_token=read_token,
        )

    def _check_no_auth(self) -> None:
        given = [
            option
            for option, value in (
                ("--auth-user", self.auth_user),
                ("--auth-token", self.auth_token),
                ("--auth-token-file", self.auth_token_file),
                ("--auth-read-user", self.auth_read_user),
                ("--auth-read-token", self.auth_read_token),
                ("--auth-read-token-file", self.auth_read_token_file),
                ("--auth-secret", self.auth_secret),
                ("--auth-secret-file", self.auth_secret_file),
            )
            if value is not None
        ]
        if given:
            raise ConfigurationError(
                f"--no-auth together with {', '.join(given)}: choose one (credentials turn "
                "authentication on; --no-auth turns it off); check STREAMML_* variables too"
            )
        if not _is_loopback(self.host) and not self.allow_remote_no_auth:
            raise ConfigurationError(
                f"--no-auth on --host {self.host}: anyone on the network could use this server; "
                "listen on 127.0.0.1, or add --allow-remote-no-auth if that is really meant"
            )

    def _signing_secret(self) -> bytes:
        """The given shared secret, else the data directory's own random one."""
        for option, value in (
            ("--auth-secret-file", self.auth_secret_file),
            ("--auth-secret", self.auth_secret),
        ):
            if value is None:
                continue
            if isinstance(value, Path):
                text = read_secret(value, option)
            else:
                text = value.get_secret_value()
            if len(text) < MIN_SECRET_CHARS:
                raise ConfigurationError(
                    f"{option}: the signing secret is too short ({len(text)} characters; "
                    f"at least {MIN_SECRET_CHARS}, e.g. secrets.token_urlsafe(32))"
                )
            return text.encode()
        return data_dir_secret(self.data_dir)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name could resolve to anything
