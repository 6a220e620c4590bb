"""What one Ingress asks for, read once per version of it.

Everything here depends on the Ingress alone: its hosts, paths and backends as written,
its TLS entries, its annotations' policy and the problems that are its own (a backend
without a Service, a malformed annotation). What depends on other objects (Services,
Secrets, older Ingresses claiming the same route) is decided when the config is built.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastroute.ingress.annotations import ConfigMapLookup, read_policy
from fastroute.ingress.model import Policy, Problem
from fastroute.ingress.objects import (
    annotations_of,
    created,
    mapping,
    name,
    namespace,
    object_key,
    sequence,
    text,
    to_v1_ingress,
)
from fastroute.ingress.settings import DEFAULT_SETTINGS, Settings

__all__ = [
    "BackendRef",
    "IngressSpec",
    "PathRule",
    "TlsEntry",
    "fold_host",
    "read_ingress",
    "reads_the_same",
]

# (service, port number or name) of a usable backend, else the reason it is unusable
BackendRef = tuple[str, int | str] | str


def fold_host(host: str) -> str:
    """A host as the router keys it: lower case, without a fully qualified name's dot."""
    if host.endswith(".") and len(host) > 1:
        host = host[:-1]
    return host.lower() if host.isascii() else host


@dataclass(frozen=True, slots=True)
class PathRule:
    """One ``spec.rules[i].http.paths[j]``."""

    host: str  # as written
    bucket: str  # fold_host(host): the rules of one bucket share a host in the router
    path: str
    path_type: str
    backend: BackendRef
    where: str  # "spec.rules[i].http.paths[j]"


@dataclass(frozen=True, slots=True)
class TlsEntry:
    """One ``spec.tls[i]``."""

    where: str  # "spec.tls[i]"
    hosts: tuple[str, ...]  # folded
    secret: str  # "" when the entry names none


@dataclass(frozen=True, slots=True)
class IngressSpec:
    """An Ingress in the form the build reads, with the problems that are its own."""

    key: str  # "namespace/name"
    namespace: str
    order: tuple[str, str, str]  # (creationTimestamp, namespace, name): older wins
    policy: Policy
    problems: tuple[Problem, ...]
    tls: tuple[TlsEntry, ...]
    rules: tuple[PathRule, ...]
    hosts: tuple[str, ...]  # buckets of the non-empty rule hosts, each once, in order
    has_rules: bool  # spec.rules is not empty (even if no path in it is usable)
    default: BackendRef | None  # spec.defaultBackend, if set
    buckets: frozenset[str]  # every host the rules name, folded ("" for no host)
    tls_hosts: frozenset[str]  # every host the TLS entries name
    secrets: frozenset[str]  # every Secret the TLS entries name


def reads_the_same(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether two versions of an Ingress say the same to the build: they differ only in
    what it never reads (status, resourceVersion, labels, managedFields...).

    Writing an Ingress's status sends its new version to every watcher; for a controller
    that publishes the status of 10,000 Ingresses, that is 10,000 changes to skip.
    """
    old_meta, new_meta = mapping(old.get("metadata")), mapping(new.get("metadata"))
    return (
        old.get("apiVersion") == new.get("apiVersion")
        and old.get("spec") == new.get("spec")
        and old_meta.get("annotations") == new_meta.get("annotations")
        and old_meta.get("creationTimestamp") == new_meta.get("creationTimestamp")
        and old_meta.get("name") == new_meta.get("name")
        and old_meta.get("namespace") == new_meta.get("namespace")
    )


def backend_ref(backend: Mapping[str, Any]) -> BackendRef:
    """(service, port) of an Ingress backend, or the reason it cannot be used."""
    if "resource" in backend:
        return "resource backends are not supported; use a Service"
    service = mapping(backend.get("service"))
    service_name = text(service.get("name"))
    if not service_name:
        return "backend needs service.name"
    port = mapping(service.get("port"))
    number, port_name = port.get("number"), port.get("name")
    if isinstance(number, int) and not isinstance(number, bool) and 0 < number < 65536:
        return service_name, number
    if isinstance(port_name, str) and port_name:
        return service_name, port_name
    return "backend needs service.port.number (1-65535) or service.port.name"


def read_ingress(
    obj: Mapping[str, Any],
    settings: Settings = DEFAULT_SETTINGS,
    configmap: ConfigMapLookup | None = None,
) -> IngressSpec:
    """Read an Ingress (v1, or a removed v1beta1 form, converted).

    ``settings`` are the ConfigMap's defaults its annotations override; ``configmap``
    finds the ConfigMaps they name (custom-headers).
    """
    ingress, conversion = to_v1_ingress(obj)
    key = object_key(ingress)
    problems: list[Problem] = []
    if conversion:
        problems.append(Problem("Ingress", key, "apiVersion", conversion, warning=True))
    policy, notes = read_policy(annotations_of(ingress), settings, namespace(ingress), configmap)
    for annotation, reason, is_warning in notes:
        where = f"metadata.annotations[{annotation}]"
        problems.append(Problem("Ingress", key, where, reason, warning=is_warning))
    spec = mapping(ingress.get("spec"))

    tls = []
    for i, entry in enumerate(sequence(spec.get("tls"))):
        entry = mapping(entry)
        tls_hosts = tuple(
            h.lower().rstrip(".") for h in sequence(entry.get("hosts")) if isinstance(h, str)
        )
        tls.append(TlsEntry(f"spec.tls[{i}]", tls_hosts, text(entry.get("secretName"))))

    rules: list[PathRule] = []
    hosts: dict[str, None] = {}
    raw_rules = sequence(spec.get("rules"))
    for i, rule in enumerate(raw_rules):
        rule = mapping(rule)
        host = text(rule.get("host"))
        bucket = fold_host(host)
        if bucket:
            hosts[bucket] = None
        for j, path in enumerate(sequence(mapping(rule.get("http")).get("paths"))):
            path = mapping(path)
            where = f"spec.rules[{i}].http.paths[{j}]"
            ref = backend_ref(mapping(path.get("backend")))
            if isinstance(ref, str):
                problems.append(Problem("Ingress", key, f"{where}.backend", ref))
            rules.append(
                PathRule(
                    host, bucket, text(path.get("path")), text(path.get("pathType")), ref, where
                )
            )

    default: BackendRef | None = None
    raw_default = mapping(spec.get("defaultBackend"))
    if raw_default:
        default = backend_ref(raw_default)
        if isinstance(default, str):
            problems.append(Problem("Ingress", key, "spec.defaultBackend", default))
    return IngressSpec(
        key=key,
        namespace=namespace(ingress),
        order=(created(ingress), namespace(ingress), name(ingress)),
        policy=policy,
        problems=tuple(problems),
        tls=tuple(tls),
        rules=tuple(rules),
        hosts=tuple(hosts),
        has_rules=bool(raw_rules),
        default=default,
        buckets=frozenset(rule.bucket for rule in rules).union(hosts),
        tls_hosts=frozenset(host for entry in tls for host in entry.hosts),
        secrets=frozenset(entry.secret for entry in tls if entry.secret),
    )
