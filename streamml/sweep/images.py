"""Container images in a sweep: each trial's image digest, a condition when it changes mid-way,
the held-out evaluation per image, and container failures that no retry can fix.

A sweep's trials should all run the same LAMMPS. When the image's digest changes (someone rebuilt
``lammps.sif`` in place), the trials before and after measure different programs: status lists
every digest seen, the ``ImageChanged`` condition says when it happened, and the held-out
evaluation is also given per image, so drift detection can decide what the models do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from streamml.sweep import jobs
from streamml.sweep.container import FATAL_CODES
from streamml.vocabulary.conditions import set_condition
from streamml.vocabulary.jobresult import JobResult
from streamml.vocabulary.sweepstatus import (
    HeldOutResult,
    ImageEvaluation,
    LammpsSweepStatus,
    TrialRecord,
)

#: how many distinct digests status keeps (a sweep rebuilt in a loop stays bounded)
MAX_DIGESTS = 16


def record(status: LammpsSweepStatus, trial: TrialRecord, result: JobResult | None) -> None:
    """Note the trial's image digest; set ``ImageChanged`` when it differs from the last one."""
    digest = result.image_digest if result else None
    if not digest:
        return
    trial.image_digest = digest
    seen = status.image_digests
    if seen and seen[-1] == digest:
        return
    previous = seen[-1] if seen else None
    if digest in seen:
        seen.remove(digest)
    seen.append(digest)
    del seen[:-MAX_DIGESTS]
    if previous is None:
        set_condition(
            status.conditions, "ImageChanged", False, "OneImage", f"trials run in {digest}"
        )
        return
    set_condition(
        status.conditions,
        "ImageChanged",
        True,
        "ImageChanged",
        f"trial {trial.id} ({trial.job_name}) ran in {digest}; earlier trials in {previous}",
    )


def current(status: LammpsSweepStatus) -> str | None:
    return status.image_digests[-1] if status.image_digests else None


def fatal_code(result: JobResult | None) -> str | None:
    """The trial failed in a way every other trial will too (no runtime, no/corrupt image)."""
    code = result.reason if result else None
    return code if code in FATAL_CODES else None


def evaluate_by_image(
    results: Sequence[HeldOutResult], model_targets: Mapping[str, str] | None = None
) -> list[ImageEvaluation]:
    digests = sorted({r.image_digest for r in results if r.image_digest})
    return [
        ImageEvaluation(
            image_digest=d,
            evaluation=jobs.evaluate([r for r in results if r.image_digest == d], model_targets),
        )
        for d in digests
    ]
