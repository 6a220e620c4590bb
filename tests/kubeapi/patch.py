"""PATCH bodies: JSON merge patch (RFC 7386) and JSON patch (RFC 6902).

A strategic merge patch is applied as a merge patch. The difference only shows on lists that
declare a merge key (``status.conditions`` by ``type``, container ``ports`` by ``containerPort``):
a strategic patch merges their items, a merge patch replaces the whole list. Controllers that
write Ingress status send the whole ``loadBalancer.ingress`` list either way, which has no merge
key, so both agree on what this project writes.
"""

from __future__ import annotations

import copy
from typing import Any

from .status import bad_request, unsupported_media_type

__all__ = ["apply_patch", "json_patch", "merge_patch"]

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY = "application/apply-patch+yaml"


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result: dict[str, Any] = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise bad_request(f"invalid JSON pointer {path!r}")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _index(container: list[Any], token: str, *, adding: bool) -> int:
    if adding and token == "-":
        return len(container)
    if not token.isdigit():
        raise bad_request(f"invalid array index {token!r}")
    index = int(token)
    if index > len(container) or (not adding and index == len(container)):
        raise bad_request(f"array index {index} out of bounds")
    return index


def _parent(doc: Any, parts: list[str], op: str) -> Any:
    node = doc
    for token in parts[:-1]:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, adding=False)]
        else:
            raise bad_request(f"{op} operation does not apply: doc is missing path")
    return node


def _get(doc: Any, path: str, op: str) -> Any:
    parts = _pointer(path)
    if not parts:
        return doc
    parent = _parent(doc, parts, op)
    token = parts[-1]
    if isinstance(parent, dict) and token in parent:
        return parent[token]
    if isinstance(parent, list):
        return parent[_index(parent, token, adding=False)]
    raise bad_request(f"{op} operation does not apply: doc is missing path: {path!r}")


def _remove(doc: Any, path: str, op: str) -> Any:
    parts = _pointer(path)
    if not parts:
        raise bad_request("cannot remove the whole document")
    parent = _parent(doc, parts, op)
    token = parts[-1]
    if isinstance(parent, dict) and token in parent:
        return parent.pop(token)
    if isinstance(parent, list):
        return parent.pop(_index(parent, token, adding=False))
    raise bad_request(f"{op} operation does not apply: doc is missing path: {path!r}")


def _add(doc: Any, path: str, value: Any, *, replace: bool) -> Any:
    op = "replace" if replace else "add"
    parts = _pointer(path)
    if not parts:
        return value
    parent = _parent(doc, parts, op)
    token = parts[-1]
    if isinstance(parent, dict):
        if replace and token not in parent:
            raise bad_request(f"replace operation does not apply: doc is missing key: {path!r}")
        parent[token] = value
    elif isinstance(parent, list):
        index = _index(parent, token, adding=not replace)
        if replace:
            parent[index] = value
        else:
            parent.insert(index, value)
    else:
        raise bad_request(f"{op} operation does not apply: doc is missing path: {path!r}")
    return doc


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902: apply ``add``/``remove``/``replace``/``move``/``copy``/``test`` in order."""
    if not isinstance(operations, list):
        raise bad_request("a JSON patch must be a list of operations")
    doc = copy.deepcopy(target)
    for operation in operations:
        if not isinstance(operation, dict) or "op" not in operation or "path" not in operation:
            raise bad_request(f"invalid JSON patch operation {operation!r}")
        op, path = operation["op"], operation["path"]
        if op in ("add", "replace"):
            doc = _add(doc, path, copy.deepcopy(operation.get("value")), replace=op == "replace")
        elif op == "remove":
            _remove(doc, path, op)
        elif op == "move":
            value = _remove(doc, operation["from"], op)
            doc = _add(doc, path, value, replace=False)
        elif op == "copy":
            value = copy.deepcopy(_get(doc, operation["from"], op))
            doc = _add(doc, path, value, replace=False)
        elif op == "test":
            if _get(doc, path, op) != operation.get("value"):
                raise bad_request(f"testing value {path} failed")
        else:
            raise bad_request(f"unexpected kind of JSON patch operation {op!r}")
    return doc


def apply_patch(content_type: str, target: dict[str, Any], patch: Any) -> dict[str, Any]:
    """Apply a PATCH body of the given Content-Type to a copy of ``target``."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media in (MERGE, STRATEGIC):
        if not isinstance(patch, dict):
            raise bad_request("a merge patch must be a JSON object")
        result = merge_patch(target, patch)
    elif media == JSON_PATCH:
        result = json_patch(target, patch)
    else:
        # Server-side apply (application/apply-patch+yaml) needs field ownership tracking,
        # which the emulator does not do; it says so instead of guessing.
        raise unsupported_media_type(content_type)
    if not isinstance(result, dict):
        raise bad_request("the patched object is not a JSON object")
    return result
