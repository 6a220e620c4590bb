"""What a translated snapshot is made of: frozen values the proxy reads and never changes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from ipaddress import IPv4Network, IPv6Network
from typing import TYPE_CHECKING, Any, TypeVar

from fastroute import Router
from fastroute.ingress.balancing import Affinity, HashKey
from fastroute.ingress.settings import DEFAULT_SETTINGS, Settings

if TYPE_CHECKING:
    from fastroute.ingress.certs import Certificate
    from fastroute.ingress.external_auth import ExternalAuth
    from fastroute.ingress.regex import RegexIndex

__all__ = [
    "GATE_FIELDS",
    "Backend",
    "BasicAuth",
    "Canary",
    "ClientAuth",
    "Cors",
    "Departures",
    "Endpoint",
    "HeaderList",
    "InUse",
    "Networks",
    "Policy",
    "Problem",
    "RateLimit",
    "RouteConfig",
    "Split",
    "Target",
    "UpstreamTLS",
]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One address that serves a Service port (a pod IP, or a name for ExternalName)."""

    address: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Backend:
    """A Service port resolved to the endpoints that serve it.

    ``endpoints`` are ready. ``terminating`` ones still serve but are shutting down:
    Kubernetes says to use them only when no ready endpoint is left. With neither,
    ``problem`` says why, for the 503 the proxy answers and its log line.
    """

    namespace: str
    service: str
    port: int | str  # as the Ingress names it: a number or a port name
    endpoints: tuple[Endpoint, ...] = ()
    terminating: tuple[Endpoint, ...] = ()
    problem: str = ""
    # "namespace/service:port", for logs and metrics; written once, read per request
    name: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", f"{self.namespace}/{self.service}:{self.port}")

    def usable(self) -> tuple[Endpoint, ...]:
        """The endpoints to send to: ready ones, else terminating ones, else none."""
        return self.endpoints or self.terminating


Networks = tuple[IPv4Network | IPv6Network, ...]
HeaderList = tuple[tuple[str, str], ...]  # (name, value) pairs, as written in the ConfigMap


@dataclass(frozen=True, slots=True)
class Cors:
    """``enable-cors`` and its ``cors-*`` settings (ingress-nginx's defaults)."""

    origins: tuple[str, ...] = ("*",)  # "*", exact origins, or "https://*.example.com"
    methods: str = "GET, PUT, POST, DELETE, PATCH, OPTIONS"
    headers: str = (
        "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,"
        "Content-Type,Range,Authorization"
    )
    expose_headers: str = ""
    credentials: bool = True
    max_age: int = 1728000


@dataclass(frozen=True, slots=True)
class RateLimit:
    """``limit-rps``, ``limit-rpm``, ``limit-connections``: per client address, per replica."""

    rps: int = 0  # 0: no per-second limit
    rpm: int = 0  # 0: no per-minute limit
    burst_multiplier: int = 5  # burst = rate x this
    connections: int = 0  # requests in progress at once; 0: no limit
    exempt: Networks = ()  # limit-whitelist: never limited
    status: int = 503  # limit-req-status-code
    connections_status: int = 503  # limit-conn-status-code


@dataclass(frozen=True, slots=True)
class UpstreamTLS:
    """``backend-protocol: HTTPS``: how the proxy speaks TLS to the pods."""

    verify: bool = False  # proxy-ssl-verify
    ca: bytes = b""  # PEM CA bundle (proxy-ssl-secret's ca.crt)
    certificate: bytes = b""  # PEM client certificate and key (proxy-ssl-secret's tls.*)
    key: bytes = b""
    name: str = ""  # proxy-ssl-name: the name verified (and sent as SNI); "" the endpoint's
    send_sni: bool = False  # proxy-ssl-server-name
    verify_depth: int = 1
    protocols: tuple[str, ...] = ("TLSv1.2", "TLSv1.3")


