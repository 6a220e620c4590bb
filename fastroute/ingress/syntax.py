"""The value syntaxes ingress-nginx's annotations and ConfigMap keys are written in.

Each reader takes the text as written and returns the value, or raises ``Malformed``
with a reason that names the value and says what was expected. Nothing here knows
which annotation or key the text came from: the caller adds that.
"""

from __future__ import annotations

import re
from ipaddress import ip_network

from fastroute.errors import MalformedValueError
from fastroute.ingress.model import HeaderList, Networks

__all__ = [
    "NEXT_UPSTREAM_CONDITIONS",
    "Malformed",
    "read_bool",
    "read_codes",
    "read_header_name",
    "read_header_value",
    "read_headers",
    "read_host",
    "read_int",
    "read_networks",
    "read_on_off",
    "read_size",
    "read_time",
]

# proxy-next-upstream's words (nginx's proxy_next_upstream, as ingress-nginx passes them)
NEXT_UPSTREAM_CONDITIONS = frozenset(
    {
        "error",
        "timeout",
        "invalid_header",
        "http_500",
        "http_502",
        "http_503",
        "http_504",
        "http_403",
        "http_404",
        "http_429",
        "non_idempotent",
        "off",
    }
)


Malformed = MalformedValueError


_BOOLEANS = {"true": True, "false": False}


def read_bool(text: str) -> bool:
    """``true`` or ``false`` (any case), as ingress-nginx's boolean annotations."""
    value = _BOOLEANS.get(text.strip().lower())
    if value is None:
        raise Malformed(f"expected 'true' or 'false', got {text!r}")
    return value


def read_on_off(text: str) -> bool:
    """nginx's ``on`` or ``off``."""
    word = text.strip().lower()
    if word not in ("on", "off"):
        raise Malformed(f"expected 'on' or 'off', got {text!r}")
    return word == "on"


def read_int(text: str, low: int = 0, high: int | None = None) -> int:
    """A decimal integer in [low, high]."""
    word = text.strip()
    if not word.isascii() or not word.isdigit():
        raise Malformed(f"expected a whole number, got {text!r}")
    value = int(word)
    if value < low or (high is not None and value > high):
        bounds = f"at least {low}" if high is None else f"from {low} to {high}"
        raise Malformed(f"expected a number {bounds}, got {text!r}")
    return value


_SIZE = re.compile(r"([0-9]{1,15})([kKmMgG]?)")
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def read_size(text: str) -> int:
    """nginx's size syntax in bytes: ``512``, ``8k``, ``1m``, ``2g`` (1024-based)."""
    found = _SIZE.fullmatch(text.strip())
    if found is None:
        raise Malformed(
            f"expected a size such as '512', '8k', '1m' or '2g' (whole numbers, "
            f"units k, m, g), got {text!r}"
        )
    return int(found[1]) * _SIZE_UNITS[found[2].lower()]


# nginx's time units, largest first: a value is a sequence of them ("1m30s")
_TIME_UNITS = {"y": 31536000.0, "M": 2592000.0, "w": 604800.0, "d": 86400.0, "h": 3600.0}
_TIME_UNITS |= {"m": 60.0, "s": 1.0, "ms": 0.001}
_TIME_PART = re.compile(r"([0-9]{1,9})(ms|[yMwdhms]?)")


def read_time(text: str) -> float:
    """nginx's time syntax in seconds: ``30``, ``30s``, ``1m``, ``1m30s``, ``500ms``.

    A bare number is seconds, as nginx reads it.
    """
    word = text.strip()
    total, position = 0.0, 0
    units_seen: list[str] = []
    while position < len(word):
        part = _TIME_PART.match(word, position)
        if part is None or (not part[2] and part.end() != len(word)):
            break
        unit = part[2] or "s"
        if unit in units_seen:
            break
        units_seen.append(unit)
        total += int(part[1]) * _TIME_UNITS[unit]
        position = part.end()
    if not word or position != len(word):
        raise Malformed(
            f"expected a time such as '30', '30s', '1m' or '1m30s' (units ms, s, m, h, d), "
            f"got {text!r}"
        )
    return total


def read_networks(text: str) -> Networks:
    """A comma-separated list of CIDRs or addresses (an address is a /32 or /128)."""
    networks = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            networks.append(ip_network(item, strict=False))
        except ValueError:
            raise Malformed(
                f"{item!r} in {text!r} is not an IP address or a CIDR such as 10.0.0.0/8"
            ) from None
    if not networks:
        raise Malformed(f"expected a comma-separated list of CIDRs, got {text!r}")
    return tuple(networks)


def read_codes(text: str, low: int = 400, high: int = 599) -> frozenset[int]:
    """A comma-separated list of HTTP status codes in [low, high]."""
    codes = set()
    for item in text.split(","):
        if item.strip():
            try:
                codes.add(read_int(item, low, high))
            except Malformed:
                raise Malformed(
                    f"{item.strip()!r} in {text!r} is not a status code from {low} to {high}"
                ) from None
    if not codes:
        raise Malformed(f"expected a comma-separated list of status codes, got {text!r}")
    return frozenset(codes)


# RFC 9110 section 5.6.2: a header name is a token
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# a value may hold visible characters, spaces and tabs; never CR, LF, NUL or another
# control character (C0, DEL, C1), so that no value can end its header line and start another
_VALUE = re.compile(r"[\t\x20-\x7e\xa0-\U0010ffff]*")


def read_header_name(text: str) -> str:
    if _TOKEN.fullmatch(text) is None:
        raise Malformed(f"{text!r} is not a header name (letters, digits and !#$%&'*+-.^_`|~)")
    return text


def read_header_value(text: str) -> str:
    if _VALUE.fullmatch(text) is None:
        raise Malformed(
            f"{text!r} is not a header value: it holds a control character (CR, LF, NUL...)"
        )
    return text.strip(" \t")


def read_headers(data: dict[str, str]) -> HeaderList:
    """Headers from a ConfigMap's data (name: value), in the order of their names."""
    return tuple(
        (read_header_name(name), read_header_value(value)) for name, value in sorted(data.items())
    )


_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_HOST = re.compile(rf"(\*\.)?{_LABEL}(\.{_LABEL})*")


def read_host(text: str, wildcard: bool = False) -> str:
    """A DNS name (lower case), with a leading ``*.`` when ``wildcard`` allows it."""
    host = text.strip().lower().rstrip(".")
    found = _HOST.fullmatch(host)
    if found is None or len(host) > 253 or (found[1] and not wildcard):
        kind = "a host name such as app.example.com" + (" or *.example.com" if wildcard else "")
        raise Malformed(f"expected {kind}, got {text!r}")
    return host
