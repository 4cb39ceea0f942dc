"""Start-up: every stored model from its snapshot plus the learn log after it; what cannot be
loaded is quarantined and reported, never dropped in silence.

A damaged model (its snapshot blob unloadable, a log row garbled or not replayable, its snapshot
row or its definition row missing) is put in :attr:`Registry.quarantined` with a one-line reason
naming the file and the row; its rows stay as they are, the other models load and serve. One
summary line says what was loaded: models, log rows replayed, log rows skipped and why, and what
the data-dir checks found (a WAL that lost commits). :class:`LoadReport` keeps the same counts for
``/readyz``, ``/metrics`` and ``streamml serve --check``.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from streamml.modelserver.learning import ModelState
from streamml.modelserver.records import LearnRecord
from streamml.modelserver.registry import Quarantine, Registry
from streamml.modelserver.snapshots import SnapshotError, load_snapshot
from streamml.modelserver.storage import Orphan, Storage, StoredModel

log = logging.getLogger(__name__)

#: why log rows were not replayed, by Quarantine.kind
SKIP_REASONS = {
    "snapshot": "of models with a damaged snapshot",
    "log": "of models with a damaged log row",
    "no-snapshot": "of models without a snapshot row",
    "no-definition": "of models without a definition row",
}


@dataclass
class LoadReport:
    """What start-up loaded from the data dir, and what it could not."""

    models: int = 0
    replayed_rows: int = 0
    replayed_learns: int = 0
    #: log rows not replayed, by Quarantine.kind
    skipped_rows: Counter[str] = field(default_factory=Counter)
    quarantined: list[Quarantine] = field(default_factory=list)
    #: problems of the data dir as a whole (one line each), e.g. a WAL that lost commits
    findings: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not (self.quarantined or self.findings or self.skipped_rows)

    def summary(self) -> str:
        parts = [
            f"loaded {self.models} models",
            f"replayed {self.replayed_rows} learn-log rows ({self.replayed_learns} learns)",
        ]
        if self.quarantined:
            names = ", ".join(f"{q.name} ({q.kind})" for q in self.quarantined)
            parts.append(f"quarantined {len(self.quarantined)}: {names}")
        skipped = sum(self.skipped_rows.values())
        if skipped:
            why = ", ".join(f"{n} {SKIP_REASONS[k]}" for k, n in sorted(self.skipped_rows.items()))
            parts.append(f"skipped {skipped} learn-log rows ({why})")
        else:
            parts.append("skipped 0 learn-log rows")
        parts += self.findings
        return "; ".join(parts)


async def recover(registry: Registry, storage: Storage) -> LoadReport:
    """Load every stored model into ``registry``; quarantine what cannot be loaded."""
    report = LoadReport()
    if storage.wal is not None and storage.wal.problem is not None:
        report.findings.append(f"{storage.wal.path}: {storage.wal.problem}")
    stored = await storage.load_stored()
    for model in stored.models:
        if model.snapshot is None or model.snapshot_seq is None:
            rows = len(await storage.log_after(model.name, -1))
            _quarantine(registry, report, _no_snapshot(storage.path, model.name, rows))
            continue
        rows_after = await storage.log_after(model.name, model.snapshot_seq)
        loaded = restored(storage.path, model, rows_after, registry.idempotency_window)
        if isinstance(loaded, Quarantine):
            _quarantine(registry, report, loaded)
            continue
        state, learns = loaded
        registry.models[state.name] = state
        report.models += 1
        report.replayed_rows += len(rows_after)
        report.replayed_learns += learns
        log.info(
            "loaded model %s (%s, %d samples, %d replayed from the log)",
            state.name,
            model.flavor,
            state.learn_stats.n_calls,
            learns,
        )
    for orphan in stored.orphans:
        _quarantine(registry, report, _orphan(storage, orphan))
    line = "start-up: %s"
    if report.healthy:
        log.info(line, report.summary())
    else:
        log.warning(line, report.summary())
    return report


def restored(
    where: Path, model: StoredModel, rows_after: list[tuple[int, bytes]], window: int
) -> tuple[ModelState, int] | Quarantine:
    """A model as its data dir holds it: its snapshot, then its learn-log rows after it (with
    the number of learns replayed), or the :class:`Quarantine` saying what is damaged. The one
    way back from disk: start-up, and a model returning to its durable state after a failed
    commit (``ModelService.restore_durable``)."""
    name = model.name
    if model.snapshot is None:
        return _no_snapshot(where, name, len(rows_after))
    try:
        state = load_snapshot(name, model.flavor, model.snapshot)
    except SnapshotError as exc:
        reason = f"{where}: the snapshot of model {name!r} (seq {model.snapshot_seq}) is bad: {exc}"
        return Quarantine(name, "snapshot", reason, len(rows_after))
    state.forget_old_identifiers(window)  # the window may be smaller than when it was written
    learns = 0
    for seq, body in rows_after:
        try:
            records = [LearnRecord.decode(item) for item in orjson.loads(body)]
        except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
            reason = f"{where}: learn-log row seq {seq} of model {name!r} is garbled ({exc})"
            return Quarantine(name, "log", reason, len(rows_after))
        try:
            for record in records:
                state.replay(record, window)
        except Exception as exc:  # it was learned live: a failing replay means damaged data
            reason = (
                f"{where}: learn-log row seq {seq} of model {name!r} cannot be replayed "
                f"({type(exc).__name__}: {str(exc)[:200]})"
            )
            return Quarantine(name, "log", reason, len(rows_after))
        learns += len(records)
    return state, learns


def _no_snapshot(where: Path, name: str, rows: int) -> Quarantine:
    reason = f"{where}: model {name!r} has no row in table snapshots (its state is missing)"
    return Quarantine(name, "no-snapshot", reason, rows)


async def check(data_dir: Path) -> LoadReport:
    """Everything start-up does to a data dir, on a copy of it (the files are left as they are),
    plus SQLite's full integrity check; a DataDirError when it cannot be used at all."""
    storage = Storage(data_dir, synchronous="NORMAL")
    await storage.open(check_only=True)
    try:
        registry = Registry(pending_ttl=1.0, pending_max=1, idempotency_window=10**9)
        return await recover(registry, storage)
    finally:
        await storage.close()


def _orphan(storage: Storage, orphan: Orphan) -> Quarantine:
    held = [f"{orphan.log_rows} learn-log rows"] if orphan.log_rows else []
    if orphan.has_snapshot:
        held.insert(0, "a snapshot")
    reason = (
        f"{storage.path}: {' and '.join(held)} of model {orphan.name!r} but no row in table "
        "models (its definition is missing)"
    )
    return Quarantine(orphan.name, "no-definition", reason, orphan.log_rows)


def _quarantine(registry: Registry, report: LoadReport, quarantine: Quarantine) -> None:
    registry.quarantined[quarantine.name] = quarantine
    report.quarantined.append(quarantine)
    if quarantine.log_rows:
        report.skipped_rows[quarantine.kind] += quarantine.log_rows
    log.error("quarantined model %s: %s", quarantine.name, quarantine.reason)
