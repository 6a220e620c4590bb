"""Per-route policy from Ingress annotations, under ingress-nginx's names: one table.

Users leaving ingress-nginx bring its annotations. ``ANNOTATIONS`` maps each name
fastroute reads to its parser and the ``Policy`` field it sets; ``read_policy`` walks
that table once per Ingress. Names are read under ``nginx.ingress.kubernetes.io/`` and
``fastroute.io/``; when both are set, ``fastroute.io/`` wins (it is the one written
for fastroute, so a migration can override a value without deleting the original),
and a warning says the other was overridden.

A malformed value rejects that annotation on that Ingress, with a reason naming the
value; the ConfigMap's default applies. A rejected *protection* (an allow or deny
list, a rate or connection limit, any ``auth-*``) fails closed instead: the policy's
``refused`` is set and the Ingress's routes answer 503, as ingress-nginx answers for a
location whose access rules it could not read. Snippets are never executed, and every
other ingress-nginx annotation is reported as ignored, so that a migration does not
lose behaviour without anyone noticing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

from fastroute.ingress.balancing import (
    AFFINITY_MODES,
    CANARY_BEHAVIORS,
    LOAD_BALANCE,
    Affinity,
)
from fastroute.ingress.balancing_syntax import (
    read_choice,
    read_cookie_domain,
    read_cookie_name,
    read_cookie_path,
    read_hash_key,
    read_samesite,
    read_seconds,
)
from fastroute.ingress.basic_auth import (
    basic_auth_of,
    read_auth_type,
    read_realm,
    read_secret_name,
    read_secret_type,
)
from fastroute.ingress.canary import (
    canary_fields,
    canary_rules,
    read_header,
    read_header_pattern,
    read_header_value_text,
    read_weight,
    read_weight_total,
)
from fastroute.ingress.canary import (
    read_cookie_name as read_canary_cookie,
)
from fastroute.ingress.client_auth import (
    read_error_page,
    read_match_cn,
    read_secret,
    read_verify_client,
    read_verify_depth,
)
from fastroute.ingress.external_auth import SUMMARIES as EXTERNAL_AUTH_SUMMARIES
from fastroute.ingress.external_auth import external_auth_policy
from fastroute.ingress.model import (
    ClientAuth,
    Cors,
    HeaderList,
    Networks,
    Policy,
    RateLimit,
    UpstreamTLS,
)
from fastroute.ingress.settings import DEFAULT_SETTINGS, Settings
from fastroute.ingress.syntax import (
    NEXT_UPSTREAM_CONDITIONS,
    Malformed,
    read_bool,
    read_codes,
    read_header_name,
    read_header_value,
    read_headers,
    read_host,
    read_int,
    read_networks,
    read_on_off,
    read_size,
    read_time,
)

__all__ = [
    "ANNOTATIONS",
    "FAMILIES",
    "FIRST_PORT",
    "PREFIXES",
    "SNIPPETS",
    "Annotation",
    "ConfigMapLookup",
    "Family",
    "Reading",
    "read_policy",
]

PREFIXES = ("fastroute.io/", "nginx.ingress.kubernetes.io/")  # the first one set wins
# default-backend names a Service, not a port: ingress-nginx sends to its first port,
# which the build resolves (an unnamed port is always a single-port Service's first)
FIRST_PORT = ""
NO_EFFECT = "fastroute streams bodies; accepted, no effect"

ConfigMapLookup = Callable[[str], Mapping[str, str] | None]  # "namespace/name" -> data


@dataclass(frozen=True, slots=True)
class Reading:
    """What a parser may consult besides the value: where the Ingress lives, the defaults."""

    namespace: str
    settings: Settings
    configmap: ConfigMapLookup | None


Parser = Callable[[str, Reading], Any]  # raises Malformed


@dataclass(frozen=True, slots=True)
class Annotation:
    """One annotation fastroute reads (its name without prefix)."""

    name: str
    # the Policy field it sets; "group.field" for a field of Policy.cors, .limit,
    # .upstream_tls or .redirect, assembled once the group is read; "" for no effect
    field: str
    parse: Parser | None  # None: read where its data lives (the build, for a Secret)
    summary: str
    protection: bool = False  # malformed: the routes answer 503 rather than serve
    no_op: bool = False  # validated, accepted, changes nothing (fastroute streams)


@dataclass(frozen=True, slots=True)
class Family:
    """Annotations fastroute does not implement yet, recognised by their name's start."""

    start: str
    feature: str  # what will implement them
    protection: bool = False  # present at all: the routes answer 503 (never unprotected)


