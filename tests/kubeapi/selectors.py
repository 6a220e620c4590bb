"""Label and field selectors, parsed from the query string and matched against objects.

The grammar is the apimachinery one, minus the numeric ``gt``/``lt`` operators nobody here
uses: terms joined by ``,`` (AND); ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``,
``k notin (a,b)``, ``k`` (exists), ``!k`` (does not exist). Field selectors accept only
``=``, ``==`` and ``!=``, and only on the fields the resource type declares; anything else is
a 400, as on the real server.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from .resources import ResourceType, field_value
from .status import bad_request

__all__ = ["Selectable", "Selector", "parse_selector"]

_SET_TERM = re.compile(r"^\s*(!?)\s*([^\s!=<>(),]+)\s*(?:(in|notin)\s*\((.*)\))?\s*$")
_COMPARE_TERM = re.compile(r"^\s*([^\s!=<>(),]+)\s*(==|=|!=)\s*([^\s,()]*)\s*$")


class Selectable(Protocol):
    """What a selector looks at: an object's key, its labels, and on demand the object."""

    @property
    def key(self) -> tuple[str, str]: ...  # (namespace or "", name)

    @property
    def labels(self) -> Mapping[str, str] | None: ...

    @property
    def obj(self) -> Mapping[str, Any]: ...


@dataclass(frozen=True, slots=True)
class _Term:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!exists"
    values: frozenset[str]

    def matches(self, value: str | None) -> bool:
        if self.op == "exists":
            return value is not None
        if self.op == "!exists":
            return value is None
        if self.op in ("=", "in"):
            return value is not None and value in self.values
        # "!=" and "notin" also match objects without the key at all.
        return value is None or value not in self.values


@dataclass(frozen=True, slots=True)
class Selector:
    """A parsed label selector and field selector, applied together."""

    labels: tuple[_Term, ...] = ()
    fields: tuple[_Term, ...] = ()

    @property
    def empty(self) -> bool:
        """True when it selects everything (and the list may report remainingItemCount)."""
        return not self.labels and not self.fields

    def matches(self, candidate: Selectable) -> bool:
        """Whether a stored object is selected (decoded only for fields beyond its key)."""
        if self.labels:
            labels = candidate.labels or {}
            if not all(term.matches(labels.get(term.key)) for term in self.labels):
                return False
        obj: Mapping[str, Any] | None = None
        for term in self.fields:
            if term.key == "metadata.name":
                value = candidate.key[1]
            elif term.key == "metadata.namespace":
                value = candidate.key[0]
            else:
                obj = candidate.obj if obj is None else obj
                value = field_value(obj, term.key)
            if not term.matches(value):
                return False
        return True


def _split_terms(text: str) -> list[str]:
    # Commas separate terms except inside the parentheses of "in (...)".
    terms: list[str] = []
    depth = 0
    start = 0
    for index, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            terms.append(text[start:index])
            start = index + 1
    terms.append(text[start:])
    return [term for term in terms if term.strip()]


def _label_term(text: str) -> _Term:
    compare = _COMPARE_TERM.match(text)
    if compare:
        key, op, value = compare.groups()
        return _Term(key, "!=" if op == "!=" else "=", frozenset([value]))
    found = _SET_TERM.match(text)
    if not found:
        raise bad_request(f"unable to parse requirement: found {text.strip()!r}")
    negated, key, op, values = found.groups()
    if op:
        if negated:
            raise bad_request(f"unable to parse requirement: found {text.strip()!r}")
        items = frozenset(item.strip() for item in values.split(",") if item.strip())
        return _Term(key, op, items)
    return _Term(key, "!exists" if negated else "exists", frozenset())


def _field_term(text: str, rt: ResourceType) -> _Term:
    compare = _COMPARE_TERM.match(text)
    if not compare:
        raise bad_request(f"invalid field selector: {text.strip()!r}")
    key, op, value = compare.groups()
    if key not in ("metadata.name", "metadata.namespace", *rt.fields):
        raise bad_request(f'field label not supported: "{key}"')
    # Field values are always present (missing fields read as ""), so "!=" is a plain compare.
    return _Term(key, "!=" if op == "!=" else "=", frozenset([value]))


def parse_selector(label_selector: str, field_selector: str, rt: ResourceType) -> Selector:
    """Parse the ``labelSelector`` and ``fieldSelector`` query parameters for a resource type.

    Raises:
        ApiError: 400 BadRequest for a selector the real server would refuse.
    """
    labels = tuple(_label_term(term) for term in _split_terms(label_selector))
    fields = tuple(_field_term(term, rt) for term in _split_terms(field_selector))
    return Selector(labels, fields)
