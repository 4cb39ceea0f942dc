"""Exactly one active operator: leader election on a ``coordination.k8s.io/v1`` Lease.

A Deployment's replacement pod starts while the old one terminates, and a local operator may be
started next to an in-cluster one: without this, two operators would reconcile (and submit
trials) at once. So ``streamml operator`` first takes the Lease, the way client-go's leader
election does:

- a new Lease, an empty ``holderIdentity`` (released) or a record that has not changed for
  ``leaseDurationSeconds`` *as seen on this process's own clock* (no clock-skew trust) is taken
  with a compare-and-swap on ``resourceVersion``; otherwise the operator waits, live (its
  liveness endpoint answers) but handling nothing;
- the holder renews every ``retry_period``; if another identity holds the Lease, or renewing has
  failed for ``renew_deadline`` (shorter than the lease), it exits at once
  (:data:`LOST_EXIT_CODE`): it stops acting before anyone else may start;
- on a normal exit it releases the Lease, so a waiting operator takes over without waiting for
  the lease to expire.

The handlers are never registered in a waiting process: kopf starts only after the Lease is held.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import time
import urllib.parse
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from streamml.errors import ConfigurationError, ConflictError
from streamml.operator.kube import Kube, KubeError
from streamml.operator.settings import LeaderElectionSettings, OperatorSettings

logger = logging.getLogger(__name__)

LEASE_API = "coordination.k8s.io/v1"
DEFAULT_NAME = "streamml-operator"
DEFAULT_NAMESPACE = "streamml-system"
LOST_EXIT_CODE = 3
_SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def _micro_time(moment: datetime | None = None) -> str:
    return (moment or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease_name(conf: LeaderElectionSettings, namespaces: list[str]) -> str:
    """One Lease per scope: operators watching different namespaces do not exclude each other."""
    if conf.name:
        return conf.name
    if not namespaces:
        return DEFAULT_NAME
    digest = hashlib.sha256(",".join(sorted(set(namespaces))).encode()).hexdigest()[:10]
    return f"{DEFAULT_NAME}-{digest}"


def lease_namespaces(conf: LeaderElectionSettings, namespaces: list[str]) -> list[str]:
    """Where to keep the Lease, in order of preference (the next is used when one is absent)."""
    if conf.namespace:
        return [conf.namespace]
    own = os.environ.get("POD_NAMESPACE")
    if not own and "KUBERNETES_SERVICE_HOST" in os.environ and _SA_NAMESPACE.is_file():
        own = _SA_NAMESPACE.read_text().strip()
    if own:
        return [own]
    if namespaces:
        return [namespaces[0]]
    return [DEFAULT_NAMESPACE, "default"]


class LeaderElector:
    """Takes, renews and releases one Lease for this process."""

    def __init__(
        self,
        conf: LeaderElectionSettings,
        name: str,
        namespaces: list[str],
        kube: Kube | None = None,
    ) -> None:
        self.conf = conf
        self.name = name
        self.candidates = namespaces
        self.namespace = namespaces[0]
        self.identity = (
            conf.identity or f"{socket.gethostname()}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        )
        self.kube = kube or Kube(pool_size=2)
        self.holder: str | None = None
        self._seen: tuple[Any, ...] | None = None
        self._seen_at = 0.0

    @classmethod
    def from_settings(cls, settings: OperatorSettings) -> LeaderElector:
        conf = settings.leader_election
        names = list(settings.namespaces)
        return cls(conf, lease_name(conf, names), lease_namespaces(conf, names))

    def _lease(self, spec: dict[str, Any], resource_version: str | None = None) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if resource_version:
            meta["resourceVersion"] = resource_version
        return {"apiVersion": LEASE_API, "kind": "Lease", "metadata": meta, "spec": spec}

    def _spec(self, previous: dict[str, Any]) -> dict[str, Any]:
        now = _micro_time()
        ours = previous.get("holderIdentity") == self.identity
        transitions = int(previous.get("leaseTransitions") or 0)
        if previous and not ours:
            transitions += 1
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self.conf.lease_duration)),
            "acquireTime": previous.get("acquireTime") if ours else now,
            "renewTime": now,
            "leaseTransitions": transitions,
        }

    async def _create(self) -> bool:
        while True:
            try:
                await self.kube.create(self._lease(self._spec({})))
                return True
            except ConflictError:
                return False
            except KubeError as exc:
                if exc.status != 404 or self.namespace == self.candidates[-1]:
                    raise
                # that namespace does not exist (no in-cluster operator can be there): next one
                self.namespace = self.candidates[self.candidates.index(self.namespace) + 1]
                if await self.kube.get(LEASE_API, "Lease", self.namespace, self.name):
                    return False

    async def try_acquire_or_renew(self) -> bool:
        """One attempt: True when this process holds the Lease now."""
        lease = await self.kube.get(LEASE_API, "Lease", self.namespace, self.name)
        if lease is None:
            taken = await self._create()
            self.holder = self.identity if taken else None
            return taken
        spec = dict(lease.get("spec") or {})
        version = str((lease.get("metadata") or {}).get("resourceVersion") or "")
        self.holder = spec.get("holderIdentity") or None
        if self.holder and self.holder != self.identity:
            record = (self.holder, spec.get("renewTime"), version)
            if record != self._seen:
                self._seen, self._seen_at = record, time.monotonic()
            duration = float(spec.get("leaseDurationSeconds") or self.conf.lease_duration)
            if time.monotonic() - self._seen_at < duration:
                return False
            logger.info("Lease %s/%s: holder %s expired", self.namespace, self.name, self.holder)
        try:
            await self.kube.replace(self._lease(self._spec(spec), version))
        except ConflictError:
            return False
        self.holder = self.identity
        return True

    async def _attempt(self) -> bool:
        try:
            return await self.try_acquire_or_renew()
        except KubeError as exc:
            if exc.status in (401, 403):
                raise ConfigurationError(
                    f"the operator may not use Lease {self.namespace}/{self.name} ({exc.detail}): "
                    "grant get/create/update on leases there (config/rbac/leader_election.yaml)"
                ) from None
            logger.warning("Lease %s/%s: %s; retrying", self.namespace, self.name, exc)
            return False

    async def acquire(self) -> None:
        """Wait until this process holds the Lease."""
        announced: str | None = None
        while not await self._attempt():
            if self.holder != announced:
                announced = self.holder
                logger.info(
                    "standby: Lease %s/%s is held by %s; waiting",
                    self.namespace,
                    self.name,
                    self.holder,
                )
            await asyncio.sleep(self.conf.retry_period)
        logger.info("leader: holding Lease %s/%s as %s", self.namespace, self.name, self.identity)

    async def keep(self, lost: Callable[[str], None]) -> None:
        """Renew forever; ``lost(why)`` when the Lease is no longer surely ours."""
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(self.conf.retry_period)
            try:
                held = await self.try_acquire_or_renew()
            except Exception as exc:  # the API server is away: keep trying until the deadline
                logger.warning("renewing Lease %s/%s failed: %s", self.namespace, self.name, exc)
                held = False
            if held:
                renewed = time.monotonic()
            elif self.holder not in (None, self.identity):
                lost(f"Lease {self.namespace}/{self.name} is now held by {self.holder}")
                return
            elif time.monotonic() - renewed > self.conf.renew_deadline:
                lost(f"Lease {self.namespace}/{self.name} not renewed in time")
                return

    async def release(self) -> None:
        """Give the Lease up (a waiting operator takes over at once); then close the client."""
        try:
            lease = await self.kube.get(LEASE_API, "Lease", self.namespace, self.name)
            spec = dict((lease or {}).get("spec") or {})
            if lease is not None and spec.get("holderIdentity") == self.identity:
                version = str((lease.get("metadata") or {}).get("resourceVersion") or "")
                spec.update(holderIdentity=None, leaseDurationSeconds=1, renewTime=_micro_time())
                await self.kube.replace(self._lease(spec, version))
                logger.info("released Lease %s/%s", self.namespace, self.name)
        except Exception as exc:  # it expires by itself
            logger.warning("could not release Lease %s/%s: %s", self.namespace, self.name, exc)
        finally:
            await self.kube.close()


def exit_now(why: str) -> None:
    """Leadership lost: stop acting this instant (children die with this process)."""
    logger.critical("leadership lost (%s): exiting", why)
    logging.shutdown()
    os._exit(LOST_EXIT_CODE)


async def _standby_liveness(url: str | None) -> Callable[[], Any] | None:
    """While waiting, answer the liveness probe (a waiting operator is healthy, not stuck)."""
    if not url:
        return None
    from aiohttp import web

    parsed = urllib.parse.urlsplit(url)

    async def alive(_: web.Request) -> web.Response:
        return web.json_response({"standby": True})

    app = web.Application()
    app.router.add_get(parsed.path or "/", alive)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, parsed.hostname, parsed.port or 80).start()
    return runner.cleanup


async def _wait(elector: LeaderElector, liveness: str | None) -> None:
    stop_liveness = await _standby_liveness(liveness)
    try:
        await elector.acquire()
    finally:
        if stop_liveness is not None:
            await stop_liveness()
        await elector.kube.close()  # bound to this loop; kopf's loop reconnects


def wait_for_leadership(elector: LeaderElector, liveness: str | None) -> None:
    """Block until the Lease is ours (before kopf starts: nothing is handled while waiting)."""
    asyncio.run(_wait(elector, liveness))


def register(registry: Any, elector: LeaderElector) -> None:
    """Renew the Lease inside kopf's loop for as long as the operator runs."""
    import kopf

    tasks: list[asyncio.Task[None]] = []

    async def renew(**_: Any) -> None:
        tasks.append(asyncio.get_running_loop().create_task(elector.keep(exit_now)))

    async def stop_renewing(**_: Any) -> None:
        # still the holder until released after kopf's loop ends (nothing runs by then)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await elector.kube.close()

    kopf.on.startup(registry=registry, id="leader-election")(renew)
    kopf.on.cleanup(registry=registry, id="leader-election")(stop_renewing)
