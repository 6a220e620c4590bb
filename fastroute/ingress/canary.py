"""Canary Ingresses: their annotations, merging one onto its main rule, and saying so.

A canary Ingress (``canary: "true"``) names a host and path another Ingress already
routes. It adds no route of its own: its backend joins the main rule's as the second
target of a ``Split``, and its ``canary-*`` annotations say which requests go there
(``Canary``). As in ingress-nginx, the canary is served under the main Ingress's policy
(timeouts, headers, rewrites, access lists...); of its own annotations only the canary
rules and the ones that shape its upstream (``CANARY_OWN_FIELDS``) count, and the others
are reported as ignored. Unlike ingress-nginx, which attaches the canary to the main
rule's *Service* (so every rule of every Ingress sending to that Service gets it), a
canary here applies to the host and path it names, and nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import re2

from fastroute.ingress.model import Backend, Canary, Policy, Split, Target
from fastroute.ingress.syntax import Malformed, read_header_name, read_header_value, read_int

__all__ = [
    "CANARY_OWN_FIELDS",
    "canary_fields",
    "canary_rules",
    "compile_pattern",
    "describe_canary",
    "read_cookie_name",
    "read_header",
    "read_header_pattern",
    "read_header_value_text",
    "read_pattern",
    "read_weight",
    "read_weight_total",
    "with_canary",
]

# the Policy fields a canary Ingress keeps from its own annotations: what shapes its
# upstream rather than the route (ingress-nginx also keeps load-balance, upstream-hash-by
# and the session affinity annotations)
# how a canary picks among its own endpoints is its own, as in ingress-nginx
BALANCING_FIELDS = (
    "load_balance",
    "upstream_hash",
    "upstream_hash_subset",
    "upstream_hash_subset_size",
    "affinity",
)
CANARY_OWN_FIELDS = frozenset({"canary", "service_upstream", *BALANCING_FIELDS})
_BEHAVIOR = "affinity.canary_behavior"
INHERITED = "ignored on a canary Ingress: the main Ingress's applies to its requests"


# parsers for the annotation table: text -> value, or Malformed naming the value and why


def read_weight(text: str, _: object = None) -> int:
    return read_int(text, low=0)


def read_weight_total(text: str, _: object = None) -> int:
    return read_int(text, low=1)


def read_header(text: str, _: object = None) -> str:
    return read_header_name(text.strip())


def read_cookie_name(text: str, _: object = None) -> str:
    try:
        return read_header_name(text.strip())
    except Malformed:
        raise Malformed(
            f"{text!r} is not a cookie name (letters, digits and !#$%&'*+-.^_`|~)"
        ) from None


def read_header_value_text(text: str, _: object = None) -> str:
    value = read_header_value(text)
    if not value:
        raise Malformed("expected a header value, got ''")
    return value


def compile_pattern(pattern: str) -> Any:
    """An RE2 pattern compiled (linear time: no header value can stall the proxy).

    Raises:
        re2.error: RE2 cannot take it; ``args[0]`` says why.
    """
    options = re2.Options()
    options.log_errors = False  # the reason goes into the error, not to stderr
    return re2.compile(pattern, options)


def read_pattern(text: str) -> str:
    """``text`` if RE2 compiles it, else Malformed with RE2's reason."""
    try:
        compile_pattern(text)
    except re2.error as error:
        why = error.args[0] if error.args else "unknown"
        why = why.decode("utf-8", "replace") if isinstance(why, bytes) else str(why)
        raise Malformed(f"{text!r} is not a regular expression RE2 accepts: {why}") from None
    return text


def read_header_pattern(text: str, _: object = None) -> str:
    if not text:
        raise Malformed("expected a regular expression, got ''")
    return read_pattern(text)


def canary_rules(
    members: Mapping[str, tuple[str, Any]], notes: list[tuple[str, str, bool]]
) -> Canary | None:
    """The ``Canary`` of an Ingress's ``canary-*`` annotations (``members``: field ->
    (annotation, value)), or None when ``canary`` is not ``"true"``; what has no
    effect is noted."""
    values = {member: value for member, (_, value) in members.items()}
    if not values.pop("enabled", False):
        for member, (key, _) in members.items():
            if member != "enabled":
                notes.append((key, 'has no effect without canary: "true"; ignored', True))
        return None
    if "header" not in values:
        for member in ("header_value", "header_pattern"):
            if member in values:
                notes.append((members[member][0], "has no effect without canary-by-header", True))
                del values[member]
    if "header_value" in values and "header_pattern" in values:
        key = members["header_pattern"][0]
        notes.append((key, "canary-by-header-value is set and wins; ignored", True))
        del values["header_pattern"]
    rules = Canary(**values)
    if rules.weight > rules.weight_total:
        key = members["weight"][0]
        reason = (
            f"{rules.weight} is more than canary-weight-total {rules.weight_total}: every "
            "request the header and cookie rules leave goes to the canary"
        )
        notes.append((key, reason, True))
    return rules