# -- parsers: text -> value, or Malformed naming the value and the reason ------------


def _bool(text: str, _: Reading) -> bool:
    return read_bool(text)


def _on_off(text: str, _: Reading) -> bool:
    return read_on_off(text)


def _size(text: str, _: Reading) -> int:
    return read_size(text)


def _count(text: str, _: Reading) -> int:
    return read_int(text, low=1)


def _whole(text: str, _: Reading) -> int:
    return read_int(text, low=0)


def _timeout(text: str, _: Reading) -> float:
    seconds = read_time(text)
    if seconds <= 0:
        raise Malformed(f"a timeout must be longer than 0, got {text!r}")
    return seconds


def _duration(text: str, _: Reading) -> float:
    return read_time(text)


def _networks(text: str, _: Reading) -> Networks:
    return read_networks(text)


def _codes(text: str, _: Reading) -> frozenset[int]:
    return read_codes(text)


_PATH = re.compile(r"/[!-~]*")  # visible ASCII, no space: it goes into a request line


def _path(text: str) -> str:
    path = text.strip()
    if _PATH.fullmatch(path) is None:
        raise Malformed(f"expected a path starting with '/' without spaces, got {text!r}")
    return path


def _rewrite_target(text: str, _: Reading) -> str:
    path = _path(text)
    if re.search(r"\$(?![1-9])", path):
        raise Malformed(
            f"{text!r}: '$' may only name a capture of the path's regex, $1 to $9; "
            "nginx variables are not expanded"
        )
    return path


def _app_root(text: str, _: Reading) -> str:
    return _path(text)


def _next_upstream(text: str, _: Reading) -> frozenset[str]:
    tokens = text.split()
    unknown = [t for t in tokens if t not in NEXT_UPSTREAM_CONDITIONS]
    if not tokens or unknown:
        raise Malformed(
            f"{' '.join(unknown) or text!r} in {text!r}: expected space-separated "
            f"conditions among {', '.join(sorted(NEXT_UPSTREAM_CONDITIONS))}"
        )
    if "off" in tokens and len(set(tokens)) > 1:
        raise Malformed(f"'off' cannot be combined with other conditions, got {text!r}")
    return frozenset(tokens)


# "*", "null", or scheme://host[:port] where the host may start with "*."
_ORIGIN = re.compile(
    r"[a-z][a-z0-9+.-]*://(\*\.)?(?!-)[A-Za-z0-9-]{1,63}(\.(?!-)[A-Za-z0-9-]{1,63})*(:[0-9]{1,5})?"
)


class _PartlyMalformed(Malformed):
    """A list with bad items: it is rejected, and the good items are used instead of the
    default, when the default would allow more than the list (as ingress-nginx does)."""

    def __init__(self, message: str, kept: Any) -> None:
        super().__init__(message)
        self.kept = kept


def _origins(text: str, _: Reading) -> tuple[str, ...]:
    """The origins allowed. A bad one is dropped, never widened to the default "*"."""
    origins = [item.strip() for item in text.split(",") if item.strip()]
    if "*" in origins:
        return ("*",)
    bad = [o for o in origins if o != "null" and _ORIGIN.fullmatch(o) is None]
    if not origins or bad:
        message = (
            f"{', '.join(map(repr, bad)) or 'nothing'} in {text!r}: expected '*' or "
            "comma-separated origins such as https://app.example.com or https://*.example.com"
        )
        raise _PartlyMalformed(message, tuple(o for o in origins if o not in bad))
    return tuple(origins)


def _token_list(text: str, what: str, star: bool = False) -> str:
    items = [item.strip() for item in re.split(r"[,\s]+", text) if item.strip()]
    for item in items:
        if not (star and item == "*"):
            try:
                read_header_name(item)
            except Malformed:
                raise Malformed(f"{item!r} in {text!r} is not a {what}") from None
    if not items:
        raise Malformed(f"expected a comma-separated list of {what}s, got {text!r}")
    return ", ".join(items)


def _methods(text: str, _: Reading) -> str:
    return _token_list(text, "method")


def _headers_list(text: str, _: Reading) -> str:
    return _token_list(text, "header name")


def _expose_headers(text: str, _: Reading) -> str:
    return _token_list(text, "header name", star=True)


def _url(text: str, _: Reading) -> str:
    url = text.strip()
    if re.fullmatch(r"https?://[^/\s?#]+[!-~]*", url) is None:
        raise Malformed(
            f"expected an absolute http:// or https:// URL without spaces, got {text!r}"
        )
    return url


def _permanent_code(text: str, _: Reading) -> int:
    return read_int(text, 300, 308)


