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
``StatusWriter`` is the only code here that talks to the API; which Ingress to write, and
when, is ``status_book``'s to say.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from lightkube import AsyncClient

from controller.kube.client import CredentialError, http_client
from controller.kube.leader import describe_error
from fastroute.ingress.objects import mapping, sequence, text

__all__ = [
    "WRITE_RATE",
    "Address",
    "Status",
    "StatusWriter",
    "WriteOutcome",
    "as_entries",
    "current_status",
    "desired_status",
    "needs_nodes",
    "normalized",
    "parse_addresses",
]

log = logging.getLogger("fastroute.controller.status")

# One entry of status.loadBalancer.ingress as compared: (ip, hostname), one of them "".
Address = tuple[str, str]
Status = tuple[Address, ...]

WRITE_RATE = 100.0  # status writes per second, at most, all Ingresses together

_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")


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
    return as_entries(_normalized(found))


def normalized(entries: Iterable[Mapping[str, Any]]) -> Status:
    """Entries of ``status.loadBalancer.ingress`` (``desired_status``'s), in the form compared."""
    return _normalized((text(e.get("ip")), text(e.get("hostname"))) for e in entries)


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


def as_entries(status: Status) -> list[dict[str, str]]:
    """A status as the API spells it: ``[{"ip": ...}, {"hostname": ...}]``."""
    return [{k: v for k, v in (("ip", ip), ("hostname", hostname)) if v} for ip, hostname in status]


@dataclass(frozen=True, slots=True)
class WriteOutcome:
    """What became of one status write."""

    ok: bool
    version: str = ""  # the resourceVersion the answer carried (ok)
    retry: bool = False  # a failure that may pass: 5xx, 429, 409, timeouts, lost connections
    code: int = 0  # the HTTP status of a refusal (0: no answer)


class StatusWriter:
    """Writes ``status.loadBalancer.ingress`` of one Ingress at a time.

    Writes are merge patches of the ``/status`` subresource (RBAC: ``patch`` on
    ``ingresses/status``; the spec cannot be touched through it), sent on the API
    client's own connections. Only the answer's ``resourceVersion`` is read from it: a
    controller writing 10,000 statuses has no use for 10,000 parsed models, and the CPU
    they take is the proxy's.

    Args:
        client: the API client.
        concurrency: writes in flight at once, at most.
        rate: writes per second, at most (on average; ``concurrency`` at once).
        timeout: seconds one write may take before it counts as failed (and is retried).
    """

    def __init__(
        self,
        client: AsyncClient,
        *,
        concurrency: int = 10,
        timeout: float = 10.0,
        rate: float = WRITE_RATE,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        if not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"the write rate must be positive, got {rate}")
        if not (timeout > 0 and math.isfinite(timeout)):
            raise ValueError(f"the write timeout must be positive, got {timeout}")
        self._client = client
        self.concurrency = concurrency
        self.timeout = timeout
        self.rate = rate
        self._forbidden = False
        self.writes = 0  # successful writes, for metrics and logs
        self.failures = 0  # failed ones

    async def write(self, namespace: str, name: str, value: Status) -> WriteOutcome:
        """Make Ingress ``namespace/name`` say ``value`` (``()``: clear it)."""
        key = f"{namespace}/{name}"
        # null deletes the list (merge patch): a cleared status looks like a new Ingress's
        body = json.dumps({"status": {"loadBalancer": {"ingress": as_entries(value) or None}}})
        path = f"apis/networking.k8s.io/v1/namespaces/{namespace}/ingresses/{name}/status"
        try:
            response = await http_client(self._client).patch(
                path,
                content=body.encode(),
                headers={"Content-Type": "application/merge-patch+json"},
                timeout=self.timeout,
            )
        except (httpx.HTTPError, CredentialError) as error:
            self.failures += 1
            log.warning("cannot write the status of Ingress %s: %s", key, describe_error(error))
            return WriteOutcome(ok=False, retry=True)
        code = response.status_code
        if code != 200:
            self.failures += 1
            return self._refused(key, code, _message(response))
        self.writes += 1
        log.info(
            "Ingress %s status: %s",
            key,
            ", ".join(ip or hostname for ip, hostname in value) or "cleared",
        )
        return WriteOutcome(ok=True, version=_resource_version(response))

    def _refused(self, key: str, code: int, message: str) -> WriteOutcome:
        if code == 404:  # deleted meanwhile: nothing to say
            log.debug("Ingress %s is gone; no status to write", key)
        elif code == 403:
            if not self._forbidden:
                log.error(
                    "not allowed to write Ingress statuses (grant patch on ingresses/status): %s",
                    message,
                )
            self._forbidden = True
        else:
            log.warning("cannot write the status of Ingress %s: %d %s", key, code, message)
        # conflicts, throttling and server errors pass; a refusal of the request does not
        return WriteOutcome(ok=False, retry=code in (409, 429) or code >= 500, code=code)


def _resource_version(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    metadata = mapping(mapping(body).get("metadata"))
    return text(metadata.get("resourceVersion"))


def _message(response: httpx.Response) -> str:
    """The Status message of a refusal, or its reason phrase."""
    try:
        body = response.json()
    except ValueError:
        return response.reason_phrase
    return text(mapping(body).get("message")) or response.reason_phrase
