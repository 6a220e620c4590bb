"""Resolving an Ingress backend (Service name and port) to the endpoints that serve it.

The Ingress names a Service port by number or by name. The Service maps it to a port
*name*, and EndpointSlices list their ports by that name with the target port number,
which may differ from the Service port. So the lookup runs Ingress port -> Service port
-> port name -> EndpointSlice port. Legacy Endpoints objects are read the same way
when a Service has no EndpointSlices. With ``service-upstream`` the lookup stops at the
Service: its cluster IP and port (kube-proxy picks the pod).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from fastroute.ingress.model import Backend, Endpoint
from fastroute.ingress.objects import kind, labels, mapping, name, namespace, sequence, text

__all__ = ["ServiceIndex", "ServiceKey"]

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
Obj = Mapping[str, Any]


def _ports_text(service: Obj) -> str:
    ports = []
    for port in sequence(mapping(service.get("spec")).get("ports")):
        port = mapping(port)
        label = f"{port.get('port')}" + (f" ({port.get('name')})" if port.get("name") else "")
        ports.append(label)
    return ", ".join(ports) or "none"


def _condition(conditions: Obj, key: str, default: bool) -> bool:
    value = conditions.get(key)
    return value if isinstance(value, bool) else default


ServiceKey = tuple[str, str]  # (namespace, Service name)


@dataclass
class ServiceIndex:
    """Services, EndpointSlices and Endpoints by namespace and Service name, kept as they
    change: ``put`` and ``drop`` answer which Service's endpoints a change can move."""

    services: dict[ServiceKey, Obj] = field(default_factory=dict)
    slices: dict[ServiceKey, dict[str, Obj]] = field(default_factory=dict)  # by slice name
    endpoints: dict[ServiceKey, Obj] = field(default_factory=dict)

    def put(self, obj: Obj) -> ServiceKey | None:
        """Add or replace a Service, EndpointSlice or Endpoints; the Service it is about.

        Replacing an EndpointSlice: ``drop`` its old version first (its label may change).
        """
        k, ns = kind(obj), namespace(obj)
        if k == "Service":
            self.services[(ns, name(obj))] = obj
            return ns, name(obj)
        if k == "EndpointSlice":
            service = text(labels(obj).get(SERVICE_NAME_LABEL))
            if not service:
                return None
            self.slices.setdefault((ns, service), {})[name(obj)] = obj
            return ns, service
        if k == "Endpoints":
            self.endpoints[(ns, name(obj))] = obj
            return ns, name(obj)
        return None

    def drop(self, obj: Obj) -> ServiceKey | None:
        """Remove what ``put(obj)`` added; the Service it was about."""
        k, ns = kind(obj), namespace(obj)
        if k == "Service":
            self.services.pop((ns, name(obj)), None)
            return ns, name(obj)
        if k == "EndpointSlice":
            service = text(labels(obj).get(SERVICE_NAME_LABEL))
            slices = self.slices.get((ns, service))
            if slices is None:
                return None
            slices.pop(name(obj), None)
            if not slices:
                del self.slices[(ns, service)]
            return ns, service
        if k == "Endpoints":
            self.endpoints.pop((ns, name(obj)), None)
            return ns, name(obj)
        return None

    def resolve(self, ns: str, service: str, port: int | str) -> Backend:
        """The Backend for ``service:port`` in namespace ``ns``; ``problem`` says what's missing."""
        backend = Backend(namespace=ns, service=service, port=port)
        obj = self.services.get((ns, service))
        if obj is None:
            return replace(backend, problem=f"Service {ns}/{service} not found")
        spec = mapping(obj.get("spec"))
        if spec.get("type") == "ExternalName":
            return self._external(backend, spec)
        service_port = None
        for candidate in sequence(spec.get("ports")):
            candidate = mapping(candidate)
            if (isinstance(port, int) and candidate.get("port") == port) or (
                isinstance(port, str) and candidate.get("name") == port
            ):
                service_port = candidate
                break
        if service_port is None:
            return replace(
                backend,
                problem=f"Service {ns}/{service} has no port {port!r} (it has {_ports_text(obj)})",
            )
        port_name = text(service_port.get("name"))
        slices = self.slices.get((ns, service))
        if slices:
            ready, terminating = _from_slices(slices.values(), port_name)
        else:
            ready, terminating = _from_endpoints(self.endpoints.get((ns, service)), port_name)
        if not ready and not terminating:
            return replace(backend, problem=f"Service {ns}/{service} has no ready endpoints")
        return replace(backend, endpoints=ready, terminating=terminating)

    def cluster_endpoint(self, ns: str, service: str, port: int | str) -> Endpoint | str | None:
        """``service-upstream``: the Service's cluster IP and port number for ``port``.

        A reason (str) when the Service has no cluster IP to send to (headless, or
        ExternalName); None when the Service or its port is missing (``resolve`` says so).
        """
        obj = self.services.get((ns, service))
        if obj is None:
            return None
        spec = mapping(obj.get("spec"))
        if spec.get("type") == "ExternalName":
            return f"Service {ns}/{service} is an ExternalName Service: it has no cluster IP"
        cluster_ip = text(spec.get("clusterIP"))
        if not cluster_ip or cluster_ip == "None":
            return f"Service {ns}/{service} is headless: it has no cluster IP"
        for candidate in sequence(spec.get("ports")):
            candidate = mapping(candidate)
            number = candidate.get("port")
            if not isinstance(number, int) or isinstance(number, bool):
                continue
            if (isinstance(port, int) and number == port) or (
                isinstance(port, str) and candidate.get("name") == port
            ):
                return Endpoint(cluster_ip, number)
        return None

    @staticmethod
    def _external(backend: Backend, spec: Obj) -> Backend:
        """An ExternalName Service: one endpoint, the DNS name, resolved by the proxy."""
        external = text(spec.get("externalName"))
        port = backend.port
        if isinstance(port, str):
            named = [p for p in sequence(spec.get("ports")) if mapping(p).get("name") == port]
            number = mapping(named[0]).get("port") if named else None
            if not isinstance(number, int):
                return replace(backend, problem=f"ExternalName Service has no port named {port!r}")
            port = number
        if not external:
            return replace(backend, problem="ExternalName Service without spec.externalName")
        return replace(backend, endpoints=(Endpoint(external, port),))