def _temporal_code(text: str, _: Reading) -> int:
    return read_int(text, 300, 307)


def _aliases(text: str, _: Reading) -> tuple[str, ...]:
    hosts = [item for item in text.split(",") if item.strip()]
    if not hosts:
        raise Malformed(f"expected a comma-separated list of host names, got {text!r}")
    aliases = []
    for host in hosts:
        try:
            aliases.append(read_host(host, wildcard=True))
        except Malformed as error:
            raise Malformed(f"in {text!r}: {error}") from None
    return tuple(dict.fromkeys(aliases))


def _vhost(text: str, _: Reading) -> str:
    """``host`` or ``host:port``."""
    word = text.strip()
    host, colon, port = word.rpartition(":") if ":" in word else (word, "", "")
    try:
        read_host(host)
        if colon:
            read_int(port, 1, 65535)
    except Malformed:
        raise Malformed(
            f"expected a host name with an optional port (1 to 65535), such as "
            f"app.example.com:8080, got {text!r}"
        ) from None
    return word.lower()


def _header_value(text: str, _: Reading) -> str:
    value = read_header_value(text)
    if not value:
        raise Malformed("expected a value, got ''")
    return value


def _http_version(text: str, _: Reading) -> str:
    if text.strip() not in ("1.0", "1.1"):
        raise Malformed(f"expected '1.0' or '1.1', got {text!r}")
    return text.strip()


_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")  # DNS-1123 label
_CONFIGMAP_NAME = re.compile(r"[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?")  # DNS-1123 subdomain


def _custom_headers(text: str, reading: Reading) -> HeaderList:
    """The ConfigMap's data as response headers, replacing add-headers' of the same name."""
    namespace, slash, name = text.strip().rpartition("/")
    if not slash:
        namespace = reading.namespace
    if _NAME.fullmatch(namespace) is None or _CONFIGMAP_NAME.fullmatch(name) is None:
        raise Malformed(f"expected a ConfigMap as 'name' or 'namespace/name', got {text!r}")
    data = reading.configmap(f"{namespace}/{name}") if reading.configmap else None
    if data is None:
        raise Malformed(f"ConfigMap {namespace}/{name} (from {text!r}) does not exist")
    try:
        headers = read_headers(dict(data))
    except Malformed as error:
        raise Malformed(f"ConfigMap {namespace}/{name}: {error}") from None
    names = {header.lower() for header, _ in headers}
    kept = tuple(h for h in reading.settings.add_headers if h[0].lower() not in names)
    return kept + headers


def _default_backend(text: str, _: Reading) -> tuple[str, int | str]:
    name = text.strip()
    if _NAME.fullmatch(name) is None:
        raise Malformed(f"expected the name of a Service in the Ingress's namespace, got {text!r}")
    return name, FIRST_PORT


_PROTOCOLS = {"HTTP": "HTTP", "HTTPS": "HTTPS", "AUTO_HTTP": "HTTP"}
_UNSUPPORTED_PROTOCOLS = {"GRPC": "HTTP/2", "GRPCS": "HTTP/2", "FCGI": "FastCGI"}


def _backend_protocol(text: str, _: Reading) -> str:
    word = text.strip().upper()
    if word in _UNSUPPORTED_PROTOCOLS:
        raise Malformed(
            f"{text!r} needs {_UNSUPPORTED_PROTOCOLS[word]}, not supported yet; "
            "the backend is spoken to in HTTP"
        )
    if word not in _PROTOCOLS:
        raise Malformed(f"expected HTTP, HTTPS or AUTO_HTTP, got {text!r}")
    return _PROTOCOLS[word]


def _ssl_name(text: str, _: Reading) -> str:
    return read_host(text)


def _ssl_protocols(text: str, _: Reading) -> tuple[str, ...]:
    protocols = text.split()
    bad = [p for p in protocols if p not in ("TLSv1.2", "TLSv1.3")]
    if not protocols or bad:
        raise Malformed(f"expected space-separated TLSv1.2 and/or TLSv1.3, got {text!r}")
    return tuple(dict.fromkeys(protocols))


def _satisfy(text: str, _: Reading) -> bool:
    """``satisfy``: any (one of the allow list and the authentication suffices) or all."""
    if text in ("any", "all"):
        return text == "any"
    raise Malformed(f"expected 'any' or 'all', got {text!r}")


def _text(read: Callable[[str], Any]) -> Parser:
    """A parser of the text alone (most are)."""
    return lambda text, _: read(text)


def _auth_secret(text: str, reading: Reading) -> tuple[str, str]:
    return read_secret_name(text, reading.namespace)


