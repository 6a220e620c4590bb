"""``auth-type: basic``: reading its annotations, and its Secret's users into the policy.

As in ingress-nginx: ``auth-secret`` names the Secret (``name`` or ``namespace/name``, in
the Ingress's own namespace), ``auth-secret-type`` says how it lists users (``auth-file``:
an htpasswd file in its ``auth`` key; ``auth-map``: a key per user, the hash its value),
``auth-realm`` is the realm of the 401's challenge (ingress-nginx's default: empty).

It protects routes, so it fails closed: a malformed annotation, ``auth-type: digest``
(not implemented), ``auth-secret`` without ``auth-type``, a Secret that is missing, that
lacks its ``auth`` key or lists no usable user make the Ingress's routes answer 503 with
the reason (``Policy.refused``). A single unusable line is skipped with a warning naming
its number. The build reads the Secret (``BasicAuth.users``); the proxy checks passwords
(``proxy/basic_auth.py``).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from fastroute.ingress.htpasswd import Users, read_auth_map, read_htpasswd
from fastroute.ingress.model import BasicAuth, Policy, Problem
from fastroute.ingress.syntax import Malformed

__all__ = [
    "AUTH_FILE_KEY",
    "SECRET_TYPES",
    "basic_auth_of",
    "basic_auth_policy",
    "read_auth_type",
    "read_realm",
    "read_secret_name",
    "read_secret_type",
]

AUTH_FILE_KEY = "auth"  # the htpasswd file's key in an auth-file Secret
SECRET_TYPES = ("auth-file", "auth-map")
# a Secret's name: a DNS subdomain (RFC 1123), as the API server requires
_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
# the realm goes into a quoted-string: visible characters and spaces (ingress-nginx
# allows letters, digits, spaces and some punctuation)
_REALM = re.compile(r"[ -~\x80-\xff]*")


def read_auth_type(text: str) -> str:
    """``basic``; ``digest`` is refused with its reason (fastroute does not implement it)."""
    value = text.strip().lower()
    if value == "digest":
        raise Malformed("digest authentication is not supported by fastroute; use auth-type: basic")
    if value != "basic":
        raise Malformed(f"expected basic (or digest, not supported), got {text!r}")
    return value


def read_secret_name(text: str, namespace: str) -> tuple[str, str]:
    """``name`` or ``namespace/name`` of a Secret in the Ingress's own namespace."""
    value = text.strip()
    secret_namespace, _, name = value.rpartition("/")
    secret_namespace = secret_namespace or namespace
    if not _NAME.fullmatch(name) or not _NAME.fullmatch(secret_namespace):
        raise Malformed(f"expected 'namespace/name' or 'name' of a Secret, got {text!r}")
    if namespace and secret_namespace != namespace:
        raise Malformed(
            f"Secret {value!r} is in another namespace than the Ingress ({namespace}); "
            "only Secrets of the Ingress's own namespace can be used"
        )
    return secret_namespace, name


def read_secret_type(text: str) -> str:
    """``auth-file`` or ``auth-map``."""
    value = text.strip()
    if value not in SECRET_TYPES:
        raise Malformed(f"expected auth-file or auth-map, got {text!r}")
    return value


def read_realm(text: str) -> str:
    """Any text on one line (it is quoted in the challenge)."""
    if not _REALM.fullmatch(text):
        raise Malformed(f"a realm is one line of visible characters, got {text!r}")
    return text


def basic_auth_of(members: Mapping[str, Any], annotation: str) -> BasicAuth:
    """The basic auth the annotations set (``type``, ``secret``, ``secret_type``,
    ``realm``; ``annotation``: the one naming the Secret, as written): its Secret is
    read by the build. One without ``auth-type`` or without ``auth-secret`` carries its
    problem, and lets nobody in until it is fixed."""
    problem = ""
    if "type" not in members:
        problem = "auth-secret is set without a usable auth-type: basic"
    elif "secret" not in members:
        problem = "auth-type: basic needs auth-secret, the Secret listing the users"
    return BasicAuth(
        members.get("secret"),
        members.get("secret_type", "auth-file"),
        members.get("realm", ""),
        problem=problem,
        annotation=annotation,
    )


def basic_auth_policy(
    ingress: str, policy: Policy, secret: Mapping[str, Any] | None
) -> tuple[Policy, list[Problem]]:
    """``policy`` with the users of its basic auth's Secret (``secret``, None when it is
    not there), and the problems to report: refused (503) when nobody could pass."""
    auth = policy.basic_auth
    if auth is None:
        return policy, []
    where = (
        f"metadata.annotations[{auth.annotation}]" if auth.annotation else "metadata.annotations"
    )
    users: Users = ()
    warnings: list[str] = []
    reason = auth.problem
    if not reason:
        assert auth.secret is not None
        shown = f"Secret {auth.secret[0]}/{auth.secret[1]}"
        if secret is None:
            reason = f"{shown} not found"
        else:
            found = _users(secret, auth.secret_type)
            if isinstance(found, str):
                reason = f"{shown}: {found}"
            else:
                users, warnings = found
                warnings = [f"{shown}: {warning}" for warning in warnings]
                if not users:
                    reason = f"{shown} lists no usable user"
    problems = [Problem("Ingress", ingress, where, w, warning=True) for w in warnings]
    if reason:
        reason = f"basic auth: {reason}; the Ingress's routes answer 503"
        problems.append(Problem("Ingress", ingress, where, reason))
        refused = f"{policy.refused}; {reason}" if policy.refused else reason
        return replace(policy, refused=refused), problems
    return replace(policy, basic_auth=replace(auth, users=users)), problems


def _users(secret: Mapping[str, Any], secret_type: str) -> tuple[Users, list[str]] | str:
    """The users a Secret lists, with warnings, or why it lists none."""
    values = _values(secret)
    if isinstance(values, str):
        return values
    if secret_type == "auth-map":
        if not values:
            return "it has no keys (auth-map: one key per user)"
        return read_auth_map(values)
    text = values.get(AUTH_FILE_KEY)
    if text is None:
        return f"it has no {AUTH_FILE_KEY!r} key (auth-file: the htpasswd file)"
    return read_htpasswd(text)


def _values(secret: Mapping[str, Any]) -> dict[str, bytes] | str:
    """A Secret's values decoded (``stringData`` wins over base64 ``data``), or why not."""
    values: dict[str, bytes] = {}
    data = secret.get("data")
    for key, encoded in (data if isinstance(data, Mapping) else {}).items():
        if not isinstance(encoded, str):
            return f"data.{key} must be a base64 string"
        try:
            values[str(key)] = base64.b64decode("".join(encoded.split()), validate=True)
        except (binascii.Error, ValueError) as error:
            return f"data.{key} is not valid base64: {error}"
    plain = secret.get("stringData")
    for key, text in (plain if isinstance(plain, Mapping) else {}).items():
        if isinstance(text, str):
            values[str(key)] = text.encode("utf-8")
    return values
