"""Reading the controller ConfigMap (``--configmap``) into ``Settings``: one table of keys.

ConfigMap data are strings, written in ingress-nginx's syntaxes (``fastroute.ingress.syntax``,
shared with the annotations). ``KEYS`` maps each key to its reader and its ``Settings``
field; a reader returns the value or raises ``Malformed`` with the reason. A malformed
value rejects that key, which keeps its default, except the allow and deny lists: those
are kept as written, and the routes they would protect fail closed (``read_policy``
answers 503 for them unless an annotation replaces the list). ``add-headers`` and
``proxy-set-headers`` name another ConfigMap whose data are the headers.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from fastroute.ingress.balancing import LOAD_BALANCE
from fastroute.ingress.balancing_syntax import read_choice, read_hash_key
from fastroute.ingress.settings import DEFAULT_SETTINGS, Settings
from fastroute.ingress.syntax import (
    NEXT_UPSTREAM_CONDITIONS,
    Malformed,
    read_bool,
    read_codes,
    read_header_name,
    read_header_value,
    read_int,
    read_networks,
    read_size,
    read_time,
)

__all__ = ["HEADER_KEYS", "KEYS", "ConfigMapLookup", "Note", "configmap_data", "read_settings"]

ConfigMapLookup = Callable[[str], Mapping[str, str] | None]  # "namespace/name" -> data
Note = tuple[str, str, bool]  # (key, reason, is_warning)


class _KeptError(Malformed):
    """The value is used anyway (all of it, or what is left of it), with a note."""

    def __init__(self, value: object, reason: str, *, warning: bool) -> None:
        super().__init__(reason)
        self.value = value
        self.warning = warning


_PROTOCOLS = ("TLSv1.2", "TLSv1.3")
_OLD_PROTOCOLS = frozenset({"SSLv2", "SSLv3", "TLSv1", "TLSv1.1"})
# headers that frame or route the message: set from a ConfigMap, they would break it
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


def _as_written(text: str) -> str:
    """Kept as written: read with each Ingress's annotations (external_auth.py), where a
    malformed value fails closed instead of leaving the routes unprotected."""
    return text.strip()


def _count(text: str) -> int:
    return read_int(text)


def _timeout(text: str) -> float:
    seconds = read_time(text)
    if seconds <= 0:
        raise Malformed(f"expected more than 0 seconds, got {text!r}")
    return seconds


def _status(text: str) -> int:
    """A status nginx's limit_req_status and limit_conn_status take."""
    return read_int(text, 400, 599)


def _header_name(text: str) -> str:
    return read_header_name(text.strip())


def _peers(text: str) -> tuple[str, ...]:
    """``proxy-real-ip-cidr``: at least one address or CIDR."""
    return tuple(str(network) for network in read_networks(text))


def _protection(key: str) -> Callable[[str], tuple[str, ...]]:
    """An allow or deny list of CIDRs (empty: none).

    A malformed list is kept as written: ``read_policy`` then refuses the routes it would
    protect (503) rather than serve them to everyone, as ingress-nginx does.
    """

    def networks(text: str) -> tuple[str, ...]:
        if not text.strip(" ,"):
            return ()
        try:
            return tuple(str(network) for network in read_networks(text))
        except Malformed as error:
            entries = tuple(item.strip() for item in text.split(",") if item.strip())
            raise _KeptError(
                entries,
                f"{error}; every route without its own {key} annotation answers 503 "
                "until it is fixed",
                warning=False,
            ) from None

    return networks


def _next_upstream(text: str) -> frozenset[str]:
    """nginx's proxy_next_upstream cases, space-separated: ``error timeout http_502``."""
    tokens = text.split()
    unknown = [t for t in tokens if t not in NEXT_UPSTREAM_CONDITIONS]
    if unknown:
        raise Malformed(
            f"unknown case {unknown[0]!r} "
            f"(expected some of {', '.join(sorted(NEXT_UPSTREAM_CONDITIONS))})"
        )
    if not tokens:
        raise Malformed("expected cases such as 'error timeout', or 'off'")
    if "off" in tokens and len(tokens) > 1:
        raise Malformed("'off' cannot be combined with other cases")
    return frozenset(tokens)


def _protocols(text: str) -> tuple[str, ...]:
    """``TLSv1.2 TLSv1.3``; the older protocols are refused, the rest is used."""
    tokens = text.split()
    unknown = [t for t in tokens if t not in _PROTOCOLS and t not in _OLD_PROTOCOLS]
    if unknown:
        raise Malformed(f"unknown protocol {unknown[0]!r} (expected TLSv1.2 and/or TLSv1.3)")
    kept = tuple(p for p in _PROTOCOLS if p in tokens)
    old = [t for t in tokens if t in _OLD_PROTOCOLS]
    if old:
        reason = (
            f"{', '.join(old)} refused: broken or deprecated (RFC 8996), and not offered by "
            "fastroute"
        )
        if not kept:
            raise Malformed(f"{reason}; expected TLSv1.2 and/or TLSv1.3")
        raise _KeptError(kept, f"{reason}; serving {' '.join(kept)}", warning=True)
    if not kept:
        raise Malformed("expected TLSv1.2 and/or TLSv1.3")
    return kept


def _ciphers(text: str) -> str:
    """An OpenSSL cipher list, checked by the OpenSSL the proxy uses."""
    ciphers = text.strip()
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ciphers(ciphers)
    except ssl.SSLError:
        raise Malformed(f"OpenSSL knows no cipher in {text!r}") from None
    return ciphers