def _auth_tls_secret(text: str, reading: Reading) -> str:
    return read_secret(text, reading.namespace)


def _load_balance(text: str, _: Reading) -> str:
    return read_choice(text, LOAD_BALANCE)


def _affinity_type(text: str, _: Reading) -> bool:
    read_choice(text, ("cookie",))
    return True


def _affinity_mode(text: str, _: Reading) -> str:
    return read_choice(text, AFFINITY_MODES)


def _canary_behavior(text: str, _: Reading) -> str:
    return read_choice(text, CANARY_BEHAVIORS)


# -- the table -----------------------------------------------------------------------


def _table(*entries: Annotation) -> dict[str, Annotation]:
    return {entry.name: entry for entry in entries}


A = Annotation
ANNOTATIONS: Mapping[str, Annotation] = _table(
    # HTTPS and paths
    A("ssl-redirect", "ssl_redirect", _bool, "redirect HTTP to HTTPS on TLS hosts (308)"),
    A("force-ssl-redirect", "force_ssl_redirect", _bool, "redirect to HTTPS even without TLS"),
    A("rewrite-target", "rewrite_target", _rewrite_target, "replace the path ($1..$9)"),
    A("use-regex", "use_regex", _bool, "Prefix paths are regexes (RE2, case-insensitive)"),
    # bodies
    A("proxy-body-size", "max_body_bytes", _size, "largest request body (413); 0: no limit"),
    A("client-body-buffer-size", "", _size, NO_EFFECT, no_op=True),
    A("proxy-request-buffering", "", _on_off, NO_EFFECT, no_op=True),
    A("proxy-buffering", "", _on_off, NO_EFFECT, no_op=True),
    A("proxy-buffer-size", "", _size, NO_EFFECT, no_op=True),
    A("proxy-buffers-number", "", _count, NO_EFFECT, no_op=True),
    A("proxy-max-temp-file-size", "", _size, NO_EFFECT, no_op=True),
    # timeouts and retries
    A("proxy-connect-timeout", "connect_timeout", _timeout, "time to connect to a pod"),
    A("proxy-read-timeout", "read_timeout", _timeout, "time between two reads from a pod"),
    A("proxy-send-timeout", "send_timeout", _timeout, "time between two writes to a pod"),
    A("proxy-next-upstream", "next_upstream", _next_upstream, "when to try another pod"),
    A("proxy-next-upstream-tries", "next_upstream_tries", _whole, "attempts; 0: every pod"),
    A("proxy-next-upstream-timeout", "next_upstream_timeout", _duration, "time for all tries"),
    # who may send requests
    A("whitelist-source-range", "allow", _networks, "only these clients (403)", True),
    A("allowlist-source-range", "allow", _networks, "only these clients (403)", True),
    A("denylist-source-range", "deny", _networks, "never these clients (403)", True),
    A("limit-rps", "limit.rps", _whole, "requests per second per client", True),
    A("limit-rpm", "limit.rpm", _whole, "requests per minute per client", True),
    A("limit-burst-multiplier", "limit.burst_multiplier", _count, "burst = rate x this", True),
    A("limit-connections", "limit.connections", _whole, "requests at once per client", True),
    A("limit-whitelist", "limit.exempt", _networks, "clients never rate limited", True),
    # CORS
    A("enable-cors", "cors.enabled", _bool, "answer preflights, add CORS headers"),
    A("cors-allow-origin", "cors.origins", _origins, "origins allowed (wildcards too)"),
    A("cors-allow-methods", "cors.methods", _methods, "Access-Control-Allow-Methods"),
    A("cors-allow-headers", "cors.headers", _headers_list, "Access-Control-Allow-Headers"),
    A("cors-expose-headers", "cors.expose_headers", _expose_headers, "...-Expose-Headers"),
    A("cors-allow-credentials", "cors.credentials", _bool, "...-Allow-Credentials"),
    A("cors-max-age", "cors.max_age", _whole, "Access-Control-Max-Age"),
    # answered by the proxy
    A("permanent-redirect", "redirect.permanent", _url, "redirect every request (301)"),
    A("permanent-redirect-code", "redirect.permanent_code", _permanent_code, "its status"),
    A("temporal-redirect", "redirect.temporal", _url, "redirect every request (302)"),
    A("temporal-redirect-code", "redirect.temporal_code", _temporal_code, "its status"),
    A("app-root", "app_root", _app_root, "redirect / to this path (302)"),
    A("from-to-www-redirect", "from_to_www", _bool, "redirect www.host <-> host (308)"),
    A("server-alias", "aliases", _aliases, "more hosts with the same rules"),
    # what is sent
    A("upstream-vhost", "upstream_vhost", _vhost, "the Host sent to the pods"),
    A("x-forwarded-prefix", "forwarded_prefix", _header_value, "X-Forwarded-Prefix"),
    A("custom-headers", "response_headers", _custom_headers, "response headers (ConfigMap)"),
    A("proxy-http-version", "proxy_http_version", _http_version, "HTTP version to the pods"),
    A("enable-access-log", "access_log", _bool, "log this route's requests"),
    # where it goes
    A("service-upstream", "service_upstream", _bool, "the Service's cluster IP, not its pods"),
    A("default-backend", "default_backend", _default_backend, "no pods, or an error status"),
    A("custom-http-errors", "custom_http_errors", _codes, "statuses the default backend answers"),
    A("backend-protocol", "upstream_tls.protocol", _backend_protocol, "HTTP or HTTPS to pods"),
    A("proxy-ssl-verify", "upstream_tls.verify", _on_off, "verify the pods' certificates"),
    A("proxy-ssl-name", "upstream_tls.name", _ssl_name, "the name verified"),
    A("proxy-ssl-server-name", "upstream_tls.send_sni", _on_off, "send SNI to the pods"),
    A("proxy-ssl-verify-depth", "upstream_tls.verify_depth", _whole, "chain depth verified"),
    A("proxy-ssl-protocols", "upstream_tls.protocols", _ssl_protocols, "TLS versions to pods"),
    A("proxy-ssl-secret", "upstream_tls", None, "CA and client certificate (a Secret)"),
    # which endpoint: affinity, else upstream-hash-by, else load-balance
    A("load-balance", "load_balance", _load_balance, "round_robin or ewma (peak EWMA)"),
    A("upstream-hash-by", "upstream_hash", _text(read_hash_key), "consistent hashing on this key"),
    A("upstream-hash-by-subset", "upstream_hash_subset", _bool, "hash to a subset of pods"),
    A("upstream-hash-by-subset-size", "upstream_hash_subset_size", _count, "pods per subset"),
    A("affinity", "affinity.enabled", _affinity_type, "cookie: sticky sessions"),
    A("affinity-mode", "affinity.mode", _affinity_mode, "balanced or persistent"),
    A("affinity-canary-behavior", "affinity.canary_behavior", _canary_behavior, "sticky/legacy"),
    A("session-cookie-name", "affinity.name", _text(read_cookie_name), "the cookie's name"),
    A(
        "session-cookie-path",
        "affinity.path",
        _text(read_cookie_path),
        "its Path (the rule's path)",
    ),
    A("session-cookie-domain", "affinity.domain", _text(read_cookie_domain), "its Domain"),
    A("session-cookie-samesite", "affinity.samesite", _text(read_samesite), "its SameSite"),
    A(
        "session-cookie-conditional-samesite-none",
        "affinity.conditional_samesite_none",
        _bool,
        "no SameSite=None for browsers that reject it",
    ),
    A("session-cookie-secure", "affinity.secure", _bool, "Secure over plain HTTP too"),
    A("session-cookie-max-age", "affinity.max_age", _text(read_seconds), "its Max-Age"),
    A(
        "session-cookie-expires",
        "affinity.expires",
        _text(read_seconds),
        "its Expires, seconds from now",
    ),
    A(
        "session-cookie-change-on-failure",
        "affinity.change_on_failure",
        _bool,
        "a failed sticky pod: the cookie moves",
    ),
    A("ssl-passthrough", "ssl_passthrough", _bool, "relay TLS to the pods undecrypted, by SNI"),
    # canary Ingresses
    A("canary", "canary.enabled", _bool, "merge onto the main rule of the host and path"),
    A("canary-by-header", "canary.header", read_header, "always/never: canary or main"),
    A("canary-by-header-value", "canary.header_value", read_header_value_text, "-> canary"),
    A("canary-by-header-pattern", "canary.header_pattern", read_header_pattern, "-> canary"),
    A("canary-by-cookie", "canary.cookie", read_canary_cookie, "always/never: canary or main"),
    A("canary-weight", "canary.weight", read_weight, "requests in the total -> canary"),
    A("canary-weight-total", "canary.weight_total", read_weight_total, "default 100"),
    # basic authentication (ingress/basic_auth.py): the build reads the Secret
    A("auth-type", "basic_auth.type", _text(read_auth_type), "basic", protection=True),
    A("auth-secret", "basic_auth.secret", _auth_secret, "the users (htpasswd)", protection=True),
    A(
        "auth-secret-type",
        "basic_auth.secret_type",
        _text(read_secret_type),
        "auth-file or auth-map",
        protection=True,
    ),
    A("auth-realm", "basic_auth.realm", _text(read_realm), "the 401's realm", protection=True),
    # external authentication: read together by external_auth.py (the global one too)
    *(
        A(name, "external_auth", None, summary, True)
        for name, summary in EXTERNAL_AUTH_SUMMARIES.items()
    ),
    A("auth-keepalive-share-vars", "", None, "nothing to share; accepted", True, no_op=True),
    A("satisfy", "satisfy_any", _satisfy, "any: the allow list or the authentication suffices"),
    # client certificates (the host's TLS handshakes ask for them: ingress/client_auth.py)
    A("auth-tls-secret", "client_auth.secret", _auth_tls_secret, "the CA bundle (a Secret)", True),
    A(
        "auth-tls-verify-client",
        "client_auth.verify",
        _text(read_verify_client),
        "on, off, optional, optional_no_ca",
        True,
    ),
    A("auth-tls-verify-depth", "client_auth.depth", _text(read_verify_depth), "chain depth", True),
    A(
        "auth-tls-pass-certificate-to-upstream",
        "client_auth.pass_certificate",
        _bool,
        "ssl-client-cert to the pods",
        True,
    ),
    A("auth-tls-error-page", "client_auth.error_page", _text(read_error_page), "302 here", True),
    A("auth-tls-match-cn", "client_auth.match_cn", _text(read_match_cn), "CN=regex or 403", True),
)
del A

