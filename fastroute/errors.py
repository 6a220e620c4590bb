"""Exception classes for fastroute, all under one root.

Routing errors subclass :class:`ValueError` (the matcher contract says so), so
callers that only know the contract can catch ``ValueError``; callers that know
fastroute can catch the precise class and read its fields.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastroute.routes import Route

__all__ = [
    "AccessCheckError",
    "BadGatewayError",
    "BadRequestError",
    "FastrouteError",
    "GatewayTimeoutError",
    "HeadersTooLargeError",
    "InvalidRuleError",
    "LengthRequiredError",
    "MalformedValueError",
    "NoRouteError",
    "PayloadTooLargeError",
    "ProxyError",
    "ProxyProtocolError",
    "RequestTimeoutError",
    "RouteConflictError",
    "RouteError",
    "RouteNotFoundError",
    "ServiceUnavailableError",
]


class FastrouteError(Exception):
    """Root of every error fastroute raises on purpose."""


class RouteError(FastrouteError, ValueError):
    """A routing rule was rejected."""


def _describe(host: str, path: object, path_type: object) -> str:
    where = f"host {host!r}" if host else "any host"
    return f"{path_type} {path!r} on {where}"


class InvalidRuleError(RouteError):
    """A rule is malformed: bad host, bad path or unknown path type.

    Attributes:
        host, path, path_type: the rule as given.
        reason: what is wrong with it, in words.
    """

    def __init__(self, host: object, path: object, path_type: object, reason: str) -> None:
        self.host = host
        self.path = path
        self.path_type = path_type
        self.reason = reason
        super().__init__(f"invalid rule ({_describe(str(host), path, path_type)}): {reason}")


class RouteConflictError(RouteError):
    """A rule matches exactly the same requests as a rule already in the router.

    Two such rules would leave one of them unreachable, so the second is refused
    and the message names the first.

    Attributes:
        existing: the rule already in the router.
        new: the rule that was refused.
    """

    def __init__(self, existing: Route, new: Route) -> None:
        self.existing = existing
        self.new = new
        super().__init__(
            f"rule {_describe(new.host, new.path, new.path_type)} conflicts with existing rule "
            f"{_describe(existing.host, existing.path, existing.path_type)} "
            f"(backend {existing.backend!r}): both match the same requests"
        )


class RouteNotFoundError(FastrouteError, LookupError):
    """``Router.remove`` was asked for a rule the router does not hold."""

    def __init__(self, host: str, path: object, path_type: object) -> None:
        self.host = host
        self.path = path
        self.path_type = path_type
        super().__init__(f"no rule {_describe(host, path, path_type)} to remove")


class MalformedValueError(FastrouteError, ValueError):
    """An annotation or ConfigMap value that does not follow its syntax.

    The message names the value and says what was expected; the caller adds which
    annotation or key it came from.
    """


class ProxyProtocolError(FastrouteError, ValueError):
    """A connection's PROXY protocol header is missing, malformed or not to be believed.

    There is no HTTP status for it: the bytes before the header are not HTTP yet, so the
    connection is closed unanswered, as nginx and HAProxy do.

    Attributes:
        reason: what is wrong, in words.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"PROXY protocol: {reason}")


class ProxyError(FastrouteError):
    """A request the proxy answers with an error status instead of forwarding it.

    Each subclass carries the HTTP status it maps to, so the one place that writes
    responses does not need to know why. ``detail`` is for the log line; clients get
    only the status and its standard reason phrase.
    """

    status: int = 500

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(detail)


class BadRequestError(ProxyError):
    """Malformed request head, target or framing (including request smuggling attempts)."""

    status = 400


class NoRouteError(ProxyError):
    """No rule matches and there is no default backend."""

    status = 404


class RequestTimeoutError(ProxyError):
    """The client did not send its request head in time."""

    status = 408


class LengthRequiredError(ProxyError):
    """A chunked request body for an upstream spoken to in HTTP/1.0, which has no
    chunked framing: the client is asked to send a Content-Length instead."""

    status = 411


class PayloadTooLargeError(ProxyError):
    """The request body is over the configured limit."""

    status = 413


class HeadersTooLargeError(ProxyError):
    """The request head is over the configured limit."""

    status = 431


class AccessCheckError(ProxyError):
    """An access check could not decide (its auth service failed or was too slow): the
    request is refused, never let through."""

    status = 500


class BadGatewayError(ProxyError):
    """The upstream refused the connection, broke it, or answered malformed."""

    status = 502


class ServiceUnavailableError(ProxyError):
    """The route's Service has no endpoints to send to."""

    status = 503


class GatewayTimeoutError(ProxyError):
    """The upstream did not answer in time."""

    status = 504
