"""What the elected leader tells the cluster: Ingress statuses, Events.

Two feeds, both cheap to take: ``KubeSource`` calls ``on_ingress`` with every change the
Ingress watch sees (status changes included), and the pipeline calls ``on_config`` with
every config it installs and the objects it came from, which
only remembers the newest config and snapshot and wakes ``run``. A ``StatusBook`` keeps,
per Ingress, what its status says and whether we serve it; the watch events keep it up to
date one Ingress at a time, and a pass tells it what changed in the config (the Ingresses
served, the value to publish). Either may make a write due: a write loop sends the due
writes, ``concurrency`` at a time and at most ``rate`` a second, retrying failures with
backoff and pacing rewrites of an Ingress someone else keeps changing (``status_book``
says how). Writes also wait, from an Ingress change that rebuilds until the config it
makes arrives (``REBUILD_QUIET`` at most): a write's work on the event loop and a build
in its worker thread share one GIL, and the update would reach traffic later. A rebuild
costs O(changed Ingresses), and a status someone else changed is written back within
seconds. Every ``status_interval`` seconds, and on taking the lead,
every status is checked once more (a sweep), the publish Service read again (its address,
or the Nodes', can change without a rebuild) and the rejections reported again.

Without ``on_ingress`` (a caller that only hands snapshots over), each pass reads the
Ingresses from the snapshot: O(all), in a worker thread.

Only the leader acts (``LeaderElector``, which ``run`` runs): status, so N replicas do not
race on the same field; Events too, so a rejection is reported once, not N times (the
price: nothing is posted while no replica leads, and a new leader reports the current
rejections once more). Losing leadership cancels a pass, and the writes in flight, at
once; a write is sent only after checking that this replica still leads.

On shutdown the statuses are kept by default: with several replicas another one takes
over (the Lease is released at once), and clearing them would make the address flap
(external-dns would drop its records). ingress-nginx's ``--update-status-on-shutdown``
also keeps them when other replicas run; it clears them otherwise, which needs to list
pods: here ``--update-status-on-shutdown`` clears them when the leader stops, for the
single replica that goes away for good.

Wiring: ``add_arguments(parser)`` declares the flags, ``PublishOptions.from_args(args)``
reads them; then, next to the API client and the ``KubeSource``::

    publisher = publish_options.publisher(client)  # or publisher_from_args(args, client)
    nursery.start_soon(publisher.run)              # elects, writes, posts; until cancelled
    source = KubeSource(client, ..., on_ingress=publisher.on_ingress)
    await pipeline.follow(source, on_config=publisher.on_config)  # each config installed
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import socket
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import trio
from lightkube import AsyncClient
from lightkube.resources.core_v1 import Node, Service

from controller.kube.events import COMPONENT, EventRecorder
from controller.kube.ingress_status import (
    Status,
    StatusWriter,
    desired_status,
    needs_nodes,
    normalized,
    parse_addresses,
)
from controller.kube.leader import LeaderElector, describe_error
from controller.kube.status_book import WRITE_RATE, StatusBook, WriteBudget
from controller.kube.store import Change
from fastroute.ingress import Problem, RouteConfig
from fastroute.ingress.objects import kind, object_key
from fastroute.ingress.spec import reads_the_same

__all__ = [
    "DEFAULT_ELECTION_ID",
    "REJECTED",
    "PublishOptions",
    "Publisher",
    "add_arguments",
    "publisher_from_args",
]

log = logging.getLogger("fastroute.controller.publisher")

DEFAULT_ELECTION_ID = "fastroute-leader"
REJECTED = "Rejected"  # the Event reason for an Ingress, or a part of one, not served
SHUTDOWN_TIMEOUT = 5.0  # seconds the shutdown status update may take
WRITE_BURST = 2  # writes sent at once after a pause (the rest follow at the write rate)
REBUILD_QUIET = 1.0  # seconds writes wait, at most, for the rebuild an Ingress change starts
SWEEP_SLICE = 1000  # Ingresses checked between two turns of the event loop in a sweep
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

Snapshot = tuple[RouteConfig, Sequence[Mapping[str, Any]]]


class Publisher:
    """Writes Ingress statuses and posts Events about rejected Ingresses, as leader.

    Args:
        client: the API client.
        elector: decides who leads; ``run`` runs it.
        publish_service: ``"namespace/name"`` of the Service whose address is published.
        publish_addresses: IPs or hostnames to publish instead (``--publish-address``).
            With neither, statuses are not written (Events still are).
        recorder: posts the Events.
        writer: writes the statuses.
        status_interval: seconds between checks of every status when nothing changes.
        update_status_on_shutdown: clear the statuses when the leader stops.
        book: what each Ingress says and should say (a seeded one in tests).
    """

    def __init__(
        self,
        client: AsyncClient,
        elector: LeaderElector,
        *,
        publish_service: str | None,
        publish_addresses: Sequence[str],
        recorder: EventRecorder,
        writer: StatusWriter,
        status_interval: float = 60.0,
        update_status_on_shutdown: bool = False,
        book: StatusBook | None = None,
    ) -> None:
        if publish_service is not None and publish_addresses:
            raise ValueError("--publish-service and --publish-address are mutually exclusive")
        self.publish_service: tuple[str, str] | None = None
        if publish_service is not None:
            ns, _, svc = publish_service.partition("/")
            if not ns or not svc or "/" in svc:
                raise ValueError(
                    f"--publish-service must be NAMESPACE/NAME, got {publish_service!r}"
                )
            self.publish_service = (ns, svc)
        if not (status_interval > 0 and math.isfinite(status_interval)):
            raise ValueError(f"the status interval must be positive, got {status_interval}")
        self._client = client
        self.elector = elector
        self.publish_addresses = tuple(parse_addresses(publish_addresses))
        self.recorder = recorder
        self.writer = writer
        self.status_interval = status_interval
        self.update_status_on_shutdown = update_status_on_shutdown
        self.book = book if book is not None else StatusBook()
        self.passes = 0  # passes done as leader, for metrics and tests
        self.published: RouteConfig | None = None  # the newest config with its writes done
        self._latest: Snapshot | None = None
        self._passed: RouteConfig | None = None  # the config of the last pass
        self._served: tuple[str, ...] | None = None  # config.ingresses the book was given
        self._problems: tuple[Problem, ...] | None = None  # config.problems reported
        self._watched = False  # Ingresses come from on_ingress, not from the snapshots
        self._wake = trio.Event()  # a new snapshot, or time for a sweep
        self._work = trio.Event()  # a write may be due
        self._quiet_until = -math.inf  # no write starts before this: a rebuild is coming
        self._sweep_due = True
        self._service_failing = False

    def __repr__(self) -> str:
        return f"<Publisher passes={self.passes} {self.book!r} {self.elector!r}>"

    async def on_config(self, config: RouteConfig, objects: Sequence[Mapping[str, Any]]) -> None:
        """The pipeline's callback: remember the newest snapshot and wake ``run``."""
        self._latest = (config, objects)
        self._quiet_until = -math.inf  # the rebuild is over
        self._wake.set()
        self._work.set()

    def on_ingress(self, change: Change) -> None:
        """Each change the Ingress watch sees, as it sees it (``KubeSource``'s
        ``on_ingress``): a status someone else changed is written back within seconds,
        not at the next rebuild or sweep. O(1): called for every event, on the event loop.

        Once this is called, the snapshots ``on_config`` gets are no longer read for
        Ingresses (that costs O(all) per rebuild).
        """
        self._watched = True
        key = f"{change.key[0] or 'default'}/{change.key[1]}"
        if change.type == "DELETED":
            self.book.forget(key)
            return
        now = trio.current_time()
        if change.previous is None or not reads_the_same(change.previous, change.obj):
            # a rebuild follows: writes wait for it (REBUILD_QUIET at most), since their
            # work on the event loop and the build in its thread slow each other down
            self._quiet_until = now + REBUILD_QUIET
        self.book.observe(key, change.obj, now)
        if self.book.next_due() is not None:
            self._work.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Take part in the election and, while leading, publish; until cancelled.

        The elector is shielded from the cancellation that stops this, so that the
        shutdown status update is still written as leader; the Lease is released after.
        """
        elector_scope = trio.CancelScope(shield=True)

        async def elect() -> None:
            with elector_scope:
                await self.elector.run()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(elect)
            task_status.started()
            try:
                await self._serve()
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(SHUTDOWN_TIMEOUT):
                    await self._shutdown()
                elector_scope.cancel()

    async def _serve(self) -> None:
        while True:
            await self.elector.wait_for(True)
            self._sweep_due = True  # a new leader checks every status once
            self._problems = None  # and reports the current rejections
            async with trio.open_nursery() as nursery:
                # no write before the first pass has told the book what we serve now
                passed = trio.Event()
                nursery.start_soon(self._lead, passed)
                nursery.start_soon(self._write_loop, passed)
                await self.elector.wait_for(False)
                nursery.cancel_scope.cancel()

    async def _lead(self, passed: trio.Event) -> None:
        """Passes, while leading: at once, on every new snapshot, every status_interval;
        ``passed`` is set after the first."""
        next_sweep = trio.current_time()
        while True:
            self._wake = trio.Event()  # before reading _latest: a newer one wakes us again
            latest = self._latest
            if trio.current_time() >= next_sweep:
                self._sweep_due = True
                self._problems = None  # Events expire: the recorder says when to repost
                next_sweep = trio.current_time() + self.status_interval
            if latest is not None:
                try:
                    await self._publish(*latest)
                except Exception:
                    # statuses and Events are secondary: a failure here must not take
                    # the controller (and the traffic it serves) down with it
                    log.exception("publishing failed; trying again at the next change")
                self.passes += 1
                self._passed = latest[0]
                passed.set()
                self._work.set()  # the write loop says when this pass's writes are done
            with trio.move_on_at(next_sweep):
                await self._wake.wait()

    async def _publish(self, config: RouteConfig, objects: Sequence[Mapping[str, Any]]) -> None:
        """One pass: O(changed) Ingresses, unless the value to publish changed or a sweep
        is due (then every Ingress is checked, in slices that let the proxy run)."""
        book = self.book
        if not self._watched:
            # tens of thousands of objects: picked out in a thread, off the proxy's loop
            ingresses = await trio.to_thread.run_sync(_by_key, objects, "Ingress")
            now = trio.current_time()
            for key, ingress in ingresses.items():
                book.observe(key, ingress, now)
            book.retain(ingresses)
        desired = await self._desired()
        # the Service cannot be read: statuses are left as they are, not cleared
        if desired is not None and book.set_want(desired):
            self._sweep_due = True
        if config.ingresses is not self._served:
            book.set_served(config.ingresses, trio.current_time())
            self._served = config.ingresses
        if self._sweep_due:
            self._sweep_due = False
            await self._sweep()
        if config.problems is not self._problems:
            await self._report(config, objects)
            self._problems = config.problems

    async def _sweep(self) -> None:
        keys = self.book.keys()
        for start in range(0, len(keys), SWEEP_SLICE):
            self.book.sweep(keys[start : start + SWEEP_SLICE], trio.current_time())
            self._work.set()
            await trio.sleep(0)

    async def _report(self, config: RouteConfig, objects: Sequence[Mapping[str, Any]]) -> None:
        """Warning Events on the rejected Ingresses, and on the controller's ConfigMap for
        the keys it rejected (the recorder posts each once)."""
        problems = config.rejected()
        for problem in problems:
            if problem.kind == "Ingress":
                ingress = self.book.get(problem.name)
                if ingress is not None:
                    await self.recorder.rejected(ingress, REJECTED, _message(problem))
        if not any(p.kind == "ConfigMap" for p in problems):
            return
        configmaps = await trio.to_thread.run_sync(_by_key, objects, "ConfigMap")
        for problem in problems:
            if problem.kind == "ConfigMap" and problem.name in configmaps:
                await self.recorder.rejected(configmaps[problem.name], REJECTED, _message(problem))

    async def _write_loop(self, passed: trio.Event) -> None:
        """Send the writes the book says are due, ``writer.concurrency`` at a time, until
        cancelled (leadership lost); from the end of the first pass."""
        await passed.wait()
        book = self.book
        limiter = trio.CapacityLimiter(self.writer.concurrency)
        budget = WriteBudget(self.writer.rate, WRITE_BURST)
        async with trio.open_nursery() as nursery:
            while True:
                self._work = trio.Event()
                now = trio.current_time()
                quiet = now < self._quiet_until
                while not quiet and limiter.available_tokens > 0 and budget.ready_at(now) <= now:
                    due = book.pop_due(now)
                    if due is None:
                        break
                    budget.spend(now)
                    limiter.acquire_on_behalf_of_nowait(due[0])
                    nursery.start_soon(self._write, due, limiter)
                if not book.busy(now) and self._passed is not None:
                    self.published = self._passed  # its writes are done (retries aside)
                when = book.next_due()
                if when is not None:
                    when = max(when, budget.ready_at(now), self._quiet_until)
                with trio.move_on_at(when if when is not None else math.inf):
                    await self._work.wait()

    async def _write(
        self, due: tuple[str, str, str, Status], limiter: trio.CapacityLimiter
    ) -> None:
        key, namespace, name, value = due
        book = self.book
        outcome = None
        try:
            if self.elector.is_leader:  # else: leadership lost, not yet noticed by _serve
                outcome = await self.writer.write(namespace, name, value)
        finally:
            # cancelled too (leadership lost): the book must not think it still in flight
            now = trio.current_time()
            if outcome is None:
                book.abandoned(key)  # the next leader's sweep checks it again
            elif outcome.ok:
                book.wrote(key, value, outcome.version, now)
            else:
                wait = book.failed(key, now, retry=outcome.retry)
                if wait is not None:
                    log.info("writing the status of Ingress %s again in %.1f s", key, wait)
            limiter.release_on_behalf_of(key)
            self._work.set()

    async def _desired(self) -> Status | None:
        """The status to publish; None: nothing to publish, or the Service cannot be read
        (then statuses are left as they are rather than cleared)."""
        if self.publish_addresses:
            return normalized(desired_status(addresses=self.publish_addresses))
        if self.publish_service is None:
            return None
        where, what = self.publish_service
        try:
            service = _plain(await self._client.get(Service, what, namespace=where))
            nodes: list[dict[str, Any]] = []
            if needs_nodes(service):
                nodes = [_plain(node) async for node in self._client.list(Node, chunk_size=500)]
        except httpx.HTTPError as error:
            if not self._service_failing:
                log.warning(
                    "cannot read the publish Service %s/%s (statuses stay as they are): %s",
                    where,
                    what,
                    describe_error(error),
                )
            self._service_failing = True
            return None
        if self._service_failing:
            log.info("the publish Service %s/%s can be read again", where, what)
        self._service_failing = False
        return normalized(desired_status(service=service, nodes=nodes))

    async def _shutdown(self) -> None:
        """Clear the statuses of the Ingresses we serve (``--update-status-on-shutdown``)."""
        if not (self.update_status_on_shutdown and self.elector.is_leader):
            return
        if self.publish_service is None and not self.publish_addresses:
            return
        book = self.book
        owned = [key for key in book.served if book.status(key)]
        log.info("shutting down: clearing the status of %d Ingress(es)", len(owned))
        limiter = trio.CapacityLimiter(self.writer.concurrency)

        async def clear(key: str) -> None:
            async with limiter:
                namespace, _, name = key.partition("/")
                await self.writer.write(namespace, name, ())

        async with trio.open_nursery() as nursery:
            for key in owned:
                nursery.start_soon(clear, key)


def _by_key(objects: Sequence[Mapping[str, Any]], what: str) -> dict[str, Mapping[str, Any]]:
    """The objects of one kind by ``namespace/name``."""
    return {object_key(o): o for o in objects if kind(o) == what}


def _plain(model: object) -> dict[str, Any]:
    """A lightkube model as the plain dict the pure code reads (its to_dict is untyped)."""
    plain: dict[str, Any] = cast(Any, model).to_dict()
    return plain


def _message(problem: Problem) -> str:
    return f"{problem.field}: {problem.reason}" if problem.field else problem.reason


# -- command line ----------------------------------------------------------------------


@dataclass(frozen=True)
class PublishOptions:
    """The command line's say on statuses, Events and leader election."""

    publish_service: str | None = None
    publish_addresses: tuple[str, ...] = ()
    election_id: str = DEFAULT_ELECTION_ID
    namespace: str = "default"  # of the Lease
    pod_name: str = ""  # this replica (Events' source.host; the Lease holder's prefix)
    status_interval: float = 60.0
    update_status_on_shutdown: bool = False
    status_write_rate: float = WRITE_RATE

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> PublishOptions:
        """From arguments that ``add_arguments`` declared; ValueError when they do not fit."""
        addresses = tuple(parse_addresses(args.publish_address))
        if args.publish_service is not None and addresses:
            raise ValueError("--publish-service and --publish-address are mutually exclusive")
        return cls(
            publish_service=args.publish_service,
            publish_addresses=addresses,
            election_id=args.election_id,
            namespace=args.pod_namespace or _own_namespace(),
            pod_name=args.pod_name or socket.gethostname(),
            status_interval=args.status_update_interval,
            update_status_on_shutdown=args.update_status_on_shutdown,
            status_write_rate=args.status_write_rate,
        )

    def publisher(self, client: AsyncClient) -> Publisher:
        """A Publisher, with its elector, recorder and writer, as these options say."""
        pod = self.pod_name or socket.gethostname()
        # Unique per process, as kube-controller-manager's: worker processes of one pod
        # (--workers) must not take each other's Lease for their own.
        identity = f"{pod}_{uuid.uuid4().hex[:8]}"
        elector = LeaderElector(
            client, namespace=self.namespace, name=self.election_id, identity=identity
        )
        return Publisher(
            client,
            elector,
            publish_service=self.publish_service,
            publish_addresses=self.publish_addresses,
            recorder=EventRecorder(client, component=COMPONENT, instance=pod),
            writer=StatusWriter(client, rate=self.status_write_rate),
            status_interval=self.status_interval,
            update_status_on_shutdown=self.update_status_on_shutdown,
        )