# never executed: what to use instead
SNIPPETS: Mapping[str, str] = {
    "configuration-snippet": (
        "add-headers or custom-headers for response headers, proxy-set-headers for request "
        "headers, and the redirect annotations (permanent-redirect, temporal-redirect, "
        "app-root, from-to-www-redirect) for returns"
    ),
    "server-snippet": (
        "server-alias for more names, the redirect annotations for returns, custom-headers "
        "for response headers"
    ),
    "stream-snippet": "nothing yet: fastroute does not proxy TCP or UDP streams",
    "auth-snippet": "auth-url's annotations, and auth-proxy-set-headers for request headers",
    "modsecurity-snippet": (
        "allowlist-source-range, denylist-source-range and the limit-* annotations for access "
        "rules; fastroute has no WAF"
    ),
}

FAMILIES: tuple[Family, ...] = (
    Family("auth-", "authentication of a kind fastroute lacks", protection=True),
)

_GROUPS = (
    "cors",
    "limit",
    "upstream_tls",
    "redirect",
    "affinity",
    "canary",
    "basic_auth",
    "client_auth",
)


# -- reading -------------------------------------------------------------------------


def _present(annotations: Mapping[str, Any]) -> tuple[dict[str, tuple[str, str]], list[str]]:
    """name -> (annotation, text) for the prefix that wins, and the overridden keys."""
    found: dict[str, tuple[str, str]] = {}
    overridden = []
    for prefix in PREFIXES:
        for key, value in annotations.items():
            if not isinstance(key, str) or not key.startswith(prefix):
                continue
            name = key[len(prefix) :]
            text = ("true" if value else "false") if isinstance(value, bool) else str(value)
            if name in found:
                if found[name][1] != text:
                    overridden.append(key)
            else:
                found[name] = key, text
    return found, overridden


