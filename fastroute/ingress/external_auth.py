"""External authentication (``auth-url`` and its family): the parsed, frozen configuration.

An Ingress annotated with ``auth-url`` (or served under the ConfigMap's
``global-auth-url``) has every request asked about first, as nginx's ``auth_request``
does: ``fastroute/proxy/external_auth.py`` makes the subrequest; this module reads the
annotations and keys into an ``ExternalAuth``, with no I/O. Values may hold nginx
variables where ingress-nginx allows them (the URL, the sign-in URL, the cache key);
``VARIABLES`` lists the ones fastroute expands, and any other is refused with its name,
rather than sent as written. Every malformed value fails closed: the routes answer 503.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import TypeVar
from urllib.parse import parse_qsl, urlsplit

from fastroute.ingress.settings import Settings
from fastroute.ingress.syntax import (
    Malformed,
    read_bool,
    read_header_name,
    read_header_value,
    read_int,
)

__all__ = [
    "ANNOTATION_NAMES",
    "DEFAULT_CACHE_DURATION",
    "SUMMARIES",
    "VARIABLES",
    "CacheRule",
    "ExternalAuth",
    "Template",
    "external_auth_policy",
    "read_cache_duration",
    "read_template",
]

# the nginx variables expanded in auth-url, auth-signin and auth-cache-key
VARIABLES = frozenset(
    {
        "host",  # the Host without its port, lower case
        "http_host",  # the Host as sent
        "best_http_host",
        "scheme",  # http or https: the listener's
        "pass_access_scheme",
        "request_uri",  # path and query as sent
        "escaped_request_uri",  # request_uri, percent-encoded whole (for a query value)
        "uri",  # the path, without the query
        "args",  # the query, without "?"
        "query_string",
        "is_args",  # "?" when there is a query
        "request_method",
        "remote_addr",  # the client's address
        "remote_user",  # the user name of a Basic Authorization
    }
)
# and families: a request field, a cookie, a query argument, by name
VARIABLE_FAMILIES = ("http_", "cookie_", "arg_")
DEFAULT_CACHE_DURATION = "200 202 401 5m"  # ingress-nginx's auth-cache-duration default
DEFAULT_REDIRECT_PARAM = "rd"
DEFAULT_NO_AUTH_LOCATIONS = "/.well-known/acme-challenge"
# what nginx's proxy_cache_valid caches when it names no status code
_DEFAULT_CACHED = frozenset({200, 301, 302})
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE")

# the annotations read here, with a line for the annotation table
SUMMARIES = {
    "auth-url": "ask this URL about each request first",
    "auth-method": "the auth request's method",
    "auth-signin": "a 401 redirects here (rd=)",
    "auth-signin-redirect-param": "the parameter for the URL (rd)",
    "auth-response-headers": "copied from the auth answer upstream",
    "auth-request-redirect": "X-Auth-Request-Redirect",
    "auth-always-set-cookie": "its Set-Cookie on refusals too",
    "auth-cache-key": "cache auth answers by this key",
    "auth-cache-duration": "for how long, by status",
    "auth-proxy-set-headers": "headers for the auth request (ConfigMap)",
    "auth-keepalive": "idle auth connections kept",
    "auth-keepalive-requests": "requests per auth connection",
    "auth-keepalive-timeout": "idle auth connection lifetime",
    "enable-global-auth": "false: not the ConfigMap's global-auth-url",
}
ANNOTATION_NAMES = (*SUMMARIES, "auth-keepalive-share-vars")

_VARIABLE = re.compile(r"\$(?:\{([A-Za-z0-9_]+)\}|([A-Za-z0-9_]+))")
_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")  # DNS-1123 label
_CONFIGMAP_NAME = re.compile(r"[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?")  # DNS-1123 subdomain
_RESPONSE_HEADER = re.compile(r"[A-Za-z0-9_-]+")  # ingress-nginx's rule for these names
_PARAM = re.compile(r"[A-Za-z0-9_.~-]+")
_TIME_PART = r"([0-9]+)(ms|s|m|h|d|w|M|y)"
_TIME = re.compile(f"(?:{_TIME_PART})+")  # "5m", "1m30s" (and "1h 30m": two words)
_TIME_UNITS = {
    "ms": 0.001,
    "s": 1,
    "m": 60,
    "h": 3600,
    "d": 86400,
    "w": 604800,
    "M": 2592000,
    "y": 31536000,
}
# absolute (the scheme may be the request's), or a path on the request's own host
_SIGNIN = re.compile(r"(?:(?:https?|\$scheme|\$pass_access_scheme)://[^/?#\s]+|/)[!-~]*")
# a host part a variable may fill: the request's own Host (never a client-chosen field)
_HOST_VARIABLES = frozenset({"host", "http_host", "best_http_host"})


@dataclass(frozen=True, slots=True)
class Template:
    """Text with nginx variables: ``parts`` alternate literal text and a variable's name."""

    text: str
    parts: tuple[str, ...]

    @property
    def fixed(self) -> bool:
        return len(self.parts) == 1

    def expand(self, value: Callable[[str], str]) -> str:
        """The text with each variable replaced by ``value(name)``."""
        if len(self.parts) == 1:
            return self.parts[0]
        return "".join(part if i % 2 == 0 else value(part) for i, part in enumerate(self.parts))


