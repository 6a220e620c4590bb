"""RBAC rules held to the API calls a client really made.

The deploy manifests grant the controller's ServiceAccount some rules; the controller makes
some calls. Two mistakes are possible and both matter to a user: a call no rule allows is
a 403 in their cluster (the feature silently does not work), and a rule no call uses is a
privilege the controller holds for nothing. ``check_rbac`` finds both::

    report = check_rbac(kubeapi.requests, load_rules())
    assert not report.missing, report
    assert not report.unused, report

``load_rules`` reads the manifests (``deploy/`` by default) and keeps the rules bound to the
ServiceAccount the Deployment runs as: a ClusterRoleBinding grants them everywhere, a
RoleBinding in its namespace only. ``classify`` turns one request, as the emulator
(``tests/kubeapi``) records it (its Kubernetes verb or HTTP method, and the URL path), into
what RBAC decides on, the way kube-apiserver's RequestInfo does: verb, API group,
resource[/subresource], namespace and name. Non-resource URLs (discovery: ``/api``,
``/apis/...``, ``/version``) give None: the ``system:discovery`` role, bound to every
authenticated user, allows them.

Not modelled: aggregated ClusterRoles, ``nonResourceURLs`` rules, and authorizers other
than RBAC.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import yaml

__all__ = [
    "DEPLOY",
    "Call",
    "Grant",
    "RbacReport",
    "Rule",
    "check_rbac",
    "classify",
    "load_objects",
    "load_rules",
]

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"

RBAC_VERBS = frozenset(
    {"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"}
)
# The emulator records a request it could not route (an unknown resource) by its HTTP method.
_BY_METHOD = {"post": "create", "put": "update", "patch": "patch", "delete": "delete"}
# /api/v1/namespaces/NAME/<these> are subresources of the Namespace, not a resource in it.
_NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})


@dataclass(frozen=True, slots=True)
class Call:
    """One API request as RBAC sees it.

    ``namespace`` is None for a cluster-scoped resource and for a request across all
    namespaces (which only a ClusterRoleBinding can allow). ``path`` is an example URL
    path, for messages; it takes no part in comparisons.
    """

    verb: str
    group: str  # "" for the core group
    resource: str  # "ingresses", or "ingresses/status" for a subresource
    namespace: str | None = None
    name: str | None = None
    path: str = field(default="", compare=False)

    def __str__(self) -> str:
        where = "all namespaces" if self.namespace is None else f"namespace {self.namespace}"
        name = f" {self.name!r}" if self.name else ""
        return f"{self.verb} {_qualified(self.resource, self.group)}{name} ({where}: {self.path})"


@dataclass(frozen=True, slots=True)
class Rule:
    """One PolicyRule as it reaches the subject, and where it is in force.

    ``namespace`` is None for a rule granted by a ClusterRoleBinding (every namespace and
    the cluster-scoped resources), else the namespace of the RoleBinding that grants it.
    An empty ``resource_names`` means any name. ``origin`` names the role, for messages.
    """

    api_groups: frozenset[str]
    resources: frozenset[str]
    verbs: frozenset[str]
    resource_names: frozenset[str] = frozenset()
    namespace: str | None = None
    origin: str = ""

    def allows(self, call: Call) -> bool:
        """Whether this rule lets ``call`` through (kube-apiserver's RBAC rule matching)."""
        if self.namespace is not None and call.namespace != self.namespace:
            return False
        if "*" not in self.api_groups and call.group not in self.api_groups:
            return False
        if "*" not in self.verbs and call.verb not in self.verbs:
            return False
        if not self._resource_matches(call.resource):
            return False
        # A rule naming objects never allows a request without a name: a create, or a list
        # or watch of a whole collection.
        return not self.resource_names or call.name in self.resource_names

    def _resource_matches(self, resource: str) -> bool:
        if "*" in self.resources or resource in self.resources:
            return True
        _, slash, subresource = resource.partition("/")
        return bool(slash) and f"*/{subresource}" in self.resources

    def grants(self) -> Iterator[Grant]:
        """One ``Grant`` per API group, resource and verb that this rule names."""
        for group in sorted(self.api_groups):
            for resource in sorted(self.resources):
                for verb in sorted(self.verbs):
                    yield Grant(
                        self.origin,
                        group,
                        resource,
                        verb,
                        tuple(sorted(self.resource_names)),
                        self.namespace,
                    )


@dataclass(frozen=True, slots=True)
class Grant:
    """One verb on one resource of one group, as one role grants it."""

    origin: str
    group: str
    resource: str
    verb: str
    names: tuple[str, ...] = ()
    namespace: str | None = None

    def allows(self, call: Call) -> bool:
        """Whether this grant alone lets ``call`` through."""
        return Rule(
            frozenset({self.group}),
            frozenset({self.resource}),
            frozenset({self.verb}),
            frozenset(self.names),
            self.namespace,
        ).allows(call)

    def __str__(self) -> str:
        names = f" named {', '.join(self.names)}" if self.names else ""
        where = "" if self.namespace is None else f" in namespace {self.namespace}"
        resource = _qualified(self.resource, self.group)
        return f"{self.origin}: {self.verb} {resource}{names}{where}"


@dataclass(frozen=True, slots=True)
class RbacReport:
    """What ``check_rbac`` found.

    Attributes:
        missing: the distinct calls that no rule allows (each a 403 in a real cluster).
        unused: the grants that no call used (privileges held for nothing).
        allowed: the distinct calls that some rule allows.
        non_resource: the non-resource paths requested (discovery), allowed to everyone.
    """

    missing: tuple[Call, ...]
    unused: tuple[Grant, ...]
    allowed: tuple[Call, ...] = ()
    non_resource: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """Every call allowed and every grant used."""
        return not self.missing and not self.unused

    def __str__(self) -> str:
        lines = [
            f"RBAC: {len(self.missing)} call(s) no rule allows, "
            f"{len(self.unused)} grant(s) no call used, {len(self.allowed)} call(s) allowed"
        ]
        if self.missing:
            lines.append("calls no rule allows:")
            lines.extend(f"  {call}" for call in self.missing)
        if self.unused:
            lines.append("grants no call used:")
            lines.extend(f"  {grant}" for grant in self.unused)
        return "\n".join(lines)


def classify(verb: str, url: str) -> Call | None:
    """What RBAC decides on for one request; None for a non-resource URL.

    Args:
        verb: the Kubernetes verb the emulator recorded (``get``, ``list``, ``watch``,
            ``create``...), or the request's HTTP method (any case).
        url: the URL path, with or without its query string (``?watch=true`` makes a GET
            a watch; ``fieldSelector=metadata.name=NAME`` names the object of a list or
            watch, as kube-apiserver does).
    """
    split = urlsplit(url)
    query = dict(parse_qsl(split.query, keep_blank_values=True))
    parts = [part for part in split.path.split("/") if part]
    if len(parts) >= 2 and parts[0] == "api":
        group, rest = "", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, rest = parts[1], parts[3:]
    else:
        return None  # /api, /apis, /apis/GROUP, /version, /healthz, /openapi/...
    if not rest:
        return None  # /api/v1, /apis/GROUP/VERSION: the resource lists
    watch = query.get("watch") in ("true", "1")
    if rest[0] == "watch":  # the deprecated /api/v1/watch/... form
        watch, rest = True, rest[1:]
        if not rest:
            return None
    namespace: str | None = None
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]  # for a Namespace itself too, as kube-apiserver has it
        if len(rest) > 2 and rest[2] not in _NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else None
    subresource = rest[2] if len(rest) > 2 else None
    if name is None:
        name = _named_by_selector(query.get("fieldSelector", ""))
        item = False
    else:
        item = True
    verb = _verb(verb.lower(), item, watch)
    return Call(
        verb,
        group,
        f"{resource}/{subresource}" if subresource else resource,
        namespace,
        name,
        split.path,
    )