def _configured_networks(settings: Settings, key: str, refused: dict[str, str]) -> Networks | None:
    """The ConfigMap's list for ``key`` (None when empty); a malformed one fails closed
    unless an annotation replaces it."""
    entries = getattr(settings, key.replace("-", "_"))
    if not any(entries):
        return None
    try:
        return read_networks(",".join(entries))
    except Malformed as error:
        field = "allow" if key == "whitelist-source-range" else "deny"
        refused[field] = f"the ConfigMap's {key} is malformed ({error})"
        return None


def _defaults(settings: Settings, refused: dict[str, str]) -> dict[str, Any]:
    """The Policy fields the ConfigMap sets; an annotation overrides each one."""
    allow = _configured_networks(settings, "whitelist-source-range", refused)
    deny = _configured_networks(settings, "denylist-source-range", refused) or ()
    return {
        "ssl_redirect": settings.ssl_redirect,
        "force_ssl_redirect": settings.force_ssl_redirect,
        "max_body_bytes": settings.proxy_body_size,
        "connect_timeout": settings.proxy_connect_timeout,
        "read_timeout": settings.proxy_read_timeout,
        "send_timeout": settings.proxy_send_timeout,
        "next_upstream": settings.proxy_next_upstream,
        "next_upstream_tries": settings.proxy_next_upstream_tries,
        "allow": allow,
        "deny": deny,
        "response_headers": settings.add_headers,
        "upstream_headers": settings.proxy_set_headers,
        "custom_http_errors": settings.custom_http_errors,
        "hsts": settings.hsts_value,
        "load_balance": settings.load_balance,
        "upstream_hash": settings.upstream_hash_by,
    }