def _from_slices(
    slices: Iterable[Obj], port_name: str
) -> tuple[tuple[Endpoint, ...], tuple[Endpoint, ...]]:
    """Ready and serving-but-terminating endpoints of ``port_name`` across the slices."""
    ready: set[Endpoint] = set()
    terminating: set[Endpoint] = set()
    for slice_ in slices:
        number = None
        for port in sequence(slice_.get("ports")):
            port = mapping(port)
            if text(port.get("name")) == port_name and isinstance(port.get("port"), int):
                number = port["port"]
                break
        if number is None:
            continue
        for endpoint in sequence(slice_.get("endpoints")):
            endpoint = mapping(endpoint)
            addresses = [a for a in sequence(endpoint.get("addresses")) if isinstance(a, str)]
            if not addresses:
                continue
            # Kubernetes: ready unset means ready; serving unset means ready's value
            conditions = mapping(endpoint.get("conditions"))
            is_ready = _condition(conditions, "ready", True)
            serving = _condition(conditions, "serving", is_ready)
            is_terminating = _condition(conditions, "terminating", False)
            found = Endpoint(addresses[0], number)
            if is_ready and not is_terminating:
                ready.add(found)
            elif serving and is_terminating:
                terminating.add(found)
    return tuple(sorted(ready, key=str)), tuple(sorted(terminating - ready, key=str))


def _from_endpoints(
    obj: Obj | None, port_name: str
) -> tuple[tuple[Endpoint, ...], tuple[Endpoint, ...]]:
    """Ready endpoints of ``port_name`` from a legacy Endpoints object."""
    ready: set[Endpoint] = set()
    for subset in sequence(mapping(obj).get("subsets")) if obj is not None else []:
        subset = mapping(subset)
        number = None
        for port in sequence(subset.get("ports")):
            port = mapping(port)
            if text(port.get("name")) == port_name and isinstance(port.get("port"), int):
                number = port["port"]
        if number is None:
            continue
        for address in sequence(subset.get("addresses")):
            ip = text(mapping(address).get("ip"))
            if ip:
                ready.add(Endpoint(ip, number))
    return tuple(sorted(ready, key=str)), ()
