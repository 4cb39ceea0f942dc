"""The job's result document: one schema, written by ``run-lammps``, read by the sweep engine.

The legacy documents below are built exactly as ``run-lammps`` wrote them before the schema
existed (commit 0d095a3: a dict, ``json.dumps(document, indent=1, default=str)``): a sweep that
was running across the upgrade must still read the results its jobs left.
"""

from __future__ import annotations

import doctest
import json
import math
from pathlib import Path
from typing import Any

from streamml.sweep import jobs
from streamml.vocabulary import jobresult
from streamml.vocabulary.jobresult import JobResult

BASE: dict[str, Any] = {
    "trial": "lj-size/t00003",
    "kind": "learn",
    "features": {"nx": 4, "ny": 5, "nz": 6, "atoms": 480},
    "target": None,
    "target_name": "cpu_time",
    "metrics": {},
    "predictions": {},
    "delivered": False,
    "spooled": None,
    "error": None,
    "reason": None,
}
LEGACY: dict[str, dict[str, Any]] = {
    "delivered": BASE
    | {
        "target": 0.0123,
        "metrics": {"loop_time": 0.02, "atoms": 480, "cpu_use": 61.5, "cpu_time": 0.0123},
        "delivered": True,
    },
    "spooled": BASE
    | {
        "target": 0.5,
        "spooled": "/w/spool/lj-size_2Ft00003.json",
        "error": "cannot reach http://127.0.0.1:9: connection refused",
    },
    "failed": BASE
    | {"error": "LammpsError: Lost atoms: original 256 current 212"}
    | {"reason": "LammpsError"},
    "held-out": BASE
    | {"kind": "predict", "target": 2.0, "delivered": True}
    | {"predictions": {"linear": 1.9, "broken": None, "classifier": "big"}},
    "in a container": BASE
    | {"target": 1.0, "delivered": True, "image_digest": "sha256:" + "ab" * 32},
}


def _legacy_text(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=1, default=str)


def test_legacy_documents_read_field_for_field() -> None:
    for name, doc in LEGACY.items():
        result = jobresult.read(_legacy_text(doc))
        assert result is not None, name
        assert result.model_dump() == {"image_digest": None, "targets": {}} | doc, name


def test_the_engine_reads_a_legacy_result_file(tmp_path: Path) -> None:
    ctx = jobs.JobContext(server="http://127.0.0.1:9", workdir=tmp_path, identity="u")
    path = jobs.trial_dir(ctx, "s-t00000-a1") / jobs.RESULT_FILE
    path.parent.mkdir(parents=True)
    path.write_text(_legacy_text(LEGACY["held-out"]))
    result = jobs.read_result(ctx, "s-t00000-a1", None)
    assert result is not None and result.target == 2.0 and result.delivered
    assert result.finite_predictions() == {"linear": 1.9}
    # a Pod's termination message wins over a file
    message = _legacy_text(LEGACY["failed"])
    failed = jobs.read_result(ctx, "s-t00000-a1", message)
    assert failed is not None and failed.reason == "LammpsError"


def test_what_the_job_writes_the_engine_reads_back() -> None:
    written = JobResult(trial="t", kind="predict", target=1.5, predictions={"m": 1.0})
    doc = json.loads(written.to_json())
    assert "image_digest" not in doc  # as before: only a containerised run names an image
    assert jobresult.read(written.to_json()) == written
    boxed = written.model_copy(update={"image_digest": "sha256:00"})
    assert json.loads(boxed.to_json())["image_digest"] == "sha256:00"


def test_a_wrong_field_reads_as_absent_and_garbage_as_no_document() -> None:
    assert jobresult.read('{"target": "1.5", "delivered": true}') == JobResult(delivered=True)
    assert jobresult.read('{"target": NaN, "trial": 7}') == JobResult()
    assert jobresult.read('{"target": true}') == JobResult()  # a bool is not a number
    assert jobresult.read('{"predictions": [1, 2], "target": 3}') == JobResult(target=3.0)
    assert jobresult.read('{"future_field": 1, "target": 2}') == JobResult(target=2.0)
    for garbage in (None, "", "not json", "[1, 2]", "3"):
        assert jobresult.read(garbage) is None, garbage
    assert not math.isnan(JobResult(target=1.0).target or 0.0)


def test_the_public_text_rules() -> None:
    assert doctest.testmod(jobresult).failed == 0
    assert jobresult.scrub("NonZeroExitCode 1\nLast command: s3cret") == (
        "NonZeroExitCode 1\nLast command: …"
    )