def publisher_from_args(args: argparse.Namespace, client: AsyncClient) -> Publisher:
    """The Publisher the command line asks for (``add_arguments`` declared the flags)."""
    return PublishOptions.from_args(args).publisher(client)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the flags of statuses, Events and leader election (ingress-nginx's names)."""
    group = parser.add_argument_group("Ingress status and leader election")
    group.add_argument(
        "--publish-service",
        metavar="NAMESPACE/NAME",
        help="the Service in front of the controller: its address goes into Ingress statuses",
    )
    group.add_argument(
        "--publish-address",
        "--publish-status-address",
        dest="publish_address",
        action="append",
        default=[],
        metavar="ADDRESS",
        help="IPs or hostnames for Ingress statuses instead (repeatable, or comma-separated)",
    )
    group.add_argument(
        "--election-id",
        default=DEFAULT_ELECTION_ID,
        metavar="NAME",
        help=f"the Lease that elects the replica writing statuses (default {DEFAULT_ELECTION_ID})",
    )
    group.add_argument(
        "--pod-namespace",
        default=os.environ.get("POD_NAMESPACE", ""),
        metavar="NAMESPACE",
        help="the Lease's namespace (default $POD_NAMESPACE, else the service account's)",
    )
    group.add_argument(
        "--pod-name",
        default=os.environ.get("POD_NAME", ""),
        metavar="NAME",
        help="this replica's name in Events and (made unique) in the Lease "
        "(default $POD_NAME, else the host name)",
    )
    group.add_argument(
        "--status-update-interval",
        type=_interval,
        default=60.0,
        metavar="SECONDS",
        help="how often the leader checks statuses when nothing changed (default 60)",
    )
    group.add_argument(
        "--status-write-rate",
        type=_rate,
        default=WRITE_RATE,
        metavar="PER_SECOND",
        help=f"status writes per second at most, all Ingresses together (default {WRITE_RATE:g})",
    )
    group.add_argument(
        "--update-status-on-shutdown",
        type=_boolean,
        nargs="?",
        const=True,
        default=False,
        metavar="BOOL",
        help="clear Ingress statuses when the leader stops (default false: kept for the next)",
    )


def _own_namespace() -> str:
    """The namespace of this pod's service account; ``default`` outside a cluster."""
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
    except OSError:
        return "default"


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def _boolean(text: str) -> bool:
    """``true``/``false`` (and 1/0, yes/no), as Go's flag package takes ``--flag=false``."""
    value = text.strip().lower()
    if value in ("true", "1", "yes", "t"):
        return True
    if value in ("false", "0", "no", "f"):
        return False
    raise argparse.ArgumentTypeError(f"not true or false: {text!r}")
