"""Every ingress-nginx annotation and ConfigMap key, and what fastroute does with it.

A cluster leaving ingress-nginx carries its annotations and its controller's ConfigMap.
Each name here has one of four statuses, so that a migration report (``fastroute-controller
check``) and the README can say, for every name a user may have written, what happens to it:

- ``honoured``: it means what it meant in ingress-nginx.
- ``accepted``: read and dropped, because nothing a user sees depends on it in fastroute
  (the note says why).
- ``unsupported``: ignored; the note says why and what to use instead.
- ``planned``: ignored today; ``planned_in`` names the work that brings it.

The names are those of ingress-nginx's annotation and ConfigMap documentation, plus the
annotations its parsers read that the documentation leaves out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

__all__ = [
    "ANNOTATIONS",
    "ANNOTATION_PREFIXES",
    "CONFIGMAP_KEYS",
    "Entry",
    "Status",
    "annotation_entry",
    "honoured",
]

ANNOTATION_PREFIXES = ("nginx.ingress.kubernetes.io/", "fastroute.io/")


class Status(StrEnum):
    HONOURED = "honoured"
    ACCEPTED = "accepted"
    UNSUPPORTED = "unsupported"
    PLANNED = "planned"


@dataclass(frozen=True, slots=True)
class Entry:
    """One annotation or ConfigMap key: its status, and what a user needs to know."""

    name: str  # without a prefix
    status: Status
    note: str
    planned_in: str = ""  # for planned ones: "later"

    @property
    def fine(self) -> bool:
        """Whether a cluster using it behaves as it did under ingress-nginx."""
        return self.status in (Status.HONOURED, Status.ACCEPTED)

    @property
    def shown_status(self) -> str:
        """``planned (later)``, or the status alone."""
        return f"{self.status} ({self.planned_in})" if self.planned_in else str(self.status)


_Table = dict[str, Entry]

LATER = "later"  # HTTP/2, gRPC

SNIPPET = (
    "never executed: configuration text from users is a known trap (it ran with the "
    "controller's privileges in ingress-nginx); use {instead}"
)
STREAMS = "fastroute streams bodies: it never buffers them to memory or disk"
NO_TRACER = "fastroute has no tracer; trace headers pass through to the upstream unchanged"
NO_WAF = "fastroute has no web application firewall; put one in front of it or in the app"
NGINX_INTERNAL = "a setting of nginx's own internals, which fastroute does not have"
LOGS = "fastroute logs one line per request to its output, for the cluster's log collector"


def _group(table: _Table, status: Status, note: str, names: str, planned_in: str = "") -> None:
    for name in names.split():
        if name in table:
            raise ValueError(f"{name} is catalogued twice")
        table[name] = Entry(name, status, note, planned_in)


def _each(table: _Table, status: Status, notes: Mapping[str, str], planned_in: str = "") -> None:
    for name, note in notes.items():
        _group(table, status, note, name, planned_in)


def _annotations() -> _Table:
    t: _Table = {}
    honoured, accepted = Status.HONOURED, Status.ACCEPTED
    unsupported, planned = Status.UNSUPPORTED, Status.PLANNED
    _each(
        t,
        honoured,
        {
            "ssl-redirect": "plain HTTP to a TLS host is redirected to HTTPS (308) unless false",
            "force-ssl-redirect": "redirects to HTTPS even for hosts without TLS",
            "rewrite-target": "replaces the whole path, with $1 to $9 from the path's regex "
            "(the query is kept); makes the Ingress's Prefix paths regexes, as use-regex does",
            "use-regex": "the Ingress's Prefix and ImplementationSpecific paths are RE2 regexes, "
            "case-insensitive, from the start of the path; only that Ingress's paths, not the "
            "host's (see Regex paths)",
            "proxy-body-size": "413 beyond the size (k/m/g units); 0: no limit",
            "proxy-connect-timeout": "seconds to connect to a pod, per route",
            "proxy-read-timeout": "seconds between two reads from the pod, per route",
            "proxy-send-timeout": "seconds between two writes to the pod, per route",
            "proxy-next-upstream": "which failures try the next endpoint",
            "proxy-next-upstream-tries": "endpoints tried at most; 0: all",
            "proxy-next-upstream-timeout": "seconds spent on retries at most; 0: no limit",
            "whitelist-source-range": "403 for client addresses outside the CIDRs (the real "
            "client address); a malformed list answers 503 rather than serve unprotected",
            "allowlist-source-range": "the newer name of whitelist-source-range",
            "denylist-source-range": "403 for client addresses inside the CIDRs; a malformed "
            "list answers 503",
            "limit-rps": "requests per second per client address, per replica",
            "limit-rpm": "requests per minute per client address, per replica",
            "limit-burst-multiplier": "the burst allowed, as a multiple of the rate",
            "limit-connections": "requests in progress at once per client address",
            "limit-whitelist": "CIDRs never rate limited",
            "enable-cors": "preflights answered by the proxy, CORS headers on responses",
            "cors-allow-origin": "origins allowed, with https://*.example.com wildcards",
            "cors-allow-methods": "Access-Control-Allow-Methods",
            "cors-allow-headers": "Access-Control-Allow-Headers",
            "cors-expose-headers": "Access-Control-Expose-Headers",
            "cors-allow-credentials": "Access-Control-Allow-Credentials",
            "cors-max-age": "Access-Control-Max-Age",
            "permanent-redirect": "every request redirected to the URL",
            "permanent-redirect-code": "its status (default 301)",
            "temporal-redirect": "every request redirected to the URL",
            "temporal-redirect-code": "its status (default 302)",
            "app-root": "/ redirects to this path",
            "from-to-www-redirect": "www.host and host redirect to the one the rules name",
            "server-alias": "more hosts served by the rules of the Ingress's hosts (other "
            "Ingresses' rules on them too, as in ingress-nginx); an alias that another Ingress "
            "names as a host stays that Ingress's, and is reported",
            "upstream-vhost": "the Host header sent to the pod",
            "x-forwarded-prefix": "X-Forwarded-Prefix sent to the pod; $1 to $9 from a regex path",
            "custom-headers": "response headers from a ConfigMap",
            "proxy-http-version": (
                "1.0 or 1.1 toward the pod; 1.0: a connection per request, a chunked body 411"
            ),
            "enable-access-log": "false: no access log line for these routes",
            "backend-protocol": "HTTP, HTTPS and AUTO_HTTP; GRPC and GRPCS wait for HTTP/2 and "
            "FCGI is not supported: those values are rejected",
            "proxy-ssl-verify": "verify the pod's certificate (backend-protocol: HTTPS)",
            "proxy-ssl-secret": "CA and client certificate toward the pods",
            "proxy-ssl-name": "the name the pod's certificate is checked against",
            "proxy-ssl-server-name": "send that name as SNI",
            "proxy-ssl-verify-depth": "certificate chain depth toward the pods",
            "proxy-ssl-protocols": "TLS versions toward the pods",
            "default-backend": "a Service of the Ingress's namespace (its first port) for the "
            "Ingress's routes without endpoints (the request as sent, with X-Code 503 and the "
            "route's X-Namespace, X-Ingress-Name, X-Service-Name, X-Service-Port, X-Format) and "
            "their custom-http-errors; a missing Service is reported and the routes serve "
            "without it",
            "custom-http-errors": "these upstream statuses are answered by the default backend "
            "(else the catch-all's): the upstream's answer is dropped and a GET / (HEAD for "
            "HEAD) without body asks for the page, with X-Code, X-Format, X-Original-URI, the "
            "route's names, the client's X-Request-ID and Host; the client gets its status and "
            "body; an unreachable error backend is a 502, as in ingress-nginx",
            "service-upstream": "send to the Service's cluster IP and port instead of its "
            "endpoints; a Service without one (headless, ExternalName) keeps its endpoints and "
            "the Ingress is told why",
        },
    )
    _each(
        t,
        accepted,
        {
            "client-body-buffer-size": STREAMS,
            "proxy-request-buffering": STREAMS,
            "proxy-buffering": STREAMS,
            "proxy-buffers-number": STREAMS,
            "proxy-busy-buffers-size": STREAMS,
            "proxy-max-temp-file-size": STREAMS,
            "proxy-buffer-size": f"{STREAMS}; the limit on a response head is --max-header-size",
            "preserve-trailing-slash": "fastroute's HTTPS redirects keep the path exactly as sent",
            "enable-rewrite-log": "fastroute has no rewrite log; `explain` shows how a request "
            "is routed and rewritten",
            "connection-proxy-header": "fastroute manages the connections to the pods itself "
            "(a keep-alive pool)",
        },
    )
    _each(
        t,
        honoured,
        {
            "affinity": "cookie: sticky sessions; the cookie names the pod by a token, the same "
            "in every replica and across config changes",
            "affinity-mode": "balanced (sessions rebalance when pods are added) or persistent",
            "affinity-canary-behavior": "on a canary Ingress: sticky (the default) shares the "
            "main route's cookie affinity, a session staying on the backend it began on; "
            "legacy keeps the canary's own",
            "session-cookie-name": "the cookie's name (default INGRESSCOOKIE)",
            "session-cookie-path": "the cookie's Path; default the rule's path (for a regex "
            "path, its literal start up to the last '/')",
            "session-cookie-domain": "the cookie's Domain",
            "session-cookie-samesite": "the cookie's SameSite: None, Lax or Strict",
            "session-cookie-conditional-samesite-none": "no SameSite=None for the browsers "
            "known to reject it",
            "session-cookie-secure": "Secure over plain HTTP too (over HTTPS it always is)",
            "session-cookie-max-age": "the cookie's Max-Age, seconds",
            "session-cookie-expires": "the cookie's Expires, seconds from now",
            "session-cookie-change-on-failure": "when the sticky pod fails, the cookie moves to "
            "the pod that answered",
            "upstream-hash-by": "consistent hashing on nginx variables ($request_uri, "
            "$remote_addr, $host, $http_*, $cookie_*, $arg_*, text); others are refused",
            "upstream-hash-by-subset": "hash to a subset of pods, one drawn at random",
            "upstream-hash-by-subset-size": "pods per subset (default 3)",
            "load-balance": "round_robin or ewma (peak EWMA of latency, two random choices)",
        },
    )
    _each(
        t,
        honoured,
        {
            "canary": "merges onto the main rule of the same host, path and path type, in its "
            "namespace (not onto every rule of its Service); served under the main Ingress's "
            "annotations",
            "canary-by-header": "always: canary, never: main, other values: the next rule",
            "canary-by-header-value": "this exact value sends to the canary",
            "canary-by-header-pattern": "a value the pattern finds a match in sends to the "
            "canary; RE2 syntax (linear time), not PCRE",
            "canary-by-cookie": "always: canary, never: main, other values: the weight",
            "canary-weight": "requests in canary-weight-total sent to the canary",
            "canary-weight-total": "default 100; totals below 100 are honoured as written "
            "(ingress-nginx's balancer treats them as 100)",
        },
    )
    _group(
        t,
        honoured,
        "with --enable-ssl-passthrough, TLS whose SNI names the host is relayed undecrypted "
        "to an endpoint of its '/' rule's backend (no other annotation applies to it); "
        "wildcard hosts too",
        "ssl-passthrough",
    )
    _each(
        t,
        honoured,
        {
            "auth-type": "basic (a 401 with the realm's challenge until the right password "
            "is sent); digest is refused: the route answers 503",
            "auth-secret": "the Secret of the Ingress's namespace listing the users; missing, "
            "or listing no usable user: the route answers 503",
            "auth-secret-type": "auth-file (an htpasswd file in the 'auth' key: bcrypt, apr1, "
            "{SHA}, crypt) or auth-map (a key per user, its hash the value)",
            "auth-realm": "the realm of the 401's challenge (empty by default)",
        },
    )
    _each(
        t,
        honoured,
        {
            "auth-url": "every request is first asked of this http(s) URL, without its body "
            "(nginx's auth_request): 2xx passes, 401 and 403 are the answer, anything else, a "
            "timeout or an unreachable service is a 500; variables such as $host and "
            "$escaped_request_uri in the path and query (the host only from the request's "
            "Host); a malformed value answers 503 (see External authentication)",
            "auth-method": "the auth request's method (with X-Original-URI and X-Scheme)",
            "auth-signin": "a 401 becomes a 302 here, with rd= the original URL unless the URL "
            "sets it; variables expanded",
            "auth-signin-redirect-param": "the parameter carrying the original URL (rd)",
            "auth-response-headers": "copied from a 2xx auth answer to the upstream request; "
            "a client's own copies are always removed",
            "auth-request-redirect": "the X-Auth-Request-Redirect sent (default: the request's "
            "URI)",
            "auth-always-set-cookie": "the auth answer's Set-Cookie on every response (401, 403, "
            "errors); without it only on success and redirect statuses",
            "auth-cache-key": "auth answers are cached by this key (variables), per host and "
            "path, in a bounded in-memory cache per replica",
            "auth-cache-duration": "how long each status is cached (proxy_cache_valid syntax, "
            "default 200 202 401 5m); answers with Set-Cookie are never cached",
            "auth-proxy-set-headers": "a ConfigMap in the Ingress's namespace of headers set on "
            "the auth request",
            "auth-keepalive": "idle connections kept to the auth service (16 when unset, "
            "where ingress-nginx keeps none)",
            "auth-keepalive-requests": "requests on one auth connection before it is closed",
            "auth-keepalive-timeout": "seconds an idle auth connection is kept",
            "enable-global-auth": "false: the ConfigMap's global-auth-url does not apply to "
            "this Ingress",
        },
    )
    _group(
        t,
        accepted,
        "there are no variables to share: the auth request sees the request as it came",
        "auth-keepalive-share-vars",
    )
    _group(
        t,
        honoured,
        "any: a client the allow list admits needs no password or auth service, and one it "
        "refuses may still authenticate; all (the default): both must pass",
        "satisfy",
    )
    _each(
        t,
        honoured,
        {
            "auth-tls-secret": "the CA bundle (ca.crt of a Secret in the Ingress's namespace, "
            "and its ca.crl when present) the host's handshakes verify client certificates "
            "against; set on the host, by its oldest Ingress that sets it; a missing or "
            "unusable Secret answers 503",
            "auth-tls-verify-client": "on (400 without a valid certificate), optional (400 for "
            "an invalid one), optional_no_ca (an unknown issuer passes), off (none asked for); "
            "a host without it never asks for a certificate",
            "auth-tls-verify-depth": "how deep the client's chain may be (default 1)",
            "auth-tls-pass-certificate-to-upstream": "the certificate in ssl-client-cert "
            "(URL-encoded PEM)",
            "auth-tls-error-page": "a refused certificate is a 302 there instead of a 400; "
            "an absolute URL (a path is refused: nginx serves it by an internal redirect)",
            "auth-tls-match-cn": "403 unless the subject DN matches (CN= and an RE2 regex)",
        },
    )
    _group(
        t,
        planned,
        "ingress-nginx's newer name for limit-whitelist; write limit-whitelist meanwhile",
        "limit-allowlist",
        LATER,
    )
    _each(
        t,
        unsupported,
        {
            "configuration-snippet": SNIPPET.format(
                instead="custom-headers, the ConfigMap's add-headers and proxy-set-headers, or "
                "the redirect annotations"
            ),
            "server-snippet": SNIPPET.format(
                instead="the redirect annotations, server-alias or custom-headers"
            ),
            "stream-snippet": SNIPPET.format(instead="a Service of type LoadBalancer for TCP"),
            "auth-snippet": SNIPPET.format(
                instead="auth-url's typed annotations and auth-proxy-set-headers"
            ),
            "modsecurity-snippet": SNIPPET.format(instead="a firewall in front of fastroute"),
            "enable-modsecurity": NO_WAF,
            "enable-owasp-core-rules": NO_WAF,
            "modsecurity-transaction-id": NO_WAF,
            "enable-opentelemetry": NO_TRACER,
            "opentelemetry-trust-incoming-span": NO_TRACER,
            "opentelemetry-operation-name": NO_TRACER,
            "mirror-request-body": "request mirroring is not implemented",
            "mirror-target": "request mirroring is not implemented",
            "mirror-host": "request mirroring is not implemented",
            "limit-rate": "response bandwidth limits are not implemented",
            "limit-rate-after": "response bandwidth limits are not implemented",
            "proxy-cookie-domain": "Set-Cookie is passed on as the pod wrote it",
            "proxy-cookie-path": "Set-Cookie is passed on as the pod wrote it",
            "proxy-redirect-from": "Location is passed on as the pod wrote it",
            "proxy-redirect-to": "Location is passed on as the pod wrote it",
            "ssl-ciphers": "one TLS setup serves every host: set ciphers with the ConfigMap's "
            "ssl-ciphers",
            "ssl-prefer-server-ciphers": "one TLS setup serves every host; the server's order "
            "is preferred",
            "proxy-ssl-ciphers": "connections to the pods use the TLS library's default ciphers",
            "http2-push-preload": "HTTP/2 server push is gone from browsers and from nginx",
            "fastcgi-index": "FastCGI backends are not supported",
            "fastcgi-params-configmap": "FastCGI backends are not supported",
            "disable-proxy-intercept-errors": "the statuses custom-http-errors lists are always "
            "answered by the default backend",
            "relative-redirects": "fastroute's redirects always carry an absolute URL",
            "use-port-in-redirects": "HTTPS redirects name --https-redirect-port (none for 443)",
        },
    )
    return t


def _configmap_keys() -> _Table:
    t: _Table = {}
    honoured, accepted = Status.HONOURED, Status.ACCEPTED
    unsupported, planned = Status.UNSUPPORTED, Status.PLANNED
    _each(
        t,
        honoured,
        {
            "use-forwarded-headers": "believe X-Forwarded-* from proxy-real-ip-cidr peers",
            "compute-full-forwarded-for": "append to X-Forwarded-For instead of replacing it",
            "forwarded-for-header": "the header the real client address is read from",
            "proxy-real-ip-cidr": "the peers whose forwarded headers and PROXY headers count",
            "enable-real-ip": "take the client address from forwarded-for-header",
            "use-proxy-protocol": "both listeners require PROXY protocol v1 or v2",
            "proxy-body-size": "413 beyond (default 1m, as ingress-nginx); 0: no limit",
            "proxy-connect-timeout": "seconds to connect to a pod",
            "proxy-read-timeout": "seconds between two reads from the pod",
            "proxy-send-timeout": "seconds between two writes to the pod",
            "proxy-next-upstream": "which failures try the next endpoint",
            "proxy-next-upstream-tries": "endpoints tried at most; 0: all",
            "ssl-redirect": "the default of the annotation",
            "force-ssl-redirect": "the default of the annotation",
            "hsts": "Strict-Transport-Security on HTTPS responses of TLS hosts",
            "hsts-max-age": "its max-age",
            "hsts-include-subdomains": "its includeSubDomains",
            "hsts-preload": "its preload",
            "ssl-protocols": "TLS versions the listener accepts",
            "ssl-ciphers": "TLS 1.2 ciphers the listener accepts",
            "limit-req-status-code": "the status of a rate-limited request",
            "limit-conn-status-code": "the status of a connection-limited request",
            "whitelist-source-range": "403 outside these CIDRs, on every route",
            "denylist-source-range": "403 inside these CIDRs, on every route",
            "add-headers": "a ConfigMap of headers added to every response",
            "proxy-set-headers": "a ConfigMap of headers set on every request to the pods",
            "custom-http-errors": "these upstream statuses are answered by the default backend, "
            "as the annotation of that name does (which replaces this list on its routes)",
            "keep-alive": "seconds an idle client connection stays open",
            "upstream-keepalive-connections": "idle connections to the pods kept",
            "upstream-keepalive-timeout": "seconds an idle connection to a pod is kept",
            "allow-snippet-annotations": "read, and snippets are never executed whatever it says",
        },
    )
    _group(
        t,
        accepted,
        STREAMS,
        "client-body-buffer-size proxy-buffering proxy-buffers-number proxy-buffer-size "
        "proxy-busy-buffers-size proxy-request-buffering",
    )
    _group(
        t,
        accepted,
        NGINX_INTERNAL,
        "map-hash-bucket-size server-name-hash-max-size server-name-hash-bucket-size "
        "proxy-headers-hash-max-size proxy-headers-hash-bucket-size variables-hash-bucket-size "
        "variables-hash-max-size lua-shared-dicts enable-multi-accept enable-aio-write "
        "worker-cpu-affinity max-worker-open-files enable-serial-reloads ssl-buffer-size "
        "ssl-session-cache-size grpc-buffer-size-kb debug-connections",
    )
    _group(
        t,
        accepted,
        LOGS,
        "access-log-params access-log-path http-access-log-path stream-access-log-path "
        "error-log-path error-log-level log-format-escape-none log-format-escape-json "
        "enable-syslog syslog-host syslog-port",
    )
    _group(
        t,
        accepted,
        "annotations are typed and snippets are never executed, so there is no risk to grade",
        "annotations-risk-level annotation-value-word-blocklist",
    )
    _each(
        t,
        accepted,
        {
            "reuse-port": "each worker listens with SO_REUSEPORT (--workers)",
            "bind-address": "the listen address is --bind",
            "strict-validate-path-type": "paths are always checked against their pathType",
            "allow-cross-namespace-resources": "an Ingress only ever names objects of its own "
            "namespace (the annotations with a namespace/name value name their own)",
            "ignore-invalid-headers": "malformed header lines are refused with 400",
            "disable-ipv6": "the listener's address is --bind",
            "proxy-ssl-location-only": "upstream TLS is per route already",
            "nginx-status-ipv4-whitelist": "there is no nginx status page; /healthz, /readyz and "
            "/metrics are on --status-port",
            "nginx-status-ipv6-whitelist": "there is no nginx status page; /healthz, /readyz and "
            "/metrics are on --status-port",
            "max-worker-connections": "the limit is --max-connections",
            "worker-processes": "processes are --workers",
            "worker-shutdown-timeout": "the drain on SIGTERM is --shutdown-grace",
            "ssl-session-cache": "TLS sessions are resumed with tickets",
            "ssl-session-timeout": "TLS sessions are resumed with tickets",
            "ssl-session-tickets": "TLS sessions are resumed with tickets",
        },
    )
    _each(
        t,
        honoured,
        {
            "load-balance": "round_robin or ewma for routes without their own annotation",
            "upstream-hash-by": "consistent hashing for routes without their own annotation",
        },
    )
    _group(
        t,
        honoured,
        "external authentication for every Ingress without its own auth-url (unless it says "
        'enable-global-auth: "false"), as the auth-* annotation of the same name; a malformed '
        "value answers 503 on those routes rather than serve them unprotected",
        "global-auth-url global-auth-method global-auth-signin global-auth-signin-redirect-param "
        "global-auth-response-headers global-auth-request-redirect global-auth-cache-key "
        "global-auth-cache-duration global-auth-always-set-cookie",
    )
    _group(
        t,
        honoured,
        "rule paths starting with one of these are never sent to external auth (default "
        "/.well-known/acme-challenge)",
        "no-auth-locations",
    )
    _group(
        t,
        planned,
        "HTTP/2 toward clients; fastroute speaks HTTP/1.1 until then",
        "use-http2 http2-max-field-size http2-max-header-size http2-max-requests "
        "http2-max-concurrent-streams",
        LATER,
    )
    _group(
        t,
        unsupported,
        SNIPPET.format(
            instead="add-headers, proxy-set-headers, custom-headers or the redirect annotations"
        ),
        "main-snippet http-snippet server-snippet stream-snippet location-snippet "
        "global-auth-snippet modsecurity-snippet",
    )
    _group(t, unsupported, NO_WAF, "enable-modsecurity enable-owasp-modsecurity-crs")
    _group(
        t,
        unsupported,
        NO_TRACER,
        "enable-opentelemetry opentelemetry-trust-incoming-span opentelemetry-operation-name "
        "opentelemetry-config otlp-collector-host otlp-collector-port otel-max-queuesize "
        "otel-schedule-delay-millis otel-max-export-batch-size otel-service-name otel-sampler "
        "otel-sampler-parent-based otel-sampler-ratio jaeger-collector-host jaeger-collector-port "
        "jaeger-endpoint jaeger-service-name jaeger-propagation-format jaeger-sampler-type "
        "jaeger-sampler-param jaeger-sampler-host jaeger-sampler-port "
        "jaeger-trace-context-header-name jaeger-debug-header jaeger-baggage-header "
        "jaeger-trace-baggage-header-prefix generate-request-id",
    )
    _group(
        t,
        unsupported,
        "response compression is not implemented: responses pass through as the pod wrote them",
        "use-gzip gzip-disable gzip-level gzip-min-length gzip-types enable-brotli brotli-level "
        "brotli-min-length brotli-types",
    )
    _group(
        t,
        unsupported,
        "GeoIP lookups are not implemented",
        "use-geoip use-geoip2 geoip2-autoreload-in-minutes",
    )
    _group(
        t,
        unsupported,
        "fastroute routes HTTP only: expose TCP and UDP services with a Service of type "
        "LoadBalancer",
        "proxy-stream-timeout proxy-stream-next-upstream proxy-stream-next-upstream-timeout "
        "proxy-stream-next-upstream-tries proxy-stream-responses",
    )
    _group(
        t,
        unsupported,
        "the limits are fastroute's flags: --max-header-size, --header-timeout and --min-body-rate",
        "client-header-buffer-size large-client-header-buffers client-header-timeout "
        "client-body-timeout",
    )
    _group(
        t,
        unsupported,
        "the access log's format is fastroute's own",
        "log-format-upstream log-format-stream skip-access-log-urls "
        "enable-access-log-for-default-backend disable-access-log",
    )
    _each(
        t,
        unsupported,
        {
            "proxy-next-upstream-timeout": "per route only: the annotation of that name",
            "proxy-cookie-path": "Set-Cookie is passed on as the pod wrote it",
            "proxy-cookie-domain": "Set-Cookie is passed on as the pod wrote it",
            "proxy-redirect-from": "Location is passed on as the pod wrote it",
            "limit-rate": "response bandwidth limits are not implemented",
            "limit-rate-after": "response bandwidth limits are not implemented",
            "limit-conn-zone-variable": "connection limits are per client address",
            "hide-headers": "upstream response headers are passed on; remove them in the app",
            "allow-backend-server-header": "the pod's Server header is always passed on",
            "server-tokens": "fastroute's own answers carry no Server header",
            "global-allowed-response-headers": "not enforced: custom-headers may set any "
            "response field",
            "keep-alive-requests": "a client connection serves any number of requests until "
            "idle for keep-alive seconds",
            "upstream-keepalive-requests": "a pooled connection serves any number of requests",
            "upstream-keepalive-time": "a pooled connection is kept until idle for "
            "upstream-keepalive-timeout",
            "retry-non-idempotent": "requests with a body are never retried once sent",
            "enable-underscores-in-headers": "header names with underscores are passed on",
            "enable-ocsp": "OCSP stapling is not implemented",
            "ssl-ecdh-curve": "the TLS library's curves are used",
            "ssl-dh-param": "the ciphers are ECDHE: no DH parameters are used",
            "ssl-session-ticket-key": "ticket keys are made per process",
            "ssl-reject-handshake": "unknown names get the default certificate",
            "ssl-early-data": "TLS 1.3 early data is not accepted",
            "proxy-protocol-header-timeout": "the header must arrive within --header-timeout",
            "forwarded-for-proxy-protocol-header": "the PROXY header's address is the client "
            "address, under forwarded-for-header",
            "proxy-add-original-uri-header": "X-Original-URI is sent only to the error backend",
            "disable-ipv6-dns": "Services are resolved by the cluster's EndpointSlices",
            "block-cidrs": "use denylist-source-range",
            "block-user-agents": "blocking by User-Agent is not implemented",
            "block-referers": "blocking by Referer is not implemented",
            "http-redirect-code": "HTTPS redirects are 308, which keeps the method and body",
            "no-tls-redirect-locations": "only ACME HTTP-01 challenges are exempt from the "
            "HTTPS redirect",
            "default-type": "responses carry the Content-Type the pod wrote",
            "service-upstream": "per Ingress only: the annotation of that name",
            "relative-redirects": "fastroute's redirects always carry an absolute URL",
        },
    )
    return t


ANNOTATIONS: Mapping[str, Entry] = MappingProxyType(_annotations())
CONFIGMAP_KEYS: Mapping[str, Entry] = MappingProxyType(_configmap_keys())


def honoured(table: Mapping[str, Entry]) -> frozenset[str]:
    """The names in ``table`` that fastroute implements."""
    return frozenset(name for name, entry in table.items() if entry.status is Status.HONOURED)


def annotation_entry(key: str) -> Entry | None:
    """The entry of an annotation key under either prefix; None for other keys, or for a
    name under a prefix that ingress-nginx never had."""
    for prefix in ANNOTATION_PREFIXES:
        if key.startswith(prefix):
            return ANNOTATIONS.get(key[len(prefix) :])
    return None
