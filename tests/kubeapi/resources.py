"""The resource types the emulator serves, and the discovery documents that describe them.

Discovery is the legacy form (``APIVersions``, ``APIGroupList``, ``APIResourceList``) served as
plain ``application/json``: kubectl asks for the aggregated ``APIGroupDiscoveryList`` first in
its ``Accept`` header and falls back to these when the answer's Content-Type does not name the
aggregated type, which is what older servers and aggregated API servers do too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

__all__ = [
    "RESOURCES",
    "VERSION",
    "ResourceType",
    "api_group",
    "api_group_list",
    "api_resource_list",
    "api_versions",
    "find_resource",
    "lookup",
]

VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
SUBRESOURCE_VERBS = ("get", "patch", "update")


# eq=False: each type is one object, compared and hashed by identity (the store keys its
# tables by type on every write; a field-by-field hash there costs more than the write).
@dataclass(frozen=True, slots=True, eq=False)
class ResourceType:
    """One resource type (a plural in a group/version) and how the server treats it."""

    group: str
    version: str
    kind: str
    plural: str
    singular: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    # PUT/PATCH on ``.../name/status`` write only ``.status``; writes to the main resource
    # leave ``.status`` as it was (the registry strategies' PrepareForUpdate).
    status_subresource: bool = False
    # Field selectors beyond metadata.name and metadata.namespace (the registry's
    # field label conversion functions; anything else is a 400).
    fields: tuple[str, ...] = ()
    # DELETE answers the deleted object instead of a Status (the registry's
    # ReturnDeletedObject; Services do, Ingresses and most others do not).
    return_deleted: bool = False

    @property
    def api_version(self) -> str:
        """``v1`` for the core group, ``group/version`` otherwise."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        """The kind of the collection (``IngressList``)."""
        return f"{self.kind}List"

    @property
    def name(self) -> str:
        """``plural.group`` (just ``plural`` in the core group): what RBAC and errors call it."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def collection_path(self, namespace: str | None = None) -> str:
        """The URL path of the collection, in one namespace or across all of them."""
        prefix = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if namespace is not None and self.namespaced:
            return f"{prefix}/namespaces/{namespace}/{self.plural}"
        return f"{prefix}/{self.plural}"

    def object_path(self, name: str, namespace: str | None = None) -> str:
        """The URL path of one object."""
        return f"{self.collection_path(namespace)}/{name}"


def _rt(
    group: str,
    kind: str,
    plural: str,
    namespaced: bool = True,
    **options: Any,
) -> ResourceType:
    return ResourceType(group, "v1", kind, plural, kind.lower(), namespaced, **options)


EVENT_FIELDS = (
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "reason",
    "type",
)

RESOURCES: tuple[ResourceType, ...] = (
    _rt("", "Namespace", "namespaces", False, short_names=("ns",), status_subresource=True,
        fields=("status.phase",)),
    _rt("", "Service", "services", short_names=("svc",), status_subresource=True,
        return_deleted=True),
    _rt("", "Endpoints", "endpoints", short_names=("ep",)),
    _rt("", "ConfigMap", "configmaps", short_names=("cm",)),
    _rt("", "Secret", "secrets", fields=("type",)),
    _rt("", "Event", "events", short_names=("ev",), fields=EVENT_FIELDS),
    _rt("", "Node", "nodes", False, short_names=("no",), status_subresource=True,
        fields=("spec.unschedulable",)),
    _rt("", "Pod", "pods", short_names=("po",), status_subresource=True, return_deleted=True,
        fields=("spec.nodeName", "status.phase", "status.podIP")),
    _rt("networking.k8s.io", "Ingress", "ingresses", short_names=("ing",),
        status_subresource=True),
    _rt("networking.k8s.io", "IngressClass", "ingressclasses", False),
    _rt("discovery.k8s.io", "EndpointSlice", "endpointslices"),
    _rt("coordination.k8s.io", "Lease", "leases"),
    _rt("events.k8s.io", "Event", "events", short_names=("ev",), fields=("reason", "type")),
)  # fmt: skip

VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0-fastroute-kubeapi",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2024-12-11T00:00:00Z",
    "goVersion": "go1.23.3",
    "compiler": "gc",
    "platform": "linux/amd64",
}

_BY_PATH: dict[tuple[str, str, str], ResourceType] = {
    (rt.group, rt.version, rt.plural): rt for rt in RESOURCES
}


def lookup(group: str, version: str, plural: str) -> ResourceType | None:
    """The type served at ``/apis/group/version/plural`` (group ``""`` for ``/api/v1``)."""
    return _BY_PATH.get((group, version, plural))


@cache
def find_resource(name: str, api_version: str | None = None) -> ResourceType:
    """Resolve a kind, plural, short name or ``plural.group`` the way kubectl does.

    Ambiguous names (``Event``) resolve to the core group first, as kubectl's
    priority order does; pass ``api_version`` to choose.
    """
    plural, _, group = name.partition(".")
    for rt in RESOURCES:
        if api_version is not None and rt.api_version != api_version:
            continue
        if group and (rt.plural != plural or rt.group != group):
            continue
        if name in (rt.kind, rt.plural, rt.singular) or name in rt.short_names or group:
            return rt
    raise KeyError(f"no resource type {name!r}" + (f" in {api_version}" if api_version else ""))


def _groups() -> dict[str, list[ResourceType]]:
    groups: dict[str, list[ResourceType]] = {}
    for rt in RESOURCES:
        groups.setdefault(rt.group, []).append(rt)
    return groups


def api_versions(server_address: str) -> dict[str, Any]:
    """``GET /api``: the core group's versions."""
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        ],
    }


def api_group(group: str) -> dict[str, Any] | None:
    """``GET /apis/<group>``: one named group (None if not served)."""
    if not group or group not in _groups():
        return None
    version = {"groupVersion": f"{group}/v1", "version": "v1"}
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": [version],
        "preferredVersion": version,
    }


def api_group_list() -> dict[str, Any]:
    """``GET /apis``: every named group."""
    # The entries are APIGroups without their own kind and apiVersion, as served.
    groups = [_without_type(api_group(group)) for group in _groups() if group]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def _without_type(document: dict[str, Any] | None) -> dict[str, Any]:
    assert document is not None
    return {k: v for k, v in document.items() if k not in ("kind", "apiVersion")}


def _entries(types: Iterable[ResourceType]) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    for rt in types:
        entry: dict[str, Any] = {
            "name": rt.plural,
            "singularName": rt.singular,
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": list(VERBS),
        }
        if rt.short_names:
            entry["shortNames"] = list(rt.short_names)
        entries.append(entry)
        if rt.status_subresource:
            entries.append(
                {
                    "name": f"{rt.plural}/status",
                    "singularName": "",
                    "namespaced": rt.namespaced,
                    "kind": rt.kind,
                    "verbs": list(SUBRESOURCE_VERBS),
                }
            )
    return entries


def api_resource_list(group: str, version: str) -> dict[str, Any] | None:
    """``GET /api/v1`` or ``GET /apis/<group>/<version>`` (None if not served)."""
    types = _groups().get(group)
    if types is None or version != "v1":
        return None
    body: dict[str, Any] = {"kind": "APIResourceList"}
    if group:
        body["apiVersion"] = "v1"
    body["groupVersion"] = types[0].api_version
    body["resources"] = _entries(types)
    return body


def field_value(obj: Mapping[str, Any], path: str) -> str:
    """The string a field selector compares (missing fields compare as ``""``)."""
    value: Any = obj
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return ""
        value = value.get(part)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
