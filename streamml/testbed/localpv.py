"""A tiny local-volume provisioner for the node's default StorageClass.

Every second: for each Pending PVC of class :data:`nodeflags.STORAGE_CLASS` without a volume, make
a directory under the node's volume root and a ``hostPath`` PersistentVolume pre-bound to that
claim (the PV controller binds them at once); for each Released PV it provisioned, delete the
directory and the PV (reclaim policy Delete). Runs as a daemon of the node, in its namespace::

    python -m streamml.testbed.localpv KUBECONFIG VOLUME_ROOT
"""

from __future__ import annotations

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


def volume_for(claim: Any, root: Path) -> client.V1PersistentVolume:
    """The PV that satisfies ``claim`` (a V1PersistentVolumeClaim), backed by a directory."""
    ns, name = claim.metadata.namespace, claim.metadata.name
    pv_name = f"pvc-{claim.metadata.uid}"
    request = (claim.spec.resources.requests or {}).get("storage", "1Gi")
    return client.V1PersistentVolume(
        metadata=client.V1ObjectMeta(
            name=pv_name, annotations={"pv.kubernetes.io/provisioned-by": PROVISIONER}
        ),
        spec=client.V1PersistentVolumeSpec(
            capacity={"storage": request},
            access_modes=claim.spec.access_modes or ["ReadWriteOnce"],
            persistent_volume_reclaim_policy="Delete",
            storage_class_name=STORAGE_CLASS,
            volume_mode=claim.spec.volume_mode or "Filesystem",
            host_path=client.V1HostPathVolumeSource(path=str(root / pv_name), type="Directory"),
            claim_ref=client.V1ObjectReference(
                kind="PersistentVolumeClaim", namespace=ns, name=name, uid=claim.metadata.uid
            ),
        ),
    )


def sync_once(api: client.CoreV1Api, root: Path) -> None:
    volumes = {pv.metadata.name: pv for pv in api.list_persistent_volume().items}
    for claim in api.list_persistent_volume_claim_for_all_namespaces().items:
        if claim.spec.storage_class_name != STORAGE_CLASS or claim.spec.volume_name:
            continue
        pv = volume_for(claim, root)
        if pv.metadata.name in volumes or claim.status.phase != "Pending":
            continue
        directory = Path(pv.spec.host_path.path)
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o777)  # pods run as any user (the model server is non-root)
        api.create_persistent_volume(pv)
        logger.info("provisioned %s for %s/%s", pv.metadata.name, claim.metadata.namespace, claim.metadata.name)
    for pv in volumes.values():
        ours = (pv.metadata.annotations or {}).get("pv.kubernetes.io/provisioned-by") == PROVISIONER
        if ours and pv.status.phase == "Released":
            shutil.rmtree(root / pv.metadata.name, ignore_errors=True)
            api.delete_persistent_volume(pv.metadata.name)
            logger.info("deleted %s", pv.metadata.name)


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    kubeconfig, root = argv[0], Path(argv[1])
    root.mkdir(parents=True, exist_ok=True)
    api = client.CoreV1Api(config.new_client_from_config(kubeconfig))
    while True:
        try:
            sync_once(api, root)
        except Exception as exc:  # the API server may be restarting: keep going
            logger.warning("sync failed: %s", exc)
        time.sleep(POLL_S)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
