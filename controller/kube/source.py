"""The Kubernetes API as the controller's source: reflectors in, RouteConfigs out.

One reflector per kind (per watched namespace, for namespaced kinds): Ingresses,
IngressClasses, Services, EndpointSlices, the ``kubernetes.io/tls`` Secrets (selected by
field, so the controller never holds the cluster's other Secrets) and ConfigMaps (the
controller's, the header ConfigMaps it names, those Ingress annotations name; with
``namespaces``, the controller ConfigMap's namespace is watched too).

Secrets of other types reach the controller one by one: each that an annotation of one
of our Ingresses names (``auth-secret``, ``auth-tls-secret``, ``proxy-ssl-secret``:
htpasswd files and CA bundles are usually ``Opaque``) gets a reflector of its own,
selected by ``metadata.name=NAME,type!=kubernetes.io/tls`` in the Ingress's namespace:
what the TLS watch does not already see, so no Secret comes twice. It starts when the
first Ingress names the Secret and stops when the last one no longer does (or is no
longer ours). A rebuild waits, a couple of seconds at most, for the first list of the
Secrets named since the last one, so a new or changed Ingress is built with its Secrets
rather than answering 503 for want of them; a Secret that comes later rebuilds like any
change.

``KubeSource`` is a ``controller.pipeline.Source``: once every kind has been listed, and
then on every change that can matter, it tells the pipeline, which settles bursts and asks
for builds. A build hands the changes to a ``ConfigBuilder`` in a worker thread. The
builder redoes only the hosts the changes touch, so a change to one Ingress among 10,000
costs milliseconds, not the seconds of translating everything again. A change to a TLS
Secret that no Ingress names (in ``spec.tls`` or an annotation), or to a ConfigMap that
neither the settings nor an Ingress read, rebuilds nothing.

While the API server is unreachable the caches, and so the last config, stay as they are:
the proxy keeps serving, and ``ready`` stays true (a fleet that turned unready whenever the
API server restarts would take the whole ingress down with it).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import trio
from lightkube import AsyncClient
from lightkube.core.resource import NamespacedResource, Resource
from lightkube.resources.core_v1 import ConfigMap, Secret, Service
from lightkube.resources.discovery_v1 import EndpointSlice
from lightkube.resources.networking_v1 import Ingress, IngressClass

from controller.kube.reflector import Reflector, WatchOptions
from controller.kube.store import TLS_SECRET_TYPE, Change, Key, SecretNames, key_of, snapshot
from controller.pipeline import Built
from fastroute.ingress import ClassPolicy, ConfigBuilder, Problem, RouteConfig
from fastroute.ingress.build import is_ours, our_classes
from fastroute.ingress.settings import Settings
from fastroute.ingress.spec import reads_the_same

__all__ = [
    "KINDS",
    "SECRET_WAIT",
    "Kind",
    "KubeSource",
    "NamedSecret",
    "check_namespace",
    "named_secret_selector",
]

log = logging.getLogger("fastroute.controller.kube")

# A namespace name is a DNS-1123 label.
SECRET_WAIT = 2.0  # seconds a rebuild waits for the first list of a newly named Secret
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


@dataclass(frozen=True)
class Kind:
    """A kind the controller follows, and the field selector its list and watch use."""

    resource: type[Resource]
    field_selector: str | None = None


KINDS: tuple[Kind, ...] = (
    Kind(IngressClass),
    Kind(Ingress),
    Kind(Service),
    Kind(EndpointSlice),
    Kind(Secret, field_selector=f"type={TLS_SECRET_TYPE}"),
    Kind(ConfigMap),
)


def named_secret_selector(name: str) -> str:
    """The field selector of the watch of one Secret an annotation names.

    Its TLS type is left to the TLS Secrets' watch, which sees every Ingress's namespace.
    """
    return f"metadata.name={name},type!={TLS_SECRET_TYPE}"


@dataclass(eq=False)
class NamedSecret:
    """The watch of one Secret that Ingress annotations name, and the scope that stops it."""

    key: Key
    reflector: Reflector
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    waited: bool = False  # a rebuild has waited for its first list already


def check_namespace(name: str) -> str:
    """``name`` if it can be a namespace.

    Raises:
        ValueError: it is not a DNS-1123 label (lower case, digits, ``-``, 63 at most).
    """
    if not _NAMESPACE.fullmatch(name):
        raise ValueError(
            f"not a namespace name: {name!r} (lower-case letters, digits and '-', "
            "63 characters at most, starting and ending with a letter or digit)"
        )
    return name


class KubeSource:
    """Follows the cluster and builds RouteConfigs from it (a ``controller.pipeline.Source``).

    Args:
        client: a lightkube client (``controller.kube.client.connect``).
        namespaces: the namespaces to watch; empty: all of them. IngressClasses are
            cluster-scoped and always watched cluster-wide.
        classes: which Ingresses are ours (``build_config``'s ``classes``).
        watch: the reflectors' paging, timeouts and backoff.
        configmap: ``"namespace/name"`` of the controller's ConfigMap (None: none).
        settings_defaults: the settings of the keys the ConfigMap does not set.
        ssl_passthrough: honour ``ssl-passthrough`` (``--enable-ssl-passthrough``).
        secret_wait: seconds a rebuild waits for the first list of a Secret an
            annotation has just named.
        on_ingress: called with every change to an Ingress as the watch sees it, status
            changes included, before any rebuild (the publisher writes statuses back).

    Attributes:
        reflectors: the watches of whole kinds (``ready`` once each has listed).
        by_name: the watches of the Secrets annotations name, by (namespace, name).
    """

    def __init__(
        self,
        client: AsyncClient,
        *,
        namespaces: Sequence[str] = (),
        classes: ClassPolicy | None = None,
        watch: WatchOptions | None = None,
        configmap: str | None = None,
        settings_defaults: Settings | None = None,
        ssl_passthrough: bool = False,
        secret_wait: float = SECRET_WAIT,
        on_ingress: Callable[[Change], None] | None = None,
    ) -> None:
        if not (secret_wait >= 0 and math.isfinite(secret_wait)):
            raise ValueError(f"secret_wait must be 0 or more seconds, got {secret_wait}")
        self._client = client
        self._watch = watch
        self.secret_wait = secret_wait
        self.namespaces = tuple(dict.fromkeys(check_namespace(ns) for ns in namespaces))
        self.classes = classes or ClassPolicy()
        self.configmap = configmap
        self.settings_defaults = settings_defaults
        self.ssl_passthrough = ssl_passthrough
        self.on_ingress = on_ingress
        self.reflectors: list[Reflector] = []
        for kind in KINDS:
            cluster_wide = not self.namespaces or not _namespaced(kind.resource)
            namespaces = self.namespaces
            if kind.resource is ConfigMap and configmap is not None:
                namespaces = tuple(dict.fromkeys((*namespaces, configmap.partition("/")[0])))
            for namespace in [None] if cluster_wide else namespaces:
                self.reflectors.append(
                    Reflector(
                        client,
                        kind.resource,
                        namespace,
                        field_selector=kind.field_selector,
                        options=watch,
                        on_change=self._changed,
                    )
                )
        self._secret_caches = [r.cache for r in self.reflectors if r.cache.kind == "Secret"]
        self._secret_names = SecretNames()  # the Secrets our Ingresses name, kept up to date
        self._classes = our_classes((), self.classes)  # as the IngressClasses say
        self.by_name: dict[Key, NamedSecret] = {}
        self._nursery: trio.Nursery | None = None  # where the named Secrets' watches run
        self._notify: Callable[[], None] | None = None  # the pipeline's, once all is listed
        self._announced = False  # every kind listed, and ``changed()`` said so
        self._pending: dict[tuple[str, Key], Change] = {}  # for the builder: the last of each
        self._builder = self._new_builder()
        self._start_over = False  # after a failed build: a new builder, fed every object
        self._dirty = False  # a change that can matter came since the last build began
        self._problems: set[Problem] = set()

    @property
    def ready(self) -> bool:
        """Every kind has been listed once, and ``watch`` has said so (it stays true if the
        API goes away later).

        Not before it has said so: the pipeline builds when the source is ready and again
        on ``changed()``, so a source ready a moment earlier (the last list is in, the
        watch has not looked yet) would get its first config built twice.
        """
        return self._announced

    @property
    def pending(self) -> bool:
        """Changes are waiting for a rebuild (a change that cannot matter never waits)."""
        return self._dirty

    def objects(self) -> list[Mapping[str, Any]]:
        """A snapshot of every cached object, as ``build_config`` takes them."""
        return snapshot(
            (r.cache for r in self.reflectors),
            (watch.reflector.cache for watch in self.by_name.values()),
        )

    async def watch(self, changed: Callable[[], None]) -> None:
        """Follow the cluster until cancelled; ``changed()`` once every kind is listed, then
        on every change that can matter.

        Never ends on its own: the reflectors retry an unreachable API server forever.
        """
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                for watch in self.by_name.values():
                    self._start(watch)
                for reflector in self.reflectors:
                    nursery.start_soon(reflector.run)
                for reflector in self.reflectors:
                    await reflector.synced.wait()
                log.info(
                    "listed every kind: %d objects from %d list-watches",
                    sum(len(r.cache) for r in self.reflectors),
                    len(self.reflectors),
                )
                self._notify = changed
                self._announced = True  # ready and announced in one step: no build between
                changed()
                await trio.sleep_forever()  # the reflectors run in the nursery
            finally:
                self._nursery = None
                self._notify = None

    def _changed(self, change: Change) -> None:
        """A reflector's cache changed: mark a rebuild due (unless it cannot matter)."""
        if change.kind == "Secret":
            self._secret_changed(change)
            return
        if change.kind == "Ingress" and self.on_ingress is not None:
            self.on_ingress(change)
        # the builder needs the new version only: holding the old one too until the next
        # rebuild would keep two copies of every Ingress whose status was just written
        self._pending[(change.kind, change.key)] = replace(change, previous=None)
        if (
            change.kind == "Ingress"
            and change.previous is not None
            and reads_the_same(change.previous, change.obj)
        ):
            return  # its status, most likely, and ours: the builder takes it with the next
        if change.kind == "Ingress":
            self._follow_secret_names(change.key, change.obj if change.type != "DELETED" else None)
        elif change.kind == "IngressClass":
            self._classes_changed()
        elif (
            change.kind == "ConfigMap"
            and self.ready
            and not self._builder.reads_configmap("/".join(change.key))
        ):
            return
        self._rebuild_due()

    def _secret_changed(self, change: Change) -> None:
        """A Secret changed in one of the caches that hold Secrets: the builder gets it as
        the caches now hold it (a TLS cache first, as in ``snapshot``), and a rebuild is due
        if an Ingress names it."""
        key = change.key
        current = self._secret(key)
        if current is None:
            self._pending[("Secret", key)] = Change("DELETED", "Secret", key, change.obj)
        else:
            kind = "ADDED" if change.type == "DELETED" else change.type
            self._pending[("Secret", key)] = Change(kind, "Secret", key, current)
        if self.ready and key not in self._secret_names:
            return
        self._rebuild_due()

    def _rebuild_due(self) -> None:
        self._dirty = True
        if self._notify is not None:
            self._notify()

    def _secret(self, key: Key) -> Mapping[str, Any] | None:
        for cache in self._secret_caches:
            found = cache.get(key)
            if found is not None:
                return found
        watch = self.by_name.get(key)
        return watch.reflector.cache.get(key) if watch is not None else None

    # -- the Secrets that annotations name, one watch each ---------------------------------

    def _follow_secret_names(self, ingress: Key, obj: Mapping[str, Any] | None) -> None:
        """Start and stop watches of annotation-named Secrets as an Ingress changes (None:
        deleted). The Secrets of Ingresses of other classes are never fetched."""
        if obj is not None and not is_ours(obj, self._classes, self.classes):
            obj = None
        started, stopped = self._secret_names.update(ingress, obj)
        for key in sorted(stopped):
            self._unwatch_secret(key)
        for key in sorted(started):
            self._watch_secret(key)

    def _classes_changed(self) -> None:
        """Which Ingresses are ours may have changed: follow their Secrets again."""
        classes = our_classes(
            (obj for r in self.reflectors if r.cache.kind == "IngressClass" for obj in r.cache),
            self.classes,
        )
        if classes == self._classes:
            return
        self._classes = classes
        for reflector in self.reflectors:
            if reflector.cache.kind == "Ingress":
                for obj in reflector.cache:
                    self._follow_secret_names(key_of(obj), obj)

    def _watch_secret(self, key: Key) -> None:
        namespace, name = key
        reflector = Reflector(
            self._client,
            Secret,
            namespace,
            field_selector=named_secret_selector(name),
            options=self._watch,
        )
        watch = NamedSecret(key, reflector)
        reflector.on_change = partial(self._named_secret_changed, watch)
        self.by_name[key] = watch
        log.info("watching Secret %s/%s: an Ingress annotation names it", namespace, name)
        if self._nursery is not None:
            self._start(watch)

    def _start(self, watch: NamedSecret) -> None:
        assert self._nursery is not None
        watch.scope = trio.CancelScope()
        self._nursery.start_soon(self._run_named, watch, watch.scope)

    @staticmethod
    async def _run_named(watch: NamedSecret, scope: trio.CancelScope) -> None:
        with scope:
            await watch.reflector.run()

    def _unwatch_secret(self, key: Key) -> None:
        watch = self.by_name.pop(key, None)
        if watch is None:
            return
        watch.scope.cancel()
        log.info("no longer watching Secret %s/%s: no Ingress annotation names it", *key)
        for obj in watch.reflector.cache:  # the builder forgets it, unless a TLS cache has it
            self._secret_changed(Change("DELETED", "Secret", key, obj))

    def _named_secret_changed(self, watch: NamedSecret, change: Change) -> None:
        # a change a stopped watch made before its cancellation took effect is not news
        if self.by_name.get(watch.key) is watch and change.key == watch.key:
            self._changed(change)

    async def _named_listed(self) -> None:
        """Wait, ``secret_wait`` seconds at most, for the first list of each Secret named
        since the last rebuild (a Secret that comes later rebuilds when it comes)."""
        fresh = [watch for watch in self.by_name.values() if not watch.waited]
        with trio.move_on_after(self.secret_wait):
            for watch in fresh:
                await watch.reflector.synced.wait()
        for watch in fresh:
            watch.waited = True
            if not watch.reflector.synced.is_set():
                log.warning(
                    "Secret %s/%s not listed within %g s; building without it for now",
                    *watch.key,
                    self.secret_wait,
                )

    async def build(self, current: RouteConfig | None) -> Built:
        """A config from the caches now (``current``, the one serving, is not needed: the
        builder keeps its own state).

        First waits for the first list of the Secrets annotations named since the last
        build. A build that breaks leaves the builder with only some of the changes: the
        next one starts over from every cached object.
        """
        await self._named_listed()
        self._dirty = False  # changes from here on ask for the next build
        objects = self.objects()
        changes, self._pending = self._pending, {}
        everything, self._start_over = self._start_over, False
        try:
            config = await trio.to_thread.run_sync(
                self._build, changes.values(), objects if everything else None
            )
        except Exception:
            self._start_over = True  # the builder may have taken only some changes
            raise
        self._report(config)
        return Built(config, objects)

    def _build(
        self, changes: Iterable[Change], everything: list[Mapping[str, Any]] | None
    ) -> RouteConfig:
        """The builder takes the changes (or, given ``everything``, a new builder takes
        every object) and builds.

        In a worker thread: it is the builder's only user, and it never reads the
        caches, which change meanwhile.
        """
        if everything is not None:
            self._builder = self._new_builder()
            for obj in everything:
                self._builder.put(obj)
        else:
            for change in changes:
                if change.type == "DELETED":
                    self._builder.delete(change.obj)
                else:
                    self._builder.put(change.obj)
        return self._builder.build()

    def _new_builder(self) -> ConfigBuilder:
        return ConfigBuilder(
            classes=self.classes,
            configmap=self.configmap,
            settings_defaults=self.settings_defaults,
            ssl_passthrough=self.ssl_passthrough,
        )

    def _report(self, config: RouteConfig) -> None:
        """Log the problems that are new since the last build, and those now gone.

        Every rebuild (an EndpointSlice changes whenever a pod does) would otherwise
        repeat every standing problem.
        """
        problems = set(config.problems)
        for problem in config.problems:
            if problem not in self._problems:
                (log.warning if problem.warning else log.error)("%s", problem)
        for problem in self._problems - problems:
            log.info("resolved: %s", problem)
        self._problems = problems


def _namespaced(resource: type[Resource]) -> bool:
    return issubclass(resource, NamespacedResource)
