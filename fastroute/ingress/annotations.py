"""Per-route policy from Ingress annotations, under ingress-nginx's names.

Users leaving ingress-nginx bring its annotations. The ones fastroute implements are
read under both the ``nginx.ingress.kubernetes.io/`` and the ``fastroute.io/`` prefix.
Every other ingress-nginx annotation is reported as ignored, so that a migration does
not lose behaviour without anyone noticing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastroute.ingress.model import Policy

__all__ = ["PREFIXES", "read_policy"]

PREFIXES = ("nginx.ingress.kubernetes.io/", "fastroute.io/")
_BOOLEANS = {"true": True, "false": False}


def _setting(annotations: Mapping[str, Any], name: str) -> tuple[str, str] | None:
    """(annotation, value) for the first prefix that sets ``name``."""
    for prefix in PREFIXES:
        value = annotations.get(prefix + name)
        if value is not None:
            return prefix + name, str(value)
    return None


def read_policy(annotations: Mapping[str, Any]) -> tuple[Policy, list[tuple[str, str, bool]]]:
    """The policy the annotations ask for, and (annotation, reason, is_warning) notes.

    A malformed value is a rejection of that annotation (the default applies); an
    annotation fastroute does not implement is a warning.
    """
    notes: list[tuple[str, str, bool]] = []
    flags: dict[str, bool] = {}
    for setting in ("ssl-redirect", "force-ssl-redirect"):
        found = _setting(annotations, setting)
        if found is None:
            continue
        key, value = found
        parsed = _BOOLEANS.get(value.strip().lower())
        if parsed is None:
            notes.append((key, f"expected 'true' or 'false', got {value!r}", False))
        else:
            flags[setting] = parsed
    rewrite = _setting(annotations, "rewrite-target")
    rewrite_target = None
    if rewrite is not None:
        key, value = rewrite
        if "$" in value:
            notes.append(
                (
                    key,
                    f"{value!r} refers to regex captures, which need use-regex paths; fastroute "
                    "does not implement them, so nothing is rewritten",
                    False,
                )
            )
        elif value.startswith("/"):
            rewrite_target = value
        else:
            notes.append((key, f"must be a path starting with '/', got {value!r}", False))
    known = {"ssl-redirect", "force-ssl-redirect", "rewrite-target"}
    for key in annotations:
        for prefix in PREFIXES:
            if key.startswith(prefix) and key[len(prefix) :] not in known:
                notes.append((key, "not implemented by fastroute; ignored", True))
    policy = Policy(
        ssl_redirect=flags.get("ssl-redirect", True),
        force_ssl_redirect=flags.get("force-ssl-redirect", False),
        rewrite_target=rewrite_target,
    )
    return policy, notes
