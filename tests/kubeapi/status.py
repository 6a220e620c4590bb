"""``Status`` objects: how kube-apiserver reports every failure (and a few successes).

Clients branch on ``code`` and ``reason`` (lightkube raises ``ApiError`` carrying it, client-go
maps reasons to ``IsNotFound``/``IsConflict``/``IsResourceExpired``), so each constructor here
mirrors the apimachinery ``errors.New*`` function of the same name: same code, same reason, a
message phrased the same way, and ``details`` naming the object where the real one does.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ApiError",
    "already_exists",
    "bad_request",
    "conflict",
    "expired",
    "forbidden",
    "invalid",
    "method_not_supported",
    "not_found",
    "resource_not_found",
    "status",
    "success",
    "unauthorized",
    "unsupported_media_type",
]

# The message kube-apiserver (etcd3 storage) sends when a list continues from a compacted
# revision; clients only look at the code and reason, but people read the logs.
CONTINUE_EXPIRED = (
    "The provided continue parameter is too old to display a consistent list result. "
    "You can start a new list without the continue parameter, or use the continue token "
    "in this response to retrieve the remainder of the results. Continuing with the "
    "provided token results in an inconsistent list - objects that were created, "
    "modified, or deleted between the time the first chunk was returned and now may "
    "show up in the list."
)


def status(
    code: int,
    reason: str,
    message: str,
    *,
    details: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A failure ``Status`` as the server serializes it (``details`` only when it has one)."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": metadata or {},
        "status": "Failure",
        "message": message,
        "reason": reason,
    }
    if details is not None:
        body["details"] = details
    body["code"] = code
    return body


def success(name: str, group: str, plural: str, uid: str) -> dict[str, Any]:
    """What DELETE answers for most kinds: the object is gone (``details.kind`` is the plural)."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {"name": name, "group": group, "kind": plural, "uid": uid},
    }


class ApiError(Exception):
    """A request failed the way the real server fails it; ``body`` is the ``Status`` to send."""

    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(f"{body['code']} {body['reason']}: {body['message']}")
        self.body = body

    @property
    def code(self) -> int:
        """The HTTP status code (``Status.code``)."""
        return int(self.body["code"])

    @property
    def reason(self) -> str:
        """The machine-readable reason (``Status.reason``)."""
        return str(self.body["reason"])


def _qualified(plural: str, group: str) -> str:
    # "ingresses.networking.k8s.io", or just "services" for the core group.
    return f"{plural}.{group}" if group else plural


def _details(name: str, group: str, plural: str) -> dict[str, Any]:
    details: dict[str, Any] = {"name": name}
    if group:
        details["group"] = group
    details["kind"] = plural
    return details


def not_found(name: str, group: str, plural: str) -> ApiError:
    """``NewNotFound``: no object of that name."""
    message = f'{_qualified(plural, group)} "{name}" not found'
    return ApiError(status(404, "NotFound", message, details=_details(name, group, plural)))


def resource_not_found() -> ApiError:
    """The path names no resource the server serves (an unknown group, version or plural)."""
    message = "the server could not find the requested resource"
    return ApiError(status(404, "NotFound", message, details={}))


def already_exists(name: str, group: str, plural: str) -> ApiError:
    """``NewAlreadyExists``: create with a name that is taken."""
    message = f'{_qualified(plural, group)} "{name}" already exists'
    return ApiError(status(409, "AlreadyExists", message, details=_details(name, group, plural)))


def conflict(name: str, group: str, plural: str, why: str) -> ApiError:
    """``NewConflict``: a precondition (usually ``metadata.resourceVersion``) did not hold."""
    message = f'Operation cannot be fulfilled on {_qualified(plural, group)} "{name}": {why}'
    return ApiError(status(409, "Conflict", message, details=_details(name, group, plural)))


STALE = (
    "the object has been modified; please apply your changes to the latest version and try again"
)


def invalid(name: str, group: str, kind: str, field: str, value: object, why: str) -> ApiError:
    """``NewInvalid``: validation failed (422, ``details.causes`` names the field)."""
    detail = f"Invalid value: {value!r}: {why}"
    message = f'{kind}.{group or "core"} "{name}" is invalid: {field}: {detail}'
    cause = {"reason": "FieldValueInvalid", "message": detail, "field": field}
    details: dict[str, Any] = {"name": name, "kind": kind, "causes": [cause]}
    if group:
        details["group"] = group
    return ApiError(status(422, "Invalid", message, details=details))


def bad_request(message: str) -> ApiError:
    """``NewBadRequest``: the request itself cannot be understood."""
    return ApiError(status(400, "BadRequest", message))


def expired(message: str, *, continue_token: str | None = None) -> ApiError:
    """``NewResourceExpired``: 410 Gone with reason ``Expired`` (too old a resourceVersion)."""
    metadata = {"continue": continue_token} if continue_token else None
    return ApiError(status(410, "Expired", message, metadata=metadata))


def unauthorized() -> ApiError:
    """No credential, or one the server does not accept."""
    return ApiError(status(401, "Unauthorized", "Unauthorized"))


def forbidden(user: str, verb: str, plural: str, group: str, namespace: str | None) -> ApiError:
    """``NewForbidden`` as the RBAC authorizer words it."""
    where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
    message = (
        f'{_qualified(plural, group)} is forbidden: User "{user}" cannot {verb} '
        f'resource "{plural}" in API group "{group}"{where}'
    )
    details: dict[str, Any] = {"group": group, "kind": plural} if group else {"kind": plural}
    return ApiError(status(403, "Forbidden", message, details=details))


def method_not_supported(plural: str, group: str, method: str) -> ApiError:
    """``NewMethodNotSupported``: a verb the resource does not serve."""
    message = f"{method} is not supported on resources of kind {_qualified(plural, group)!r}"
    details: dict[str, Any] = {"group": group, "kind": plural} if group else {"kind": plural}
    return ApiError(status(405, "MethodNotAllowed", message, details=details))


def unsupported_media_type(content_type: str) -> ApiError:
    """A body (usually a patch) in a format the emulator does not speak."""
    message = (
        f"the body of the request was in an unknown format - accepted media types include: "
        f"{', '.join(PATCH_TYPES)} (got {content_type!r})"
    )
    return ApiError(status(415, "UnsupportedMediaType", message))


PATCH_TYPES = (
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
)
