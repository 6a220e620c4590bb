"""Per request: the whole plan for it, from the config in force. No I/O.

``decide`` returns either a ``Forward`` (the route, the target to send, the fields to set,
drop and add each way; the route's limits and timeouts are on ``route.policy``) or an
``Answer`` the proxy writes itself (a redirect, a CORS preflight, 403, 503...). The server
carries plans out and knows nothing of annotations. The order is ingress-nginx's (its
server block, then the location's rewrite, preaccess and access phases):

1. Read the request target and the host. An absolute-form target's authority replaces the
   ``Host`` header (RFC 9112 §3.2.2), for routing, redirects and the Host sent upstream.
2. Match the host and the normalized path. With no match, or only the catch-all default
   backend's, ``from-to-www-redirect`` of the other spelling of the host redirects (308,
   the client's port, path and query kept); else the catch-all, else 404. The path
   forwarded is the one matched (``targets.forward_path``), so the upstream never reads a
   path routing did not see.
3. An Ingress whose protection annotation was rejected answers 503: it is never served
   unprotected (ingress-nginx's "location denied"). A route on a host that asks for client
   certificates then judges the connection's (``client_certs``): 421 for a handshake made
   for another host, 400 (or a 302 to ``auth-tls-error-page``) for a certificate missing
   or refused, 403 for a subject ``auth-tls-match-cn`` does not match; what it forwards
   carries the verdict in the ``ssl-client-*`` fields.
4. ``app-root`` (302 for ``/``), ``permanent-redirect``/``temporal-redirect``, then a CORS
   preflight (204), then HTTPS: a plain-HTTP request for a host listed under TLS is
   redirected with 308 unless ``ssl-redirect: "false"``; ``force-ssl-redirect`` redirects
   without TLS too. ACME HTTP-01 challenges (``/.well-known/acme-challenge/``) are never
   redirected to HTTPS, so certificates can be issued before HTTPS works.
5. Rate and connection limits (per client address: 503 or the ConfigMap's status), then
   the deny and allow lists (403), judged on the real client address. With
   ``satisfy: any`` on a route with authentication, the lists' verdict is not a 403:
   a client they admit skips the authentication (``Forward.granted``), one they refuse
   must authenticate (nginx's ``satisfy any``). Authentication itself waits for the
   server (``gate.py``), after the plan.
6. A route whose Service has no endpoints goes to its ``default-backend`` if that has
   some (told ``X-Code: 503`` and the route's names, as ingress-nginx does:
   ``error_pages``), else is answered 503 with the reason in the log.
7. ``rewrite-target`` replaces the forwarded path (nginx's ``rewrite`` replaces the whole
   URI when the route's path matches), ``$1``..``$9`` the captures of a regex path
   (``ingress/regex.py``, which also says how regex and literal rules share a host); the
   query is kept, after the template's own unless the template ends with ``?``.
   ``x-forwarded-prefix`` may name captures too.
8. ``affinity`` reads its cookie, ``upstream-hash-by`` its key, from the request
   (``choosing.request_choice``, on the plan as ``choice``); the forwarder picks the
   endpoint with them.

Between 5 and 6, a route with a canary (``Target.split``) picks the canary or its main
backend (``canary.choose``: the header, the cookie, else the weight), as ingress-nginx's
balancer does; both are served under the main rule's policy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

from fastroute.errors import BadRequestError, NoRouteError, ServiceUnavailableError
from fastroute.ingress.model import Policy, RouteConfig, Target
from fastroute.ingress.regex import Groups, rewrite
from fastroute.proxy.access import Lists
from fastroute.proxy.canary import choose
from fastroute.proxy.choosing import Choice, request_choice
from fastroute.proxy.client_certs import (
    CLIENT_CERT_FIELDS,
    PeerCertificate,
    refusal,
    upstream_lines,
)
from fastroute.proxy.cors import CorsRules, cors_rules
from fastroute.proxy.error_pages import ERROR_FIELDS, error_fields
from fastroute.proxy.limiter import ClientLimits, Held
from fastroute.proxy.memo import ByIdentity
from fastroute.proxy.rewriting import with_prefix_captures
from fastroute.proxy.targets import parse_target, simple_origin

__all__ = ["ACME_CHALLENGE", "NO_FIELDS", "Answer", "Decision", "Forward", "RouteFields", "decide"]

ACME_CHALLENGE = b"/.well-known/acme-challenge/"
# the proxy's Strict-Transport-Security replaces an upstream's, as ingress-nginx's does
_HSTS_NAMES = frozenset({b"strict-transport-security"})


def _no_fields(name: bytes) -> bytes | None:
    return None


@dataclass(frozen=True, slots=True)
class RouteFields:
    """What a route adds to a forwarded request and its response: whole
    ``Name: value\r\n`` lines, the names of the fields they replace (lower case), and
    the Host sent instead (upstream-vhost). Worked out once per route policy and scheme;
    only Origin-dependent CORS fields make one per request."""

    upstream_lines: bytes = b""
    upstream_drop: frozenset[bytes] | None = None
    vhost: bytes = b""
    # what the route sets on the response (custom headers, CORS, HSTS)
    client_lines: bytes = b""
    client_drop: frozenset[bytes] | None = None
    # what the proxy's own error answer carries if forwarding fails (CORS, as on refusals)
    error_lines: bytes = b""
    # added only to a response whose status is in ADD_HEADER_STATUSES (an auth cookie)
    success_lines: bytes = b""


NO_FIELDS = RouteFields()
# the statuses nginx's add_header (without "always") adds its field to
ADD_HEADER_STATUSES = frozenset({200, 201, 204, 206, 301, 302, 303, 304, 307, 308})


@dataclass(slots=True)
class Forward:
    """Send the request to ``route.backend``, with this target and these fields.

    Made for every forwarded request, and never changed after: not frozen, because a
    frozen dataclass's ``__init__`` costs several times as much.
    """

    route: Target
    host: bytes  # the host the request is for, as sent (for logs and X-Forwarded-Host)
    target: bytes  # path and query to send upstream
    # ``host`` came from an absolute-form target: it replaces the client's Host field, so
    # the upstream is told the host the route was chosen on (RFC 9112 §3.2.2)
    host_from_target: bool = False
    fields: RouteFields = NO_FIELDS  # what the route adds each way
    # a limit-connections slot: released when the request is done
    held: Held | None = field(default=None, compare=False)
    # what affinity or upstream-hash-by read from the request (None: round robin or EWMA)
    choice: Choice | None = field(default=None, compare=False)
    # ``satisfy: any`` and the allow list admitted the client: the gate's checks are skipped
    granted: bool = field(default=False, compare=False)


@dataclass(frozen=True, slots=True)
class Answer:
    """Answer the request without forwarding it."""

    status: int
    headers: tuple[tuple[bytes, bytes], ...] = ()
    body: bytes = b""
    lines: bytes = b""  # more fields, as whole "Name: value\r\n" lines
    reason: str = field(default="", compare=False)  # for the access log and metrics
    # the route that answered (its Ingress in logs and metrics, its enable-access-log)
    route: Target | None = field(default=None, compare=False)


Decision = Forward | Answer


def _host_name(host: bytes) -> bytes:
    """``host[:port]`` without the port (IPv6 literals keep their brackets)."""
    if host.startswith(b"["):
        end = host.find(b"]")
        return host[: end + 1] if end > 0 else host
    return host.partition(b":")[0]


def redirect(status: int, location: bytes, reason: str, route: Target | None = None) -> Answer:
    return Answer(status, ((b"Location", location),), reason=reason, route=route)


def decide(
    config: RouteConfig,
    *,
    method: bytes,
    target: bytes,
    host: bytes | None,
    scheme: str,
    https_port: int = 443,
    client: str = "",
    header: Callable[[bytes], bytes | None] = _no_fields,
    limits: ClientLimits | None = None,
    now: float = 0.0,
    peer: PeerCertificate | None = None,
) -> Decision:
    """The plan for one request.

    Args:
        config: the RouteConfig in force when the request arrived.
        method: the request method, e.g. ``b"GET"``.
        target: the request target as sent (``b"/path?query"`` or absolute-form).
        host: the ``Host`` header's value, or None if there was none.
        scheme: ``"http"`` or ``"https"``: the listener the request came in on.
        https_port: the port HTTPS redirects point to; written in the Location unless 443.
        client: the real client address (allow and deny lists, rate limits).
        header: a request field's value by lower-case name (CORS reads ``Origin``).
        limits: the per-client rate and connection state (None: limits not enforced).
        now: the time, in seconds of any monotonic clock, for rate limits.
        peer: what the connection's TLS handshake said of a client certificate (None:
            it asked for none), for routes with ``auth-tls-*`` settings.

    Raises:
        BadRequestError: malformed target, or no host at all.
        NoRouteError: no rule matches and there is no default backend.
        ServiceUnavailableError: the route's Service has no endpoints.
    """
    simple = simple_origin(method, target)
    if simple is not None:  # the common case: nothing to decode or normalize
        path, query_part = simple
        match_path, authority, from_target = path, host, False
    else:
        parsed = parse_target(method, target)
        path, query_part, match_path = parsed.path, parsed.query, parsed.match_path
        authority, from_target = parsed.authority or host, bool(parsed.authority)
    if authority is None:
        raise BadRequestError("no Host header and no host in the request target")
    route = config.router.match(authority, match_path)
    groups: Groups | None = None
    # some Ingress has regex paths (ingress/regex.py), maybe on this request's host
    if config.regex is not None and (route is None or not route.trie_final):
        chosen = config.regex.choose(authority, match_path, route, config.router.default)
        if chosen is not None:
            route, groups = chosen
    if route is None or route is config.router.default:
        # the other spelling of a from-to-www-redirect host is a host of its own, not
        # one for the catch-all (ingress-nginx gives it a server block)
        www = _www_redirect(config, authority, match_path, path, query_part, scheme)
        if www is not None:
            return www
        if route is None:
            raise NoRouteError(
                f"no rule for host {authority.decode('latin-1')!r} path "
                f"{match_path.decode('latin-1')!r} and no default backend"
            )
    assert isinstance(route, Target)
    policy = route.policy
    query = b"?" + query_part if query_part else b""
    if not policy.plain and (policy.answers or (method == b"OPTIONS" and policy.cors is not None)):
        answer = _answered(policy, route, method, authority, path, query, scheme, header, peer)
        if answer is not None:
            return _secured(answer, route, scheme)
    if (
        scheme == "http"
        and ((route.tls and policy.ssl_redirect) or policy.force_ssl_redirect)
        and not match_path.startswith(ACME_CHALLENGE)
    ):
        port = b"" if https_port == 443 else b":%d" % https_port
        location = b"https://" + _host_name(authority) + port + path + query
        return redirect(308, location, "https", route)
    if policy.rewrite_target is not None:
        path, query = rewrite(policy.rewrite_target, groups, query)
    if policy.plain:
        if not route.backend.usable():
            raise ServiceUnavailableError(
                route.backend.problem or f"{route.backend.name} has no endpoints"
            )
        if scheme == "https" and route.tls and policy.hsts:
            return Forward(route, authority, path + query, from_target, _hsts_fields(policy))
        return Forward(route, authority, path + query, from_target)
    plan = _guarded(
        config, route, authority, path + query, from_target, scheme, client, header, limits, now
    )
    if isinstance(plan, Answer):
        return _secured(plan, route, scheme)
    serving = plan.route.policy  # a canary's may be its own
    if serving.affinity is not None or serving.upstream_hash is not None:
        plan.choice = request_choice(
            serving, target=target, host=authority, client=client, scheme=scheme, header=header
        )
    prefix = policy.forwarded_prefix
    if prefix is not None and "$" in prefix:  # captures of the regex path ($1..$9)
        lines = with_prefix_captures(plan.fields.upstream_lines, prefix, groups)
        plan.fields = dataclasses.replace(plan.fields, upstream_lines=lines)
    auth = policy.client_auth
    if auth is not None:  # what the client's certificate said, and nothing a client sent
        plan.fields = dataclasses.replace(
            plan.fields,
            upstream_lines=plan.fields.upstream_lines + upstream_lines(auth, peer, scheme),
            upstream_drop=_union(plan.fields.upstream_drop, CLIENT_CERT_FIELDS),
        )
    return plan


def _client_cert_refusal(policy: Policy, route: Target, status: int, reason: str) -> Answer:
    """A refused client certificate: the status, or a 302 to ``auth-tls-error-page``."""
    auth = policy.client_auth
    if status == 302 and auth is not None:
        return redirect(302, auth.error_page.encode(), reason, route)
    return Answer(status, reason=reason, route=route)


def _secured(answer: Answer, route: Target, scheme: str) -> Answer:
    """HSTS on what a TLS host's route answers itself over HTTPS too (ingress-nginx sets
    it in the location's header filter, which every response passes)."""
    if scheme == "https" and route.tls and route.policy.hsts:
        return dataclasses.replace(answer, lines=answer.lines + route.policy.hsts_line)
    return answer


