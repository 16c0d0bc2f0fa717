"""Leader election on a coordination.k8s.io Lease, so that the chart can run two replicas: one
reconciles, the other watches and waits (its cache stays warm) and takes over when the leader's
Lease goes unrenewed for its duration (kube/leader_policy.py decides, this module does the I/O).

A replica that cannot renew within the renew deadline stops acting at once and exits (like
controller-runtime's "leader election lost"): its pod restarts as a standby, so two replicas
never reconcile at the same time for longer than the API server lets a stale write through
(status writes are conditional on the resourceVersion; Job names are deterministic). A clean
shutdown gives the Lease up so that the standby takes over within a retry period.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Optional

from sheepdog.kube import leader_policy
from sheepdog.kube.leader_policy import DEFAULT_LEASE_SECONDS

log = logging.getLogger("sheepdog.operator")

RENEW_SECONDS = 5.0  # how often the leader renews
RENEW_DEADLINE = 10.0  # how long it may fail to before it gives up (under the lease duration)
RETRY_SECONDS = 2.0  # how often a standby looks


def identity() -> str:
    """This replica's name in the Lease: the pod's name (hostname) and a random suffix (a
    restarted container is another candidate)."""
    return f"{socket.gethostname()[:100]}_{uuid.uuid4().hex[:8]}"


def _stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(self, kube: Any, namespace: str, name: str, me: Optional[str] = None,
                 lease_seconds: int = DEFAULT_LEASE_SECONDS, clock: Callable[[], float] = time.monotonic):
        self.kube, self.namespace, self.name = kube, namespace, name
        self.me = me or identity()
        self.lease_seconds = lease_seconds
        self.clock = clock
        self.leading = False
        self._seen: Optional[leader_policy.Seen] = None

    def try_take(self) -> bool:
        """One attempt to take or renew the Lease; True when this replica holds it now."""
        lease = self.kube.get_lease(self.namespace, self.name)
        spec = (lease or {}).get("spec")
        now = self.clock()
        self._seen = leader_policy.observe(self._seen, spec if lease is not None else None, now)
        if not leader_policy.may_take(spec if lease is not None else None, self._seen, self.me, now):
            return False
        new = leader_policy.claimed(spec, self.me, _stamp(), self.lease_seconds)
        if lease is None:
            return self.kube.create_lease(self.namespace, self.name, new) is not None
        return self.kube.replace_lease(lease, new) is not None

    def release(self) -> None:
        if not self.leading:
            return
        self.leading = False
        try:
            lease = self.kube.get_lease(self.namespace, self.name)
            spec = leader_policy.released((lease or {}).get("spec") or {}, self.me, _stamp())
            if lease is not None and spec is not None:
                self.kube.replace_lease(lease, spec)
                log.info("leader election: gave up the Lease %s/%s", self.namespace, self.name)
        except Exception:  # noqa: BLE001 - shutting down; the Lease expires anyway
            log.warning("leader election: could not give up the Lease", exc_info=True)

    async def run(self, started: Callable[[], Awaitable[None]], lost: Callable[[], None]) -> None:
        """Stand by until this replica leads, call `started`, renew until cancelled (the Lease
        is then given up) or until renewing fails past the deadline (`lost` is called)."""
        loop = asyncio.get_running_loop()
        log.info("leader election: %s waits for the Lease %s/%s", self.me, self.namespace, self.name)
        try:
            while not self.leading:
                try:
                    self.leading = await loop.run_in_executor(None, self.try_take)
                except Exception as exc:  # noqa: BLE001 - the API server is away: try again
                    log.warning("leader election: %s", exc)
                if not self.leading:
                    await asyncio.sleep(RETRY_SECONDS)
            log.info("leader election: %s leads (Lease %s/%s)", self.me, self.namespace, self.name)
            await started()
            renewed = self.clock()
            while True:
                await asyncio.sleep(RENEW_SECONDS)
                try:
                    if await loop.run_in_executor(None, self.try_take):
                        renewed = self.clock()
                        continue
                    why = "another replica holds the Lease"
                except Exception as exc:  # noqa: BLE001
                    why = str(exc)
                if self.clock() - renewed > RENEW_DEADLINE or why.startswith("another"):
                    self.leading = False
                    log.error("leader election: lost the Lease (%s); exiting so that a standby leads", why)
                    lost()
                    return
        except asyncio.CancelledError:
            await loop.run_in_executor(None, self.release)
            raise


def exit_now() -> None:
    """Leadership lost: stop at once (no reconcile may run on), the pod restarts as a standby."""
    logging.shutdown()
    os._exit(1)
