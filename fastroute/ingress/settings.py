"""The controller-wide settings: ingress-nginx's ConfigMap keys, with its names and defaults.

A cluster leaving ingress-nginx brings the ConfigMap its controller read (``--configmap``).
Each key here means what it meant there and defaults to what it defaulted to, so that a
migrated cluster behaves the same. ``None`` means the key is not set: the proxy's own
limit (its command-line flag) applies. Per-route annotations override these.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastroute.ingress.balancing import HashKey

__all__ = ["DEFAULT_SETTINGS", "Settings"]

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
    upstream_keepalive_connections: int = 320  # idle upstream connections kept, per endpoint
    upstream_keepalive_timeout: float = 60.0  # seconds an idle upstream connection is kept
    allow_snippet_annotations: bool = False  # accepted for compatibility: never executed
    # which endpoint of a backend (annotations override both)
    load_balance: str = "round_robin"  # or "ewma"
    upstream_hash_by: HashKey | None = None  # consistent hashing on this key
    # external authentication for every Ingress (enable-global-auth: "false" opts out); kept
    # as written and read with the annotations, so that a malformed one fails closed
    global_auth_url: str = ""
    global_auth_method: str = ""
    global_auth_signin: str = ""
    global_auth_signin_redirect_param: str = ""
    global_auth_response_headers: str = ""
    global_auth_request_redirect: str = ""
    global_auth_cache_key: str = ""
    global_auth_cache_duration: str = ""
    global_auth_always_set_cookie: str = ""
    no_auth_locations: str = "/.well-known/acme-challenge"  # rule paths never asked about

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