def _www_redirect(
    config: RouteConfig,
    authority: bytes,
    match_path: bytes,
    path: bytes,
    query_part: bytes,
    scheme: str,
) -> Answer | None:
    """``from-to-www-redirect``: the other spelling of an unrouted host, if it asks for it."""
    host = _host_name(authority)
    name = host.lower()
    other = name[4:] if name.startswith(b"www.") else b"www." + name
    route = config.match(other, match_path)
    if (
        isinstance(route, Target)
        and route.policy.from_to_www
        and not route.policy.refused
        and route is not config.router.default
    ):
        query = b"?" + query_part if query_part else b""
        # the port the client reached the proxy on (ingress-nginx writes its own
        # listening port, which is the client's unless a Service maps it to another)
        port = authority[len(host) :]
        location = scheme.encode() + b"://" + other + port + path + query
        return redirect(308, location, "from-to-www-redirect")
    return None


def _answered(
    policy: Policy,
    route: Target,
    method: bytes,
    authority: bytes,
    path: bytes,
    query: bytes,
    scheme: str,
    header: Callable[[bytes], bytes | None],
    peer: PeerCertificate | None,
) -> Answer | None:
    """What the route answers itself before HTTPS redirects: ingress-nginx's rewrite phase,
    after the server's client certificate checks."""
    if policy.refused:
        raise ServiceUnavailableError(f"{route.ingress}: {policy.refused}")
    if policy.client_auth is not None:
        refused = refusal(policy.client_auth, peer, scheme)
        if refused is not None:
            return _client_cert_refusal(policy, route, *refused)
    if policy.app_root is not None and path == b"/":
        location = scheme.encode() + b"://" + authority + policy.app_root.encode() + query
        return redirect(302, location, "app-root", route)
    if policy.redirect is not None:
        status, url = policy.redirect
        return redirect(status, url.encode(), "redirect", route)
    if policy.cors is not None and method == b"OPTIONS":
        lines = cors_rules(policy.cors).preflight(method, header(b"origin"))
        if lines is not None:
            return Answer(204, lines=lines, reason="cors-preflight", route=route)
    return None


