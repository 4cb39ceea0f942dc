"""Data lifetime of a StreamModel's PersistentVolumeClaim (``spec.server.storage.reclaimPolicy``).

``Delete`` (the default): the claim carries the StreamModel's owner reference, so the garbage
collector deletes it, and every learned model, with the StreamModel.

``Retain``: the claim carries no owner reference. It names the StreamModel that uses it with the
usual labels plus :data:`CLAIMED_BY` (that StreamModel's UID), so it outlives a ``kubectl delete``
and the next StreamModel of the same name adopts it: the server starts on the same data dir, with
every model and its history. A claim is never adopted when it is held by a StreamModel that still
exists (another UID), is being deleted, or was not made by this operator.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from streamml.errors import StreamMLError
from streamml.vocabulary.streammodel import STREAMMODEL

if TYPE_CHECKING:
    from streamml.operator.builders import Owner
    from streamml.operator.kube import Kube

logger = logging.getLogger(__name__)

RECLAIM_POLICY = "streamml.io/reclaim-policy"
CLAIMED_BY = "streamml.io/claimed-by-uid"
_MANAGED_BY = "app.kubernetes.io/managed-by"
_INSTANCE = "app.kubernetes.io/instance"


class ClaimRefused(StreamMLError):
    """The retained claim cannot be used by this StreamModel (``reason`` is the condition's)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def data_retained(spec: Mapping[str, Any]) -> bool:
    """Whether deleting a StreamModel with this (raw) spec keeps its data (local runtime too)."""
    storage = (spec.get("server") or {}).get("storage") or {}
    return bool(
        storage.get("reclaimPolicy") == "Retain"
        and storage.get("type", "PersistentVolumeClaim") == "PersistentVolumeClaim"
    )


def claim_metadata(metadata: dict[str, Any], owner: Owner, policy: str) -> dict[str, Any]:
    """The claim's metadata for ``policy``: owned (Delete) or naming its StreamModel (Retain)."""
    if policy != "Retain":
        return metadata
    kept = {k: v for k, v in metadata.items() if k != "ownerReferences"}
    kept["annotations"] = {RECLAIM_POLICY: "Retain", CLAIMED_BY: owner.uid}
    return kept


@dataclass(frozen=True)
class Claimant:
    """Who a claim says it belongs to (from its owner reference or its annotation)."""

    name: str
    uid: str
    owned: bool  # through an owner reference: the garbage collector deletes it with that owner


def claimant(claim: Mapping[str, Any]) -> Claimant | None:
    meta = claim.get("metadata") or {}
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == STREAMMODEL.kind and ref.get("uid"):
            return Claimant(str(ref.get("name") or ""), str(ref["uid"]), owned=True)
    uid = (meta.get("annotations") or {}).get(CLAIMED_BY)
    if uid:
        return Claimant(str((meta.get("labels") or {}).get(_INSTANCE) or ""), str(uid), False)
    return None


async def _alive(kube: Kube, namespace: str, holder: Claimant) -> bool:
    if not holder.name:
        return False
    found = await kube.get(STREAMMODEL.api_version, STREAMMODEL.kind, namespace, holder.name)
    return found is not None and (found.get("metadata") or {}).get("uid") == holder.uid


def _current(existing: Mapping[str, Any], wanted: Mapping[str, Any], owner: Owner) -> bool:
    """Whether applying ``wanted`` would change nothing that matters (saves a write)."""
    meta, spec = existing.get("metadata") or {}, existing.get("spec") or {}
    size = (spec.get("resources") or {}).get("requests", {}).get("storage")
    wanted_spec = wanted["spec"]
    return (
        not meta.get("ownerReferences")
        and (meta.get("annotations") or {}).get(CLAIMED_BY) == owner.uid
        and size == wanted_spec["resources"]["requests"]["storage"]
        and wanted["metadata"]["labels"].items() <= (meta.get("labels") or {}).items()
        and spec.get("storageClassName")
        == wanted_spec.get("storageClassName", spec.get("storageClassName"))
    )


async def ensure_retained_claim(kube: Kube, owner: Owner, claim: dict[str, Any]) -> str | None:
    """Create, keep or adopt the retained ``claim``; returns a message when it adopted one.

    Raises :class:`ClaimRefused` (nothing written) when the claim that exists is not this
    StreamModel's to take.
    """
    name = claim["metadata"]["name"]
    existing = await kube.get("v1", "PersistentVolumeClaim", owner.namespace, name)
    if existing is None:
        await kube.apply(claim)
        return None
    meta = existing.get("metadata") or {}
    where = f"spec.server.storage: PersistentVolumeClaim {name!r}"
    if meta.get("deletionTimestamp"):
        raise ClaimRefused("StorageTerminating", f"{where} is being deleted; waiting for it")
    if (meta.get("labels") or {}).get(_MANAGED_BY) != claim["metadata"]["labels"][_MANAGED_BY]:
        raise ClaimRefused(
            "StorageConflict", f"{where} exists and was not created by the operator: not adopted"
        )
    holder = claimant(existing)
    adopted = None
    if holder is not None and holder.uid != owner.uid:
        if await _alive(kube, owner.namespace, holder):
            raise ClaimRefused(
                "StorageInUse", f"{where} belongs to StreamModel {holder.name!r} (uid {holder.uid})"
            )
        if holder.owned:
            raise ClaimRefused(
                "StorageTerminating",
                f"{where} belonged to a deleted StreamModel with reclaimPolicy Delete and is "
                "being garbage-collected; waiting for it",
            )
        adopted = f"adopted {name} (retained from deleted StreamModel uid {holder.uid})"
    elif _current(existing, claim, owner):
        return None
    await kube.apply(claim)
    if adopted:
        logger.info("%s/%s: %s", owner.namespace, owner.name, adopted)
    return adopted
