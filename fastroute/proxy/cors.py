"""``enable-cors``: the CORS headers a route's responses carry, and the preflights it answers.

What ingress-nginx does (its template's CORS block and its e2e tests), and so this:

* Allowed origins are ``*``, exact origins (``https://a.example.com:8443``) or a wildcard
  of exactly one label (``https://*.example.com`` takes ``https://api.example.com``, not
  ``https://a.b.example.com`` nor ``https://example.com``). The port is part of the origin:
  ``https://*.example.com:8443`` does not take ``https://api.example.com``. Case does not
  matter. ingress-nginx's pattern is only anchored at its end; here the whole origin must
  match, which is the same for any origin a browser sends.
* With ``*`` (also the default), every response gets the headers, with the Origin header or
  without, and ``Access-Control-Allow-Origin`` is the literal ``*``, never the request's
  origin, even with ``cors-allow-credentials`` (browsers then refuse credentialed requests:
  echoing any origin with credentials would hand them to every site).
* With a list, a request whose Origin matches gets the headers, with that origin echoed in
  ``Access-Control-Allow-Origin``; any other request gets no CORS header from the proxy
  (and the upstream's own pass through).
* An ``OPTIONS`` request that gets the headers is answered by the proxy itself: 204 with
  the headers and no body, whether or not it carries ``Access-Control-Request-Method``; the
  upstream never sees it. Any other ``OPTIONS`` request is forwarded.
* The headers are, in this order: ``Access-Control-Allow-Origin``,
  ``-Allow-Credentials: true`` (only when credentials are allowed), ``-Allow-Methods``,
  ``-Allow-Headers``, ``-Expose-Headers`` (only when set) and ``-Max-Age``, on preflights
  and forwarded responses alike. They replace the upstream's fields of the same names
  (:attr:`CorsRules.names`).

Everything but the echoed origin is written once per :class:`Cors`, when a route first
uses it. No I/O.
"""

from __future__ import annotations

from fastroute.ingress.model import Cors
from fastroute.proxy.memo import ByIdentity

__all__ = ["CorsRules", "cors_rules"]

_ORIGINS_KEPT = 256  # origins whose answer each CorsRules remembers; emptied when full
# The characters of one DNS label, as ingress-nginx's wildcard takes them
_LABEL = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-"


def _line(name: str, value: str) -> bytes:
    """One header line; a value no header may carry is refused, naming the header."""
    try:
        encoded = value.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"{name} {value!r}: not Latin-1 text") from None
    if any((c < 0x20 and c != 0x09) or c == 0x7F for c in encoded):
        raise ValueError(f"{name} {value!r}: has a control character")
    return name.encode("ascii") + b": " + encoded + b"\r\n"


class CorsRules:
    """One route's CORS settings, compiled for the request path (see :func:`cors_rules`).

    Raises:
        ValueError: a setting no header may carry (a control character, non-Latin-1 text).

    Attributes:
        names: the lower-case names of the response fields the proxy writes when it writes
            any; drop the upstream's fields with these names before adding its lines.
    """

    __slots__ = ("_any", "_exact", "_lines", "_rest", "_star_lines", "_wildcards", "names")

    def __init__(self, cors: Cors) -> None:
        origins = [o.strip() for o in cors.origins if o.strip()]
        # no origin given is ingress-nginx's default: every origin
        self._any = not origins or "*" in origins
        exact = set()
        wildcards = []
        for origin in origins:
            encoded = origin.lower().encode("utf-8")
            scheme, separator, rest = encoded.partition(b"://*.")
            if separator:
                wildcards.append((scheme + b"://", b"." + rest))
            else:
                exact.add(encoded)
        self._exact = frozenset(exact)
        self._wildcards = tuple(wildcards)

        rest_lines = []
        names = [b"access-control-allow-origin"]
        if cors.credentials:
            rest_lines.append(_line("Access-Control-Allow-Credentials", "true"))
            names.append(b"access-control-allow-credentials")
        rest_lines.append(_line("Access-Control-Allow-Methods", cors.methods))
        rest_lines.append(_line("Access-Control-Allow-Headers", cors.headers))
        names += [b"access-control-allow-methods", b"access-control-allow-headers"]
        if cors.expose_headers:
            rest_lines.append(_line("Access-Control-Expose-Headers", cors.expose_headers))
            names.append(b"access-control-expose-headers")
        rest_lines.append(_line("Access-Control-Max-Age", str(cors.max_age)))
        names.append(b"access-control-max-age")
        self._rest = b"".join(rest_lines)
        self._star_lines = b"Access-Control-Allow-Origin: *\r\n" + self._rest
        self.names: frozenset[bytes] = frozenset(names)
        # Origin value -> its lines (b"": none), for the origins seen lately
        self._lines: dict[bytes, bytes] = {}

    def allows(self, origin: bytes | None) -> bool:
        """Whether a request with this ``Origin`` value (None: no Origin) gets the headers."""
        if self._any:
            return True
        if origin is None:
            return False
        lower = origin.lower()
        if lower in self._exact:
            return True
        for scheme, domain in self._wildcards:
            if (
                lower.startswith(scheme)
                and lower.endswith(domain)
                and len(lower) > len(scheme) + len(domain)
                and not lower[len(scheme) : -len(domain)].translate(None, _LABEL)
            ):
                return True
        return False

    def response_headers(self, origin: bytes | None) -> bytes:
        """The header lines (``b"Name: value\\r\\n"`` each) to add to a forwarded response.

        Empty when this origin gets none; then the upstream's fields are left alone.
        """
        if self._any:
            return self._star_lines
        if origin is None:
            return b""
        lines = self._lines.get(origin)
        if lines is None:
            if len(self._lines) >= _ORIGINS_KEPT:
                self._lines.clear()
            lines = self._lines[origin] = (
                b"Access-Control-Allow-Origin: " + origin + b"\r\n" + self._rest
                if self.allows(origin)
                else b""
            )
        return lines

    def preflight(self, method: bytes, origin: bytes | None) -> bytes | None:
        """The header lines of the 204 the proxy answers instead of forwarding, or None.

        Only ``OPTIONS`` (methods are case-sensitive), and only when the origin gets the
        headers; the answer has no body and no Content-Length (RFC 9110 §8.6).
        """
        if method != b"OPTIONS":
            return None
        lines = self.response_headers(origin)
        return lines or None


# The compiled rules for a Cors, built on first use and then reused; keyed by the object,
# so a new RouteConfig's Cors is compiled once too.
cors_rules: ByIdentity[Cors, CorsRules] = ByIdentity(CorsRules, size=1024)
