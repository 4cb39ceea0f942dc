"""Provenance of learned samples, in process: the learn-log row (a 6th element only when given,
old 5-element rows as before), the origin index (exact on replay, bounded), the request check,
and the job side's values (the LAMMPS version line, a host name cleaned, the engine's env)."""

from __future__ import annotations

import pickle
import zlib
from pathlib import Path
from typing import Any

import orjson
import pytest
from river import linear_model

from streamml.client.delivery import Request, provenance_value
from streamml.clients.lammps import lammps_version
from streamml.errors import DeliveryError
from streamml.modelserver import provenance as provenance_index
from streamml.modelserver.learning import ModelState, default_metrics
from streamml.modelserver.pending import PendingPredictions
from streamml.modelserver.provenance import Origins
from streamml.modelserver.records import LearnRecord
from streamml.modelserver.snapshots import load_snapshot, snapshot_blob
from streamml.sweep.jobs import JobContext, build_job
from streamml.vocabulary.lammpssweep import LammpsSweepSpec
from streamml.vocabulary.wire import MAX_PROVENANCE_VALUE, check_provenance

ORIGIN = {"sweep": "eos", "trial": "uid/t00001", "attempt": "1", "host": "node-a"}


def state() -> ModelState:
    model = linear_model.LinearRegression()
    return ModelState("lin", "regression", model, metrics=default_metrics("regression"))


def test_a_row_without_provenance_is_the_old_five_elements_and_old_rows_decode() -> None:
    live = state()
    plain = live.learn({"x": 1.0}, 2.0, "a")
    given = live.learn({"x": 2.0}, 3.0, "b", provenance=dict(ORIGIN))
    assert plain is not None and given is not None
    assert len(plain.encode()) == 5  # exactly the row an earlier release wrote
    assert given.encode()[5] == ORIGIN and len(given.encode()) == 6
    old_row = orjson.loads(orjson.dumps([{"x": 1.0}, 2.0, None, 1234, "run-3"]))
    assert LearnRecord.decode(old_row).provenance is None
    assert LearnRecord.decode(orjson.loads(orjson.dumps(given.encode()))) == given
    for damaged in ([*given.encode(), {}], [*plain.encode(), "host-a"]):
        with pytest.raises(ValueError, match="a learn-log record has"):
            LearnRecord.decode(damaged)


def test_replay_on_a_snapshot_rebuilds_the_index_exactly() -> None:
    """Live: learns, a snapshot in the middle, more learns (single and batch); replaying the
    rows after the snapshot on it gives the same index, counts and sample numbers."""
    live = state()
    rows: list[list[Any]] = []
    for i in range(6):
        origin = {**ORIGIN, "host": f"node-{i % 2}"} if i != 3 else None
        record = live.learn({"x": float(i)}, float(2 * i), f"s{i}", provenance=origin)
        assert record is not None
        rows.append(record.encode())
    blob, after = snapshot_blob(live), len(rows)
    for i in range(6, 9):
        record = live.learn({"x": float(i)}, float(i), f"s{i}", provenance={"host": "node-b"})
        assert record is not None
        rows.append(record.encode())
    batch = [({"x": float(i)}, float(i), f"s{i}") for i in range(9, 13)]
    encoded, _, _ = live.learn_many(
        batch, PendingPredictions(ttl_seconds=60, max_count=10), provenance={"host": "node-c"}
    )
    rows += encoded
    restored = load_snapshot("lin", "regression", blob)
    for row in orjson.loads(orjson.dumps(rows[after:])):
        restored.replay(LearnRecord.decode(row))
    assert restored.origins == live.origins
    split = {v["value"]: v for v in live.origins.by("host", limit=10)["values"]}
    assert {k: (v["count"], v["first"], v["last"]) for k, v in split.items()} == {
        "node-0": (3, 1, 5),  # samples 1, 3, 5
        "node-1": (2, 2, 6),  # samples 2, 6 (sample 4 said nothing)
        "node-b": (3, 7, 9),
        "node-c": (4, 10, 13),  # the batch: one sample number each, in order
    }
    assert live.origins.by("host", limit=10)["without_key"] == 0
    assert live.origins.samples == 12 and live.learn_stats.n_calls == 13


