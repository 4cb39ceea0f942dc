"""``streamml watch``: record every model's metrics, stats and parameters over time.

Polls a model server (directly by URL, or a ``StreamModel`` found through the Kubernetes API
server, whose ``status.address`` and auth Secret give the URL and the credentials) every
``--interval`` seconds and appends, per model and poll:

- ``metrics.csv``: ``time, model, samples`` and one column per metric (a metric that appears later
  widens the header; the file is rewritten once, never left half-written);
- ``snapshots.jsonl``: the full snapshot (metrics, stats and the model's JSON parameters).

A server that is briefly unreachable is logged and polled again; a model that vanishes between
listing and reading is skipped. The command fails only when no snapshot at all could be taken.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import logging
import math
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamml.errors import ConfigurationError, NotFoundError, StreamMLError
from streamml.files import replacing
from streamml.sweep import access
from streamml.sweep.access import ServerAccess

if TYPE_CHECKING:
    from streamml.client.api import ModelServerClient

log = logging.getLogger(__name__)

METRICS_CSV = "metrics.csv"
SNAPSHOTS_JSONL = "snapshots.jsonl"
FIXED_COLUMNS = ("time", "model", "samples")
#: a model name we are willing to put into a URL path; anything else a server lists is skipped
SAFE_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,252}$")
MAX_METRIC_COLUMNS = 64


# -- pure helpers ----------------------------------------------------------------------------


def samples_learned(stats: Mapping[str, Any]) -> int:
    """Samples learned according to the server's stats (``learn.n_calls`` in riverapi's form)."""
    for key in ("samples", "samples_learned", "n_samples"):
        value = stats.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    learn = stats.get("learn")
    if isinstance(learn, Mapping):
        calls = learn.get("n_calls")
        if isinstance(calls, int | float) and not isinstance(calls, bool):
            return int(calls)
    return 0


def numeric_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Only the finite numbers of a metrics reply (a hostile server may send anything)."""
    return {
        str(k): float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))
    }