@dataclass(frozen=True, slots=True)
class Canary:
    """``canary: "true"``: when a request goes to the canary rather than the main backend.

    Read in ingress-nginx's order: the header, then the cookie, then the weight. On a
    canary Ingress these are its own rules; merged onto the main rule they sit in that
    route's policy, which makes it take the annotated path in ``decide``.
    """

    header: str = ""  # canary-by-header: "always" -> canary, "never" -> main
    header_value: str = ""  # canary-by-header-value: this value alone -> canary
    header_pattern: str = ""  # canary-by-header-pattern (RE2, found anywhere in the value)
    cookie: str = ""  # canary-by-cookie: "always" -> canary, "never" -> main
    weight: int = 0  # canary-weight: requests in weight_total sent to the canary
    weight_total: int = 100  # canary-weight-total
    # affinity-canary-behavior: "sticky" gives the canary the main route's session affinity;
    # "legacy" leaves it the canary Ingress's own
    sticky: bool = True


@dataclass(frozen=True, slots=True)
class BasicAuth:
    """``auth-type: basic``: the users of an htpasswd Secret, and the realm they are asked in.

    ``read_policy`` sets what the annotations say; the build reads the Secret into
    ``users`` (``ingress/basic_auth.py``). With no users, nobody passes (fail closed).
    """

    secret: tuple[str, str] | None  # auth-secret: (namespace, name); None: not set
    secret_type: str = "auth-file"  # or "auth-map"
    realm: str = ""  # ingress-nginx's default: auth_basic ""
    # (user, hash) from the Secret; never shown (explain, logs)
    users: tuple[tuple[bytes, str], ...] = field(default=(), repr=False)
    # the annotations do not say enough to protect the routes: why (they answer 503)
    problem: str = ""
    annotation: str = ""  # the annotation that names the Secret, with its prefix
    by_user: Mapping[bytes, str] = field(init=False, repr=False, compare=False, hash=False)
    # the WWW-Authenticate line of a 401, the realm as an RFC 9110 quoted-string
    challenge: bytes = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        quoted = self.realm.replace("\\", "\\\\").replace('"', '\\"')
        object.__setattr__(self, "by_user", dict(self.users))
        line = f'WWW-Authenticate: Basic realm="{quoted}"\r\n'.encode("latin-1", "replace")
        object.__setattr__(self, "challenge", line)


@dataclass(frozen=True, slots=True)
class ClientAuth:
    """``auth-tls-*``: the client certificates a host's TLS handshakes ask for, and how
    its routes judge them (``proxy/client_certs.py``). One host has one: its oldest
    Ingress's that sets ``auth-tls-secret``, as ingress-nginx's server block has one."""

    secret: str  # "namespace/name" of the Secret whose ca.crt is the CA bundle
    verify: str = "on"  # auth-tls-verify-client: on, off, optional, optional_no_ca
    depth: int = 1  # auth-tls-verify-depth
    pass_certificate: bool = False  # auth-tls-pass-certificate-to-upstream: ssl-client-cert
    error_page: str = ""  # auth-tls-error-page: a refusal is a 302 here instead of a 400
    match_cn: str = ""  # auth-tls-match-cn: "CN=..." (RE2) found in the subject, else 403
    ca: bytes = b""  # the Secret's ca.crt, once the build has read it ("": unusable)
    crl: bytes = b""  # the Secret's ca.crl (PEM revocation lists), if it has one
    ingress: str = ""  # the Ingress the settings come from ("namespace/name")


