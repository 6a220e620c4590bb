"""Reading Kubernetes objects given as plain dicts, and converting removed Ingress APIs.

Objects come from YAML files or API responses and may be incomplete or malformed;
these helpers never raise on a missing or mistyped field. They return empty values,
and the caller decides what is a problem.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

__all__ = [
    "LEGACY_INGRESS_APIS",
    "annotations_of",
    "created",
    "kind",
    "labels",
    "mapping",
    "name",
    "namespace",
    "object_key",
    "sequence",
    "text",
    "to_v1_ingress",
]

LEGACY_INGRESS_APIS = ("extensions/v1beta1", "networking.k8s.io/v1beta1")
Obj = Mapping[str, Any]


def mapping(value: object) -> Obj:
    """``value`` if it is a mapping, else an empty one."""
    if type(value) is dict:  # what YAML and JSON give: skips the slower ABC check
        return value
    return value if isinstance(value, Mapping) else {}


def sequence(value: object) -> list[Any]:
    """``value`` if it is a list, else an empty one."""
    return value if isinstance(value, list) else []


def text(value: object) -> str:
    return value if isinstance(value, str) else ""


def kind(obj: Obj) -> str:
    return text(obj.get("kind"))


def name(obj: Obj) -> str:
    return text(mapping(obj.get("metadata")).get("name"))


def namespace(obj: Obj) -> str:
    """The object's namespace; ``default`` when a manifest leaves it out, as kubectl does."""
    return text(mapping(obj.get("metadata")).get("namespace")) or "default"


def object_key(obj: Obj) -> str:
    return f"{namespace(obj)}/{name(obj)}"


def labels(obj: Obj) -> Obj:
    return mapping(mapping(obj.get("metadata")).get("labels"))


def annotations_of(obj: Obj) -> Obj:
    return mapping(mapping(obj.get("metadata")).get("annotations"))


def created(obj: Obj) -> str:
    """``metadata.creationTimestamp`` (RFC 3339, which sorts as text); ``""`` when absent."""
    return text(mapping(obj.get("metadata")).get("creationTimestamp"))


def _v1_backend(legacy: Obj) -> dict[str, Any]:
    """``serviceName``/``servicePort`` -> ``service: {name, port: {number|name}}``."""
    if "resource" in legacy:
        return {"resource": legacy["resource"]}
    port = legacy.get("servicePort")
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    port_ref = {"number": port} if isinstance(port, int) else {"name": port}
    return {"service": {"name": legacy.get("serviceName"), "port": port_ref}}


def to_v1_ingress(obj: Obj) -> tuple[Obj, str]:
    """An Ingress in ``networking.k8s.io/v1`` form, and a warning if it had to be converted.

    ``extensions/v1beta1`` and ``networking.k8s.io/v1beta1`` were removed in Kubernetes
    1.22, but manifests written for them are still common. Their differences from v1 are
    ``spec.backend``, which is now ``spec.defaultBackend``, ``serviceName``/``servicePort``,
    and an optional ``pathType`` that defaulted to ``ImplementationSpecific``.
    """
    api = text(obj.get("apiVersion"))
    if api not in LEGACY_INGRESS_APIS:
        return obj, ""
    converted = copy.deepcopy(dict(obj))
    converted["apiVersion"] = "networking.k8s.io/v1"
    spec = converted.get("spec")
    if isinstance(spec, dict):
        if isinstance(spec.get("backend"), Mapping):
            spec["defaultBackend"] = _v1_backend(spec.pop("backend"))
        for rule in sequence(spec.get("rules")):
            for path in sequence(mapping(mapping(rule).get("http")).get("paths")):
                if not isinstance(path, dict):
                    continue
                if isinstance(path.get("backend"), Mapping):
                    path["backend"] = _v1_backend(path["backend"])
                path.setdefault("pathType", "ImplementationSpecific")
                if not path.get("path"):
                    path["path"] = "/"
    return converted, f"{api} was removed in Kubernetes 1.22; read as networking.k8s.io/v1"