def _error_codes(text: str) -> frozenset[int]:
    """``404,503``: the statuses nginx's error_page can take (300 to 599); empty: none."""
    return read_codes(text, 300, 599) if text.strip(" ,") else frozenset()


def _snippets(text: str) -> bool:
    if read_bool(text):
        raise _KeptError(
            True,
            "accepted, but snippets are never executed: fastroute generates no configuration "
            "text from Ingresses (use add-headers, proxy-set-headers and the redirect "
            "annotations)",
            warning=True,
        )
    return False


def _load_balance(text: str) -> str:
    return read_choice(text, LOAD_BALANCE)


Reader = Callable[[str], Any]

# key -> (reader, Settings field): every key fastroute reads from the controller ConfigMap
KEYS: dict[str, tuple[Reader, str]] = {
    "use-forwarded-headers": (read_bool, "use_forwarded_headers"),
    "compute-full-forwarded-for": (read_bool, "compute_full_forwarded_for"),
    "forwarded-for-header": (_header_name, "forwarded_for_header"),
    "proxy-real-ip-cidr": (_peers, "proxy_real_ip_cidr"),
    "enable-real-ip": (read_bool, "enable_real_ip"),
    "use-proxy-protocol": (read_bool, "use_proxy_protocol"),
    "proxy-body-size": (read_size, "proxy_body_size"),
    "proxy-connect-timeout": (_timeout, "proxy_connect_timeout"),
    "proxy-read-timeout": (_timeout, "proxy_read_timeout"),
    "proxy-send-timeout": (_timeout, "proxy_send_timeout"),
    "proxy-next-upstream": (_next_upstream, "proxy_next_upstream"),
    "proxy-next-upstream-tries": (_count, "proxy_next_upstream_tries"),
    "ssl-redirect": (read_bool, "ssl_redirect"),
    "force-ssl-redirect": (read_bool, "force_ssl_redirect"),
    "hsts": (read_bool, "hsts"),
    "hsts-max-age": (_count, "hsts_max_age"),
    "hsts-include-subdomains": (read_bool, "hsts_include_subdomains"),
    "hsts-preload": (read_bool, "hsts_preload"),
    "ssl-protocols": (_protocols, "ssl_protocols"),
    "ssl-ciphers": (_ciphers, "ssl_ciphers"),
    "limit-req-status-code": (_status, "limit_req_status_code"),
    "limit-conn-status-code": (_status, "limit_conn_status_code"),
    "whitelist-source-range": (_protection("whitelist-source-range"), "whitelist_source_range"),
    "denylist-source-range": (_protection("denylist-source-range"), "denylist_source_range"),
    "custom-http-errors": (_error_codes, "custom_http_errors"),
    "keep-alive": (read_time, "keep_alive"),
    "upstream-keepalive-connections": (_count, "upstream_keepalive_connections"),
    "upstream-keepalive-timeout": (read_time, "upstream_keepalive_timeout"),
    "allow-snippet-annotations": (_snippets, "allow_snippet_annotations"),
    "load-balance": (_load_balance, "load_balance"),
    "upstream-hash-by": (read_hash_key, "upstream_hash_by"),
    **{
        key: (_as_written, key.replace("-", "_"))
        for key in (
            "global-auth-url",
            "global-auth-method",
            "global-auth-signin",
            "global-auth-signin-redirect-param",
            "global-auth-response-headers",
            "global-auth-request-redirect",
            "global-auth-cache-key",
            "global-auth-cache-duration",
            "global-auth-always-set-cookie",
            "no-auth-locations",
        )
    },
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
        read, field_name = entry
        if not isinstance(value, str):
            notes.append((key, f"expected a string, got {type(value).__name__}", False))
            continue
        try:
            values[field_name] = read(value)
        except _KeptError as kept:
            values[field_name] = kept.value
            notes.append((key, str(kept), kept.warning))
        except Malformed as error:
            notes.append((key, f"{error}; the default is kept", False))
    return replace(base, **values), notes


def _headers(
    key: str, value: object, configmap: ConfigMapLookup | None
) -> tuple[tuple[tuple[str, str], ...] | None, list[Note]]:
    """The headers of the ConfigMap that ``value`` names (None: rejected), and notes.

    A header that cannot be sent is left out with the reason; the others are kept.
    """
    ref = value.strip() if isinstance(value, str) else ""
    ns, _, ref_name = ref.partition("/")
    if not ns or not ref_name or "/" in ref_name:
        return None, [(key, f"expected a ConfigMap as namespace/name, got {value!r}", False)]
    data = configmap(ref) if configmap is not None else None
    if data is None:
        return None, [(key, f"ConfigMap {ref} not found; no headers are set", False)]
    headers: list[tuple[str, str]] = []
    notes: list[Note] = []
    for name in sorted(data):
        try:
            header = read_header_name(name)
            if header.lower() in _FRAMING_HEADERS:
                raise Malformed(
                    f"{header!r} frames or routes the message and cannot be set from a ConfigMap"
                )
            text = read_header_value(data[name])
        except Malformed as error:
            about = "" if str(error).startswith(repr(name)) else f"header {name!r}: "
            notes.append((key, f"ConfigMap {ref}: {about}{error}; that header is not set", False))
            continue
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