@dataclass(frozen=True, slots=True)
class Policy:
    """Per-route behaviour from Ingress annotations and the ConfigMap (ingress-nginx's names).

    The defaults are what a route without annotations does; ``None`` means the proxy's own
    limit (its flags). ``plain`` says nothing beyond those defaults is set, so ``decide``
    can take its shortest path.
    """

    ssl_redirect: bool = True  # redirect plain HTTP to HTTPS when the host has TLS
    force_ssl_redirect: bool = False  # redirect even when the host has no TLS section
    rewrite_target: str | None = None  # replaces the path; $1..$9: the regex's captures
    use_regex: bool = False  # Prefix/ImplementationSpecific paths are RE2 regexes (regex.py)
    # limits and timeouts; None: the proxy's flag
    max_body_bytes: int | None = None  # 0: no limit
    connect_timeout: float | None = None
    read_timeout: float | None = None
    send_timeout: float | None = None
    next_upstream: frozenset[str] | None = None  # "error", "timeout", "http_502", "off", ...
    next_upstream_tries: int | None = None  # 0: every endpoint
    next_upstream_timeout: float | None = None  # 0: no limit
    # who may send requests
    allow: Networks | None = None  # None: everyone; else only these (403)
    deny: Networks = ()  # 403
    limit: RateLimit | None = None
    # answered by the proxy
    cors: Cors | None = None
    redirect: tuple[int, str] | None = None  # permanent-/temporal-redirect: (status, URL)
    app_root: str | None = None  # "/" redirects here (302)
    from_to_www: bool = False  # www.host <-> host redirect (308)
    aliases: tuple[str, ...] = ()  # server-alias: more hosts with the same rules
    # what is sent
    upstream_vhost: str | None = None  # the Host the upstream is sent
    forwarded_prefix: str | None = None  # X-Forwarded-Prefix
    upstream_headers: HeaderList = ()  # set on the upstream request, replacing the client's
    response_headers: HeaderList = ()  # set on the response, replacing the upstream's
    hsts: str = ""  # Strict-Transport-Security on HTTPS responses of TLS hosts
    proxy_http_version: str = "1.1"
    access_log: bool = True
    # where it goes
    upstream_tls: UpstreamTLS | None = None  # backend-protocol: HTTPS
    service_upstream: bool = False  # the Service's cluster IP instead of its endpoints
    default_backend: tuple[str, int | str] | None = None  # default-backend: (Service, port)
    custom_http_errors: frozenset[int] = frozenset()  # answered by the default backend
    # TLS to the host relayed undecrypted to its "/" rule's backend (--enable-ssl-passthrough)
    ssl_passthrough: bool = False
    canary: Canary | None = None  # a canary Ingress's rules (merged: the route's canary's)
    # a protection annotation was rejected: every request is answered 503 with this reason
    refused: str = ""
    # which endpoint: affinity, else upstream-hash-by, else load-balance (ingress-nginx's order)
    load_balance: str = "round_robin"  # or "ewma"
    upstream_hash: HashKey | None = None  # upstream-hash-by
    upstream_hash_subset: bool = False
    upstream_hash_subset_size: int = 3
    affinity: Affinity | None = None  # affinity: cookie
    basic_auth: BasicAuth | None = None  # auth-type: basic (checked by proxy/gate.py)
    external_auth: ExternalAuth | None = None  # auth-url / global-auth-url: proxy/gate.py
    client_auth: ClientAuth | None = None  # auth-tls-*: the host's client certificates
    # satisfy: any: a client the allow list admits needs no authentication, and one it
    # refuses may still authenticate (nginx's satisfy any); else both must pass
    satisfy_any: bool = False
    # derived once, for the codec: whole header lines, and the names they replace
    plain: bool = field(init=False, repr=False, compare=False)
    # it may answer any request itself (a refusal, app-root, a redirect); a CORS preflight
    # is an OPTIONS request
    answers: bool = field(init=False, repr=False, compare=False)
    # it has access checks that wait (a password hash, an auth service): proxy/gate.py
    gated: bool = field(init=False, repr=False, compare=False)
    upstream_lines: bytes = field(init=False, repr=False, compare=False)
    upstream_drop: frozenset[bytes] | None = field(init=False, repr=False, compare=False)
    response_lines: bytes = field(init=False, repr=False, compare=False)
    response_drop: frozenset[bytes] | None = field(init=False, repr=False, compare=False)
    hsts_line: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        plain = all(
            getattr(self, f.name) == f.default
            for f in fields(self)
            if f.init and f.name not in _ALWAYS_READ
        )
        upstream = list(self.upstream_headers)
        if self.forwarded_prefix is not None:
            upstream.append(("X-Forwarded-Prefix", self.forwarded_prefix))
        derived = {
            "plain": plain,
            "answers": bool(
                self.refused
                or self.app_root is not None
                or self.redirect
                or self.client_auth is not None  # 400, 403, 421 for client certificates
            ),
            "gated": any(getattr(self, name) is not None for name in GATE_FIELDS),
            "upstream_lines": _lines(upstream),
            "upstream_drop": _names(upstream),
            "response_lines": _lines(self.response_headers),
            "response_drop": _names(self.response_headers),
            "hsts_line": _lines([("Strict-Transport-Security", self.hsts)]) if self.hsts else b"",
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)