def _verb(recorded: str, item: bool, watch: bool) -> str:
    if watch and recorded in ("get", "list", "watch"):
        return "watch"
    if recorded in ("get", "list"):
        return "get" if item else "list"
    if recorded == "delete" and not item:
        return "deletecollection"
    if recorded in RBAC_VERBS:
        return recorded
    return _BY_METHOD.get(recorded, recorded)


def _named_by_selector(selector: str) -> str | None:
    for term in selector.split(","):
        key, equals, value = term.partition("=")
        if equals and key.strip() == "metadata.name":
            return value.lstrip("=").strip() or None
    return None


def check_rbac(
    records: Iterable[tuple[str, str]] | Mapping[tuple[str, str], int],
    rules: Sequence[Rule],
) -> RbacReport:
    """The calls in ``records`` that ``rules`` do not allow, and the grants no call used.

    Args:
        records: ``(verb or HTTP method, URL)`` pairs, e.g. ``KubeAPI.requests`` (a Counter;
            entries counted zero or less are skipped).
        rules: what the caller is granted, e.g. ``load_rules()``.
    """
    if isinstance(records, Mapping):
        records = [record for record, count in records.items() if count > 0]
    calls: set[Call] = set()
    non_resource: set[str] = set()
    for verb, url in records:
        call = classify(verb, url)
        if call is None:
            non_resource.add(urlsplit(url).path)
        else:
            calls.add(call)
    missing = sorted(
        (call for call in calls if not any(rule.allows(call) for rule in rules)), key=_call_order
    )
    allowed = sorted(calls.difference(missing), key=_call_order)
    grants = sorted({grant for rule in rules for grant in rule.grants()}, key=_grant_order)
    unused = [grant for grant in grants if not any(grant.allows(call) for call in allowed)]
    return RbacReport(tuple(missing), tuple(unused), tuple(allowed), tuple(sorted(non_resource)))