def read_policy(
    annotations: Mapping[str, Any],
    settings: Settings = DEFAULT_SETTINGS,
    namespace: str = "",
    configmap: ConfigMapLookup | None = None,
) -> tuple[Policy, list[tuple[str, str, bool]]]:
    """The policy an Ingress's annotations ask for over the ConfigMap's defaults, and
    (annotation, reason, is_warning) notes.

    Args:
        annotations: the Ingress's ``metadata.annotations``.
        settings: the controller ConfigMap's values: the defaults annotations override.
        namespace: the Ingress's, for the ConfigMaps and Services annotations name.
        configmap: "namespace/name" -> its data, or None when it does not exist.
    """
    present, overridden = _present(annotations)
    if not present and not overridden:  # most Ingresses: the ConfigMap's policy alone
        return _unannotated(settings), []
    return _read_policy(present, overridden, settings, namespace, configmap)


@lru_cache(maxsize=16)
def _unannotated(settings: Settings) -> Policy:
    """The policy of an Ingress without annotations: one object per settings, so that
    what is derived from it once per policy (the proxy's fields, timeouts) is shared."""
    return _read_policy({}, [], settings, "", None)[0]


def _read_policy(
    present: Mapping[str, tuple[str, str]],
    overridden: Iterable[str],
    settings: Settings,
    namespace: str,
    configmap: ConfigMapLookup | None,
) -> tuple[Policy, list[tuple[str, str, bool]]]:
    reading = Reading(namespace, settings, configmap)
    notes: list[tuple[str, str, bool]] = []
    refused: list[str] = []
    for key in overridden:
        name = key.partition("/")[2]
        notes.append((key, f"overridden by {present[name][0]}, which is also set", True))

    values: dict[str, tuple[str, Any]] = {}  # field -> (annotation, value)
    for name, entry in ANNOTATIONS.items():
        if name not in present or entry.parse is None:
            continue
        key, text = present[name]
        try:
            value = entry.parse(text, reading)
        except Malformed as error:
            notes.append((key, str(error), False))
            if entry.protection:
                refused.append(f"{key} is malformed ({error})")
            if isinstance(error, _PartlyMalformed):
                values[entry.field] = key, error.kept
            continue
        if entry.no_op:
            notes.append((key, NO_EFFECT, True))
        elif entry.field in values:
            earlier = values[entry.field][0]
            notes.append((earlier, f"overridden by {key}, which sets the same thing", True))
        if entry.field:
            values[entry.field] = key, value

    for name, (key, _) in present.items():
        if name in ANNOTATIONS:
            continue
        if name in SNIPPETS:
            notes.append((key, f"snippets are never executed; use {SNIPPETS[name]}", True))
            continue
        family = next((f for f in FAMILIES if name.startswith(f.start)), None)
        if family is not None and family.protection:
            reason = (
                f"not implemented by fastroute yet ({family.feature}); the routes answer 503 "
                "rather than serve without it"
            )
            notes.append((key, reason, False))
            refused.append(f"{key}: {reason}")
        elif family is not None:
            notes.append(
                (key, f"not implemented by fastroute yet ({family.feature}); ignored", True)
            )
        elif key.startswith("nginx.ingress.kubernetes.io/"):
            notes.append((key, "not implemented by fastroute; ignored", True))
        else:
            notes.append((key, "not a fastroute annotation; ignored", True))

    configured_refusals: dict[str, str] = {}  # Policy field -> why
    fields = _defaults(settings, configured_refusals)
    refused += [why for field, why in configured_refusals.items() if field not in values]
    groups: dict[str, dict[str, tuple[str, Any]]] = {group: {} for group in _GROUPS}
    for field_name, (key, value) in values.items():
        group, dot, member = field_name.partition(".")
        if dot:
            groups[group][member] = key, value
        else:
            fields[field_name] = value
    fields.update(_assemble(groups, settings, notes))
    _balancing_notes(fields, present, notes)
    external_auth, auth_refused, auth_notes = external_auth_policy(
        present, settings, namespace, configmap
    )
    notes += auth_notes
    if auth_refused:
        refused.append(auth_refused)
    fields["external_auth"] = external_auth
    if refused:
        fields["refused"] = "; ".join(refused)
    if fields.get("canary") is not None:
        fields = canary_fields(fields, values, notes)
    return Policy(**fields), notes