def _lines(headers: Iterable[tuple[str, str]]) -> bytes:
    """Header fields as the codec writes them (validated when they were read)."""
    return b"".join(f"{name}: {value}\r\n".encode("latin-1") for name, value in headers)


def _names(headers: Iterable[tuple[str, str]]) -> frozenset[bytes] | None:
    names = frozenset(name.lower().encode("latin-1") for name, _ in headers)
    return names or None


# the Policy fields of checks that ``proxy/gate.py`` runs after ``decide`` (None: no check)
GATE_FIELDS: tuple[str, ...] = ("basic_auth", "external_auth")

# what decide reads for every route, plain or not
_ALWAYS_READ = frozenset(
    {"ssl_redirect", "force_ssl_redirect", "rewrite_target", "hsts", "aliases", "plain"}
    | {"use_regex"}  # read by the build: it decides how the paths are matched
)


@dataclass(frozen=True, slots=True, repr=False)
class Target:
    """What the router returns for a request: where it goes and under which rules."""

    ingress: str  # "namespace/name" of the Ingress the rule came from
    backend: Backend
    policy: Policy = field(default_factory=Policy)
    tls: bool = False  # the request's host is listed in a TLS section
    # where custom-http-errors and a route without endpoints go (default-backend), if set
    error_backend: Backend | None = None
    path: str = ""  # the rule's path as written (an affinity cookie's Path)
    # several backends share the route's requests (a canary); ``backend`` is the main one
    split: Split | None = None
    # its rule is on an exact host with no regex paths: the trie's answer stands, and a
    # request it serves skips the regex index (``RouteConfig.regex``)
    trie_final: bool = False

    def __repr__(self) -> str:
        """Short, for explanations and logs: the Ingress, the backend, what else applies
        (the policy is ``target.policy``'s own repr)."""
        extra = "" if self.policy.plain else ", annotated"
        if self.split is not None:
            others = ", ".join(t.backend.name for t in self.split.targets[1:])
            extra += f", split with {others}"
        return f"Target({self.ingress} -> {self.backend.name}{extra})"


@dataclass(frozen=True, slots=True)
class Split:
    """Weighted backends: the targets a route's requests are shared among.

    ``targets[0]`` is the route's main target. Each target is whole (its backend and the
    policy it is served under), so choosing one is all a request needs. A request goes to
    a target with probability ``weight / total``; a zero weight gets none by weight.
    ``decide`` reads splits on its annotated path only, so the main target's policy must
    not be ``plain`` (a canary's rules are in it).
    """

    targets: tuple[Target, ...]
    weights: tuple[int, ...]
    total: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.targets) != len(self.weights) or not self.targets:
            raise ValueError("a split needs one weight per target, and a target")
        if any(weight < 0 for weight in self.weights) or not any(self.weights):
            raise ValueError(f"split weights must be >= 0, one > 0; got {self.weights}")
        if self.targets[0].policy.plain:
            raise ValueError("a split route's policy cannot be plain: decide would not see it")
        object.__setattr__(self, "total", sum(self.weights))

    def pick(self, draw: float) -> Target:
        """The target for a draw in ``[0, total)``: each gets its weight's share of it."""
        for target, weight in zip(self.targets, self.weights, strict=True):
            if draw < weight:
                return target
            draw -= weight
        return [t for t, w in zip(self.targets, self.weights, strict=True) if w][-1]


@dataclass(frozen=True, slots=True)
class Problem:
    """An object, or a field of one, that was skipped or accepted with a warning, and why."""

    kind: str  # "Ingress", "Service", "Secret", ...
    name: str  # "namespace/name", or "name" for cluster-scoped objects
    field: str  # the field path, e.g. "spec.rules[0].http.paths[1].path"; "" for the object
    reason: str
    warning: bool = False  # True: accepted anyway (e.g. converted from a removed API)

    def __str__(self) -> str:
        where = f"{self.kind} {self.name}" + (f" {self.field}" if self.field else "")
        return f"{'warning' if self.warning else 'rejected'}: {where}: {self.reason}"