def _call_order(call: Call) -> tuple[str, ...]:
    return (call.verb, call.group, call.resource, call.namespace or "", call.name or "")


def _grant_order(grant: Grant) -> tuple[str, ...]:
    return (grant.origin, grant.group, grant.resource, grant.verb, *grant.names)


# -- the manifests -------------------------------------------------------------------------


def load_objects(*paths: Path) -> list[dict[str, Any]]:
    """Every object in the given files and folders, in the order ``kubectl apply -f`` takes
    them (a folder's ``.yaml``, ``.yml`` and ``.json`` files by name, not recursing)."""
    objects: list[dict[str, Any]] = []
    for path in paths or (DEPLOY,):
        files = (
            sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml", ".json"))
            if path.is_dir()
            else [path]
        )
        for file in files:
            for document in yaml.safe_load_all(file.read_text(encoding="utf-8")):
                if isinstance(document, dict):
                    objects.append(document)
    return objects


def load_rules(*paths: Path, service_account: tuple[str, str] | None = None) -> tuple[Rule, ...]:
    """The rules that the manifests in ``paths`` (default: ``deploy/``) grant a ServiceAccount.

    Args:
        service_account: ``(namespace, name)``; None: the one the Deployments run as.

    Raises:
        ValueError: no Deployment to take the ServiceAccount from, or several that differ;
            a binding of that ServiceAccount to a role the manifests do not define.
    """
    objects = load_objects(*paths)
    subject = service_account or _service_account(objects)
    roles: dict[tuple[str, str | None, str], Mapping[str, Any]] = {}
    for obj in objects:
        if obj.get("kind") in ("ClusterRole", "Role"):
            meta = obj.get("metadata") or {}
            namespace = meta.get("namespace") if obj["kind"] == "Role" else None
            roles[(str(obj["kind"]), namespace, str(meta.get("name")))] = obj
    granted: list[Rule] = []
    for obj in objects:
        kind = obj.get("kind")
        if kind not in ("ClusterRoleBinding", "RoleBinding"):
            continue
        meta = obj.get("metadata") or {}
        where = meta.get("namespace") if kind == "RoleBinding" else None
        if kind == "RoleBinding" and not where:
            raise ValueError(f"RoleBinding {meta.get('name')!r} has no namespace")
        if not any(_names(s, subject, where) for s in obj.get("subjects") or ()):
            continue
        ref = obj.get("roleRef") or {}
        ref_kind, ref_name = str(ref.get("kind")), str(ref.get("name"))
        role = roles.get((ref_kind, where if ref_kind == "Role" else None, ref_name))
        if role is None:
            raise ValueError(
                f"{kind} {meta.get('name')!r} binds {ref_kind} {ref_name!r}, "
                "which the manifests do not define"
            )
        origin = f"{ref_kind} {ref_name}" if where is None else f"{ref_kind} {where}/{ref_name}"
        granted.extend(_rules(role, where, origin))
    return tuple(granted)


def _service_account(objects: Iterable[Mapping[str, Any]]) -> tuple[str, str]:
    found = {
        (
            (obj.get("metadata") or {}).get("namespace") or "default",
            obj["spec"]["template"]["spec"].get("serviceAccountName") or "default",
        )
        for obj in objects
        if obj.get("kind") in ("Deployment", "DaemonSet", "StatefulSet")
    }
    if len(found) != 1:
        raise ValueError(f"expected the Deployments to run as one ServiceAccount, found {found}")
    return found.pop()


def _names(subject: Mapping[str, Any], account: tuple[str, str], where: str | None) -> bool:
    """Whether a binding's subject covers the ServiceAccount ``(namespace, name)``."""
    namespace, name = account
    kind, subject_name = subject.get("kind"), subject.get("name")
    if kind == "ServiceAccount":
        # in a RoleBinding, a ServiceAccount subject without a namespace is in the binding's
        return subject_name == name and (subject.get("namespace") or where) == namespace
    if kind == "User":
        return subject_name == f"system:serviceaccount:{namespace}:{name}"
    if kind == "Group":
        return subject_name in (
            "system:authenticated",
            "system:serviceaccounts",
            f"system:serviceaccounts:{namespace}",
        )
    return False


def _rules(role: Mapping[str, Any], where: str | None, origin: str) -> Iterator[Rule]:
    for rule in role.get("rules") or ():
        if not rule.get("resources"):
            continue  # a nonResourceURLs rule
        yield Rule(
            frozenset(rule.get("apiGroups") or ()),
            frozenset(rule["resources"]),
            frozenset(rule.get("verbs") or ()),
            frozenset(rule.get("resourceNames") or ()),
            where,
            origin,
        )


def _qualified(resource: str, group: str) -> str:
    """``ingresses/status.networking.k8s.io``; a core resource by its plural alone."""
    return f"{resource}.{group}" if group else resource