def _assemble(
    groups: dict[str, dict[str, tuple[str, Any]]],
    settings: Settings,
    notes: list[tuple[str, str, bool]],
) -> dict[str, Any]:
    """The Policy fields made of several annotations, each only when its switch is on."""

    def unused(group: str, switch: str, skip: str = "") -> None:
        for member, (key, _) in groups[group].items():
            if member != skip:
                notes.append((key, f"has no effect without {switch}; ignored", True))

    def members(group: str, *skip: str) -> dict[str, Any]:
        return {m: v for m, (_, v) in groups[group].items() if m not in skip}

    fields: dict[str, Any] = {}
    cors = members("cors", "enabled")
    if members("cors").get("enabled"):
        fields["cors"] = Cors(**cors)
    else:
        unused("cors", 'enable-cors: "true"', skip="enabled")

    limit = members("limit")
    if limit.get("rps") or limit.get("rpm") or limit.get("connections"):
        fields["limit"] = RateLimit(
            **limit,
            status=settings.limit_req_status_code,
            connections_status=settings.limit_conn_status_code,
        )
    else:
        unused("limit", "a non-zero limit-rps, limit-rpm or limit-connections")

    tls = members("upstream_tls", "protocol")
    if members("upstream_tls").get("protocol") == "HTTPS":
        fields["upstream_tls"] = UpstreamTLS(**tls)
    else:
        unused("upstream_tls", 'backend-protocol: "HTTPS"', skip="protocol")

    if members("affinity").get("enabled"):
        fields["affinity"] = Affinity(**members("affinity", "enabled"))
    else:
        unused("affinity", 'affinity: "cookie"', skip="enabled")

    redirect = members("redirect")
    for kind, default_code in (("temporal", 302), ("permanent", 301)):
        if kind in redirect:
            fields["redirect"] = redirect.get(f"{kind}_code", default_code), redirect[kind]
            if kind == "temporal" and "permanent" in redirect:
                notes.append(
                    (groups["redirect"]["permanent"][0], "temporal-redirect wins; ignored", True)
                )
            break
    for kind in ("temporal", "permanent"):
        if f"{kind}_code" in redirect and kind not in redirect:
            key = groups["redirect"][f"{kind}_code"][0]
            notes.append((key, f"has no effect without {kind}-redirect; ignored", True))

    canary = canary_rules(groups["canary"], notes)
    if canary is not None:
        fields["canary"] = canary

    basic = members("basic_auth")
    if "type" in basic or "secret" in basic:
        named = groups["basic_auth"]
        fields["basic_auth"] = basic_auth_of(basic, (named.get("secret") or named["type"])[0])
    else:
        unused("basic_auth", "auth-type: basic")
    if "secret" in groups["client_auth"]:
        fields["client_auth"] = ClientAuth(**members("client_auth"))
    else:
        unused("client_auth", "auth-tls-secret")
    return fields


def _balancing_notes(
    fields: dict[str, Any],
    present: Mapping[str, tuple[str, str]],
    notes: list[tuple[str, str, bool]],
) -> None:
    """What picks the endpoint, when several annotations ask: affinity, else
    upstream-hash-by, else load-balance (ingress-nginx's order); and the cookie Path of
    an Ingress whose paths are regular expressions."""
    affinity = fields.get("affinity")
    overridden = []
    if affinity is not None and "upstream-hash-by" in present:
        overridden.append(("upstream-hash-by", "affinity"))
    if (affinity is not None or fields.get("upstream_hash")) and "load-balance" in present:
        overridden.append(("load-balance", "affinity" if affinity else "upstream-hash-by"))
    for name, winner in overridden:
        notes.append((present[name][0], f"{winner} picks the endpoint instead; ignored", True))
    if not fields.get("upstream_hash"):
        for name in ("upstream-hash-by-subset", "upstream-hash-by-subset-size"):
            if name in present:
                notes.append((present[name][0], "has no effect without upstream-hash-by", True))
    regex = bool(fields.get("use_regex")) or fields.get("rewrite_target") is not None
    if affinity is not None and regex:
        fields["affinity"] = replace(affinity, regex_paths=True)
        if affinity.path is None:
            notes.append(
                (
                    present["affinity"][0],
                    "session-cookie-path should be set when the paths are regexes (use-regex or "
                    "rewrite-target): the cookie's "
                    "Path is the regex's literal start, up to its last '/'",
                    True,
                )
            )
