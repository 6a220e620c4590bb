"""One snapshot of Kubernetes objects -> one RouteConfig.

The rules, in the order they apply:

- **Class.** An Ingress is ours when its ``spec.ingressClassName`` names an IngressClass
  whose controller is ours (or a name in ``ClassPolicy.class_names``). The legacy
  ``kubernetes.io/ingress.class`` annotation, when present, decides instead. An Ingress
  with neither is ours when the cluster's default IngressClass is ours, or when
  ``adopt_classless`` says so.
- **Order.** Ingresses are taken oldest first (``creationTimestamp``, then
  namespace/name). When two claim the same host and path, or the same TLS host, or the
  catch-all default backend, the older one wins and the newer one gets a Problem naming
  the winner.
- **Rules.** All Ingresses' rules go into one Router, so precedence (longest path, Exact
  before Prefix, exact host before wildcard) applies across Ingresses.
- **Default backends.** As in ingress-nginx: an Ingress with ``defaultBackend`` and no
  rules sets the catch-all for every request nothing else matches. One with rules sends
  the unmatched paths of *its hosts* there, through an implicit ``Prefix /`` that an
  explicit ``/`` rule of any Ingress overrides.
- **TLS.** Each ``spec.tls`` entry's Secret is loaded and checked. A host whose
  certificate is missing, broken, expired or does not name it is reported and served
  with the proxy's default certificate. Hosts listed under TLS redirect plain HTTP to
  HTTPS unless the Ingress says ``ssl-redirect: "false"``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fastroute import InvalidRuleError, RouteConflictError, Router
from fastroute.ingress.annotations import read_policy
from fastroute.ingress.certs import Certificate, CertificateError, load_tls_secret
from fastroute.ingress.model import Backend, Policy, Problem, RouteConfig, Target
from fastroute.ingress.objects import (
    annotations_of,
    created,
    kind,
    mapping,
    name,
    namespace,
    object_key,
    sequence,
    text,
    to_v1_ingress,
)
from fastroute.ingress.services import ServiceIndex

__all__ = ["CONTROLLER_NAME", "ClassPolicy", "build_config"]

CONTROLLER_NAME = "fastroute.io/ingress-controller"
CLASS_ANNOTATION = "kubernetes.io/ingress.class"
DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
Obj = Mapping[str, Any]


@dataclass(frozen=True)
class ClassPolicy:
    """Which Ingresses this controller serves.

    Attributes:
        controller: the ``spec.controller`` of IngressClasses that are ours.
        class_names: class names that are ours even without an IngressClass object:
            what the legacy annotation and ``ingressClassName`` are compared with. A
            cluster moving from ingress-nginx can add ``"nginx"`` here.
        adopt_classless: serve Ingresses that name no class at all.
    """

    controller: str = CONTROLLER_NAME
    class_names: frozenset[str] = frozenset({"fastroute"})
    adopt_classless: bool = False


@dataclass
class _Build:
    """The state of one translation; only ``build_config`` uses it."""

    services: ServiceIndex
    secrets: dict[tuple[str, str], Obj]
    now: datetime | None
    router: Router = field(default_factory=Router)
    problems: list[Problem] = field(default_factory=list)
    certificates: dict[str, Certificate] = field(default_factory=dict)
    certificate_owner: dict[str, str] = field(default_factory=dict)
    loaded: dict[tuple[str, str], Certificate | None] = field(default_factory=dict)
    tls_hosts: set[str] = field(default_factory=set)
    host_defaults: dict[str, tuple[str, Target]] = field(default_factory=dict)
    catch_all: tuple[str, Target] | None = None

    def reject(self, obj_kind: str, key: str, where: str, reason: str) -> None:
        self.problems.append(Problem(obj_kind, key, where, reason))

    def warn(self, obj_kind: str, key: str, where: str, reason: str) -> None:
        self.problems.append(Problem(obj_kind, key, where, reason, warning=True))


def _our_classes(objects: list[Obj], policy: ClassPolicy) -> tuple[set[str], bool | None]:
    """Our class names, and whether class-less Ingresses are ours by the default class.

    The second value is None when no IngressClass is marked default.
    """
    ours = set(policy.class_names)
    default_is_ours: bool | None = None
    for obj in objects:
        if kind(obj) != "IngressClass":
            continue
        mine = text(mapping(obj.get("spec")).get("controller")) == policy.controller
        if mine:
            ours.add(name(obj))
        if text(annotations_of(obj).get(DEFAULT_CLASS_ANNOTATION)).lower() == "true":
            default_is_ours = bool(default_is_ours) or mine
    return ours, default_is_ours


def _is_ours(
    ingress: Obj, ours: set[str], default_is_ours: bool | None, policy: ClassPolicy
) -> bool:
    legacy = annotations_of(ingress).get(CLASS_ANNOTATION)
    if isinstance(legacy, str) and legacy:
        return legacy in ours
    class_name = text(mapping(ingress.get("spec")).get("ingressClassName"))
    if class_name:
        return class_name in ours
    return policy.adopt_classless or bool(default_is_ours)


def _backend_ref(backend: Obj) -> tuple[str, int | str] | str:
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


def _load_certificate(build: _Build, ns: str, secret_name: str) -> Certificate | str:
    """The certificate of Secret ``ns/secret_name``, or why there is none (cached)."""
    key = (ns, secret_name)
    if key not in build.loaded:
        secret = build.secrets.get(key)
        if secret is None:
            build.loaded[key] = None
            return f"Secret {ns}/{secret_name} not found"
        try:
            build.loaded[key] = load_tls_secret(secret, now=build.now)
        except CertificateError as error:
            build.loaded[key] = None
            return str(error)
    found = build.loaded[key]
    return found if found is not None else f"Secret {ns}/{secret_name} is unusable (see above)"


def _read_tls(build: _Build, ingress: Obj, key: str) -> None:
    ns = namespace(ingress)
    for i, entry in enumerate(sequence(mapping(ingress.get("spec")).get("tls"))):
        entry = mapping(entry)
        where = f"spec.tls[{i}]"
        hosts = [h.lower().rstrip(".") for h in sequence(entry.get("hosts")) if isinstance(h, str)]
        build.tls_hosts.update(hosts)
        secret_name = text(entry.get("secretName"))
        if not secret_name:
            build.warn(
                "Ingress", key, where, "no secretName: its hosts get the default certificate"
            )
            continue
        certificate = _load_certificate(build, ns, secret_name)
        if isinstance(certificate, str):
            build.reject(
                "Ingress", key, f"{where}.secretName", f"{certificate}; default certificate used"
            )
            continue
        for host in hosts:
            if host in build.certificate_owner:
                if build.certificates.get(host) is not certificate:
                    build.reject(
                        "Ingress",
                        key,
                        f"{where}.hosts",
                        f"TLS host {host!r} already has a certificate from the older "
                        f"Ingress {build.certificate_owner[host]}",
                    )
                continue
            uncovered = certificate.uncovered([host])
            if uncovered:
                build.reject(
                    "Ingress",
                    key,
                    f"{where}.hosts",
                    f"certificate from Secret {ns}/{secret_name} does not name {host!r} "
                    f"(it names {', '.join(certificate.names) or 'nothing'}); "
                    "default certificate used",
                )
                continue
            build.certificates[host] = certificate
            build.certificate_owner[host] = key


def _target(
    build: _Build, ingress: Obj, key: str, backend: Obj, where: str, policy: Policy, host: str
) -> Target | None:
    ref = _backend_ref(backend)
    if isinstance(ref, str):
        build.reject("Ingress", key, where, ref)
        return None
    service, port = ref
    resolved: Backend = build.services.resolve(namespace(ingress), service, port)
    return Target(ingress=key, backend=resolved, policy=policy, tls=_has_tls(build, host))


def _has_tls(build: _Build, host: str) -> bool:
    if not host:
        return False
    if host in build.tls_hosts:
        return True
    label, _, parent = host.partition(".")
    return bool(label and parent and not host.startswith("*.") and "*." + parent in build.tls_hosts)


def _read_rules(build: _Build, ingress: Obj, key: str, policy: Policy) -> None:
    spec = mapping(ingress.get("spec"))
    rules = sequence(spec.get("rules"))
    default = mapping(spec.get("defaultBackend"))
    hosts_seen: list[str] = []
    for i, rule in enumerate(rules):
        rule = mapping(rule)
        host = text(rule.get("host"))
        hosts_seen.append(host)
        paths = sequence(mapping(rule.get("http")).get("paths"))
        for j, path in enumerate(paths):
            path = mapping(path)
            where = f"spec.rules[{i}].http.paths[{j}]"
            target = _target(
                build, ingress, key, mapping(path.get("backend")), f"{where}.backend", policy, host
            )
            if target is None:
                continue
            try:
                build.router.add(host, text(path.get("path")), text(path.get("pathType")), target)
            except RouteConflictError as error:
                winner: Target = error.existing.backend
                on = f"host {error.new.host!r}" if error.new.host else "any host"
                build.reject(
                    "Ingress",
                    key,
                    where,
                    f"{error.new.path_type} {error.new.path!r} on {on} is already routed by "
                    f"the older Ingress {winner.ingress}",
                )
            except InvalidRuleError as error:
                build.reject("Ingress", key, where, error.reason)
    if not default:
        return
    target = _target(build, ingress, key, default, "spec.defaultBackend", policy, "")
    if target is None:
        return
    if not rules:
        if build.catch_all is None:
            build.catch_all = (key, target)
        else:
            build.reject(
                "Ingress",
                key,
                "spec.defaultBackend",
                "the catch-all default backend is already set by the older Ingress "
                f"{build.catch_all[0]}",
            )
        return
    for host in hosts_seen:
        if host and host not in build.host_defaults:
            build.host_defaults[host] = (
                key,
                Target(key, target.backend, policy, _has_tls(build, host)),
            )


def build_config(
    objects: Iterable[Obj],
    *,
    classes: ClassPolicy | None = None,
    now: datetime | None = None,
) -> RouteConfig:
    """Translate a snapshot of Kubernetes objects (dicts) into a RouteConfig.

    Args:
        objects: Ingresses (v1, or the removed v1beta1 forms), IngressClasses, Services,
            EndpointSlices, Endpoints and Secrets, in any order; other kinds are ignored.
        classes: which Ingresses are ours (default: class ``fastroute`` or an IngressClass
            with controller ``fastroute.io/ingress-controller``).
        now: the time certificates are checked against (default: the current time).
    """
    policy = classes or ClassPolicy()
    given = list(objects)
    objects = [obj for obj in given if isinstance(obj, Mapping)]
    build = _Build(
        services=ServiceIndex.of(objects),
        secrets={(namespace(o), name(o)): o for o in objects if kind(o) == "Secret"},
        now=now,
    )
    for i, obj in enumerate(given):
        if not isinstance(obj, Mapping):
            build.reject("?", f"#{i}", "", f"not a Kubernetes object: {type(obj).__name__}")
    ours, default_is_ours = _our_classes(objects, policy)
    ingresses = []
    for obj in objects:
        if kind(obj) != "Ingress":
            continue
        if not name(obj):
            build.reject("Ingress", "?", "metadata.name", "an Ingress needs a name")
            continue
        ingress, warning = to_v1_ingress(obj)
        if not _is_ours(ingress, ours, default_is_ours, policy):
            continue
        if warning:
            build.warn("Ingress", object_key(ingress), "apiVersion", warning)
        ingresses.append(ingress)
    ingresses.sort(key=lambda obj: (created(obj), namespace(obj), name(obj)))

    # TLS first: whether a host has TLS decides its redirect, whichever Ingress routes it
    for ingress in ingresses:
        _read_tls(build, ingress, object_key(ingress))
    for ingress in ingresses:
        key = object_key(ingress)
        route_policy, notes = read_policy(annotations_of(ingress))
        for annotation, reason, is_warning in notes:
            note = build.warn if is_warning else build.reject
            note("Ingress", key, f"metadata.annotations[{annotation}]", reason)
        _read_rules(build, ingress, key, route_policy)
    for host, (_, target) in build.host_defaults.items():
        # an explicit "/" rule for the host wins over an Ingress's default backend
        with contextlib.suppress(RouteConflictError):
            build.router.add(host, "/", "Prefix", target)
    if build.catch_all is not None:
        build.router.set_default(build.catch_all[1])
    return RouteConfig(
        router=build.router,
        certificates=dict(build.certificates),
        ingresses=tuple(object_key(i) for i in ingresses),
        problems=tuple(build.problems),
    )