def read_template(text: str) -> Template:
    """``text`` with its ``$name`` / ``${name}`` variables, each one fastroute expands."""
    parts: list[str] = []
    position = 0
    for found in _VARIABLE.finditer(text):
        name = found[1] or found[2]
        known = name in VARIABLES or any(
            name.startswith(f) and len(name) > len(f) for f in VARIABLE_FAMILIES
        )
        if not known:
            raise Malformed(
                f"${name} in {text!r} is not a variable fastroute expands (it knows "
                f"{', '.join('$' + v for v in sorted(VARIABLES))}, $http_NAME, $cookie_NAME "
                "and $arg_NAME)"
            )
        parts += [text[position : found.start()], name]
        position = found.end()
    if "$" in text[position:] or any("$" in p for p in parts[::2]):
        raise Malformed(f"a '$' in {text!r} does not start a variable name")
    parts.append(text[position:])
    return Template(text, tuple(parts))


@dataclass(frozen=True, slots=True)
class CacheRule:
    """One ``proxy_cache_valid`` entry: answers with these codes are kept ``seconds``."""

    codes: frozenset[int]  # empty with ``any``: every code
    seconds: float
    any: bool = False

    def covers(self, status: int) -> bool:
        return self.any or status in self.codes


def read_cache_duration(text: str) -> tuple[CacheRule, ...]:
    """``auth-cache-duration``: comma-separated ``[code ...|any] time [time ...]`` entries,
    nginx's proxy_cache_valid syntax (``200 202 10m, 401 1m30s``); without a code, 200,
    301 and 302 are cached."""
    rules = []
    for entry in text.split(","):
        words = entry.split()
        if not words:
            continue
        codes: set[int] = set()
        seconds = 0.0
        any_code = False
        timed = False
        for word in words:
            if _TIME.fullmatch(word) is not None:
                timed = True
                for part in re.finditer(_TIME_PART, word):
                    seconds += int(part[1]) * _TIME_UNITS[part[2]]
            elif timed:
                raise Malformed(f"{word!r} in {text!r}: status codes come before the time")
            elif word == "any":
                any_code = True
            elif word.isdigit() and len(word) == 3 and 100 <= int(word) <= 599:
                codes.add(int(word))
            else:
                raise Malformed(
                    f"{word!r} in {text!r} is neither a status code nor a time such as 5m "
                    "(units ms, s, m, h, d, w, M, y)"
                )
        if not timed:
            raise Malformed(f"{entry.strip()!r} in {text!r} has no time, such as 5m")
        rules.append(CacheRule(frozenset(codes or _DEFAULT_CACHED), seconds, any_code))
    if not rules:
        raise Malformed(f"expected entries such as '200 202 401 5m', got {text!r}")
    return tuple(rules)


@dataclass(frozen=True, slots=True)
class ExternalAuth:
    """How one route's requests are asked about (``auth-*``, or the global ``global-auth-*``)."""

    url: Template  # http(s)://host[:port]/path?query, variables expanded per request
    method: str = ""  # "": the request's own
    signin: Template | None = None  # a 401 redirects here (302), rd= included
    response_headers: tuple[str, ...] = ()  # copied from a 2xx answer to the upstream request
    request_redirect: str = ""  # X-Auth-Request-Redirect ("": the request's URI)
    always_set_cookie: bool = False  # the answer's Set-Cookie on every response, not 2xx/3xx
    cache_key: Template | None = None  # None: no cache
    cache_rules: tuple[CacheRule, ...] = ()
    proxy_set_headers: tuple[tuple[str, str], ...] = ()  # set on the auth request
    keepalive: int | None = None  # idle connections kept; None: the proxy's default
    keepalive_timeout: float = 60.0
    keepalive_requests: int = 1000
    no_auth_locations: tuple[str, ...] = ()  # rule paths starting with one: no auth
    origin: str = "auth-url"  # or "global-auth-url": where it came from (metrics)

    def applies_to(self, path: str) -> bool:
        """Whether a rule with ``path`` is asked about (ingress-nginx's no-auth-locations)."""
        return not path.startswith(self.no_auth_locations)

    def cached_for(self, status: int) -> float:
        """Seconds an answer with ``status`` is kept (0: not kept)."""
        if self.cache_key is None:
            return 0.0
        return next((rule.seconds for rule in self.cache_rules if rule.covers(status)), 0.0)