def snapshot(
    when: float,
    model: str,
    metrics: Mapping[str, Any],
    stats: Mapping[str, Any],
    parameters: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """One model's state at one time, as written to ``snapshots.jsonl``."""
    return {
        "time": round(when, 3),
        "model": model,
        "samples": samples_learned(stats),
        "metrics": numeric_metrics(metrics),
        "stats": dict(stats),
        "parameters": None if parameters is None else dict(parameters),
    }


class MetricsTable:
    """``metrics.csv``, appended to row by row; a new metric widens the header once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.columns: list[str] = list(FIXED_COLUMNS)
        if path.exists() and path.stat().st_size > 0:
            with path.open(newline="", encoding="utf-8") as handle:
                header = next(csv.reader(handle), [])
            if tuple(header[:3]) != FIXED_COLUMNS:
                raise ConfigurationError(f"{path} exists but is not a streamml metrics table")
            self.columns = header

    def append(self, rows: Sequence[Mapping[str, Any]]) -> None:
        new = sorted({str(k) for row in rows for k in row.get("metrics", {})} - set(self.columns))
        if new:
            if len(self.columns) + len(new) - len(FIXED_COLUMNS) > MAX_METRIC_COLUMNS:
                new = new[: max(0, MAX_METRIC_COLUMNS - len(self.columns) + len(FIXED_COLUMNS))]
            self._widen(self.columns + new)
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        with self.path.open("a", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            if fresh:
                writer.writerow(self.columns)
            for row in rows:
                writer.writerow(self._cells(row))

    def _cells(self, row: Mapping[str, Any]) -> list[str]:
        metrics = row.get("metrics", {})
        cells = [f"{row['time']:.3f}", str(row["model"]), str(row["samples"])]
        for column in self.columns[len(FIXED_COLUMNS) :]:
            value = metrics.get(column)
            cells.append("" if value is None else repr(float(value)))
        return cells

    def _widen(self, columns: list[str]) -> None:
        old_rows: list[dict[str, str]] = []
        if self.path.exists() and self.path.stat().st_size > 0:
            with self.path.open(newline="", encoding="utf-8") as handle:
                old_rows = list(csv.DictReader(handle))
        with replacing(self.path) as handle:  # readers never see a half-written table
            writer = csv.DictWriter(handle, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(old_rows)
        self.columns = columns


def read_metrics_table(path: Path) -> list[dict[str, Any]]:
    """Rows of ``metrics.csv`` with numbers parsed (empty cells dropped)."""
    rows: list[dict[str, Any]] = []
    with path.open(newline="", encoding="utf-8") as handle:
        for raw in csv.DictReader(handle):
            row: dict[str, Any] = {"model": raw.get("model", "")}
            try:
                row["time"] = float(raw.get("time") or "nan")
                row["samples"] = int(float(raw.get("samples") or "0"))
            except ValueError:
                continue  # a corrupt line is skipped, not fatal
            metrics: dict[str, float] = {}
            for key, value in raw.items():
                if key in FIXED_COLUMNS or key is None or not value:
                    continue
                try:
                    metrics[key] = float(value)
                except ValueError:
                    continue
            row["metrics"] = metrics
            rows.append(row)
    return rows


# -- polling ---------------------------------------------------------------------------------


async def poll_once(client: ModelServerClient) -> list[dict[str, Any]]:
    """One snapshot per model the server lists now."""
    snapshots: list[dict[str, Any]] = []
    for model in await client.models():
        if not SAFE_MODEL_NAME.match(model):
            log.warning("skipping model with an unusable name: %r", model[:80])
            continue
        try:
            # unchecked: a reply that does not fit its model is not refused whole here; the
            # pure helpers keep its sane part (finite metrics, an integer learn count)
            metrics = await client.get_unchecked("/api/metrics/", model=model)
            stats = await client.get_unchecked("/api/stats/", model=model)
            parameters = await client.model_json(model)
        except NotFoundError:
            log.info("model %s disappeared while being read", model)
            continue
        snapshots.append(snapshot(time.time(), model, metrics, stats, parameters))
    return snapshots


class Recorder:
    """Appends snapshots to the two files in ``out``."""

    def __init__(self, out: Path) -> None:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigurationError(f"cannot create output directory {out}: {exc}") from exc
        self.table = MetricsTable(out / METRICS_CSV)
        self.jsonl = out / SNAPSHOTS_JSONL
        self.count = 0

    def record(self, snapshots: Sequence[Mapping[str, Any]]) -> None:
        if not snapshots:
            return
        self.table.append(snapshots)
        with self.jsonl.open("a", encoding="utf-8") as handle:
            for item in snapshots:
                handle.write(json.dumps(item, sort_keys=True, default=str) + "\n")
        self.count += len(snapshots)


async def watch(
    target: ServerAccess,
    out: Path,
    *,
    interval: float,
    duration: float | None = None,
    count: int | None = None,
    stop: asyncio.Event | None = None,
    final_poll: bool = False,
) -> tuple[int, int]:
    """Poll until ``duration`` elapsed, ``count`` polls done, or ``stop`` set.

    Returns ``(snapshots recorded, polls that reached the server)``. With ``final_poll``, setting
    ``stop`` records one last snapshot before returning.
    """
    from streamml.client.api import ModelServerClient

    recorder = Recorder(out)
    deadline = None if duration is None else time.monotonic() + duration
    polls = answered = 0
    stop = stop or asyncio.Event()
    async with ModelServerClient(target.url, username=target.username, token=target.token) as c:
        while not stop.is_set():
            try:
                recorder.record(await poll_once(c))
                answered += 1
            except StreamMLError as exc:
                # keep watching: the server may be restarting; the caller sees the gap in time
                log.warning("poll of %s failed: %s", target.url, exc)
            polls += 1
            if count is not None and polls >= count:
                break
            wait = interval
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=wait)
        if final_poll and stop.is_set():
            # the caller stopped us because something finished: record the final state too
            try:
                recorder.record(await poll_once(c))
                answered += 1
            except StreamMLError as exc:
                log.warning("final poll of %s failed: %s", target.url, exc)
    return recorder.count, answered


# -- the StreamModel route -------------------------------------------------------------------


def target_from_streammodel(name: str, namespace: str, kubeconfig: str | None) -> ServerAccess:
    """URL and credentials of a StreamModel, read from its status and its auth Secret."""
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    from streamml.vocabulary.resource import GROUP, VERSION

    try:
        api: Any = config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    except Exception as exc:  # the kubernetes loader raises bare exceptions of many kinds
        raise ConfigurationError(
            f"cannot load kubeconfig {kubeconfig or '(default)'}: {exc}"
        ) from exc
    try:
        obj: Any = client.CustomObjectsApi(api).get_namespaced_custom_object(
            GROUP, VERSION, namespace, "streammodels", name
        )
        try:
            where = access.locate(f"{namespace}/{name}", obj, require_ready=False)
        except access.ServerUnavailable as exc:
            raise ConfigurationError(str(exc)) from exc
        decoded: dict[str, str] | None = None
        if where.secret_name:
            secret = client.CoreV1Api(api).read_namespaced_secret(where.secret_name, namespace)
            raw: dict[str, Any] = secret.data or {}
            wanted: dict[str, Any] = {k: raw[k] for k in ("username", "token") if k in raw}
            decoded = access.decode_secret(
                wanted, f"the StreamModel's auth Secret {where.secret_name!r}"
            )
    except ApiException as exc:
        if exc.status == 404:
            what = f"StreamModel {namespace}/{name} (or its Secret)"
            raise NotFoundError(f"{what} not found") from exc
        raise ConfigurationError(f"API server refused: {exc.status} {exc.reason}") from exc
    finally:
        api.close()
    return access.with_credentials(where, decoded)


# -- command line ----------------------------------------------------------------------------


def configure(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--server",
        metavar="URL",
        default=os.environ.get("STREAMML_SERVER"),
        help="model server base URL (env STREAMML_SERVER)",
    )
    where.add_argument("--streammodel", metavar="NAME", help="read URL and auth from this CR")
    parser.add_argument("--namespace", default="default", help="namespace of the StreamModel")
    parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"))
    parser.add_argument(
        "--username", default=os.environ.get("STREAMML_USERNAME"), help="env STREAMML_USERNAME"
    )
    parser.add_argument(
        "--token", default=os.environ.get("STREAMML_TOKEN"), help="env STREAMML_TOKEN"
    )
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between polls")
    parser.add_argument("--out", type=Path, required=True, help="directory for the CSV/JSONL")
    until = parser.add_mutually_exclusive_group()
    until.add_argument("--duration", type=float, help="stop after this many seconds")
    until.add_argument("--count", type=int, help="stop after this many polls")


def run(args: argparse.Namespace) -> int:
    if not (args.interval > 0 and math.isfinite(args.interval)):
        raise ConfigurationError("--interval must be a positive number of seconds")
    if args.duration is not None and not (args.duration > 0 and math.isfinite(args.duration)):
        raise ConfigurationError("--duration must be a positive number of seconds")
    if args.count is not None and args.count < 1:
        raise ConfigurationError("--count must be at least 1")
    if args.streammodel:
        target = target_from_streammodel(args.streammodel, args.namespace, args.kubeconfig)
    elif args.server:
        if not re.match(r"^https?://[^\s/]+", args.server):
            raise ConfigurationError(f"--server must be an http(s) URL, got {args.server!r}")
        target = ServerAccess(args.server, args.username, args.token)
    else:
        raise ConfigurationError("give --server URL (or STREAMML_SERVER) or --streammodel NAME")
    recorded, answered = asyncio.run(
        watch(target, args.out, interval=args.interval, duration=args.duration, count=args.count)
    )
    print(f"recorded {recorded} snapshots from {answered} polls in {args.out}")
    if answered == 0:
        print(f"streamml watch: error: {target.url} never answered", file=sys.stderr)
        return 1
    return 0
