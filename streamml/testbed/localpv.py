"""A tiny local-volume provisioner for the node's default StorageClass.

Every second: for each Pending PVC of class :data:`nodeflags.STORAGE_CLASS` without a volume, make
a directory under the node's volume root and a ``hostPath`` PersistentVolume pre-bound to that
claim (the PV controller binds them at once); for each Released PV it provisioned, delete the
directory and the PV (reclaim policy Delete). Runs as a daemon of the node, in its namespace::

    python -m streamml.testbed.localpv KUBECONFIG VOLUME_ROOT
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from kubernetes import client, config

from streamml.testbed.nodeflags import PROVISIONER, STORAGE_CLASS

logger = logging.getLogger("streamml.localpv")
POLL_S = 1.0
ANNOTATION = "pv.kubernetes.io/provisioned-by"


def volume_for(claim: dict[str, Any], root: Path) -> dict[str, Any]:
    """The PV (a manifest) that satisfies ``claim``, backed by a directory under ``root``."""
    meta, spec = claim["metadata"], claim["spec"]
    name = f"pvc-{meta['uid']}"
    request = spec.get("resources", {}).get("requests", {}).get("storage", "1Gi")
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name, "annotations": {ANNOTATION: PROVISIONER}},
        "spec": {
            "capacity": {"storage": request},
            "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": STORAGE_CLASS,
            "volumeMode": spec.get("volumeMode") or "Filesystem",
            "hostPath": {"path": str(root / name), "type": "Directory"},
            "claimRef": {
                "kind": "PersistentVolumeClaim",
                "namespace": meta["namespace"],
                "name": meta["name"],
                "uid": meta["uid"],
            },
        },
    }


def _items(response: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(response.data)["items"]
    return items


def sync_once(api: client.CoreV1Api, root: Path) -> None:
    volumes = {
        pv["metadata"]["name"]: pv
        for pv in _items(api.list_persistent_volume(_preload_content=False))
    }
    claims = _items(api.list_persistent_volume_claim_for_all_namespaces(_preload_content=False))
    for claim in claims:
        spec, phase = claim["spec"], claim.get("status", {}).get("phase")
        if spec.get("storageClassName") != STORAGE_CLASS or spec.get("volumeName"):
            continue
        pv = volume_for(claim, root)
        if pv["metadata"]["name"] in volumes or phase != "Pending":
            continue
        directory = Path(pv["spec"]["hostPath"]["path"])
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o777)  # pods run as any user (the model server is non-root)
        api.create_persistent_volume(pv)  # type: ignore[arg-type]  # the client takes manifests
        meta = claim["metadata"]
        logger.info("provisioned %s for %s/%s", directory.name, meta["namespace"], meta["name"])
    for name, pv in volumes.items():
        ours = pv["metadata"].get("annotations", {}).get(ANNOTATION) == PROVISIONER
        if ours and pv.get("status", {}).get("phase") == "Released":
            shutil.rmtree(root / name, ignore_errors=True)
            api.delete_persistent_volume(name)
            logger.info("deleted %s", name)


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    kubeconfig, root = argv[0], Path(argv[1])
    root.mkdir(parents=True, exist_ok=True)
    api = client.CoreV1Api(config.new_client_from_config(kubeconfig))  # type: ignore[no-untyped-call]
    while True:
        try:
            sync_once(api, root)
        except Exception as exc:  # the API server may be restarting: keep going
            logger.warning("sync failed: %s", exc)
        time.sleep(POLL_S)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