@dataclass(frozen=True, slots=True)
class _Fields:
    """What a route's policy adds to every request it forwards, derived once per policy
    (``_fields_of``): per request, only what depends on the request is left to do."""

    http: RouteFields  # over plain HTTP
    https: RouteFields  # over HTTPS to a TLS host (with HSTS)
    # the CORS rules whose fields depend on the Origin, if any (else they are in the above)
    cors: CorsRules | None
    cors_lines: bytes  # the CORS fields for any Origin ("*"), else b""
    lists: Lists | None  # the allow and deny lists, if any applies


def _union(a: frozenset[bytes] | None, b: frozenset[bytes] | None) -> frozenset[bytes] | None:
    if a is None:
        return b
    return a if b is None else a | b


def _fields(policy: Policy) -> _Fields:
    rules = cors_rules(policy.cors) if policy.cors is not None else None
    any_origin = rules is not None and rules.allows(None) and rules.response_headers(None)
    cors_lines = rules.response_headers(None) if rules is not None and any_origin else b""
    lines, drop = policy.response_lines, policy.response_drop
    if cors_lines:
        assert rules is not None
        lines, drop = lines + cors_lines, _union(drop, rules.names)
    http = RouteFields(
        upstream_lines=policy.upstream_lines,
        upstream_drop=policy.upstream_drop,
        vhost=policy.upstream_vhost.encode() if policy.upstream_vhost is not None else b"",
        client_lines=lines,
        client_drop=drop,
        error_lines=cors_lines,
    )
    https = http
    if policy.hsts:
        https = dataclasses.replace(
            http, client_lines=lines + policy.hsts_line, client_drop=_union(drop, _HSTS_NAMES)
        )
    return _Fields(
        http=http,
        https=https,
        cors=None if cors_lines or rules is None else rules,
        cors_lines=cors_lines,
        lists=Lists(policy.allow, policy.deny) if policy.allow is not None or policy.deny else None,
    )