@dataclass(frozen=True, slots=True)
class Departures:
    """What left since the ``InUse`` whose serial is ``since``."""

    since: int
    ingresses: frozenset[str] = frozenset()
    backends: frozenset[str] = frozenset()
    endpoints: frozenset[Endpoint] = frozenset()


@dataclass(frozen=True, slots=True)
class InUse:
    """What a config serves: its Ingresses, and what its routes send to (backends by name,
    and their endpoints).

    On a swap the proxy forgets what left (metrics series, balancer turns, endpoint
    health): from ``departures`` when they are relative to the config it served, at the
    cost of what left; else by comparing the two configs' sets.
    """

    ingresses: frozenset[str] = frozenset()  # "namespace/name"
    backends: frozenset[str] = frozenset()  # ``Backend.name``
    endpoints: frozenset[Endpoint] = frozenset()  # ready and terminating ones
    serial: int = 0  # unique among a process's builders' InUse; 0: made by walking a config
    departures: Departures | None = None  # since the builder's previous InUse, if known


@dataclass(frozen=True)
class RouteConfig:
    """Everything the proxy needs to serve one snapshot of the cluster.

    Built whole, off the request path, then swapped in by replacing one reference:
    in-flight requests keep the config they started with. Nothing here changes after
    it is built (the router included: nobody calls its ``add`` again).
    """

    router: Router  # host + path -> Target; its default is the catch-all Target, if any
    certificates: Mapping[str, Certificate]  # TLS host ("a.com" or "*.a.com") -> certificate
    ingresses: tuple[str, ...]  # the Ingresses served, "namespace/name"
    problems: tuple[Problem, ...]  # rejected objects and fields, and warnings
    settings: Settings = DEFAULT_SETTINGS  # the ConfigMap's, for what is not per route
    # ssl-passthrough: SNI host ("a.com" or "*.a.com") -> the Target TLS is relayed to;
    # None: an exact host terminated here although a passthrough wildcard covers it
    passthrough: Mapping[str, Target | None] = field(default_factory=dict)
    regex: RegexIndex | None = None  # the hosts with regex paths; None: no Ingress has any
    # TLS host ("a.com" or "*.a.com") -> the client certificates its handshakes ask for;
    # None: an exact host that asks for none although a wildcard that does covers it
    client_auth: Mapping[str, ClientAuth | None] = field(default_factory=dict)
    # the backends and endpoints its routes use (the builder keeps them as it goes);
    # None: not recorded, as in a config made by hand (``in_use.in_use_of`` walks its routes)
    in_use: InUse | None = None

    def certificate_for(self, server_name: str | None) -> Certificate | None:
        """The certificate for an SNI name: its exact host, then its wildcard, else None."""
        return _for_server_name(self.certificates, server_name)

    def passthrough_for(self, server_name: str | None) -> Target | None:
        """Where a TLS connection asking for ``server_name`` is relayed undecrypted: its
        exact host's passthrough target, else its wildcard's; None: terminated here."""
        return _for_server_name(self.passthrough, server_name)

    def client_auth_for(self, server_name: str | None) -> ClientAuth | None:
        """The client certificates a handshake for ``server_name`` asks for: its exact
        host's settings, else its wildcard's; None: it asks for none."""
        return _for_server_name(self.client_auth, server_name)

    def match(self, host: str | bytes | None, path: str | bytes) -> Any:
        """What a request is routed to, as the proxy chooses: the trie's rules, and the
        regex paths of the Ingresses that use them (``regex.py``)."""
        found = self.router.match(host, path)
        if self.regex is None or (isinstance(found, Target) and found.trie_final):
            return found
        raw = path.encode("utf-8") if isinstance(path, str) else path
        chosen = self.regex.choose(host, raw, found, self.router.default)
        return found if chosen is None else chosen[0]

    def warnings(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.warning)

    def rejected(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if not p.warning)


_V = TypeVar("_V")


def _for_server_name(table: Mapping[str, _V | None], server_name: str | None) -> _V | None:
    """An SNI name's entry in a table by TLS host: its exact host's (which may be None: that
    host opts out of what a wildcard says), else its wildcard's (one label more), else None."""
    if not server_name:
        return None
    name = server_name.lower().rstrip(".")
    if name in table:
        return table[name]
    label, _, parent = name.partition(".")
    return table.get("*." + parent) if label and parent else None
