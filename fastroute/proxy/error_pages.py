"""What the error backend is told about the request it answers instead of the route's.

ingress-nginx sends two kinds of request to a ``default-backend`` Service, and fastroute
sends the same fields:

- the route's Service has no endpoints: the request itself goes there, path and all,
  with ``X-Code: 503`` and the route's names (``X-Namespace``, ``X-Ingress-Name``,
  ``X-Service-Name``, ``X-Service-Port``) and the client's ``Accept`` as ``X-Format``;
- the route's upstream answered a status listed in ``custom-http-errors``: that answer is
  dropped and a new request, for ``/``, asks the error backend for the page, with that
  status as ``X-Code``, the target the client sent as ``X-Original-URI``, the client's
  ``X-Request-ID`` if it sent one, and the ``Host`` the client sent (``upstream-vhost``
  does not apply). It is a ``GET`` (``HEAD`` for a HEAD request) without a body: the
  client's body went to the route's upstream already.

No I/O here: these are the fields and heads; ``forwarding`` and ``decide`` send them.
"""

from __future__ import annotations

from fastroute.ingress.model import Target

__all__ = ["ERROR_FIELDS", "error_fields", "error_request"]

# the fields an error backend is told; the client's own of these names are not sent
ERROR_FIELDS = frozenset(
    {
        b"x-code",
        b"x-format",
        b"x-original-uri",
        b"x-namespace",
        b"x-ingress-name",
        b"x-service-name",
        b"x-service-port",
    }
)


def error_fields(route: Target, code: int, accept: bytes | None) -> bytes:
    """The ``X-Code`` ... ``X-Service-Port`` lines for a request answered by the route's
    error backend, whole ``Name: value\\r\\n`` lines (no ``X-Format`` without Accept)."""
    namespace, _, ingress = route.ingress.partition("/")
    backend = route.backend
    lines = [
        b"X-Code: %d\r\n" % code,
        b"X-Format: " + accept + b"\r\n" if accept else b"",
        b"X-Namespace: " + namespace.encode("latin-1") + b"\r\n",
        b"X-Ingress-Name: " + ingress.encode("latin-1") + b"\r\n",
        b"X-Service-Name: " + backend.service.encode("latin-1") + b"\r\n",
        b"X-Service-Port: " + str(backend.port).encode("latin-1") + b"\r\n",
    ]
    return b"".join(lines)


def error_request(
    route: Target,
    code: int,
    *,
    method: bytes,
    host: bytes,
    original_uri: bytes,
    accept: bytes | None,
    request_id: bytes | None,
) -> bytes:
    """The head asking the error backend for the page of ``code``: ``GET /`` (``HEAD``
    for a HEAD request), nothing else from the client but the fields named above."""
    verb = b"HEAD" if method == b"HEAD" else b"GET"
    lines = [
        verb + b" / HTTP/1.1\r\nHost: " + host + b"\r\n",
        error_fields(route, code, accept),
        b"X-Original-URI: " + original_uri + b"\r\n",
        b"X-Request-ID: " + request_id + b"\r\n" if request_id else b"",
        b"\r\n",
    ]
    return b"".join(lines)
