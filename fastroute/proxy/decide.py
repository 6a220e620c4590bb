"""Per request: forward it, redirect it, or answer it with an error. No I/O.

The order is ingress-nginx's:

1. Read the request target and the host. An absolute-form target's authority replaces the
   ``Host`` header (RFC 9112 §3.2.2), for routing, redirects and the Host sent upstream.
2. Match the host and the normalized path against the config's router. With no match and
   no default backend, answer 404. The path forwarded is the one matched
   (``targets.forward_path``), so the upstream never reads a path routing did not see.
3. A plain-HTTP request for a host listed under TLS is redirected to HTTPS with 308,
   which keeps the method and body, unless the route's Ingress says ``ssl-redirect:
   "false"``. ``force-ssl-redirect`` redirects even without TLS. ACME HTTP-01 challenges
   (``/.well-known/acme-challenge/``) are never redirected, so certificates can be issued
   before HTTPS works.
4. A route whose Service has no endpoints is answered 503, with the reason in the log.
5. ``rewrite-target`` replaces the forwarded path (nginx's ``rewrite`` replaces the whole
   URI when the route's path matches); the query is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastroute.errors import BadRequestError, NoRouteError, ServiceUnavailableError
from fastroute.ingress.model import RouteConfig, Target
from fastroute.proxy.targets import parse_target, simple_origin

__all__ = ["ACME_CHALLENGE", "Decision", "Forward", "Redirect", "decide"]

ACME_CHALLENGE = b"/.well-known/acme-challenge/"


@dataclass(frozen=True, slots=True)
class Forward:
    """Send the request to ``route.backend``, with this target."""

    route: Target
    host: bytes  # the host the request is for, as sent (for logs and X-Forwarded-Host)
    target: bytes  # path and query to send upstream
    # ``host`` came from an absolute-form target: it replaces the client's Host field, so
    # the upstream is told the host the route was chosen on (RFC 9112 §3.2.2)
    host_from_target: bool = False


@dataclass(frozen=True, slots=True)
class Redirect:
    """Answer with a redirect instead of forwarding."""

    status: int
    location: bytes


Decision = Forward | Redirect


def _host_name(host: bytes) -> bytes:
    """``host[:port]`` without the port (IPv6 literals keep their brackets)."""
    if host.startswith(b"["):
        end = host.find(b"]")
        return host[: end + 1] if end > 0 else host
    return host.partition(b":")[0]


def decide(
    config: RouteConfig,
    *,
    method: bytes,
    target: bytes,
    host: bytes | None,
    scheme: str,
    https_port: int = 443,
) -> Decision:
    """What to do with one request.

    Args:
        config: the RouteConfig in force when the request arrived.
        method: the request method, e.g. ``b"GET"``.
        target: the request target as sent (``b"/path?query"`` or absolute-form).
        host: the ``Host`` header's value, or None if there was none.
        scheme: ``"http"`` or ``"https"``: the listener the request came in on.
        https_port: the port HTTPS redirects point to; written in the Location unless 443.

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
    if route is None:
        raise NoRouteError(
            f"no rule for host {authority.decode('latin-1')!r} path "
            f"{match_path.decode('latin-1')!r} and no default backend"
        )
    assert isinstance(route, Target)
    query = b"?" + query_part if query_part else b""
    if (
        scheme == "http"
        and ((route.tls and route.policy.ssl_redirect) or route.policy.force_ssl_redirect)
        and not match_path.startswith(ACME_CHALLENGE)
    ):
        port = b"" if https_port == 443 else b":%d" % https_port
        return Redirect(308, b"https://" + _host_name(authority) + port + path + query)
    if not route.backend.usable():
        raise ServiceUnavailableError(
            route.backend.problem or f"{route.backend.name} has no endpoints"
        )
    if route.policy.rewrite_target is not None:
        path = route.policy.rewrite_target.encode("utf-8")
    return Forward(route=route, host=authority, target=path + query, host_from_target=from_target)
