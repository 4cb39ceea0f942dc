"""``streamml serve``: parse options, build the settings, run the app."""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    # Defaults are SUPPRESS so that only options actually given override STREAMML_* env vars.
    add = parser.add_argument
    s = argparse.SUPPRESS
    add("--host", default=s, help="address to listen on (default 127.0.0.1)")
    add("--port", type=int, default=s, help="port (default 8000)")
    add("--data-dir", default=s, help="directory for the SQLite store (default ./data)")
    add("--auth-user", default=s, help="username for Basic auth / token handshake")
    add("--auth-token", default=s, help="the user's token (prefer --auth-token-file)")
    add("--auth-token-file", default=s, help="file holding the token")
    add("--auth-read-user", default=s, help="a read-only user (dashboard, watch: GET only)")
    add("--auth-read-token", default=s, help="the read-only token (prefer the file)")
    add("--auth-read-token-file", default=s,
        help="file holding the read-only token (re-read on change and SIGHUP)")  # fmt: skip
    add("--session-ttl-seconds", type=int, default=s, help="dashboard session lifetime (8h)")
    add("--history-points", type=int, default=s, help="metrics history points per model (1000)")
    add("--history-interval-seconds", type=float, default=s,
        help="how often a model that learned gets a history point (default 1)")  # fmt: skip
    add("--sweep-bytes", type=int, default=s, help="largest sweep summary accepted (1 MiB)")
    add("--no-auth", action="store_true", default=s,
        help="serve WITHOUT authentication (not with credentials; loopback only)")  # fmt: skip
    add("--allow-remote-no-auth", action="store_true", default=s,
        help="with --no-auth, allow a non-loopback --host (anyone there may learn)")  # fmt: skip
    add("--auth-secret", default=s, help="JWT signing secret shared by processes (16+ chars)")
    add("--auth-secret-file", default=s,
        help="file holding the JWT signing secret (default: random, in the data dir)")  # fmt: skip
    add("--token-ttl-seconds", type=int, default=s, help="bearer token lifetime (default 3600)")
    add("--token-max-ttl-seconds", type=int, default=s,
        help="longest bearer token lifetime accepted (default 86400)")  # fmt: skip
    add("--public-url", default=s, help="external URL named in 401 challenges (behind a proxy)")
    add("--allow-pickle-upload", action="store_true", default=s,
        help="accept dill pickle uploads from authenticated callers (executes code!)")  # fmt: skip
    add("--max-body-bytes", type=int, default=s, help="request body limit (default 8 MiB)")
    add("--pending-ttl-seconds", type=float, default=s, help="how long predictions await a label")
    add("--pending-max", type=int, default=s, help="most predictions awaiting a label")
    add("--idempotency-window", type=int, default=s, help="identifiers remembered per model")
    add("--snapshot-every", type=int, default=s, help="snapshot a model after N learns")
    add("--snapshot-interval-seconds", type=float, default=s, help="snapshot at least this often")
    add("--sse-queue-size", type=int, default=s, help="events buffered per stream client")
    add("--memory-bytes", type=int, default=s, help="memory given (default: cgroup limit, RAM)")
    add("--pending-max-bytes", type=int, default=s, help="bytes of predictions awaiting a label")
    add("--sse-client-bytes", type=int, default=s, help="bytes buffered per stream client")
    add("--sse-total-bytes", type=int, default=s, help="bytes buffered for all stream clients")
    _add_limits(parser)
    add("--check", action="store_true", default=s,
        help="verify the data dir (files, WAL, every model and log row) without serving, "
        "then exit: 0 healthy, 1 damage found (listed), 2 unusable")  # fmt: skip
    add(
        "--sync",
        choices=["full", "normal"],
        default=s,
        help="normal: survive process crashes (default); full: also power loss (fsync)",
    )


def _add_limits(parser: argparse.ArgumentParser) -> None:
    """One option per cost-model limit (``--max-components`` ...), as in the settings."""
    from streamml.vocabulary.modelcost import CostLimits

    for name, info in CostLimits.model_fields.items():
        kind = int if info.annotation is int else float
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=f"limit_{name}",
            type=kind,
            default=argparse.SUPPRESS,
            help=f"cost model: {info.description} (default {info.default})",
        )


def given_settings(args: argparse.Namespace) -> dict[str, object]:
    """The options actually given, as ServerSettings keyword arguments."""
    from streamml.modelserver.settings import ServerSettings

    options = vars(args)
    fields = ServerSettings.model_fields
    given: dict[str, object] = {k: v for k, v in options.items() if k in fields}
    limits = {k[len("limit_") :]: v for k, v in options.items() if k.startswith("limit_")}
    if limits:
        given["limits"] = limits
    return given


async def _tune_gc(app: object) -> None:
    import gc

    # Everything alive now (river, scipy, pydantic, the loaded models) lives as long as the
    # process: keep it out of the cyclic GC's full collections, which would rescan it often.
    gc.freeze()
    # A batch allocates thousands of short-lived dicts; collect young objects less often.
    gc.set_threshold(20_000, 20, 20)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message (+ exception)."""

    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False)


def check(data_dir: Path) -> int:
    """``serve --check``: the findings on stdout, one line each, then the summary line."""
    import asyncio

    from streamml.modelserver.recovery import check as check_data_dir

    report = asyncio.run(check_data_dir(data_dir))  # a DataDirError is the CLI's error line
    for finding in report.findings:
        print(f"DAMAGED {finding}")
    for quarantine in report.quarantined:
        print(f"DAMAGED model {quarantine.name} ({quarantine.kind}): {quarantine.reason}")
    verdict = "healthy" if report.healthy else "DAMAGED"
    print(f"{data_dir}: {verdict}: {report.summary()}")
    return 0 if report.healthy else 1


def run(args: argparse.Namespace) -> int:
    from aiohttp import web
    from pydantic import ValidationError

    from streamml.errors import ConfigurationError
    from streamml.modelserver.app import create_app
    from streamml.modelserver.settings import ServerSettings

    try:
        settings = ServerSettings(**given_settings(args))  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigurationError(f"invalid setting {where}: {first['msg']}") from None
    if settings.log_json:
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter())
    if getattr(args, "check", False):
        return check(settings.data_dir)
    from streamml.modelserver.workers import share_the_gil

    app = create_app(settings)  # raises ConfigurationError without credentials or --no-auth
    share_the_gil()
    app.on_startup.append(_tune_gc)  # runs after the storage lifecycle has loaded the models
    if settings.no_auth:
        log.warning("authentication is OFF (--no-auth): anyone who can reach the port may learn")
    if settings.allow_pickle_upload:
        log.warning("pickle upload is ON: authenticated callers can run code on this server")
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - optional speed-up
        pass
    url = f"http://{settings.host}:{settings.port}"
    log.info(
        "streamml model server starting on %s (data in %s, pid %d)",
        url,
        settings.data_dir,
        os.getpid(),
    )
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        access_log=None,  # per-request logging costs more than the learn; Prometheus counts them
        print=lambda message: print(message, flush=True),
        shutdown_timeout=10.0,
    )
    return 0
