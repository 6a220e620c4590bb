"""Kubernetes objects for tests, as the plain dicts the builder, manifests and the emulator take.

One factory per kind, each with the defaults most tests want (namespace ``default``, class
``fastroute``, Service port 80, endpoints on 127.0.0.1) and keywords for what a test varies.
A test that needs an odd shape (a wrong type, a missing field) builds on these dicts or
writes that one object out, so that what it breaks stands out.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Obj = dict[str, Any]

CLASS = "fastroute"  # the IngressClass the test controller and builder adopt
SERVICE_PORT = 80  # the port every test Service exposes and every Ingress backend names
LOOPBACK = "127.0.0.1"

Path = tuple[str, str, str]  # (path, pathType, Service name)


def metadata(
    name: str,
    namespace: str | None = "default",
    *,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> Obj:
    """``metadata`` with the given fields (a namespace of None leaves it out, as a manifest may)."""
    found: Obj = {"name": name}
    if namespace is not None:
        found["namespace"] = namespace
    if labels is not None:
        found["labels"] = dict(labels)
    if annotations is not None:
        found["annotations"] = dict(annotations)
    return found


def service(name: str = "web", namespace: str | None = "default", **spec: Any) -> Obj:
    """Service ``name`` exposing ``SERVICE_PORT``; ``spec`` adds or replaces spec fields."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(name, namespace),
        "spec": {"ports": [{"port": SERVICE_PORT}], **spec},
    }


def endpoint_slice(
    service: str,
    port: int,
    namespace: str | None = "default",
    *,
    name: str | None = None,
    addresses: Sequence[str] = (LOOPBACK,),
) -> Obj:
    """An EndpointSlice of ``service``: ``addresses`` on ``port`` (named ``<service>-1``)."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": metadata(
            name or f"{service}-1",
            namespace,
            labels={"kubernetes.io/service-name": service},
        ),
        "addressType": "IPv4",
        "ports": [{"port": port}],
        "endpoints": [{"addresses": list(addresses)}],
    }


def service_at(port: int | None, name: str = "web", namespace: str | None = "default") -> list[Obj]:
    """Service ``name`` and, unless ``port`` is None, one endpoint on 127.0.0.1:``port``."""
    found = [service(name, namespace)]
    if port is not None:
        found.append(endpoint_slice(name, port, namespace))
    return found


def ingress_backend(service: str = "web", port: int = SERVICE_PORT) -> Obj:
    """An Ingress backend naming ``service`` by port number."""
    return {"service": {"name": service, "port": {"number": port}}}


def rule(host: str | None, paths: Iterable[Path] = (("/", "Prefix", "web"),)) -> Obj:
    """An Ingress rule for ``host`` (None: any host) with ``paths``."""
    found: Obj = {
        "http": {
            "paths": [
                {"path": path, "pathType": path_type, "backend": ingress_backend(to)}
                for path, path_type, to in paths
            ]
        }
    }
    if host is not None:
        found = {"host": host, **found}
    return found


def ingress(
    name: str,
    host: str | None = "site.example.com",
    *,
    paths: Iterable[Path] = (("/", "Prefix", "web"),),
    rules: Sequence[Obj] | None = None,
    annotations: Mapping[str, str] | None = None,
    namespace: str | None = "default",
    cls: str | None = CLASS,
    tls: Sequence[Obj] = (),
    default_backend: str | None = None,
    created: str = "",
) -> Obj:
    """Ingress ``name`` routing ``paths`` on ``host`` (or ``rules``, or none with a
    ``default_backend``); TLS sections as given; ``created`` is its creationTimestamp."""
    spec: Obj = {}
    if cls is not None:
        spec["ingressClassName"] = cls
    if default_backend is not None:
        spec["defaultBackend"] = ingress_backend(default_backend)
    if tls:
        spec["tls"] = [dict(section) for section in tls]
    if rules is not None:
        spec["rules"] = list(rules)
    elif default_backend is None:
        spec["rules"] = [rule(host, paths)]
    meta = metadata(name, namespace, annotations=annotations)
    if created:
        meta["creationTimestamp"] = created
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta, "spec": spec}


def tls_section(*hosts: str, secret: str | None = None) -> Obj:
    """One entry of an Ingress's ``spec.tls``: ``hosts``, and the Secret if named."""
    found: Obj = {"hosts": list(hosts)}
    if secret is not None:
        found["secretName"] = secret
    return found


def secret(
    name: str,
    data: Mapping[str, bytes],
    namespace: str | None = "default",
    *,
    type: str = "Opaque",
) -> Obj:
    """Secret ``name`` holding ``data`` (base64-encoded, as the API serves it)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(name, namespace),
        "type": type,
        "data": {key: base64.b64encode(value).decode() for key, value in data.items()},
    }


def ingress_class(
    name: str = CLASS,
    controller: str = "fastroute.io/ingress-controller",
    *,
    default: bool = False,
) -> Obj:
    """IngressClass ``name`` for ``controller``; ``default`` marks it the cluster's default."""
    annotations = {"ingressclass.kubernetes.io/is-default-class": "true"} if default else None
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": metadata(name, None, annotations=annotations),
        "spec": {"controller": controller},
    }


def config_map(name: str, data: Mapping[str, str], namespace: str | None = "default") -> Obj:
    """ConfigMap ``name`` holding ``data``."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(name, namespace),
        "data": dict(data),
    }
