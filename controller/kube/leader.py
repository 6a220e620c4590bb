"""Leader election through a ``coordination.k8s.io/v1`` Lease, as client-go's leaderelection.

Every replica serves traffic, but only one may write Ingress statuses and post Events:
otherwise N replicas would fight over the same fields and post every Event N times.

How it works (the Lease is the lock, and its resourceVersion makes every write conditional):

* A candidate reads the Lease and takes it when nobody holds it (``holderIdentity`` empty,
  as after a release) or when the holder has not renewed it for ``leaseDurationSeconds``,
  *measured on this replica's clock from when it first saw that version of the record*.
  Timestamps written by another machine are never compared with ours, so clock offsets
  between nodes do not matter (clock rates still do; see client-go's ``doc.go``).
* The leader renews every ``retry_period``. When no renewal has succeeded for
  ``renew_deadline`` it stops leading, before any candidate may take over
  (``renew_deadline < lease_duration``), and becomes a candidate again.
* Two candidates writing at once both send the resourceVersion they read: the API server
  accepts one and answers 409 Conflict to the other, which reads again on its next try.
* On exit the leader releases the Lease: ``holderIdentity`` cleared and
  ``leaseDurationSeconds: 1``, so a standby takes over on its next try instead of waiting
  out the lease. A replica that dies without releasing is replaced once its lease expires.

RBAC: ``get``, ``create`` and ``update`` on ``leases`` in the Lease's namespace.
"""

from __future__ import annotations

import logging
import math
import random
from datetime import UTC, datetime

import httpx
import trio
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease

__all__ = ["LeaderElector", "describe_error"]

log = logging.getLogger("fastroute.controller.leader")

# client-go's JitterFactor: a candidate waits retry_period * [1, 2.2) between tries, so
# replicas started together do not keep colliding on the same resourceVersion.
JITTER = 1.2
# Releasing is one write (two after a 409): on the way out it must not hold the process
# past the pod's termination grace period when the API server does not answer.
RELEASE_TIMEOUT = 2.0


def describe_error(error: Exception) -> str:
    """A short reason for a failed API call, for log lines."""
    if isinstance(error, ApiError):
        return f"{error.status.code} {error.status.reason}: {error.status.message}"
    return str(error) or type(error).__name__