def _url(text: str) -> Template:
    """An absolute http(s) URL with a host; variables in its path and query, and in its
    host only the request's own Host."""
    url = text.strip()
    match = re.fullmatch(r"(https?)://([^/?#\s]+)([!-~]*)", url)
    if match is None:
        raise Malformed(f"expected an absolute http:// or https:// URL with a host, got {text!r}")
    if "@" in match[2]:
        raise Malformed(
            f"{text!r}: credentials in the URL are not sent; use auth-proxy-set-headers"
        )
    authority = read_template(match[2])
    if any(name not in _HOST_VARIABLES for name in authority.parts[1::2]):
        raise Malformed(
            f"{text!r}: only $host, $http_host or $best_http_host may name the auth "
            "service's host (a client must not choose where it is asked)"
        )
    return read_template(url)


def _signin(text: str, param: str) -> Template:
    """The sign-in URL with ``param=`` the original URL, as ingress-nginx builds it: appended
    as the query (or to it), unless the URL already sets that parameter."""
    url = text.strip()
    if _SIGNIN.fullmatch(url) is None:
        raise Malformed(
            f"expected an absolute http:// or https:// URL, or a path, without spaces, got {text!r}"
        )
    read_template(url)
    query = urlsplit(url).query
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(name == param and value for name, value in pairs):
        return read_template(url)
    joiner = "&" if pairs else "?"
    return read_template(
        f"{url}{joiner}{param}=$pass_access_scheme://$http_host$escaped_request_uri"
    )


def _response_headers(text: str) -> tuple[str, ...]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    for name in names:
        if _RESPONSE_HEADER.fullmatch(name) is None:
            raise Malformed(f"{name!r} in {text!r} is not a header name")
    return tuple(dict.fromkeys(names))


def _method(text: str) -> str:
    word = text.strip()
    if word not in _METHODS:
        raise Malformed(f"expected one of {', '.join(_METHODS)}, got {text!r}")
    return word


def _request_redirect(text: str) -> str:
    value = read_header_value(text)
    if "$" in value:
        raise Malformed(f"{text!r}: auth-request-redirect is sent as written, without variables")
    return value


