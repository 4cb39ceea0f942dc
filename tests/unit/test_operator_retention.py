"""``spec.server.storage.reclaimPolicy``: the claim's metadata and who a claim belongs to."""

from __future__ import annotations

from typing import Any

from streamml.operator import builders, retention
from streamml.operator.builders import Owner
from streamml.vocabulary.streammodel import StreamModelSpec

OWNER = Owner(name="lammps-time", namespace="science", uid="1234-uid")


def claim(policy: str | None) -> dict[str, Any]:
    storage = {"reclaimPolicy": policy} if policy else {}
    found = builders.pvc(OWNER, StreamModelSpec.model_validate({"server": {"storage": storage}}))
    assert found is not None
    return found


def test_delete_is_the_default_and_owns_the_claim() -> None:
    default, delete = claim(None), claim("Delete")
    assert default == delete
    [ref] = default["metadata"]["ownerReferences"]
    assert ref["uid"] == "1234-uid" and ref["controller"] is True
    assert "annotations" not in default["metadata"]
    assert retention.claimant(default) == retention.Claimant("lammps-time", "1234-uid", True)


def test_retain_claim_is_not_owned_but_names_its_streammodel() -> None:
    kept = claim("Retain")
    meta = kept["metadata"]
    assert "ownerReferences" not in meta
    assert meta["annotations"] == {
        retention.RECLAIM_POLICY: "Retain",
        retention.CLAIMED_BY: "1234-uid",
    }
    assert meta["labels"] == builders.labels(OWNER)
    assert retention.claimant(kept) == retention.Claimant("lammps-time", "1234-uid", False)
    assert kept["spec"] == claim("Delete")["spec"]


def test_reclaim_policy_never_rolls_the_server() -> None:
    retain = StreamModelSpec.model_validate({"server": {"storage": {"reclaimPolicy": "Retain"}}})
    assert builders.config_hash(OWNER, retain, "img") == builders.config_hash(
        OWNER, StreamModelSpec(), "img"
    )
    assert builders.deployment(OWNER, retain, "img") == builders.deployment(
        OWNER, StreamModelSpec(), "img"
    )


def test_data_retained_reads_the_raw_spec() -> None:
    assert retention.data_retained({"server": {"storage": {"reclaimPolicy": "Retain"}}})
    assert not retention.data_retained({})
    assert not retention.data_retained({"server": {"storage": {"reclaimPolicy": "Delete"}}})
    ephemeral = {"server": {"storage": {"type": "Ephemeral", "reclaimPolicy": "Retain"}}}
    assert not retention.data_retained(ephemeral)
    assert retention.claimant({"metadata": {}}) is None
