"""From a method and a URL path to what is asked: a discovery document or a resource verb.

The path shapes are kube-apiserver's::

    /api  /api/v1  /apis  /apis/<group>  /apis/<group>/<version>  /version
    <prefix>/<plural>                               all namespaces, or a cluster-scoped type
    <prefix>/<plural>/<name>[/<subresource>]        a cluster-scoped object
    <prefix>/namespaces/<ns>/<plural>               one namespace
    <prefix>/namespaces/<ns>/<plural>/<name>[/<subresource>]

where ``<prefix>`` is ``/api/v1`` or ``/apis/<group>/<version>``. Namespaces themselves are
cluster-scoped, so ``/api/v1/namespaces/<name>/status`` is a namespace's status.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .resources import (
    VERSION,
    ResourceType,
    api_group,
    api_group_list,
    api_resource_list,
    api_versions,
    lookup,
)
from .status import method_not_supported, resource_not_found

__all__ = ["Discovery", "ResourceRequest", "route"]

_SUBRESOURCES = {"status"}


@dataclass(frozen=True, slots=True)
class Discovery:
    """A GET for a fixed document (discovery, version, health)."""

    body: dict[str, Any] | str


@dataclass(frozen=True, slots=True)
class ResourceRequest:
    """A request on a resource: the Kubernetes verb and what it applies to."""

    verb: str  # get list watch create update patch delete deletecollection
    rt: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None

    @property
    def resource(self) -> str:
        """``plural`` or ``plural/subresource``, as RBAC names it."""
        return f"{self.rt.plural}/{self.subresource}" if self.subresource else self.rt.plural


def _is_true(value: str | None) -> bool:
    return value in ("true", "1", "True")


def route(
    method: str, path: str, query: Mapping[str, str], server_address: str
) -> Discovery | ResourceRequest:
    """Classify a request.

    Raises:
        ApiError: 404 for a path that names nothing served, 405 for a verb a path
            does not take.
    """
    parts = [part for part in path.split("/") if part]
    if method == "GET":
        document = _document(parts, server_address)
        if document is not None:
            return Discovery(document)
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        raise resource_not_found()
    if not rest:
        raise resource_not_found()
    namespace: str | None = None
    if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in _SUBRESOURCES:
        namespace, rest = rest[1], rest[2:]
    if len(rest) > 3:
        raise resource_not_found()
    rt = lookup(group, version, rest[0])
    if rt is None or (namespace is not None and not rt.namespaced):
        raise resource_not_found()
    name = rest[1] if len(rest) > 1 else None
    subresource = rest[2] if len(rest) > 2 else None
    if subresource is not None and (subresource not in _SUBRESOURCES or not rt.status_subresource):
        raise resource_not_found()
    if name is not None and rt.namespaced and namespace is None:
        raise resource_not_found()  # a namespaced object needs its namespace in the path
    verb = _verb(method, name is not None, query)
    if verb is None or (subresource and verb not in ("get", "update", "patch")):
        raise method_not_supported(rt.plural, rt.group, method)
    if verb == "create" and rt.namespaced and namespace is None:
        raise method_not_supported(rt.plural, rt.group, method)
    return ResourceRequest(verb, rt, namespace, name, subresource)


def _verb(method: str, item: bool, query: Mapping[str, str]) -> str | None:
    if method == "GET":
        if _is_true(query.get("watch")):
            return "watch"
        return "get" if item else "list"
    if item:
        return {"PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method)
    return {"POST": "create", "DELETE": "deletecollection"}.get(method)


def _document(parts: list[str], server_address: str) -> dict[str, Any] | str | None:
    if parts == ["version"]:
        return VERSION
    if parts in (["healthz"], ["livez"], ["readyz"]):
        return "ok"
    if parts == ["api"]:
        return api_versions(server_address)
    if parts == ["apis"]:
        return api_group_list()
    if len(parts) == 2 and parts[0] == "api":
        return api_resource_list("", parts[1])
    if len(parts) == 2 and parts[0] == "apis":
        return api_group(parts[1])
    if len(parts) == 3 and parts[0] == "apis":
        return api_resource_list(parts[1], parts[2])
    return None
