"""The controller-wide settings: ingress-nginx's ConfigMap keys, with its names and defaults.

A cluster leaving ingress-nginx brings the ConfigMap its controller read (``--configmap``).
Each key here means what it meant there and defaults to what it defaulted to, so that a
migrated cluster behaves the same. ``None`` means the key is not set: the proxy's own
limit (its command-line flag) applies. Per-route annotations override these.
"""

from __future__ import annotations

import ipaddress
import math
import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

__all__ = [
    "DEFAULT_SETTINGS",
    "KEYS",
    "ConfigMapLookup",
    "Note",
    "Settings",
    "configmap_data",
    "read_settings",
]

# ingress-nginx's default ssl-ciphers: forward-secret AEAD suites only
DEFAULT_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "DHE-RSA-AES256-GCM-SHA384:DHE-RSA-AES128-GCM-SHA256"
)


@dataclass(frozen=True, slots=True)
class Settings:
    """Controller-wide behaviour, one field per ConfigMap key (``-`` read as ``_``)."""

    # who the client is
    use_forwarded_headers: bool = False  # believe X-Forwarded-* from proxy_real_ip_cidr
    compute_full_forwarded_for: bool = False  # append to X-Forwarded-For instead of replacing
    forwarded_for_header: str = "X-Forwarded-For"  # where the real client address is read
    proxy_real_ip_cidr: tuple[str, ...] = ("0.0.0.0/0",)  # whose forwarded headers are believed
    enable_real_ip: bool = False  # take the client address from forwarded_for_header
    use_proxy_protocol: bool = False  # both listeners require a PROXY protocol header
    # limits and timeouts (None: the proxy's flag)
    proxy_body_size: int | None = None  # bytes; 0: no limit
    proxy_connect_timeout: float | None = None
    proxy_read_timeout: float | None = None
    proxy_send_timeout: float | None = None
    proxy_next_upstream: frozenset[str] | None = None  # "error", "timeout", "http_502", ...
    proxy_next_upstream_tries: int | None = None  # 0: every endpoint
    # HTTPS
    ssl_redirect: bool = True
    force_ssl_redirect: bool = False
    hsts: bool = True
    hsts_max_age: int = 31536000
    hsts_include_subdomains: bool = True
    hsts_preload: bool = False
    ssl_protocols: tuple[str, ...] = ("TLSv1.2", "TLSv1.3")
    ssl_ciphers: str = DEFAULT_CIPHERS
    # protections
    limit_req_status_code: int = 503
    limit_conn_status_code: int = 503
    whitelist_source_range: tuple[str, ...] = ()  # CIDRs; empty: everyone
    denylist_source_range: tuple[str, ...] = ()
    # headers, from the ConfigMaps that add-headers and proxy-set-headers name
    add_headers: tuple[tuple[str, str], ...] = ()  # added to every response
    proxy_set_headers: tuple[tuple[str, str], ...] = ()  # set on every upstream request
    custom_http_errors: frozenset[int] = frozenset()
    # connections
    keep_alive: float = 75.0  # seconds an idle client connection stays open
    upstream_keepalive_connections: int = 320  # idle upstream connections kept, per process
    upstream_keepalive_timeout: float = 60.0  # seconds an idle upstream connection is kept
    allow_snippet_annotations: bool = False  # accepted for compatibility: never executed

    @property
    def hsts_value(self) -> str:
        """The Strict-Transport-Security value for HTTPS responses, "" when off."""
        if not self.hsts:
            return ""
        value = f"max-age={self.hsts_max_age}"
        if self.hsts_include_subdomains:
            value += "; includeSubDomains"
        if self.hsts_preload:
            value += "; preload"
        return value


DEFAULT_SETTINGS = Settings()


# -- reading the ConfigMap ----------------------------------------------------------------
#
# ConfigMap data are strings; each parser takes one and returns the field's value, or
# raises ValueError with the reason. ``KEYS`` is the one table: key -> (parser, field).

ConfigMapLookup = Callable[[str], Mapping[str, str] | None]  # "namespace/name" -> data
Note = tuple[str, str, bool]  # (key, reason, is_warning)


class _PartlyRefusedError(ValueError):
    """Part of a value was refused but the rest is used: a warning, not a rejection."""

    def __init__(self, value: object, reason: str) -> None:
        super().__init__(reason)
        self.value = value


