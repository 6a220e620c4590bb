"""``status.loadBalancer.ingress`` of our Ingresses: what it should say, and writing it.

The value tells users (and tools such as external-dns or Argo CD) where the Ingress is
reachable. It comes from one of two flags, as in ingress-nginx:

* ``--publish-address``: IPs or hostnames, as given.
* ``--publish-service NS/NAME``, the Service in front of the controller, by its type:

  - LoadBalancer: its ``status.loadBalancer.ingress`` (an entry's IP, else its hostname)
    plus ``spec.externalIPs``. Nothing while the load balancer is pending: the statuses
    are then emptied, as ingress-nginx does, rather than left naming an old address.
  - NodePort: ``spec.externalIPs`` if any, else the nodes' addresses: each node's
    ExternalIP, else its InternalIP (as ingress-nginx picks a node's address); nodes
    whose Ready condition is not True are left out, traffic sent there would be lost.
  - ClusterIP: its cluster IP plus ``spec.externalIPs``; ExternalName: its external name.

Values are compared as sets (sorted, deduplicated, IPs in canonical form), so an order
or spelling the API server chose never causes a write. ``desired_status`` is pure;
``StatusWriter`` is the only code here that talks to the API.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import httpx
import trio
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.resources.networking_v1 import Ingress
from lightkube.types import PatchType

from controller.kube.leader import describe_error
from fastroute.ingress.objects import mapping, name, namespace, object_key, sequence, text

__all__ = [
    "Address",
    "StatusWriter",
    "current_status",
    "desired_status",
    "needs_nodes",
    "parse_addresses",
]

log = logging.getLogger("fastroute.controller.status")

# One entry of status.loadBalancer.ingress as compared: (ip, hostname), one of them "".
Address = tuple[str, str]
Status = tuple[Address, ...]

_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")
_PUBLISHED_KEPT = 8  # past values remembered as "ours" (to clear them from disowned Ingresses)


def parse_addresses(values: Iterable[str]) -> list[str]:
    """``--publish-address`` values (repeatable, each may be comma-separated), checked.

    Raises:
        ValueError: a value is neither an IP address nor a DNS name.
    """
    found = []
    for value in values:
        for part in value.split(","):
            address = part.strip()
            if not address:
                continue
            ip, hostname = _address(address)
            if not ip and not _HOSTNAME.match(hostname):
                raise ValueError(f"not an IP address or a DNS name: {address!r}")
            found.append(ip or hostname)
    return found


def desired_status(
    *,
    service: Mapping[str, Any] | None = None,
    nodes: Iterable[Mapping[str, Any]] = (),
    addresses: Iterable[str] = (),
) -> list[dict[str, str]]:
    """What ``status.loadBalancer.ingress`` of our Ingresses should be: publish addresses
    when given, else from the publish Service (and the Nodes, for a NodePort one).

    Returns:
        ``[{"ip": ...}, ..., {"hostname": ...}, ...]``: IPs first, sorted, no duplicates.
    """
    found: list[Address] = [_address(a) for a in addresses]
    if not found and service is not None:
        found = _from_service(service, nodes)
    return _as_status(_normalized(found))


def needs_nodes(service: Mapping[str, Any]) -> bool:
    """Whether ``desired_status`` needs the Nodes for this Service (RBAC: list nodes)."""
    spec = mapping(service.get("spec"))
    return text(spec.get("type")) == "NodePort" and not sequence(spec.get("externalIPs"))


def current_status(ingress: Mapping[str, Any]) -> Status:
    """An Ingress's ``status.loadBalancer.ingress``, in the form compared."""
    load_balancer = mapping(mapping(ingress.get("status")).get("loadBalancer"))
    entries = (mapping(e) for e in sequence(load_balancer.get("ingress")))
    return _normalized((text(e.get("ip")), text(e.get("hostname"))) for e in entries)


def _from_service(service: Mapping[str, Any], nodes: Iterable[Mapping[str, Any]]) -> list[Address]:
    spec = mapping(service.get("spec"))
    kind = text(spec.get("type")) or "ClusterIP"
    external = [(text(ip), "") for ip in sequence(spec.get("externalIPs"))]
    if kind == "LoadBalancer":
        load_balancer = mapping(mapping(service.get("status")).get("loadBalancer"))
        entries = (mapping(e) for e in sequence(load_balancer.get("ingress")))
        # an entry with both: its IP, as ingress-nginx publishes it
        return [_address(text(e.get("ip")) or text(e.get("hostname"))) for e in entries] + external
    if kind == "NodePort":
        return external or [_address(a) for a in map(_node_address, nodes) if a]
    if kind == "ExternalName":
        return [_address(text(spec.get("externalName")))]
    cluster_ip = text(spec.get("clusterIP"))
    return ([(cluster_ip, "")] if cluster_ip and cluster_ip != "None" else []) + external


def _node_address(node: Mapping[str, Any]) -> str:
    """A ready node's ExternalIP, else its InternalIP; "" for a node not ready or without."""
    status = mapping(node.get("status"))
    for condition in map(mapping, sequence(status.get("conditions"))):
        if text(condition.get("type")) == "Ready" and text(condition.get("status")) != "True":
            return ""
    addresses = [mapping(a) for a in sequence(status.get("addresses"))]
    for wanted in ("ExternalIP", "InternalIP"):
        for address in addresses:
            if text(address.get("type")) == wanted and text(address.get("address")):
                return text(address.get("address"))
    return ""


def _address(value: str) -> Address:
    """("ip", "") for an IP (canonical form), ("", "hostname") otherwise (lower case)."""
    try:
        return (ipaddress.ip_address(value).compressed, "")
    except ValueError:
        return ("", value.lower().rstrip("."))