class LeaderElector:
    """Takes part in the election held through one Lease; ``run`` until cancelled.

    Args:
        client: the API client.
        namespace: the Lease's namespace (the controller's own).
        name: the Lease's name (``--election-id``).
        identity: this process's name in ``holderIdentity``. It must be unique among
            the candidates: one that finds its own name there takes the Lease for its own
            (``PublishOptions`` adds a random suffix to the pod's name).
        lease_duration: how long a standby waits, after the last renewal it saw, before it
            takes the Lease over (written as whole seconds, at least 1).
        renew_deadline: how long the leader keeps trying to renew before it stops leading.
        retry_period: time between tries (to acquire, or to renew).
        release_on_exit: release the Lease when ``run`` ends (client-go's ReleaseOnCancel).
    """

    def __init__(
        self,
        client: AsyncClient,
        *,
        namespace: str,
        name: str,
        identity: str,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        release_on_exit: bool = True,
    ) -> None:
        if not (namespace and name and identity):
            raise ValueError(
                "leader election needs a Lease namespace, a Lease name and an identity"
            )
        for what, value in (
            ("lease duration", lease_duration),
            ("renew deadline", renew_deadline),
            ("retry period", retry_period),
        ):
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"the {what} must be a positive number of seconds, got {value}")
        if lease_duration < 1:
            raise ValueError(f"the lease duration must be at least 1 second, got {lease_duration}")
        if not renew_deadline < lease_duration:
            raise ValueError("the renew deadline must be shorter than the lease duration")
        if not retry_period * (1 + JITTER) <= renew_deadline:
            raise ValueError(f"the renew deadline must be at least {1 + JITTER} retry periods")
        self._client = client
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.release_on_exit = release_on_exit
        self._seconds = math.ceil(lease_duration)  # leaseDurationSeconds is an integer
        self._lease: Lease | None = None  # the last version read or written
        self._observed: LeaseSpec | None = None  # the last record seen...
        self._observed_at = -math.inf  # ...and when (trio clock) it was first seen
        self._renewed_at = -math.inf  # when the last successful renewal was sent
        self._leading = False
        self._changed = trio.Event()  # set (and replaced) at every change of leadership

    def __repr__(self) -> str:
        state = "leading" if self._leading else f"following {self.leader or 'nobody'}"
        return f"<LeaderElector {self.namespace}/{self.name} {self.identity!r} {state}>"

    @property
    def is_leader(self) -> bool:
        """Whether this replica leads now (and may write)."""
        return self._leading

    @property
    def leader(self) -> str | None:
        """Who holds the Lease, as last seen (None: nobody, or not read yet)."""
        spec = self._observed
        return (spec.holderIdentity or None) if spec is not None else None

    async def wait_for(self, leading: bool) -> None:
        """Return once ``is_leader`` is ``leading`` (at once if it already is)."""
        while self._leading != leading:
            await self._changed.wait()

    async def run(self) -> None:
        """Acquire, renew, step down when renewing fails, try again; until cancelled.

        Leadership ends (``is_leader`` False) before the Lease is released, so whoever
        acts on it stops before another replica can take over.
        """
        try:
            while True:
                await self._acquire()
                await self._renew()
        finally:
            self._set_leading(False)
            if self.release_on_exit:
                with trio.CancelScope(shield=True), trio.move_on_after(RELEASE_TIMEOUT):
                    await self._release()

    # -- the states ----------------------------------------------------------------------

    async def _acquire(self) -> None:
        """Try every retry period (jittered) until the Lease is ours."""
        log.info("trying to acquire Lease %s/%s as %s", self.namespace, self.name, self.identity)
        while True:
            started = trio.current_time()
            with trio.move_on_after(self.renew_deadline):
                if await self._try_acquire_or_renew():
                    self._renewed_at = started
                    self._set_leading(True)
                    return
            await trio.sleep(self.retry_period * (1 + random.random() * JITTER))

    async def _renew(self) -> None:
        """Renew every retry period; return once renewing has failed for renew_deadline,
        or at once when another replica holds the Lease."""
        while True:
            await trio.sleep(self.retry_period)
            renewed, started = False, trio.current_time()
            with trio.move_on_at(self._renewed_at + self.renew_deadline):
                while True:
                    started = trio.current_time()
                    renewed = await self._try_acquire_or_renew()
                    if renewed or self.leader not in (None, self.identity):
                        break
                    await trio.sleep(self.retry_period)
            if not renewed:
                log.warning(
                    "lost Lease %s/%s (now held by %s): no longer leading",
                    self.namespace,
                    self.name,
                    self.leader or "nobody",
                )
                self._set_leading(False)
                return
            self._renewed_at = started

    def _set_leading(self, leading: bool) -> None:
        if leading == self._leading:
            return
        self._leading = leading
        if leading:
            log.info(
                "acquired Lease %s/%s: leading as %s", self.namespace, self.name, self.identity
            )
        self._changed.set()
        self._changed = trio.Event()

    # -- one try -------------------------------------------------------------------------

    async def _try_acquire_or_renew(self) -> bool:
        """One attempt; whether the Lease is ours (and renewed) afterwards."""
        try:
            return await self._attempt()
        except httpx.HTTPError as error:
            log.warning("Lease %s/%s: %s", self.namespace, self.name, describe_error(error))
        except Exception:
            # e.g. an answer that does not parse: a failed try, not the end of the election
            log.exception("Lease %s/%s: unexpected failure", self.namespace, self.name)
        return False

    async def _attempt(self) -> bool:
        now = datetime.now(UTC)
        if self._leading and self._lease is not None:
            # The fast path: renew the version we wrote last, without reading it first. A
            # 409 means someone else wrote since; then read it again.
            try:
                self._seen(await self._client.replace(self._claim(self._lease, now)))
                return True
            except httpx.HTTPError as error:
                log.info("renewing Lease optimistically failed: %s", describe_error(error))
        try:
            lease = await self._client.get(Lease, self.name, namespace=self.namespace)
        except ApiError as error:
            if error.status.code != 404:
                raise
            return await self._create(now)
        self._seen(lease)
        holder = self.leader
        if holder is not None and holder != self.identity and self._unexpired():
            return False
        try:
            self._seen(await self._client.replace(self._claim(lease, now)))
        except httpx.HTTPError as error:
            # 409: another candidate wrote first; the next try reads who
            log.info(
                "cannot take Lease %s/%s: %s", self.namespace, self.name, describe_error(error)
            )
            return False
        return True

    async def _create(self, now: datetime) -> bool:
        lease = Lease(
            metadata=ObjectMeta(name=self.name, namespace=self.namespace),
            spec=LeaseSpec(
                holderIdentity=self.identity,
                leaseDurationSeconds=self._seconds,
                acquireTime=now,
                renewTime=now,
                leaseTransitions=0,
            ),
        )
        try:
            self._seen(await self._client.create(lease))
        except httpx.HTTPError as error:  # 409 AlreadyExists: another candidate was first
            log.info(
                "cannot create Lease %s/%s: %s", self.namespace, self.name, describe_error(error)
            )
            return False
        return True

    async def _release(self) -> None:
        """Give the Lease up if it is ours: a standby takes it on its next try.

        A 409 may only mean our last renewal landed but its answer was lost (cancelled):
        read again, and release only while the record still names us.
        """
        lease = self._lease
        for _ in range(2):
            spec = lease.spec if lease is not None else None
            if lease is None or spec is None or spec.holderIdentity != self.identity:
                return
            now = datetime.now(UTC)
            released = Lease(
                metadata=lease.metadata,
                spec=LeaseSpec(
                    leaseDurationSeconds=1,
                    acquireTime=now,
                    renewTime=now,
                    leaseTransitions=spec.leaseTransitions,
                ),
            )
            try:
                self._seen(await self._client.replace(released))
                log.info("released Lease %s/%s", self.namespace, self.name)
                return
            except httpx.HTTPError as error:
                log.warning(
                    "cannot release Lease %s/%s: %s",
                    self.namespace,
                    self.name,
                    describe_error(error),
                )
                if not (isinstance(error, ApiError) and error.status.code == 409):
                    return
            try:
                lease = await self._client.get(Lease, self.name, namespace=self.namespace)
            except httpx.HTTPError:
                return

    # -- bookkeeping ---------------------------------------------------------------------

    def _claim(self, lease: Lease, now: datetime) -> Lease:
        """The Lease held (or still held) by us, renewed now; conditional on its version."""
        spec = lease.spec or LeaseSpec()
        ours = spec.holderIdentity == self.identity
        return Lease(
            metadata=lease.metadata,  # carries resourceVersion: a stale one gets 409
            spec=LeaseSpec(
                holderIdentity=self.identity,
                leaseDurationSeconds=self._seconds,
                acquireTime=spec.acquireTime if ours and spec.acquireTime else now,
                renewTime=now,
                leaseTransitions=(spec.leaseTransitions or 0) + (0 if ours else 1),
            ),
        )

    def _seen(self, lease: Lease) -> None:
        """Remember a version of the Lease; a changed record restarts the expiry clock."""
        self._lease = lease
        before = self.leader
        if lease.spec != self._observed:
            self._observed = lease.spec
            self._observed_at = trio.current_time()
        if self.leader != before and self.leader not in (None, self.identity):
            log.info("Lease %s/%s is held by %s", self.namespace, self.name, self.leader)

    def _unexpired(self) -> bool:
        """Whether the record last seen is still within its lease, by our clock."""
        spec = self._observed
        seconds = (spec.leaseDurationSeconds or 0) if spec is not None else 0
        return self._observed_at + seconds > trio.current_time()