# Go's strconv.ParseBool, which ingress-nginx reads booleans with
_BOOLEANS = {"1": True, "t": True, "true": True, "0": False, "f": False, "false": False}
_SIZE = re.compile(r"(\d+)([kKmMgG]?)")
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
# nginx time units; ingress-nginx's timeouts are plain seconds, which is the bare number
_TIME = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)?")
_TIME_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 field name
_NEXT_UPSTREAM = frozenset(
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
_PROTOCOLS = ("TLSv1.2", "TLSv1.3")
_OLD_PROTOCOLS = frozenset({"SSLv2", "SSLv3", "TLSv1", "TLSv1.1"})
# headers that frame or route the message: set from a ConfigMap they would break it
_FRAMING_HEADERS = frozenset(
    {
        "connection",
        "content-length",
        "host",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


def _boolean(value: str) -> bool:
    found = _BOOLEANS.get(value.strip().lower())
    if found is None:
        raise ValueError(f"expected 'true' or 'false', got {value!r}")
    return found


def _count(value: str) -> int:
    if not value.strip().isdigit():
        raise ValueError(f"expected a whole number (0 or more), got {value!r}")
    return int(value)


def _size(value: str) -> int:
    """``1m``, ``512k``, ``8192``: bytes, as nginx writes sizes; ``0``: no limit."""
    found = _SIZE.fullmatch(value.strip())
    if found is None:
        raise ValueError(f"expected a size such as 8192, 512k, 1m or 1g, got {value!r}")
    return int(found[1]) * _SIZE_UNITS[found[2].lower()]


def _duration(value: str) -> float:
    """Seconds: ``60``, or with an nginx unit: ``500ms``, ``60s``, ``2m``, ``1h``."""
    found = _TIME.fullmatch(value.strip())
    if found is None:
        raise ValueError(f"expected seconds such as 60 (or 500ms, 60s, 2m, 1h), got {value!r}")
    seconds = float(found[1]) * _TIME_UNITS[found[2]]
    if not math.isfinite(seconds):
        raise ValueError(f"{value!r} is too long")
    return seconds


def _timeout(value: str) -> float:
    seconds = _duration(value)
    if seconds <= 0:
        raise ValueError(f"must be more than 0 seconds, got {value!r}")
    return seconds


def _status(low: int, high: int) -> Callable[[str], int]:
    def status(value: str) -> int:
        code = value.strip()
        if not (code.isdigit() and low <= int(code) <= high):
            raise ValueError(f"expected an HTTP status from {low} to {high}, got {value!r}")
        return int(code)

    return status


def _header_name(value: str) -> str:
    name = value.strip()
    if not _TOKEN.fullmatch(name):
        raise ValueError(f"not a header name: {value!r}")
    return name


def _networks(*, required: bool) -> Callable[[str], tuple[str, ...]]:
    """A comma-separated list of addresses and CIDRs (``10.0.0.0/8, 192.168.1.1``)."""

    def networks(value: str) -> tuple[str, ...]:
        found: list[str] = []
        for item in (part.strip() for part in value.split(",")):
            if not item:
                continue
            try:
                found.append(str(ipaddress.ip_network(item, strict=False)))
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or CIDR") from None
        if required and not found:
            raise ValueError("expected at least one CIDR, such as 10.0.0.0/8")
        return tuple(found)

    return networks


def _next_upstream(value: str) -> frozenset[str]:
    """nginx's proxy_next_upstream cases, space-separated: ``error timeout http_502``."""
    tokens = value.split()
    unknown = [t for t in tokens if t not in _NEXT_UPSTREAM]
    if unknown:
        raise ValueError(
            f"unknown case {unknown[0]!r} (expected some of {', '.join(sorted(_NEXT_UPSTREAM))})"
        )
    if not tokens:
        raise ValueError("expected cases such as 'error timeout', or 'off'")
    if "off" in tokens and len(tokens) > 1:
        raise ValueError("'off' cannot be combined with other cases")
    return frozenset(tokens)


def _protocols(value: str) -> tuple[str, ...]:
    """``TLSv1.2 TLSv1.3``; the older protocols are refused, the rest is used."""
    tokens = value.split()
    unknown = [t for t in tokens if t not in _PROTOCOLS and t not in _OLD_PROTOCOLS]
    if unknown:
        raise ValueError(f"unknown protocol {unknown[0]!r} (expected TLSv1.2 and/or TLSv1.3)")
    kept = tuple(p for p in _PROTOCOLS if p in tokens)
    old = [t for t in tokens if t in _OLD_PROTOCOLS]
    if old:
        reason = (
            f"{', '.join(old)} refused: broken or deprecated (RFC 8996), and not offered by "
            "fastroute"
        )
        if not kept:
            raise ValueError(f"{reason}; expected TLSv1.2 and/or TLSv1.3")
        raise _PartlyRefusedError(kept, f"{reason}; serving {' '.join(kept)}")
    if not kept:
        raise ValueError("expected TLSv1.2 and/or TLSv1.3")
    return kept


def _ciphers(value: str) -> str:
    """An OpenSSL cipher list, checked by the OpenSSL the proxy uses."""
    ciphers = value.strip()
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ciphers(ciphers)
    except ssl.SSLError:
        raise ValueError(f"OpenSSL knows no cipher in {value!r}") from None
    return ciphers


def _error_codes(value: str) -> frozenset[int]:
    """``404,503``: the statuses nginx's error_page can take (300 to 599)."""
    codes: set[int] = set()
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        if not (item.isdigit() and 300 <= int(item) <= 599):
            raise ValueError(f"{item!r} is not an HTTP status from 300 to 599")
        codes.add(int(item))
    return frozenset(codes)


def _snippets(value: str) -> bool:
    allowed = _boolean(value)
    if allowed:
        raise _PartlyRefusedError(
            True,
            "accepted, but snippets are never executed: fastroute generates no configuration "
            "text from Ingresses (use add-headers, proxy-set-headers and the redirect "
            "annotations)",
        )
    return allowed


Parser = Callable[[str], Any]

# key -> (parser, Settings field): every key fastroute reads from the controller ConfigMap
KEYS: dict[str, tuple[Parser, str]] = {
    "use-forwarded-headers": (_boolean, "use_forwarded_headers"),
    "compute-full-forwarded-for": (_boolean, "compute_full_forwarded_for"),
    "forwarded-for-header": (_header_name, "forwarded_for_header"),
    "proxy-real-ip-cidr": (_networks(required=True), "proxy_real_ip_cidr"),
    "enable-real-ip": (_boolean, "enable_real_ip"),
    "use-proxy-protocol": (_boolean, "use_proxy_protocol"),
    "proxy-body-size": (_size, "proxy_body_size"),
    "proxy-connect-timeout": (_timeout, "proxy_connect_timeout"),
    "proxy-read-timeout": (_timeout, "proxy_read_timeout"),
    "proxy-send-timeout": (_timeout, "proxy_send_timeout"),
    "proxy-next-upstream": (_next_upstream, "proxy_next_upstream"),
    "proxy-next-upstream-tries": (_count, "proxy_next_upstream_tries"),
    "ssl-redirect": (_boolean, "ssl_redirect"),
    "force-ssl-redirect": (_boolean, "force_ssl_redirect"),
    "hsts": (_boolean, "hsts"),
    "hsts-max-age": (_count, "hsts_max_age"),
    "hsts-include-subdomains": (_boolean, "hsts_include_subdomains"),
    "hsts-preload": (_boolean, "hsts_preload"),
    "ssl-protocols": (_protocols, "ssl_protocols"),
    "ssl-ciphers": (_ciphers, "ssl_ciphers"),
    "limit-req-status-code": (_status(400, 599), "limit_req_status_code"),
    "limit-conn-status-code": (_status(400, 599), "limit_conn_status_code"),
    "whitelist-source-range": (_networks(required=False), "whitelist_source_range"),
    "denylist-source-range": (_networks(required=False), "denylist_source_range"),
    "custom-http-errors": (_error_codes, "custom_http_errors"),
    "keep-alive": (_duration, "keep_alive"),
    "upstream-keepalive-connections": (_count, "upstream_keepalive_connections"),
    "upstream-keepalive-timeout": (_duration, "upstream_keepalive_timeout"),
    "allow-snippet-annotations": (_snippets, "allow_snippet_annotations"),
}
# keys whose value names another ConfigMap ("namespace/name") whose data are headers
HEADER_KEYS: dict[str, str] = {
    "add-headers": "add_headers",  # on every response
    "proxy-set-headers": "proxy_set_headers",  # on every upstream request
}


def configmap_data(obj: Mapping[str, Any]) -> dict[str, str]:
    """A ConfigMap's ``data`` as strings.

    The API only stores strings, but a manifest read from a file may say ``keep-alive: 75``
    or ``hsts: true`` unquoted, and YAML makes a number or a boolean of it: those are read
    as the text they were. Values of any other type are left out.
    """
    raw = obj.get("data")
    data: dict[str, str] = {}
    if not isinstance(raw, Mapping):
        return data
    for key, value in raw.items():
        if isinstance(value, bool):
            data[str(key)] = "true" if value else "false"
        elif isinstance(value, (str, int, float)):
            data[str(key)] = str(value)
    return data


def read_settings(
    data: Mapping[str, str],
    configmap: ConfigMapLookup | None = None,
    *,
    defaults: Settings | None = None,
) -> tuple[Settings, list[Note]]:
    """The settings a controller ConfigMap's ``data`` asks for, and (key, reason,
    is_warning) notes.

    A malformed value rejects that key (it keeps its default) with the reason; a key
    fastroute does not read is a warning. ``add-headers`` and ``proxy-set-headers`` name
    another ConfigMap (``namespace/name``) whose data are the headers: ``configmap`` looks
    it up (None: it does not exist). ``defaults`` are the values of the keys not set
    (default: ingress-nginx's): the controller's flags, where they overlap.
    """
    base = DEFAULT_SETTINGS if defaults is None else defaults
    values: dict[str, Any] = {}
    notes: list[Note] = []
    for key in sorted(data):
        value = data[key]
        if key in HEADER_KEYS:
            headers, header_notes = _headers(key, value, configmap)
            notes += header_notes
            if headers is not None:
                values[HEADER_KEYS[key]] = headers
            continue
        entry = KEYS.get(key)
        if entry is None:
            notes.append((key, "not a ConfigMap key fastroute implements; ignored", True))
            continue
        parse, field_name = entry
        if not isinstance(value, str):
            notes.append((key, f"expected a string, got {type(value).__name__}", False))
            continue
        try:
            values[field_name] = parse(value)
        except _PartlyRefusedError as refused:
            values[field_name] = refused.value
            notes.append((key, str(refused), True))
        except ValueError as error:
            notes.append((key, f"{error}; the default is kept", False))
    return replace(base, **values), notes


def _headers(
    key: str, value: object, configmap: ConfigMapLookup | None
) -> tuple[tuple[tuple[str, str], ...] | None, list[Note]]:
    """The headers of the ConfigMap that ``value`` names (None: rejected), and notes."""
    ref = value.strip() if isinstance(value, str) else ""
    ns, _, ref_name = ref.partition("/")
    if not ns or not ref_name or "/" in ref_name:
        return None, [(key, f"expected a ConfigMap as namespace/name, got {value!r}", False)]
    data = configmap(ref) if configmap is not None else None
    if data is None:
        return None, [(key, f"ConfigMap {ref} not found; no headers are set", False)]
    headers: list[tuple[str, str]] = []
    notes: list[Note] = []
    for header in sorted(data):
        problem = _header_problem(header, data[header])
        if problem:
            notes.append((key, f"ConfigMap {ref}: header {header!r} {problem}; not set", False))
            continue
        text = data[header].strip()
        if "$" in text:
            notes.append(
                (
                    key,
                    f"ConfigMap {ref}: header {header!r} is sent as written: nginx variables "
                    f"such as those in {text!r} are not expanded",
                    True,
                )
            )
        headers.append((header, text))
    return tuple(headers), notes


def _header_problem(name: object, value: object) -> str:
    """Why a header from a ConfigMap cannot be sent ("" if it can)."""
    if not isinstance(name, str) or not _TOKEN.fullmatch(name):
        return "is not a header name"
    if name.lower() in _FRAMING_HEADERS:
        return "frames or routes the message and cannot be set from a ConfigMap"
    if not isinstance(value, str):
        return "has no text value"
    if any(c in value for c in "\r\n\0"):
        return "has a line break or NUL in its value"
    if any((ord(c) < 32 and c != "\t") or ord(c) == 127 for c in value):
        return "has a control character in its value"
    if not value.isascii():
        return "has a value that is not ASCII"
    return ""
