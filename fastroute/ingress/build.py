"""Kubernetes objects -> a RouteConfig, rebuilt in proportion to what changed.

The rules, in the order they apply:

- **Class.** An Ingress is ours when its ``spec.ingressClassName`` names an IngressClass
  whose controller is ours (or a name in ``ClassPolicy.class_names``). The legacy
  ``kubernetes.io/ingress.class`` annotation, when present, decides instead. An Ingress
  with neither is ours when the cluster's default IngressClass is ours, or when
  ``adopt_classless`` says so.
- **Order.** Ingresses are taken oldest first (``creationTimestamp``, then
  namespace/name). When two claim the same host and path, or the same TLS host, or the
  catch-all default backend, the older one wins and the newer one gets a Problem naming
  the winner.
- **Rules.** All Ingresses' rules go into one Router, so precedence (longest path, Exact
  before Prefix, exact host before wildcard) applies across Ingresses.
- **Default backends.** A ``defaultBackend`` is the catch-all for requests that match
  no rule of any host (another host, an IP address as Host), as the Kubernetes API says:
  a rule-less Ingress's before one that also has rules, the oldest first among equals.
  An Ingress with rules also sends the unmatched paths of *its hosts* there, as in
  ingress-nginx, through an implicit ``Prefix /`` that an explicit ``/`` rule of any
  Ingress overrides.
- **Aliases.** ``server-alias`` hosts serve every rule of the Ingress's hosts (those of
  other Ingresses on them too, as ingress-nginx's ``server_name`` aliases do). An alias
  that another Ingress names as a host is refused, with a reason; so is one an older
  Ingress already aliases to other hosts.
- **Error backend.** A route's ``error_backend`` (for ``custom-http-errors`` and a
  route without endpoints) is its Ingress's ``default-backend`` Service, else, when the
  Ingress sets ``custom-http-errors``, the catch-all's backend.
- **Service upstream.** With ``service-upstream``, a route's backend is its Service's
  cluster IP and port; a Service without one (headless, ExternalName) keeps its
  endpoints, and the Ingress gets a Problem saying why.
- **TLS.** Each ``spec.tls`` entry's Secret is loaded and checked. A host whose
  certificate is missing, broken, expired or does not name it is reported and served
  with the proxy's default certificate. Hosts listed under TLS redirect plain HTTP to
  HTTPS unless the Ingress says ``ssl-redirect: "false"``.
- **Passthrough.** With ``ssl_passthrough`` (``--enable-ssl-passthrough``), a host that an
  Ingress annotated ``ssl-passthrough`` has rules on relays TLS to its ``/`` rule's
  backend undecrypted (``fastroute.ingress.passthrough``); without it, the annotation is
  ignored with a warning.
- **Settings.** The controller's ConfigMap (``configmap``, ingress-nginx's
  ``--configmap``) gives the ``Settings``, which every Ingress's annotations override per
  route. When it, or a ConfigMap it names (``add-headers``, ``proxy-set-headers``),
  changes and the settings with it, every Ingress is read again. An Ingress whose
  annotations name a ConfigMap is read again when that ConfigMap changes.

Every rule above is decided per *host*: which rules a host has, its default, whether it
has TLS and which certificate it gets depend only on the Ingresses naming that host (or
aliasing it, or naming the hosts it is an alias of; for TLS, its wildcard), the Services
they name and their Secrets (and, for routes with ``custom-http-errors`` and no
``default-backend``, the catch-all). So ``ConfigBuilder`` keeps its last result per host
and, after a change, redoes only the hosts the change touches, in a copy of the last
Router. With 100,000 rules a change costs milliseconds where translating everything
again costs seconds. ``build_config`` is the same builder run once over a whole snapshot.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from fastroute import InvalidRuleError, RouteConflictError, Router
from fastroute.ingress.annotations import FIRST_PORT
from fastroute.ingress.backend_tls import (
    SecretRef,
    ca_bundle,
    has_client_certificate,
    secret_reference,
    secret_value,
    upstream_policy,
)
from fastroute.ingress.basic_auth import basic_auth_policy
from fastroute.ingress.canary import with_canary
from fastroute.ingress.certs import Certificate, CertificateError, load_tls_secret
from fastroute.ingress.client_auth import (
    CRL_KEY,
    client_auth_map,
    client_auth_policy,
    host_client_auth,
    ignored_on_host,
    on_host,
    secret_key,
)
from fastroute.ingress.configmap import configmap_data, read_settings
from fastroute.ingress.in_use import UseCounts, target_backends
from fastroute.ingress.model import (
    Backend,
    ClientAuth,
    Endpoint,
    Policy,
    Problem,
    RouteConfig,
    Target,
)
from fastroute.ingress.objects import (
    annotations_of,
    kind,
    mapping,
    name,
    namespace,
    sequence,
    text,
)
from fastroute.ingress.passthrough import passthrough_map, passthrough_target
from fastroute.ingress.regex import RegexIndex, RegexRule, is_regex_rule, regex_index, regex_rule
from fastroute.ingress.services import ServiceIndex, ServiceKey
from fastroute.ingress.settings import DEFAULT_SETTINGS, Settings
from fastroute.ingress.spec import (
    IngressSpec,
    PathRule,
    fold_host,
    read_ingress,
    reads_the_same,
)

__all__ = [
    "CONTROLLER_NAME",
    "ClassPolicy",
    "ConfigBuilder",
    "build_config",
    "is_ours",
    "our_classes",
]

CONTROLLER_NAME = "fastroute.io/ingress-controller"
CLASS_ANNOTATION = "kubernetes.io/ingress.class"
DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
KINDS = frozenset(
    {"Ingress", "IngressClass", "Service", "EndpointSlice", "Endpoints", "Secret", "ConfigMap"}
)
Obj = Mapping[str, Any]
_TICK = timedelta(microseconds=1)  # datetime's resolution
ObjectKey = tuple[str, str, str]  # (kind, namespace, name); namespace "" if cluster-scoped
RuleId = tuple[str, str, str]  # (host, path, path type) as given to Router.add
# a canary could otherwise take any share of another tenant's traffic
_OTHER_NAMESPACE = (
    "the main rule is the Ingress {ingress}'s, in another namespace; a canary must be in "
    "its main Ingress's namespace; ignored"
)
_NO_MAIN_RULE = (
    "canary: no Ingress routes {path_type} {path!r} on {host} to merge onto; the canary "
    "is not served (as in ingress-nginx)"
)


@dataclass(frozen=True)
class ClassPolicy:
    """Which Ingresses this controller serves.

    Attributes:
        controller: the ``spec.controller`` of IngressClasses that are ours.
        class_names: class names that are ours even without an IngressClass object:
            what the legacy annotation and ``ingressClassName`` are compared with. A
            cluster moving from ingress-nginx can add ``"nginx"`` here.
        adopt_classless: serve Ingresses that name no class at all.
    """

    controller: str = CONTROLLER_NAME
    class_names: frozenset[str] = frozenset({"fastroute"})
    adopt_classless: bool = False


def object_key_of(obj: Obj) -> ObjectKey:
    """Where ``ConfigBuilder`` keeps an object.

    Raises:
        ValueError: it has no ``metadata.name``.
    """
    object_name = name(obj)
    if not object_name:
        raise ValueError(f"a {kind(obj) or 'Kubernetes object'} needs metadata.name")
    k = kind(obj)
    return k, "" if k == "IngressClass" else namespace(obj), object_name


@dataclass
class _Host:
    """What the last build made of one host: the rules it added, and their inputs."""

    rules: list[RuleId]
    problems: list[Problem]
    services: set[ServiceKey]
    uses_catch_all: bool = False  # an error backend of its is the catch-all's backend
    regex: list[RegexRule] = field(default_factory=list)  # its regex paths (regex.py)
    # (target, path, path type) of the rules it added to the trie, for the precedence of
    # its regex paths (kept only when it has some)
    literal: list[tuple[Target, str, str]] = field(default_factory=list)
    client_auth: ClientAuth | None = None  # the client certificates its handshakes ask for
    backends: list[Backend] = field(default_factory=list)  # its targets', counted in _uses


class ConfigBuilder:
    """Holds the objects a RouteConfig is made of and builds it again after changes.

    ``put`` and ``delete`` record changes; ``build`` returns the config of the objects
    held now, equal to what ``build_config`` makes of them, redoing only what the
    changes since the last ``build`` can have changed. Not thread-safe: one thread at
    a time (a worker thread is fine). Objects handed in are kept, and never changed.

    Args:
        classes: which Ingresses are ours.
        now: the time certificates are checked against (default: the time of each
            build). A certificate that expires, or becomes valid, between builds is
            checked again at the first build after that moment.
        configmap: ``"namespace/name"`` of the controller's ConfigMap (None: none).
        settings_defaults: the settings of the keys the ConfigMap does not set
            (default: ingress-nginx's).
        ssl_passthrough: ``ssl-passthrough`` annotations are honoured
            (``--enable-ssl-passthrough``; ``fastroute.ingress.passthrough``).
    """

    def __init__(
        self,
        *,
        classes: ClassPolicy | None = None,
        now: datetime | None = None,
        configmap: str | None = None,
        settings_defaults: Settings | None = None,
        ssl_passthrough: bool = False,
    ):
        self.classes = classes or ClassPolicy()
        self.ssl_passthrough = ssl_passthrough
        self._passthrough: dict[str, Target] = {}  # passthrough host -> its "/" Target
        self.now = now
        self.configmap = configmap
        self.settings_defaults = settings_defaults or DEFAULT_SETTINGS
        self._settings = self.settings_defaults
        self._settings_problems: list[Problem] = []
        self._settings_reads: set[str] = set()  # ConfigMaps the settings were read from
        self._dirty_settings = configmap is not None
        self._reads: dict[str, set[str]] = {}  # Ingress -> ConfigMaps its annotations name
        self._by_configmap: dict[str, set[str]] = {}  # ConfigMap -> Ingresses naming it
        self._objects: dict[ObjectKey, Obj] = {}
        self._services = ServiceIndex()
        self._ours: tuple[set[str], bool | None] = (set(self.classes.class_names), None)
        self._specs: dict[str, IngressSpec] = {}  # our Ingresses
        self._ordered: list[tuple[tuple[str, str, str], str]] = []  # (order, key), sorted
        self._by_host: dict[str, set[str]] = {}  # host -> Ingresses with rules on it
        self._by_alias: dict[str, set[str]] = {}  # alias host -> Ingresses aliasing it
        self._by_error_service: dict[ServiceKey, set[str]] = {}  # -> Ingresses naming it
        self._by_tls_host: dict[str, set[str]] = {}  # TLS host -> Ingresses listing it
        self._by_secret: dict[tuple[str, str], set[str]] = {}  # Secret -> Ingresses naming it
        self._backend_secrets: dict[str, SecretRef] = {}  # Ingress -> its proxy-ssl-secret
        self._auth_secrets: dict[str, tuple[str, str]] = {}  # Ingress -> its auth-secret
        # with the Secrets it names resolved (proxy-ssl-secret, auth-secret,
        # auth-tls-secret), and their problems
        self._policies: dict[str, tuple[Policy, tuple[Problem, ...]]] = {}
        self._host_auths: dict[str, ClientAuth] = {}  # host -> its client certificates
        self._now = _utc(now)  # the time of the build in progress
        self._by_parent: dict[str, set[str]] = {}  # "b.com" -> hosts "a.b.com" (for *.b.com)
        self._by_service: dict[ServiceKey, set[str]] = {}  # Service -> hosts routed to it
        self._catch_all_candidates: set[str] = set()
        self._loaded: dict[tuple[str, str], Certificate | str] = {}
        # while a loaded result holds: (from, until), both included; None: no bound
        self._recheck: dict[tuple[str, str], tuple[datetime | None, datetime | None]] = {}
        self._backends: dict[ServiceKey, dict[int | str, Backend]] = {}  # by Service, port
        # the last build
        self._router: Router | None = None
        self._hosts: dict[str, _Host] = {}
        self._certificates: dict[str, Certificate] = {}
        self._tls_problems: dict[str, list[Problem]] = {}  # TLS host -> problems
        self._secret_problems: dict[str, list[Problem]] = {}  # Ingress -> TLS entry problems
        self._catch_all: Target | None = None
        self._catch_all_problems: list[Problem] = []
        self._catch_all_services: set[ServiceKey] = set()
        self._catch_all_users: set[str] = set()  # hosts whose targets hold its backend
        self._uses = UseCounts()  # backends and endpoints of the hosts held and the catch-all
        self._catch_all_backends: list[Backend] = []  # what the catch-all adds to _uses
        self._error_problems: dict[str, list[Problem]] = {}  # Ingress -> default-backend's
        self._regex: RegexIndex | None = None  # the last build's
        self._regex_hosts: set[str] = set()  # hosts with regex rules
        self._dirty_regex = False
        # what the next build redoes
        self._dirty_hosts: set[str] = set()
        self._dirty_tls: set[str] = set()
        self._dirty_secrets: set[str] = set()  # Ingresses whose TLS entries to check
        self._dirty_catch_all = True
        self._dirty_error_checks: set[str] = set()  # Ingresses whose default-backend to check
        self._ingresses: tuple[str, ...] | None = ()  # None: to be made from _ordered
        self._problem_list: tuple[Problem, ...] | None = ()  # None: to be gathered again

    # -- changes ------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._objects)

    def put(self, obj: Obj) -> None:
        """Add an object, or replace the one with its kind, namespace and name.

        Kinds other than Ingress, IngressClass, Service, EndpointSlice, Endpoints,
        Secret and ConfigMap are ignored.

        Raises:
            ValueError: it has no ``metadata.name``.
        """
        if kind(obj) not in KINDS:
            return
        key = object_key_of(obj)
        old = self._objects.get(key)
        self._objects[key] = obj
        if old is not None and key[0] == "Ingress" and reads_the_same(old, obj):
            return
        self._changed(key, old, obj)

    def delete(self, obj: Obj) -> None:
        """Remove the object with ``obj``'s kind, namespace and name, if held."""
        if kind(obj) not in KINDS:
            return
        key = object_key_of(obj)
        old = self._objects.pop(key, None)
        if old is not None:
            self._changed(key, old, None)

    def _changed(self, key: ObjectKey, old: Obj | None, new: Obj | None) -> None:
        what = key[0]
        if what == "Ingress":
            self._ingress_changed(key[1], key[2], new)
        elif what == "IngressClass":
            self._classes_changed()
        elif what == "Secret":
            self._secret_changed((key[1], key[2]))
        elif what == "ConfigMap":
            self._configmap_changed(f"{key[1]}/{key[2]}")
        else:
            services = {self._services.drop(old) if old is not None else None}
            services.add(self._services.put(new) if new is not None else None)
            for service in services:
                if service is not None:
                    self._service_changed(service)

    def _ingress_changed(self, ns: str, ingress_name: str, obj: Obj | None) -> None:
        key = f"{ns}/{ingress_name}"
        old = self._specs.pop(key, None)
        new = self._read_ingress(key, obj) if obj is not None and self._is_ours(obj) else None
        if new is not None:
            self._specs[key] = new
        else:
            self._forget_reads(key)
        if (old is None) != (new is None):
            self._uses.ingress(key, new is not None)
        self._policies.pop(key, None)
        ref = self._backend_secrets.pop(key, None)
        if ref is not None:
            _index(self._by_secret, ref.key, key, False)
        auth_secret = self._auth_secrets.pop(key, None)
        if auth_secret is not None:
            _index(self._by_secret, auth_secret, key, False)
        if old is None or new is None or old.order != new.order:
            if old is not None:
                del self._ordered[bisect.bisect_left(self._ordered, (old.order, key))]
            if new is not None:
                bisect.insort(self._ordered, (new.order, key))
            self._ingresses = None
        if (old is not None and old.problems) or (new is not None and new.problems):
            self._problem_list = None
        elif old is not None and new is not None and old.order != new.order:
            self._problem_list = None  # its problems, the same, sort elsewhere
        for spec, adding in ((old, False), (new, True)):
            if spec is None:
                continue
            for host in spec.buckets:
                _index(self._by_host, host, key, adding)
                parent = _parent(host)
                # the host stays under its parent while any Ingress still names it
                if parent and (adding or host not in self._by_host):
                    _index(self._by_parent, parent, host, adding)
                self._dirty_hosts.add(host)
            for alias in _aliases(spec):
                _index(self._by_alias, alias, key, adding)
                self._dirty_hosts.add(alias)
            if spec.policy.default_backend is not None:
                error_service = (spec.namespace, spec.policy.default_backend[0])
                _index(self._by_error_service, error_service, key, adding)
            for secret in spec.secrets:
                _index(self._by_secret, (spec.namespace, secret), key, adding)
            auth_secret = secret_key(spec.policy)
            if auth_secret is not None:
                _index(self._by_secret, auth_secret, key, adding)
            # a canary's TLS entries are ignored: its requests are the main rule's host's
            for tls_host in spec.tls_hosts if spec.policy.canary is None else ():
                had = tls_host in self._by_tls_host
                _index(self._by_tls_host, tls_host, key, adding)
                if had != (tls_host in self._by_tls_host):
                    self._tls_listing_changed(tls_host)
                self._dirty_tls.add(tls_host)
            if spec.default is not None:
                _index_set(self._catch_all_candidates, key, adding)
                self._dirty_catch_all = True
        ref = secret_reference(annotations_of(obj), new.namespace) if obj and new else None
        if ref is not None:
            self._backend_secrets[key] = ref
            _index(self._by_secret, ref.key, key, True)
        basic_auth = new.policy.basic_auth if new is not None else None
        if basic_auth is not None and basic_auth.secret is not None:
            self._auth_secrets[key] = basic_auth.secret
            _index(self._by_secret, basic_auth.secret, key, True)
        self._dirty_secrets.add(key)
        self._dirty_error_checks.add(key)

    def _read_ingress(self, key: str, obj: Obj) -> IngressSpec:
        """Read an Ingress with the current settings, indexing the ConfigMaps it names."""
        reads: set[str] = set()

        def lookup(ref: str) -> Mapping[str, str] | None:
            reads.add(ref)
            return self._configmap(ref)

        spec = read_ingress(obj, self._settings, lookup)
        self._forget_reads(key)
        for ref in reads:
            _index(self._by_configmap, ref, key, True)
        if reads:
            self._reads[key] = reads
        return spec

    def _forget_reads(self, key: str) -> None:
        for ref in self._reads.pop(key, ()):
            _index(self._by_configmap, ref, key, False)

    def _configmap(self, ref: str) -> Mapping[str, str] | None:
        """The data of ConfigMap ``"namespace/name"``, or None if it is not held."""
        ns, _, configmap_name = ref.partition("/")
        obj = self._objects.get(("ConfigMap", ns, configmap_name))
        return None if obj is None else configmap_data(obj)

    def _configmap_changed(self, ref: str) -> None:
        if ref == self.configmap or ref in self._settings_reads:
            self._dirty_settings = True
        for key in sorted(self._by_configmap.get(ref, ())):
            ns, _, ingress_name = key.partition("/")
            self._ingress_changed(
                ns, ingress_name, self._objects.get(("Ingress", ns, ingress_name))
            )

    def reads_configmap(self, ref: str) -> bool:
        """Whether a change to ConfigMap ``"namespace/name"`` can change the config: it is
        the controller's, one the settings name, or one an Ingress's annotations name."""
        return ref == self.configmap or ref in self._settings_reads or ref in self._by_configmap

    def _read_settings(self) -> None:
        """Read the controller's ConfigMap again; if the settings change, every Ingress."""
        self._dirty_settings = False
        before = self._settings_problems
        reads: set[str] = set()
        problems: list[Problem] = []
        settings = self.settings_defaults
        if self.configmap is not None:
            data = self._configmap(self.configmap)
            if data is None:
                reason = "not found: the settings are the defaults"
                problems.append(Problem("ConfigMap", self.configmap, "", reason, warning=True))
            else:

                def lookup(ref: str) -> Mapping[str, str] | None:
                    reads.add(ref)
                    return self._configmap(ref)

                settings, notes = read_settings(data, lookup, defaults=self.settings_defaults)
                for data_key, reason, is_warning in notes:
                    problems.append(
                        Problem(
                            "ConfigMap", self.configmap, f"data[{data_key}]", reason, is_warning
                        )
                    )
        self._settings_reads = reads
        self._settings_problems = problems
        self._problems_changed(before, problems)
        if settings == self._settings:
            return
        self._settings = settings
        for (what, ns, ingress_name), obj in list(self._objects.items()):
            if what == "Ingress":
                self._ingress_changed(ns, ingress_name, obj)

    def _tls_listing_changed(self, tls_host: str) -> None:
        """A host was listed under TLS for the first time, or is no longer: its redirects
        change, and with a wildcard, those of every host it covers."""
        self._dirty_hosts.add(tls_host)
        if tls_host.startswith("*."):
            parent = tls_host[2:]
            self._dirty_hosts.update(self._by_parent.get(parent, ()))
            self._dirty_hosts.update(a for a in self._by_alias if _parent(a) == parent)

    def _classes_changed(self) -> None:
        ours = our_classes(
            (o for k, o in self._objects.items() if k[0] == "IngressClass"), self.classes
        )
        if ours == self._ours:
            return
        self._ours = ours
        for (what, ns, ingress_name), obj in list(self._objects.items()):
            if what == "Ingress" and self._is_ours(obj) != (f"{ns}/{ingress_name}" in self._specs):
                self._ingress_changed(ns, ingress_name, obj)

    def _secret_changed(self, secret: tuple[str, str]) -> None:
        self._loaded.pop(secret, None)
        self._recheck.pop(secret, None)
        for key in self._by_secret.get(secret, ()):
            self._dirty_secrets.add(key)
            spec = self._specs[key]
            for entry in spec.tls:
                if entry.secret == secret[1]:
                    self._dirty_tls.update(entry.hosts)
            ref = self._backend_secrets.get(key)
            backend_secret = ref is not None and ref.key == secret
            if (
                backend_secret
                or self._auth_secrets.get(key) == secret
                or secret_key(spec.policy) == secret
            ):  # its routes' policy changes
                self._policies.pop(key, None)
                self._dirty_hosts.update(spec.buckets)
                self._dirty_catch_all = self._dirty_catch_all or key in self._catch_all_candidates

    def _service_changed(self, service: ServiceKey) -> None:
        self._backends.pop(service, None)
        self._dirty_hosts.update(self._by_service.get(service, ()))
        if service in self._catch_all_services:
            self._dirty_catch_all = True
        self._dirty_error_checks.update(self._by_error_service.get(service, ()))

    def _is_ours(self, ingress: Obj) -> bool:
        return is_ours(ingress, self._ours, self.classes)

    # -- building -----------------------------------------------------------------------

    def build(self) -> RouteConfig:
        """The config of the objects held now."""
        now = self._now = _utc(self.now)
        if self._dirty_settings:
            self._read_settings()
        self._expire_certificates(now)
        try:
            router = Router() if self._router is None else self._router.copy()
            if self._dirty_catch_all:
                before = self._catch_all
                self._build_catch_all()
                self._uses.remove(self._catch_all_backends)
                self._catch_all_backends = list(target_backends(self._catch_all))
                self._uses.add(self._catch_all_backends)
                if _backend_of(before) != _backend_of(self._catch_all):
                    self._dirty_hosts.update(self._catch_all_users)
            self._add_alias_hosts(self._dirty_hosts)
            for host in self._dirty_hosts:
                self._build_host(router, host)
            for tls_host in self._dirty_tls:
                self._build_tls_host(tls_host, now)
            for key in self._dirty_secrets:
                self._check_secrets(key, now)
            for key in self._dirty_error_checks:
                self._check_error_backend(key)
            router.set_default(self._catch_all)
            if self._dirty_regex:
                self._build_regex()
        except BaseException:
            self._start_over()  # half-redone state must not outlive a failure
            raise
        self._router = router
        self._dirty_hosts, self._dirty_tls, self._dirty_secrets = set(), set(), set()
        self._dirty_catch_all = False
        self._dirty_error_checks = set()
        if self._ingresses is None:
            self._ingresses = tuple(key for _, key in self._ordered)
        if self._problem_list is None:
            # one Ingress's problem found on each of its hosts is listed once
            found = dict.fromkeys(self._problems())
            self._problem_list = tuple(sorted(found, key=_problem_order(self._specs)))
        return RouteConfig(
            router=router,
            certificates=dict(self._certificates),
            ingresses=self._ingresses,
            problems=self._problem_list,
            settings=self._settings,
            passthrough=passthrough_map(self._passthrough, self._by_parent),
            regex=self._regex,
            client_auth=client_auth_map(self._host_auths, self._by_parent),
            in_use=self._uses.in_use(),
        )

    def _build_regex(self) -> None:
        """The regex index, when a host's regex rules or its literal presence changed."""
        sites = {
            host: (self._hosts[host].regex, self._hosts[host].literal) for host in self._regex_hosts
        }
        literal = (host for host, done in self._hosts.items() if done.rules) if sites else ()
        self._regex = regex_index(sites, literal)
        self._dirty_regex = False

    def _start_over(self) -> None:
        """Make the next build redo everything from the objects held."""
        self._router = None
        self._hosts.clear()
        self._by_service.clear()
        self._catch_all_users.clear()
        self._uses.reset()
        self._catch_all_backends = []
        self._dirty_hosts = set(self._by_host) | set(self._by_alias) | set(self._hosts)
        self._dirty_error_checks = set(self._specs) | set(self._error_problems)
        self._dirty_tls = set(self._by_tls_host) | set(self._tls_problems)
        self._dirty_secrets = set(self._specs) | set(self._secret_problems)
        self._certificates.clear()
        self._passthrough.clear()
        self._policies.clear()
        self._host_auths.clear()
        self._dirty_catch_all = True
        self._problem_list = None
        self._regex_hosts.clear()
        self._dirty_regex = True

    def _problems(self) -> Iterable[Problem]:
        for spec in self._specs.values():
            yield from spec.problems
        for problems in self._secret_problems.values():
            yield from problems
        for host in self._hosts.values():
            yield from host.problems
        for problems in self._tls_problems.values():
            yield from problems
        yield from self._catch_all_problems
        for problems in self._error_problems.values():
            yield from problems
        yield from self._settings_problems

    def _backend(self, ns: str, service: str, port: int | str) -> Backend:
        ports = self._backends.setdefault((ns, service), {})
        backend = ports.get(port)
        if backend is None:
            backend = ports[port] = self._services.resolve(ns, service, port)
        return backend

    def _has_tls(self, host: str) -> bool:
        if not host:
            return False
        if host in self._by_tls_host:
            return True
        label, _, parent = host.partition(".")
        return bool(
            label and parent and not host.startswith("*.") and "*." + parent in self._by_tls_host
        )

    def _add_alias_hosts(self, hosts: set[str]) -> None:
        """Add to ``hosts`` the aliases of theirs: an alias host serves their rules."""
        todo = list(hosts)
        while todo:
            host = todo.pop()
            for key in self._by_host.get(host, ()):
                for alias in _aliases(self._specs[key]):
                    if alias not in hosts:
                        hosts.add(alias)
                        todo.append(alias)

    def _build_host(self, router: Router, host: str) -> None:
        """Redo one host's rules and default, oldest Ingress first, then its alias rules."""
        last = self._hosts.pop(host, None)
        if last is not None:
            for added in last.rules:
                router.remove(*added)
            for service in last.services:
                _index(self._by_service, service, host, False)
            self._uses.remove(last.backends)
        self._catch_all_users.discard(host)
        done = _Host([], [], set())
        tls = self._has_tls(host)
        self._add_rules(router, host, None, tls, done)
        self._add_alias_rules(router, host, tls, done)
        self._passthrough.pop(host, None)
        specs = [self._specs[k] for k in self._by_host.get(host, ())]
        passthrough = passthrough_target(host, specs, router, self.ssl_passthrough, done.problems)
        if passthrough is not None:
            self._passthrough[host] = passthrough
        for service in done.services:
            _index(self._by_service, service, host, True)
        if done.uses_catch_all:
            self._catch_all_users.add(host)
        if done.rules or done.problems or done.regex:
            self._hosts[host] = done
            self._uses.add(done.backends)
        self._host_auths.pop(host, None)
        if done.client_auth is not None and host and done.rules:
            self._host_auths[host] = done.client_auth
        had_rules = last is not None and bool(last.rules)
        if (last is not None and last.regex) or done.regex or had_rules != bool(done.rules):
            self._dirty_regex = self._dirty_regex or bool(self._regex_hosts or done.regex)
            if done.regex:
                self._regex_hosts.add(host)
            else:
                self._regex_hosts.discard(host)
        self._problems_changed(last.problems if last else [], done.problems)

    def _add_rules(
        self, router: Router, bucket: str, alias: str | None, tls: bool, done: _Host
    ) -> None:
        """Add the rules of one host and its default, on that host or on an alias of it.

        The problems of the rules are reported when they are added on their own host;
        on an alias, a rule that cannot be added is skipped for the same reason.
        """
        specs = sorted((self._specs[k] for k in self._by_host.get(bucket, ())), key=_order)
        if done.client_auth is None:  # an alias serves its first mirrored host's
            done.client_auth = host_client_auth(
                self._policy(spec)[0] for spec in specs if spec.policy.canary is None
            )
        if alias is None and done.client_auth is not None:
            for spec in specs:
                own = self._policy(spec)[0].client_auth
                ignored = (
                    None
                    if own is None
                    else ignored_on_host(bucket, spec.key, own, done.client_auth)
                )
                if ignored is not None and ignored not in done.problems:
                    done.problems.append(ignored)
        canaries = self._canaries(specs, bucket, alias is None, done)
        # an exact host without regex paths: what the trie finds on it is final (a request
        # for it never consults the regex index)
        served = bucket if alias is None else alias
        regex = any(
            is_regex_rule(spec.policy, rule.path_type)
            for spec in specs
            for rule in spec.rules
            if rule.bucket == bucket
        )
        final = bool(served) and not served.startswith("*.") and not regex
        merged: dict[RuleId, str] = {}  # canary rule -> "" merged, else why not
        for spec in specs:
            if spec.policy.canary is not None:
                continue  # merged onto the main rule of its host and path
            for rule in spec.rules:
                if rule.bucket != bucket or isinstance(rule.backend, str):
                    continue
                mark = len(done.backends)  # what a rule that is not added takes back
                target = self._target(spec, rule.backend, tls, done, rule.path, final)
                rule_id = (rule.bucket, rule.path, rule.path_type)
                canary = canaries.get(rule_id)
                if canary is not None:
                    target, merged[rule_id] = self._merged(target, canary, tls, done)
                rule_host = rule.host if alias is None else alias
                if is_regex_rule(target.policy, rule.path_type):
                    host = bucket if alias is None else alias
                    try:
                        found = regex_rule(
                            spec.key, host, rule.path, rule.path_type, target, done.regex
                        )
                    except ValueError as error:
                        del done.backends[mark:]
                        if alias is None:
                            where = rule.where + ".path"
                            done.problems.append(Problem("Ingress", spec.key, where, str(error)))
                    else:
                        done.regex.append(found)
                        if canary is not None and not merged[rule_id]:
                            canaries.pop(rule_id)
                    continue
                try:
                    router.add(rule_host, rule.path, rule.path_type, target)
                except RouteConflictError as error:
                    del done.backends[mark:]
                    if alias is not None:
                        continue
                    winner: Target = error.existing.backend
                    on = f"host {error.new.host!r}" if error.new.host else "any host"
                    done.problems.append(
                        Problem(
                            "Ingress",
                            spec.key,
                            rule.where,
                            f"{error.new.path_type} {error.new.path!r} on {on} is already "
                            f"routed by the older Ingress {winner.ingress}",
                        )
                    )
                    continue
                except InvalidRuleError as error:
                    del done.backends[mark:]
                    if alias is None:
                        done.problems.append(Problem("Ingress", spec.key, rule.where, error.reason))
                    continue
                done.rules.append((rule_host, rule.path, rule.path_type))
                if regex:  # the lengths its regex paths are weighed against
                    done.literal.append((target, rule.path, rule.path_type))
                if canary is not None and not merged[rule_id]:
                    canaries.pop(rule_id)
        if alias is None:
            for rule_id, (canary_spec, canary_rule) in canaries.items():
                reason = merged.get(rule_id) or _NO_MAIN_RULE.format(
                    path_type=rule_id[2], path=rule_id[1], host=rule_id[0] or "any host"
                )
                done.problems.append(Problem("Ingress", canary_spec.key, canary_rule.where, reason))
        # the oldest Ingress with a default backend sends the host's unmatched paths there,
        # unless an explicit "/" rule of any Ingress is already in place
        default_host = bucket if alias is None else alias
        for spec in specs:
            if spec.policy.canary is not None:
                continue  # a canary's default backend is no host's default
            if bucket in spec.hosts and isinstance(spec.default, tuple):
                mark = len(done.backends)
                target = self._target(spec, spec.default, tls, done, final=final)
                try:
                    router.add(default_host, "/", "Prefix", target)
                except RouteConflictError:
                    del done.backends[mark:]
                except InvalidRuleError as error:
                    del done.backends[mark:]
                    if alias is None:
                        where = "spec.defaultBackend"
                        done.problems.append(Problem("Ingress", spec.key, where, error.reason))
                else:
                    done.rules.append((default_host, "/", "Prefix"))
                    if regex:
                        done.literal.append((target, "/", "Prefix"))
                break

    def _add_alias_rules(self, router: Router, alias: str, tls: bool, done: _Host) -> None:
        """Serve on ``alias`` the rules of the hosts of the oldest Ingress aliasing it.

        As in ingress-nginx, an alias that another Ingress names as a host stays that
        Ingress's host; an Ingress aliasing a host an older one already aliases to other
        hosts is refused too, since one host cannot mirror two.
        """
        claimants = sorted((self._specs[k] for k in self._by_alias.get(alias, ())), key=_order)
        owners = self._by_host.get(alias, set())
        mirrored: tuple[str, tuple[str, ...]] | None = None  # (Ingress, its hosts)
        for spec in claimants:
            others = sorted((self._specs[k] for k in owners if k != spec.key), key=_order)
            reason, warning = "", False
            if others:
                reason = f"refused: it is a host of the Ingress {others[0].key}"
            elif spec.key in owners:
                reason, warning = "is one of the Ingress's own hosts already", True
            elif not spec.hosts:
                reason, warning = "not used: the Ingress's rules name no host", True
            elif mirrored is not None:
                if set(spec.hosts) <= set(mirrored[1]):
                    continue  # already served, as the older Ingress aliases the same hosts
                reason = (
                    f"refused: it is already an alias of {', '.join(mirrored[1])} by the "
                    f"older Ingress {mirrored[0]}"
                )
            else:
                try:
                    Router().add(alias, "/", "Prefix", None)
                except InvalidRuleError as error:
                    reason = f"refused: {error.reason}"
                else:
                    mirrored = spec.key, spec.hosts
                    for host in spec.hosts:
                        self._add_rules(router, host, alias, tls, done)
            if reason:
                done.problems.append(
                    Problem(
                        "Ingress",
                        spec.key,
                        "metadata.annotations",
                        f"server-alias {alias!r} {reason}",
                        warning=warning,
                    )
                )

    def _target(
        self,
        spec: IngressSpec,
        ref: tuple[str, int | str],
        tls: bool,
        done: _Host,
        path: str = "/",
        final: bool = False,
    ) -> Target:
        service, port = ref
        done.services.add((spec.namespace, service))
        backend = self._backend(spec.namespace, service, port)
        if spec.policy.service_upstream:
            backend = self._service_upstream(spec, backend, done.problems)
        error_backend = self._error_backend(spec, done.services)
        if error_backend is None and spec.policy.custom_http_errors:
            done.uses_catch_all = True  # also when there is none yet: one may come
            error_backend = _backend_of(self._catch_all)
        policy = on_host(self._policy(spec)[0], done.client_auth)
        done.backends.append(backend)
        if error_backend is not None:
            done.backends.append(error_backend)
        return Target(spec.key, backend, policy, tls, error_backend, path, trie_final=final)

    def _canaries(
        self, specs: list[IngressSpec], bucket: str, report: bool, done: _Host
    ) -> dict[RuleId, tuple[IngressSpec, PathRule]]:
        """The canary rules of a host, by the rule they merge onto: the oldest canary
        Ingress's for each host and path (ingress-nginx takes one per rule)."""
        found: dict[RuleId, tuple[IngressSpec, PathRule]] = {}
        for spec in specs:
            if spec.policy.canary is None:
                continue
            for rule in spec.rules:
                if rule.bucket != bucket or isinstance(rule.backend, str):
                    continue
                rule_id = (rule.bucket, rule.path, rule.path_type)
                older = found.get(rule_id)
                if older is None:
                    found[rule_id] = spec, rule
                elif report and older[0] is not spec:
                    reason = (
                        f"canary: {rule.path_type} {rule.path!r} already has a canary, from "
                        f"the older Ingress {older[0].key}; ignored"
                    )
                    done.problems.append(Problem("Ingress", spec.key, rule.where, reason))
        return found

    def _merged(
        self, main: Target, canary: tuple[IngressSpec, PathRule], tls: bool, done: _Host
    ) -> tuple[Target, str]:
        """The main rule's target with the canary merged onto it, and "", or the main
        target alone and why the canary cannot merge."""
        spec, rule = canary
        assert not isinstance(rule.backend, str)
        assert spec.policy.canary is not None
        main_namespace = main.ingress.partition("/")[0]
        if spec.namespace != main_namespace:
            return main, "canary: " + _OTHER_NAMESPACE.format(ingress=main.ingress)
        backend = self._target(spec, rule.backend, tls, done, rule.path).backend
        if backend == main.backend:
            return main, (
                f"canary: its backend {backend.name} is the main rule's own (Ingress "
                f"{main.ingress}); ignored"
            )
        return with_canary(main, backend, spec.policy), ""

    def _policy(self, spec: IngressSpec) -> tuple[Policy, tuple[Problem, ...]]:
        """The Ingress's policy with the Secrets it names resolved (proxy-ssl-secret,
        auth-secret, auth-tls-secret), and their problems."""
        found = self._policies.get(spec.key)
        if found is None:
            ref = self._backend_secrets.get(spec.key)
            secret = self._objects.get(("Secret", *ref.key)) if ref is not None else None
            client = None
            if ref is not None and secret is not None and has_client_certificate(secret):
                client = self._certificate(*ref.key, self._now)
            policy, problem = upstream_policy(spec.key, spec.policy, ref, secret, client)
            problems: tuple[Problem, ...] = () if problem is None else (problem,)
            basic_secret = self._auth_secrets.get(spec.key)
            users = self._objects.get(("Secret", *basic_secret)) if basic_secret else None
            policy, basic_problems = basic_auth_policy(spec.key, policy, users)
            problems += tuple(basic_problems)
            auth_secret = secret_key(policy)
            if auth_secret is not None:
                ca_secret = self._objects.get(("Secret", *auth_secret))
                what = "client certificates are verified with"
                ca = ca_bundle("/".join(auth_secret), ca_secret, what)
                crl = secret_value(ca_secret, CRL_KEY)
                policy, problem = client_auth_policy(spec.key, policy, ca, crl)
                problems += () if problem is None else (problem,)
            found = self._policies[spec.key] = policy, problems
        return found

    def _service_upstream(
        self, spec: IngressSpec, backend: Backend, problems: list[Problem]
    ) -> Backend:
        """``service-upstream``: the Service's cluster IP and port instead of its endpoints;
        a Service without a cluster IP keeps its endpoints, and the Ingress is told why."""
        found = self._services.cluster_endpoint(spec.namespace, backend.service, backend.port)
        if isinstance(found, Endpoint):
            return replace(backend, endpoints=(found,), terminating=(), problem="")
        if found is not None:
            reason = f"service-upstream: {found}; its endpoints are used"
            problem = Problem("Ingress", spec.key, "metadata.annotations", reason)
            if problem not in problems:
                problems.append(problem)
        return backend

    def _error_backend(self, spec: IngressSpec, services: set[ServiceKey]) -> Backend | None:
        """The Ingress's ``default-backend`` Service, if it names one that exists."""
        if spec.policy.default_backend is None:
            return None
        service, port = spec.policy.default_backend
        services.add((spec.namespace, service))
        obj = self._services.services.get((spec.namespace, service))
        if obj is None:
            return None  # reported by _check_error_backend
        if port == FIRST_PORT:
            port = _first_port(obj)
        return self._backend(spec.namespace, service, port)

    def _check_error_backend(self, key: str) -> None:
        """The problem of an Ingress whose ``default-backend`` names no Service."""
        before = self._error_problems.pop(key, [])
        spec = self._specs.get(key)
        problems: list[Problem] = []
        if spec is not None and spec.policy.default_backend is not None:
            service = spec.policy.default_backend[0]
            if (spec.namespace, service) not in self._services.services:
                reason = (
                    f"default-backend: Service {spec.namespace}/{service} not found; its "
                    "routes are served without an error backend"
                )
                problems.append(Problem("Ingress", key, "metadata.annotations", reason))
        if problems:
            self._error_problems[key] = problems
        self._problems_changed(before, problems)

    def _problems_changed(self, before: list[Problem], after: list[Problem]) -> None:
        if before != after:
            self._problem_list = None

    def _build_catch_all(self) -> None:
        """The default backend that serves what no rule of any host matches: a rule-less
        Ingress's before one with rules (whose own hosts have it anyway), oldest first."""
        before = self._catch_all_problems
        self._catch_all, self._catch_all_problems = None, []
        self._catch_all_services = set()
        specs = sorted(
            (self._specs[k] for k in self._catch_all_candidates),
            key=lambda spec: (spec.has_rules, spec.order),
        )
        canaries = [s for s in specs if s.policy.canary is not None]
        for spec in specs:
            if not isinstance(spec.default, tuple) or spec.policy.canary is not None:
                continue
            if self._catch_all is None:
                service, port = spec.default
                self._catch_all_services.add((spec.namespace, service))
                backend = self._backend(spec.namespace, service, port)
                if spec.policy.service_upstream:
                    backend = self._service_upstream(spec, backend, self._catch_all_problems)
                error_backend = self._error_backend(spec, self._catch_all_services)
                if error_backend is None and spec.policy.custom_http_errors:
                    error_backend = backend
                policy = self._policy(spec)[0]
                self._catch_all = Target(spec.key, backend, policy, False, error_backend)
            elif not spec.has_rules:
                self._catch_all_problems.append(
                    Problem(
                        "Ingress",
                        spec.key,
                        "spec.defaultBackend",
                        "the catch-all default backend is already set by the older Ingress "
                        f"{self._catch_all.ingress}",
                    )
                )
            elif not spec.hosts:
                self._catch_all_problems.append(
                    Problem(
                        "Ingress",
                        spec.key,
                        "spec.defaultBackend",
                        "not used: the Ingress's rules name no host, and the catch-all "
                        f"default backend is the Ingress {self._catch_all.ingress}'s",
                        warning=True,
                    )
                )
        self._merge_catch_all_canary(sorted(canaries, key=_order))
        self._problems_changed(before, self._catch_all_problems)

    def _merge_catch_all_canary(self, canaries: list[IngressSpec]) -> None:
        """A canary Ingress's ``defaultBackend`` merges onto the catch-all (ingress-nginx's
        default server), the oldest canary's; it is never the catch-all itself."""
        merged = ""
        for spec in canaries:
            if not isinstance(spec.default, tuple) or spec.policy.canary is None:
                continue
            reason = ""
            if self._catch_all is None:
                reason = "there is no catch-all default backend to merge onto"
            elif merged:
                reason = f"the catch-all already has a canary, from the older Ingress {merged}"
            elif spec.namespace != self._catch_all.ingress.partition("/")[0]:
                reason = _OTHER_NAMESPACE.format(ingress=self._catch_all.ingress)
            else:
                service, port = spec.default
                self._catch_all_services.add((spec.namespace, service))
                backend = self._backend(spec.namespace, service, port)
                if spec.policy.service_upstream:
                    backend = self._service_upstream(spec, backend, self._catch_all_problems)
                if backend == self._catch_all.backend:
                    reason = f"its backend {backend.name} is the catch-all's own"
                else:
                    self._catch_all = with_canary(self._catch_all, backend, spec.policy)
                    merged = spec.key
            if reason:
                problem = Problem("Ingress", spec.key, "spec.defaultBackend", f"canary: {reason}")
                self._catch_all_problems.append(problem)

    def _certificate(self, ns: str, secret_name: str, now: datetime) -> Certificate | str:
        """The certificate of Secret ``ns/secret_name``, or why there is none (cached)."""
        key = (ns, secret_name)
        found = self._loaded.get(key)
        if found is not None:
            return found
        secret = self._objects.get(("Secret", ns, secret_name))
        if secret is None:
            found = f"Secret {ns}/{secret_name} not found"
        else:
            try:
                found = load_tls_secret(secret, now=now)
                self._recheck[key] = (found.not_before, found.not_after)
            except CertificateError as error:
                found = str(error)
                if error.validity is not None:
                    start, end = error.validity
                    self._recheck[key] = (
                        (None, start - _TICK) if now < start else (end + _TICK, None)
                    )
        self._loaded[key] = found
        return found

    def _expire_certificates(self, now: datetime) -> None:
        """Forget the certificates that became valid, or stopped being, since loaded."""
        for secret, (start, end) in list(self._recheck.items()):
            if (start is not None and now < start) or (end is not None and now > end):
                self._secret_changed(secret)

    def _check_secrets(self, key: str, now: datetime) -> None:
        """The problems of an Ingress's TLS entries with their Secrets."""
        before = self._secret_problems.pop(key, [])
        spec = self._specs.get(key)
        problems: list[Problem] = []
        if spec is None:
            self._problems_changed(before, problems)
            return
        problems.extend(self._policy(spec)[1])
        if spec.policy.canary is not None and spec.tls:
            reason = "ignored on a canary Ingress: the main Ingress's TLS applies to its host"
            problems.append(Problem("Ingress", key, "spec.tls", reason, warning=True))
        for entry in spec.tls if spec.policy.canary is None else ():
            if not entry.secret:
                problems.append(
                    Problem(
                        "Ingress",
                        key,
                        entry.where,
                        "no secretName: its hosts get the default certificate",
                        warning=True,
                    )
                )
                continue
            certificate = self._certificate(spec.namespace, entry.secret, now)
            if isinstance(certificate, str):
                where = f"{entry.where}.secretName"
                reason = f"{certificate}; default certificate used"
                problems.append(Problem("Ingress", key, where, reason))
        if problems:
            self._secret_problems[key] = problems
        self._problems_changed(before, problems)

    def _build_tls_host(self, tls_host: str, now: datetime) -> None:
        """Which certificate a TLS host gets: the oldest Ingress's that names it."""
        self._certificates.pop(tls_host, None)
        before = self._tls_problems.pop(tls_host, [])
        owner: str | None = None
        problems: list[Problem] = []
        specs = sorted((self._specs[k] for k in self._by_tls_host.get(tls_host, ())), key=_order)
        for spec in specs:
            for entry in spec.tls:
                if tls_host not in entry.hosts or not entry.secret:
                    continue
                certificate = self._certificate(spec.namespace, entry.secret, now)
                if isinstance(certificate, str):
                    continue  # reported with the entry
                where = f"{entry.where}.hosts"
                for _ in range(entry.hosts.count(tls_host)):
                    if owner is not None:
                        if self._certificates[tls_host] is not certificate:
                            reason = (
                                f"TLS host {tls_host!r} already has a certificate from the "
                                f"older Ingress {owner}"
                            )
                            problems.append(Problem("Ingress", spec.key, where, reason))
                    elif certificate.uncovered([tls_host]):
                        reason = (
                            f"certificate from Secret {spec.namespace}/{entry.secret} does "
                            f"not name {tls_host!r} (it names "
                            f"{', '.join(certificate.names) or 'nothing'}); "
                            "default certificate used"
                        )
                        problems.append(Problem("Ingress", spec.key, where, reason))
                    else:
                        owner = spec.key
                        self._certificates[tls_host] = certificate
        if problems:
            self._tls_problems[tls_host] = problems
        self._problems_changed(before, problems)


def build_config(
    objects: Iterable[Obj],
    *,
    classes: ClassPolicy | None = None,
    now: datetime | None = None,
    configmap: str | None = None,
    settings_defaults: Settings | None = None,
    ssl_passthrough: bool = False,
) -> RouteConfig:
    """Translate a snapshot of Kubernetes objects (dicts) into a RouteConfig.

    Args:
        objects: Ingresses (v1, or the removed v1beta1 forms), IngressClasses, Services,
            EndpointSlices, Endpoints, Secrets and ConfigMaps, in any order; other kinds
            are ignored.
            An object given twice (same kind, namespace and name) counts once, as its
            last version, with a warning.
        classes: which Ingresses are ours (default: class ``fastroute`` or an IngressClass
            with controller ``fastroute.io/ingress-controller``).
        now: the time certificates are checked against (default: the current time).
        configmap: ``"namespace/name"`` of the controller's ConfigMap, among ``objects``.
        settings_defaults: the settings of the keys the ConfigMap does not set.
        ssl_passthrough: honour ``ssl-passthrough`` (``--enable-ssl-passthrough``).
    """
    builder = ConfigBuilder(
        classes=classes,
        now=now,
        configmap=configmap,
        settings_defaults=settings_defaults,
        ssl_passthrough=ssl_passthrough,
    )
    problems: list[Problem] = []
    seen: set[ObjectKey] = set()
    for i, obj in enumerate(objects):
        if not isinstance(obj, Mapping):
            problems.append(
                Problem("?", f"#{i}", "", f"not a Kubernetes object: {type(obj).__name__}")
            )
            continue
        if kind(obj) not in KINDS:
            continue
        try:
            key = object_key_of(obj)
        except ValueError:
            if kind(obj) == "Ingress":
                problems.append(Problem("Ingress", "?", "metadata.name", "an Ingress needs a name"))
            continue
        if key in seen:
            shown = key[2] if not key[1] else f"{key[1]}/{key[2]}"
            reason = "given more than once; the last one is used"
            problems.append(Problem(key[0], shown, "", reason, warning=True))
        seen.add(key)
        builder.put(obj)
    config = builder.build()
    if not problems:
        return config
    return replace(config, problems=(*problems, *config.problems))


def our_classes(classes: Iterable[Obj], policy: ClassPolicy) -> tuple[set[str], bool | None]:
    """Our class names, and whether class-less Ingresses are ours by the default class.

    The second value is None when no IngressClass is marked default.
    """
    ours = set(policy.class_names)
    default_is_ours: bool | None = None
    for obj in classes:
        mine = text(mapping(obj.get("spec")).get("controller")) == policy.controller
        if mine:
            ours.add(name(obj))
        if text(annotations_of(obj).get(DEFAULT_CLASS_ANNOTATION)).lower() == "true":
            default_is_ours = bool(default_is_ours) or mine
    return ours, default_is_ours


def is_ours(ingress: Obj, classes: tuple[set[str], bool | None], policy: ClassPolicy) -> bool:
    """Whether ``ingress`` is served, given ``our_classes`` of the cluster's IngressClasses."""
    ours, default_is_ours = classes
    legacy = annotations_of(ingress).get(CLASS_ANNOTATION)
    if isinstance(legacy, str) and legacy:
        return legacy in ours
    class_name = text(mapping(ingress.get("spec")).get("ingressClassName"))
    if class_name:
        return class_name in ours
    return policy.adopt_classless or bool(default_is_ours)


def _index(index: dict[Any, set[Any]], key: object, member: object, adding: bool) -> None:
    """Add ``member`` to, or remove it from, ``index[key]`` (no empty sets are kept)."""
    if adding:
        index.setdefault(key, set()).add(member)
        return
    members = index.get(key)
    if members is not None:
        members.discard(member)
        if not members:
            del index[key]


def _index_set(members: set[str], member: str, adding: bool) -> None:
    if adding:
        members.add(member)
    else:
        members.discard(member)


def _parent(host: str) -> str:
    """``b.com`` for ``a.b.com``: the domain a ``*.b.com`` TLS host covers it by."""
    label, _, parent = host.partition(".")
    return parent if label and parent and not host.startswith("*.") else ""


def _order(spec: IngressSpec) -> tuple[str, str, str]:
    return spec.order


def _aliases(spec: IngressSpec) -> frozenset[str]:
    """The ``server-alias`` hosts of an Ingress, as the router keys them."""
    return frozenset(fold_host(alias) for alias in spec.policy.aliases if alias)


def _first_port(service: Obj) -> int | str:
    """The number of a Service's first port (``default-backend`` names none), else
    ``FIRST_PORT``, which resolves to a Backend saying the Service has no such port."""
    ports = sequence(mapping(service.get("spec")).get("ports"))
    number = mapping(ports[0]).get("port") if ports else None
    if isinstance(number, int) and not isinstance(number, bool):
        return number
    return FIRST_PORT


def _backend_of(target: Target | None) -> Backend | None:
    return None if target is None else target.backend


def _problem_order(specs: Mapping[str, IngressSpec]) -> Any:
    """Problems grouped by Ingress, oldest first, then by field: the same for every
    sequence of changes that ends with the same objects."""

    def order(problem: Problem) -> tuple[Any, ...]:
        spec = specs.get(problem.name)
        return (spec.order if spec else ("",), problem.field, problem.reason, problem.warning)

    return order


def _utc(now: datetime | None) -> datetime:
    return datetime.now(UTC) if now is None else now