def _locations(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


ConfigMapLookup = Callable[[str], Mapping[str, str] | None]
T = TypeVar("T")


def _proxy_set_headers(
    text: str, namespace: str, configmap: ConfigMapLookup | None
) -> tuple[tuple[str, str], ...]:
    """The headers of a ConfigMap in the Ingress's namespace (as ingress-nginx requires)."""
    ref = text.strip()
    ns, slash, name = ref.rpartition("/")
    if not slash:
        ns = namespace
    if ns != namespace:
        raise Malformed(f"{text!r}: only a ConfigMap in the Ingress's namespace may be named")
    if _NAME.fullmatch(ns or "x") is None or _CONFIGMAP_NAME.fullmatch(name) is None:
        raise Malformed(f"expected a ConfigMap as 'name' or 'namespace/name', got {text!r}")
    data = configmap(f"{ns}/{name}") if configmap is not None else None
    if data is None:
        raise Malformed(f"ConfigMap {ns}/{name} (from {text!r}) does not exist")
    headers = []
    for header in sorted(data):
        if _RESPONSE_HEADER.fullmatch(header) is None:
            raise Malformed(f"ConfigMap {ns}/{name}: {header!r} is not a header name")
        read_header_name(header)
        value = read_header_value(str(data[header]))
        if "$" in value:
            raise Malformed(
                f"ConfigMap {ns}/{name}: header {header!r}: nginx variables are not expanded "
                f"in {value!r}"
            )
        headers.append((header, value))
    return tuple(headers)


def _read(
    values: Mapping[str, str],
    prefix: str,
    origin: str,
    no_auth: tuple[str, ...],
    namespace: str = "",
    configmap: ConfigMapLookup | None = None,
) -> ExternalAuth:
    """An ExternalAuth from ``prefix``-named values (``auth-`` or ``global-auth-``);
    Malformed names the key."""

    def read(name: str, parse: Callable[[str], T], default: str = "") -> T:
        try:
            return parse(values.get(prefix + name, "").strip() or default)
        except Malformed as error:
            raise Malformed(f"{prefix}{name}: {error}") from None

    fields: dict[str, object] = {"url": read("url", _url), "origin": origin}
    fields["no_auth_locations"] = no_auth
    present = {
        name[len(prefix) :] for name in values if name.startswith(prefix) and values[name].strip()
    }
    if "method" in present:
        fields["method"] = read("method", _method)
    param = DEFAULT_REDIRECT_PARAM
    if "signin-redirect-param" in present:
        param = read("signin-redirect-param", _param)
    if "signin" in present:
        fields["signin"] = read("signin", lambda t: _signin(t, param))
    if "response-headers" in present:
        fields["response_headers"] = read("response-headers", _response_headers)
    if "request-redirect" in present:
        fields["request_redirect"] = read("request-redirect", _request_redirect)
    if "always-set-cookie" in present:
        fields["always_set_cookie"] = read("always-set-cookie", read_bool)
    if "cache-key" in present:
        fields["cache_key"] = read("cache-key", read_template)
        fields["cache_rules"] = read("cache-duration", read_cache_duration, DEFAULT_CACHE_DURATION)
    elif "cache-duration" in present:
        read("cache-duration", read_cache_duration)  # validated; no key: no cache
    if "proxy-set-headers" in present:
        fields["proxy_set_headers"] = read(
            "proxy-set-headers", lambda t: _proxy_set_headers(t, namespace, configmap)
        )
    if "keepalive" in present:
        fields["keepalive"] = read("keepalive", read_int)
    if "keepalive-timeout" in present:
        fields["keepalive_timeout"] = float(read("keepalive-timeout", lambda t: read_int(t, 1)))
    if "keepalive-requests" in present:
        fields["keepalive_requests"] = read("keepalive-requests", lambda t: read_int(t, 1))
    if "keepalive-share-vars" in present:
        read("keepalive-share-vars", read_bool)
    return ExternalAuth(**fields)  # type: ignore[arg-type]


def _param(text: str) -> str:
    word = text.strip()
    if _PARAM.fullmatch(word) is None:
        raise Malformed(f"expected a query parameter name, got {text!r}")
    return word


_GLOBAL_KEYS = {
    "url": "global_auth_url",
    "method": "global_auth_method",
    "signin": "global_auth_signin",
    "signin-redirect-param": "global_auth_signin_redirect_param",
    "response-headers": "global_auth_response_headers",
    "request-redirect": "global_auth_request_redirect",
    "cache-key": "global_auth_cache_key",
    "cache-duration": "global_auth_cache_duration",
    "always-set-cookie": "global_auth_always_set_cookie",
}


@lru_cache(maxsize=16)
def _global(settings: Settings) -> ExternalAuth | str | None:
    """The ConfigMap's global auth (None: not set), or why it is malformed."""
    if not settings.global_auth_url.strip():
        return None
    values = {f"global-auth-{name}": getattr(settings, key) for name, key in _GLOBAL_KEYS.items()}
    try:
        return _read(
            values, "global-auth-", "global-auth-url", _locations(settings.no_auth_locations)
        )
    except Malformed as error:
        return f"the ConfigMap's {error}"


def external_auth_policy(
    present: Mapping[str, tuple[str, str]],
    settings: Settings,
    namespace: str,
    configmap: ConfigMapLookup | None,
) -> tuple[ExternalAuth | None, str, list[tuple[str, str, bool]]]:
    """An Ingress's external auth: its own ``auth-url``, else the ConfigMap's global one
    unless ``enable-global-auth: "false"``; why it is refused ("" if not); notes.

    ``present`` maps annotation names (without prefix) to (annotation, text).
    """
    notes: list[tuple[str, str, bool]] = []
    mine = {name: text for name, (_, text) in present.items() if name in ANNOTATION_NAMES}
    no_auth = _locations(settings.no_auth_locations)
    if "auth-url" in mine:
        try:
            return _read(mine, "auth-", "auth-url", no_auth, namespace, configmap), "", notes
        except Malformed as error:
            name = str(error).partition(":")[0]
            key = present[name][0] if name in present else present["auth-url"][0]
            notes.append((key, str(error).partition(": ")[2], False))
            return None, f"{key} is malformed ({str(error).partition(': ')[2]})", notes
    for name, (key, _) in present.items():
        if name in ANNOTATION_NAMES and name not in ("auth-url", "enable-global-auth"):
            notes.append((key, "has no effect without auth-url; ignored", True))
    enabled = True
    if "enable-global-auth" in present:
        key, text = present["enable-global-auth"]
        try:
            enabled = read_bool(text)
        except Malformed as error:
            notes.append((key, str(error), False))
            return None, f"{key} is malformed ({error})", notes
    if not enabled:
        return None, "", notes
    found = _global(settings)
    if isinstance(found, str):
        return None, found, notes
    return found, "", notes