def _hsts_fields(policy: Policy) -> RouteFields:
    """A plain route's fields over HTTPS: HSTS alone."""
    return _fields_of(policy).https


_fields_of: ByIdentity[Policy, _Fields] = ByIdentity(_fields, size=4096)


def _guarded(
    config: RouteConfig,
    route: Target,
    authority: bytes,
    target: bytes,
    from_target: bool,
    scheme: str,
    client: str,
    header: Callable[[bytes], bytes | None],
    limits: ClientLimits | None,
    now: float,
) -> Decision:
    """A route with annotations: its limits and lists, its endpoints, its fields."""
    policy = route.policy
    fields = _fields_of(policy)
    # ingress-nginx sets the CORS fields on the location's refusals too, so that a page
    # can read their status (and back off) instead of seeing a CORS failure
    rules = fields.cors
    cors_lines = rules.response_headers(header(b"origin")) if rules else fields.cors_lines
    held: Held | None = None
    limit = policy.limit
    if limit is not None and limits is not None:
        status = limits.admit(route.ingress, limit, client, now)
        if status is not None:
            return Answer(status, lines=cors_lines, reason="limit-rps", route=route)
        if limit.connections:
            held = limits.enter(route.ingress, limit, client)
            if held is None:
                return Answer(
                    limit.connections_status,
                    lines=cors_lines,
                    reason="limit-connections",
                    route=route,
                )
    lists = fields.lists
    granted = False  # satisfy any: the allow list admitted the client, no auth needed
    if lists is not None:
        permitted = lists.permits(client)
        if policy.satisfy_any and policy.gated:
            granted = permitted  # refused by the list: the authentication may still admit
        elif not permitted:
            if held is not None:
                held.release()
            return Answer(403, lines=cors_lines, reason="source-range", route=route)
    if route.split is not None:  # a canary: the header, the cookie, else the weights
        route = choose(route, header)
    extra = fields.https if scheme == "https" and route.tls else fields.http
    if not route.backend.usable():
        fallback = route.error_backend
        if policy.default_backend is not None and fallback is not None and fallback.usable():
            # ingress-nginx tells the default backend why it got the request
            extra = dataclasses.replace(
                extra,
                upstream_lines=extra.upstream_lines + error_fields(route, 503, header(b"accept")),
                upstream_drop=_union(extra.upstream_drop, ERROR_FIELDS),
            )
            route = dataclasses.replace(route, backend=fallback)
        else:
            if held is not None:
                held.release()
            problem = route.backend.problem or f"{route.backend.name} has no endpoints"
            if cors_lines:
                return Answer(503, lines=cors_lines, reason=problem, route=route)
            raise ServiceUnavailableError(problem)
    if rules is not None and cors_lines:  # fields that depend on the Origin
        extra = dataclasses.replace(
            extra,
            client_lines=extra.client_lines + cors_lines,
            client_drop=_union(extra.client_drop, rules.names),
            error_lines=cors_lines,
        )
    return Forward(route, authority, target, from_target, extra, held, granted=granted)