def canary_fields(
    fields: dict[str, Any],
    values: Mapping[str, tuple[str, Any]],
    notes: list[tuple[str, str, bool]],
) -> dict[str, Any]:
    """A canary Ingress's Policy fields: its own (``CANARY_OWN_FIELDS``), the rest at
    their defaults; each annotation setting one of the others is noted as ignored."""
    for field_name, (key, _) in values.items():
        if field_name.partition(".")[0] not in CANARY_OWN_FIELDS:
            notes.append((key, INHERITED, True))
    own = {name: value for name, value in fields.items() if name in CANARY_OWN_FIELDS}
    behavior = values.get(_BEHAVIOR)
    if behavior is not None:
        # on a canary it says whose affinity the canary keeps, with or without its own
        notes[:] = [note for note in notes if note[0] != behavior[0] or not note[2]]
        if behavior[1] == "legacy":
            own["canary"] = replace(own["canary"], sticky=False)
    return own


def with_canary(main: Target, canary: Backend, canary_policy: Policy) -> Target:
    """The main rule's target with a canary merged onto it.

    Both targets are served under the main rule's policy with the canary rules added
    (so the route takes ``decide``'s annotated path), its TLS and error backend, and in
    its Ingress's name (logs and metrics tell the canary by its Service, as
    ingress-nginx's do). The canary's backend is its own, and so is how it picks among
    its endpoints (load-balance, upstream-hash-by, affinity); with
    ``affinity-canary-behavior: sticky`` (the default) it takes the main route's session
    affinity, so that a session begun on either backend stays there.
    """
    rules = canary_policy.canary
    assert rules is not None
    policy: Policy = replace(main.policy, canary=rules)
    own = {name: getattr(canary_policy, name) for name in BALANCING_FIELDS}
    if rules.sticky:
        own["affinity"] = main.policy.affinity
    weight = min(rules.weight, rules.weight_total)
    to_main = replace(main, policy=policy, split=None)
    if any(getattr(policy, name) != value for name, value in own.items()):
        policy = replace(policy, **own)  # else one policy object: its derived parts are shared
    to_canary = replace(to_main, backend=canary, policy=policy)
    split = Split((to_main, to_canary), (rules.weight_total - weight, weight))
    return replace(to_main, split=split)


def describe_canary(target: Target) -> list[str]:
    """What a route does with its canary, one line per rule, in the order they apply
    (for ``explain`` and ``check``); empty for a route without one."""
    split, rules = target.split, target.policy.canary
    if split is None or rules is None or len(split.targets) != 2:
        return []
    main, canary = split.targets
    lines = [f"canary: {canary.backend.name} beside {main.backend.name}"]
    sessions = [
        f"{which} ({t.policy.affinity.name} cookie)"
        for which, t in (("main", main), ("canary", canary))
        if t.policy.affinity is not None
    ]
    if sessions:
        lines.append(f"session affinity: a session of {' or '.join(sessions)} stays there")
    if rules.header:
        if rules.header_value:
            lines.append(
                f"header {rules.header}: {rules.header_value!r} -> canary; any other value "
                "-> the rules below"
            )
        elif rules.header_pattern:
            lines.append(
                f"header {rules.header}: matching {rules.header_pattern!r} (RE2, anywhere "
                "in the value) -> canary; any other value -> the rules below"
            )
        else:
            lines.append(
                f"header {rules.header}: 'always' -> canary, 'never' -> main, any other "
                "value -> the rules below"
            )
    if rules.cookie:
        lines.append(
            f"cookie {rules.cookie}: 'always' -> canary, 'never' -> main, any other value "
            "-> the weight"
        )
    share = split.weights[1] / split.total
    lines.append(
        f"weight: {split.weights[1]} in {split.total} ({share:.1%}) -> canary, the rest -> main"
    )
    return lines