def _normalized(entries: Iterable[Address]) -> Status:
    canonical = {_canonical(ip, hostname) for ip, hostname in entries if ip or hostname}
    return tuple(sorted(canonical, key=_order))


def _canonical(ip: str, hostname: str) -> Address:
    return ((_address(ip)[0] or ip) if ip else "", hostname.lower().rstrip("."))


def _order(entry: Address) -> tuple[int, int, bytes, str]:
    ip, hostname = entry
    try:
        parsed = ipaddress.ip_address(ip)
        return (0, parsed.version, parsed.packed, hostname)
    except ValueError:
        return (1 if ip else 2, 0, ip.encode(), hostname)


def _as_status(status: Status) -> list[dict[str, str]]:
    return [{k: v for k, v in (("ip", ip), ("hostname", hostname)) if v} for ip, hostname in status]


class StatusWriter:
    """Writes ``status.loadBalancer.ingress`` of Ingresses, each only when it differs.

    Writes are merge patches of the ``/status`` subresource (RBAC: ``patch`` on
    ``ingresses/status``; the spec cannot be touched through it). One ``sync`` sends its
    writes together, ``concurrency`` at a time.

    The snapshot an Ingress comes from may predate our own last write to it (the watch
    has not caught up): a write is remembered with the resourceVersion it was made over,
    and while the snapshot still shows that version, the value we wrote counts as current.
    """

    def __init__(self, client: AsyncClient, *, concurrency: int = 10) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self._client = client
        self._concurrency = concurrency
        self._published: list[Status] = []  # values we published, newest last
        self._written: dict[str, tuple[Status, str]] = {}  # key -> (value, resourceVersion)
        self._forbidden = False
        self.writes = 0  # successful writes, for metrics and logs

    async def sync(
        self,
        owned: Iterable[Mapping[str, Any]],
        disowned: Iterable[Mapping[str, Any]],
        desired: Sequence[Mapping[str, str]],
    ) -> int:
        """Make every owned Ingress say ``desired``, and clear it from disowned ones.

        Args:
            owned: the Ingresses we serve (objects from the latest snapshot).
            disowned: the other Ingresses of the snapshot; only those whose status is a
                value we published are cleared (another controller's is left alone).
            desired: the value (``desired_status``).

        Returns:
            How many writes were sent.
        """
        want = _normalized((text(d.get("ip")), text(d.get("hostname"))) for d in desired)
        if want not in self._published:
            self._published = [*self._published, want][-_PUBLISHED_KEPT:]
        # reading every Ingress takes a while with thousands: in a thread, so the proxy's
        # event loop goes on meanwhile (no write is in flight, so _written holds still)
        plan = await trio.to_thread.run_sync(self._plan, owned, disowned, want)
        limiter = trio.CapacityLimiter(self._concurrency)
        async with trio.open_nursery() as nursery:
            for ingress, value in plan:
                nursery.start_soon(self._write, ingress, value, limiter)
        return len(plan)

    def _plan(
        self,
        owned: Iterable[Mapping[str, Any]],
        disowned: Iterable[Mapping[str, Any]],
        want: Status,
    ) -> list[tuple[Mapping[str, Any], Status]]:
        """The writes ``sync`` sends: (Ingress, value)."""
        plan: list[tuple[Mapping[str, Any], Status]] = []
        seen = set()
        for ingress in owned:
            seen.add(object_key(ingress))
            if self._current(ingress) != want:
                plan.append((ingress, want))
        for ingress in disowned:
            seen.add(object_key(ingress))
            current = self._current(ingress)
            if current and current in self._published:
                plan.append((ingress, ()))
        self._written = {k: v for k, v in self._written.items() if k in seen}
        return plan

    def _current(self, ingress: Mapping[str, Any]) -> Status:
        written = self._written.get(object_key(ingress))
        version = text(mapping(ingress.get("metadata")).get("resourceVersion"))
        if written is not None and written[1] == version:
            return written[0]
        return current_status(ingress)

    async def _write(
        self, ingress: Mapping[str, Any], value: Status, limiter: trio.CapacityLimiter
    ) -> None:
        key = object_key(ingress)
        # null deletes the list (merge patch): a cleared status looks like a new Ingress's
        entries = _as_status(value) or None
        patch = {"status": {"loadBalancer": {"ingress": entries}}}
        async with limiter:
            try:
                await self._client.patch(
                    Ingress.Status,
                    name(ingress),
                    patch,
                    namespace=namespace(ingress),
                    patch_type=PatchType.MERGE,
                )
            except ApiError as error:
                self._failed(key, error)
                return
            except httpx.HTTPError as error:
                log.warning("cannot write the status of Ingress %s: %s", key, describe_error(error))
                return
        self.writes += 1
        version = text(mapping(ingress.get("metadata")).get("resourceVersion"))
        self._written[key] = (value, version)
        log.info(
            "Ingress %s status: %s",
            key,
            ", ".join(ip or hostname for ip, hostname in value) or "cleared",
        )

    def _failed(self, key: str, error: ApiError) -> None:
        code = error.status.code
        if code == 404:  # deleted meanwhile: nothing to say
            log.debug("Ingress %s is gone; no status to write", key)
        elif code == 403:
            if not self._forbidden:
                log.error(
                    "not allowed to write Ingress statuses (grant patch on ingresses/status): %s",
                    describe_error(error),
                )
            self._forbidden = True
        else:
            log.warning("cannot write the status of Ingress %s: %s", key, describe_error(error))
