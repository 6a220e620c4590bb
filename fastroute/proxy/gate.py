"""Access checks that must wait for something before a request is forwarded.

``decide`` is pure and synchronous; a check that verifies a password hash (milliseconds
of CPU, so off the event loop) or asks an auth service (a subrequest) cannot run there.
A route whose policy is ``gated`` gets its ``Forward`` plan from ``decide`` as usual, and
the server then asks ``Gate.admit`` before it reads the body or takes an upstream
connection: the checks run in ingress-nginx's access-phase order, the first refusal is
the answer, and what the passed checks add (headers for the upstream, cookies for the
client) is merged into the plan. Any failure to decide is a refusal: fail closed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fastroute.ingress.external_auth import ExternalAuth
from fastroute.ingress.model import Policy
from fastroute.proxy.basic_auth import BasicAuthCheck
from fastroute.proxy.cors import cors_rules
from fastroute.proxy.decide import Answer, Forward, RouteFields
from fastroute.proxy.external_auth import ExternalAuthCheck, Outcome, Request, verdict
from fastroute.proxy.state import ProxyState

__all__ = ["ADMITTED", "Admitted", "Asking", "Gate", "admitted_plan"]


@dataclass(slots=True)
class Asking:
    """The request as an access check sees it (no body: checks never read one).

    Made for every gated request and never changed after: not frozen, because a frozen
    dataclass's ``__init__`` costs several times as much.
    """

    method: bytes
    target: bytes  # as the client sent it (path and query, or absolute form)
    host: bytes  # the host the request is for (the plan's)
    scheme: str  # "http" or "https": the listener it came in on
    client: str  # the real client address
    headers: Sequence[tuple[bytes, bytes]]  # every field as received, names lower case
    header: Callable[[bytes], bytes | None]  # one field's value by lower-case name
    ingress: str = ""  # the route's Ingress, "namespace/name" (metrics, logs)
    path: str = ""  # the route's rule path as written (no-auth-locations, cache keys)


@dataclass(frozen=True, slots=True)
class Admitted:
    """What passed checks add to the forwarded request and to its response."""

    upstream_lines: bytes = b""  # whole "Name: value\r\n" lines for the upstream request
    upstream_drop: frozenset[bytes] | None = None  # client fields they replace (lower case)
    client_lines: bytes = b""  # whole lines added to the response (Set-Cookie...)
    success_lines: bytes = b""  # the same, only if its status is a success (ADD_HEADER_STATUSES)

    def __add__(self, other: Admitted) -> Admitted:
        if other is ADMITTED:
            return self
        if self is ADMITTED:
            return other
        return Admitted(
            self.upstream_lines + other.upstream_lines,
            _union(self.upstream_drop, other.upstream_drop),
            self.client_lines + other.client_lines,
            self.success_lines + other.success_lines,
        )


ADMITTED = Admitted()


def _union(a: frozenset[bytes] | None, b: frozenset[bytes] | None) -> frozenset[bytes] | None:
    if a is None:
        return b
    return a if b is None else a | b


def _merged(fields: RouteFields, admitted: Admitted) -> RouteFields:
    return dataclasses.replace(
        fields,
        upstream_lines=fields.upstream_lines + admitted.upstream_lines,
        upstream_drop=_union(fields.upstream_drop, admitted.upstream_drop),
        client_lines=fields.client_lines + admitted.client_lines,
        success_lines=fields.success_lines + admitted.success_lines,
    )


# a route's fields and a cached auth answer's additions are the same objects request after
# request: their merge is made once per pair (both held, so their ids stay theirs)
_MERGES: dict[tuple[int, int], tuple[RouteFields, Admitted, RouteFields]] = {}
_MERGES_SIZE = 4096


def admitted_plan(plan: Forward, admitted: Admitted) -> Forward:
    """``plan`` with what the checks add merged into its fields."""
    if admitted is ADMITTED:
        return plan
    fields = plan.fields
    key = (id(fields), id(admitted))
    found = _MERGES.get(key)
    if found is None or found[0] is not fields or found[1] is not admitted:
        if len(_MERGES) >= _MERGES_SIZE:
            _MERGES.clear()
        found = _MERGES[key] = (fields, admitted, _merged(fields, admitted))
    plan.fields = found[2]
    return plan


def _repeated(asking: Asking, name: bytes) -> bool:
    """Whether the request has more than one field ``name`` (lower case)."""
    return sum(1 for field, _ in asking.headers if field == name) > 1


def _with_cors(refusal: Answer, policy: Policy, asking: Asking) -> Answer:
    """A refusal with the route's CORS fields (ingress-nginx sets them on its 401s), so
    that a page can read the status instead of seeing a CORS failure."""
    if policy.cors is None:
        return refusal
    lines = cors_rules(policy.cors).response_headers(asking.header(b"origin"))
    return dataclasses.replace(refusal, lines=refusal.lines + lines)


class Gate:
    """Runs a gated route's checks; one per proxy (the checks keep caches and pools)."""

    def __init__(self, state: ProxyState) -> None:
        self.state = state
        metrics = state.metrics
        # auth-type: basic (its cache, its threads)
        self.basic_auth = BasicAuthCheck(count=metrics.basic_auth_check if metrics else None)
        self.external_auth = ExternalAuthCheck(state)  # auth-url: its pools and cache
        # what each 2xx auth answer adds, by the answer's identity (held: ids stay theirs)
        self._admitted: dict[int, tuple[Outcome, ExternalAuth, Admitted]] = {}

    async def admit(self, policy: Policy, asking: Asking) -> Admitted | Answer:
        """What the checks of ``policy`` add to the request, or the answer refusing it."""
        admitted = ADMITTED
        if policy.basic_auth is not None:
            authorization = asking.header(b"authorization")
            if authorization is not None and _repeated(asking, b"authorization"):
                # nginx refuses it too: the upstream could read the one nobody checked
                return Answer(400, reason="basic auth: more than one Authorization field")
            refusal = await self.basic_auth.check(policy.basic_auth, authorization)
            if refusal is not None:
                return _with_cors(refusal, policy, asking)
        auth = policy.external_auth
        if auth is not None and auth.applies_to(asking.path):
            found = await self._external_auth(policy, asking)
            if isinstance(found, Answer):
                return _with_cors(found, policy, asking)
            admitted = admitted + found
        return admitted

    async def _external_auth(self, policy: Policy, asking: Asking) -> Admitted | Answer:
        """Ask the route's auth service (``auth-url``); its answer, or what it adds."""
        auth = policy.external_auth
        assert auth is not None
        request = Request(
            asking.method,
            asking.target,
            asking.header(b"host") or asking.host,
            asking.scheme,
            asking.client,
            asking.headers,
        )
        outcome = await self.external_auth.ask(auth, policy, request, asking.ingress, asking.path)
        if 200 <= outcome.status < 300:
            # a cached answer admits request after request: what it adds is made once
            known = self._admitted.get(id(outcome))
            if known is not None and known[0] is outcome and known[1] is auth:
                return known[2]
        found = verdict(auth, outcome, request)
        if isinstance(found, Answer):
            return found
        upstream, cookies = found
        drop = frozenset(name.lower().encode("latin-1") for name in auth.response_headers)
        if auth.always_set_cookie:
            admitted = Admitted(upstream, drop or None, cookies)
        else:
            admitted = Admitted(upstream, drop or None, success_lines=cookies)
        if len(self._admitted) >= _MERGES_SIZE:
            self._admitted.clear()
        self._admitted[id(outcome)] = (outcome, auth, admitted)
        return admitted

    def close(self) -> None:
        """Close what the checks hold open (pooled connections): the proxy is draining."""
        self.external_auth.close()