@pytest.mark.parametrize("heavy", [False, True])
def test_the_index_goes_with_the_snapshot(heavy: bool) -> None:
    """Both picklers (a heavy model's is the pure-Python one) keep the index."""
    live = state()
    live.heavy = heavy
    live.learn({"x": 1.0}, 2.0, provenance={"host": "a", "sweep": "s"})
    live.learn({"x": 2.0}, 2.0, provenance={"host": "b"})
    loaded = load_snapshot("lin", "regression", snapshot_blob(live))
    assert loaded.origins == live.origins and loaded.origins.samples == 2
    assert loaded.origins.by("host", limit=5)["values"][1] == {
        "value": "b",
        "count": 1,
        "first": 2,
        "last": 2,
    }


def test_a_snapshot_written_before_provenance_loads_with_an_empty_index() -> None:
    live = state()
    live.learn({"x": 1.0}, 2.0)
    blob = snapshot_blob(live)
    # the payload of an earlier release: the same pickle without "origins"
    payload = pickle.loads(blob[6:])  # our own blob
    del payload["origins"]
    inner = b"P" + pickle.dumps(payload)
    legacy = b"Z" + zlib.crc32(inner).to_bytes(4, "big") + inner
    loaded = load_snapshot("lin", "regression", legacy)
    assert loaded.origins == Origins() and loaded.learn_stats.n_calls == 1


def test_the_index_is_bounded_and_counts_what_it_cannot_index(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(provenance_index, "MAX_VALUES", 3)
    monkeypatch.setattr(provenance_index, "MAX_KEYS", 2)
    origins = Origins()
    for i in range(1, 7):
        origins.add({"trial": f"t{i}", "host": "a", "extra": "x"}, i)
    split = origins.by("trial", limit=10)
    # "a" takes one of the 3 values: t1, t2 indexed; t3..t6 counted under "other"
    assert [v["value"] for v in split["values"]] == ["t1", "t2"]
    assert split["other"] == {"count": 4, "first": 3, "last": 6}
    assert split["without_key"] == 0
    assert origins.by("host", limit=10)["values"][0]["count"] == 6
    assert origins.summary()["unindexed_keys"] == {"extra": 6}
    top = origins.by("trial", limit=1)
    assert top["truncated"] is True and len(top["values"]) == 1


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ([], "must be an object"),
        ({"host": 3}, "'host' must be a string"),
        ({"host": ""}, "'host' must be a string"),
        ({"host": "x" * (MAX_PROVENANCE_VALUE + 1)}, "'host' must be a string"),
        ({"host": "a\nb"}, "printable"),
        ({"host": "a\x00b"}, "printable"),
        ({"host": {"name": "a"}}, "'host' must be a string"),
        ({"Host": "a"}, "key 'Host' must be lowercase"),
        ({f"k{i}": "v" for i in range(5)}, "at most 4 keys besides"),
    ],
)
def test_a_bad_provenance_is_refused_naming_what(bad: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_provenance(bad)


def test_the_job_side_values() -> None:
    assert lammps_version("LAMMPS (29 Aug 2024 - Update 1)\n  using 1 OpenMP") == (
        "29 Aug 2024 - Update 1"
    )
    assert lammps_version("WARNING: x\nLAMMPS (2 Aug 2023)\n") == "2 Aug 2023"
    assert lammps_version("no version here") is None
    assert provenance_value("node\x07-1\n") == "node?-1"
    assert provenance_value("h" * 300) == "h" * MAX_PROVENANCE_VALUE
    assert provenance_value("  ") is None
    with pytest.raises(DeliveryError, match="invalid 'provenance'"):
        Request.from_data(
            {"kind": "learn", "server": "s", "trial": "t", "features": {}, "provenance": [1]}
        )
    spooled = Request("learn", "s", "t", {}, 1.0, provenance={"host": "a"})
    assert Request.from_data(spooled.to_data()).provenance == {"host": "a"}


def test_the_engine_passes_sweep_and_attempt_to_the_job(tmp_path: Path) -> None:
    spec = LammpsSweepSpec.model_validate(
        {
            "streamModelRef": {"name": "m"},
            "parameters": [{"name": "nx", "type": "int", "min": 4, "max": 6}],
            "trials": 2,
        }
    )
    ctx = JobContext(server="http://127.0.0.1:1", workdir=tmp_path, identity="uid")
    job = build_job(spec, ctx, trial=1, attempt=3, point={"nx": 4}, test=False, sweep="eos")
    assert (job.env["STREAMML_SWEEP"], job.env["STREAMML_ATTEMPT"]) == ("eos", "3")
