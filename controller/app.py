"""The controller: the proxy's listeners, fed from manifest files or from the Kubernetes API.

With ``Options.kubernetes`` the source is the cluster (``controller.kube``): every kind is
listed and watched, bursts of changes rebuild the RouteConfig once, off the request path,
and ``/readyz`` waits until every kind has been listed. While the API server is unreachable
the last config keeps serving. ``reload`` (SIGHUP) rebuilds from the cached objects.

Otherwise the source is manifest files (``controller.manifest_source``), watched: a change
to any of them (or ``reload``) rebuilds the RouteConfig off the request path and swaps it
in. If a file fails to parse, the last good config keeps serving and the reason is logged.
At startup, with nothing to keep, the files that do parse are served.

Either way one pipeline (``controller.pipeline``) coalesces, builds, installs, counts
reloads and reports readiness. Objects that parse but cannot be used are skipped one by
one, each with a logged reason (see ``fastroute.ingress``). Every reload is counted in
the metrics, a file that does not parse (or a rebuild that fails) as a failure.

With a status port, ``/healthz``, ``/readyz`` (a config is loaded and the controller is
not draining) and ``/metrics`` are served there (``controller.status``).
"""

from __future__ import annotations

import ipaddress
import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import trio
from lightkube import AsyncClient, SingleConfig

from controller.kube.client import connect, load_config
from controller.kube.publisher import PublishOptions
from controller.kube.reflector import WatchOptions
from controller.kube.source import KubeSource, check_namespace
from controller.manifest_source import ManifestSource
from controller.pipeline import Pipeline, Source
from controller.reload_metrics import ReloadMetrics
from controller.status import serve_status
from fastroute.ingress import ClassPolicy
from fastroute.ingress.settings import DEFAULT_SETTINGS, Settings
from fastroute.proxy.metrics import Metrics
from fastroute.proxy.server import Limits, Proxy
from fastroute.proxy.tls import TLSContexts

__all__ = [
    "Controller",
    "KubeOptions",
    "ListenError",
    "Listening",
    "Options",
    "check_configmap",
    "naming_the_listener",
]

log = logging.getLogger("fastroute.controller")


@dataclass(frozen=True)
class KubeOptions:
    """Where the cluster is and what to follow in it (``controller.kube``).

    Attributes:
        kubeconfig: a kubeconfig file; None: in-cluster, else ``$KUBECONFIG`` or
            ``~/.kube/config``.
        context: a context of the kubeconfig (default: its current one).
        namespaces: the namespaces to watch; empty: all.
        service_account: where the in-cluster credentials are mounted (None: the standard
            ``/var/run/secrets/kubernetes.io/serviceaccount``).
        debounce: seconds without a change that end a burst of changes.
        watch: the list-watch loops' paging, timeouts and backoff.
    """

    kubeconfig: Path | None = None
    context: str | None = None
    namespaces: Sequence[str] = ()
    service_account: Path | None = None
    debounce: float = 0.02
    watch: WatchOptions = field(default_factory=WatchOptions)
    publish: PublishOptions = field(default_factory=PublishOptions)  # status, Lease, Events

    def __post_init__(self) -> None:
        for namespace in self.namespaces:
            check_namespace(namespace)


@dataclass(frozen=True)
class Options:
    """Everything the controller is told on its command line."""

    manifests: Sequence[Path]
    bind: str = "0.0.0.0"
    http_port: int = 8080
    https_port: int = 8443
    classes: ClassPolicy = field(default_factory=ClassPolicy)
    trusted_proxies: Sequence[str] = ()
    limits: Limits = field(default_factory=Limits)
    https_redirect_port: int = 443  # what HTTP-to-HTTPS redirects point to
    watch: bool = True
    status_port: int | None = None  # /healthz, /readyz, /metrics; None: no status listener
    reuse_port: bool = False  # SO_REUSEPORT: worker processes share the HTTP(S) ports
    shutdown_grace: float = 20.0  # seconds a drain waits for requests in flight
    kubernetes: KubeOptions | None = None  # the source: the cluster, instead of ``manifests``
    configmap: str | None = None  # "namespace/name" of the controller's ConfigMap
    ssl_passthrough: bool = False  # --enable-ssl-passthrough: honour ssl-passthrough

    def __post_init__(self) -> None:
        if not (self.shutdown_grace >= 0 and math.isfinite(self.shutdown_grace)):
            raise ValueError(f"shutdown grace must be 0 or more seconds, got {self.shutdown_grace}")
        if self.kubernetes is not None and self.manifests:
            raise ValueError("serve either manifest files or the Kubernetes API, not both")
        if self.configmap is not None:
            check_configmap(self.configmap)

    @property
    def settings_defaults(self) -> Settings:
        """The settings of the keys the ConfigMap leaves out: ingress-nginx's defaults,
        and the flags that overlap a key.

        A key the ConfigMap sets wins over its flag: the ConfigMap is live and is what a
        cluster migrated from ingress-nginx carries. ``--trusted-proxy`` is
        ``use-forwarded-headers: "true"`` with those networks as ``proxy-real-ip-cidr``,
        and ``compute-full-forwarded-for: "true"``.
        The limits (``--max-body-size``, ``--connect-timeout``, ``--upstream-timeout``)
        are the proxy's own: a key left out is None in the settings, and the flag applies.
        """
        if not self.trusted_proxies:
            return DEFAULT_SETTINGS
        networks = tuple(str(ipaddress.ip_network(p, strict=False)) for p in self.trusted_proxies)
        return replace(
            DEFAULT_SETTINGS,
            use_forwarded_headers=True,
            compute_full_forwarded_for=True,  # the flag's peers' chains go on, as they always did
            proxy_real_ip_cidr=networks,
        )


def check_configmap(ref: str) -> str:
    """``ref`` if it is a ConfigMap's ``namespace/name``.

    Raises:
        ValueError: it is not.
    """
    ns, _, configmap_name = ref.partition("/")
    if not ns or not configmap_name or "/" in configmap_name:
        raise ValueError(f"a ConfigMap is named NAMESPACE/NAME, got {ref!r}")
    check_namespace(ns)
    return ref


@dataclass(frozen=True)
class Listening:
    """Where the controller's listeners ended up (ports 0 become real ports)."""

    http_port: int
    https_port: int
    status_port: int | None = None


class ListenError(OSError):
    """A listener could not open its port; the message says which listener and where."""


@contextmanager
def naming_the_listener(what: str, host: str, port: int) -> Iterator[None]:
    """Turn a failed bind into a ListenError that names the listener, host and port."""
    try:
        yield
    except OSError as error:
        failed = ListenError(
            f"cannot listen for {what} on {host}:{port}: {error.strerror or error}"
        )
        failed.errno = error.errno
        raise failed from None


class Controller:
    """Loads manifests, or follows the cluster, into a proxy and keeps it in sync.

    Attributes:
        metrics: the proxy's metrics; ``reload_metrics`` are on the same registry.
        pipeline: how configs get from the source into the proxy.
    """

    def __init__(self, options: Options) -> None:
        self.options = options
        self.metrics = Metrics()
        self.reload_metrics = ReloadMetrics(self.metrics.registry)
        self.proxy = Proxy(
            None,
            limits=options.limits,
            tls=TLSContexts(),
            https_redirect_port=options.https_redirect_port,
            metrics=self.metrics,
        )
        self.pipeline = Pipeline(self.proxy, self.reload_metrics)

    @property
    def source(self) -> Source | None:
        """The source being followed (following a cluster: once connected)."""
        return self.pipeline.source

    @property
    def reloads(self) -> int:
        """Configs installed, the first one included."""
        return self.pipeline.reloads

    @property
    def draining(self) -> bool:
        """A drain has begun (``drain``)."""
        return self.pipeline.draining

    @property
    def ready(self) -> bool:
        """What ``/readyz`` says: a config is loaded and no drain has begun; following a
        cluster, also every kind listed (a proxy ready with no routes 404s everything)."""
        return self.pipeline.ready

    async def reload(self) -> bool:
        """Rebuild from the manifests (or the cluster's cached objects) and swap the result
        in; whether a config was installed. Requests made while one runs share the next."""
        return await self.pipeline.reload()

    async def drain(self, grace: float) -> None:
        """Stop taking traffic: ``/readyz`` turns 503 at once, requests in flight get up
        to ``grace`` seconds to finish. The caller cancels ``run`` afterwards."""
        self.pipeline.drain()
        await self.proxy.drain(grace)

    async def run(
        self, *, task_status: trio.TaskStatus[Listening] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve until cancelled; ``task_status.started`` gets the bound ports.

        The status listener starts first, so liveness probes answer (and readiness says
        no) while the manifests load.
        """
        options = self.options
        async with trio.open_nursery() as nursery:
            status_port = None
            if options.status_port is not None:
                with naming_the_listener("status", options.bind, options.status_port):
                    status_port = await nursery.start(
                        partial(
                            serve_status, ready=lambda: self.ready, metrics_text=self.metrics.text
                        ),
                        options.bind,
                        options.status_port,
                    )
            # Worker processes share the ports: one that listened before its config is in
            # would answer 503 to the connections the kernel hands it, so it waits.
            if options.kubernetes is not None:
                nursery.start_soon(self._follow_the_cluster, options.kubernetes)
                if options.reuse_port:
                    await self.pipeline.configured.wait()
            else:
                await nursery.start(self.pipeline.follow, self.manifest_source())
            ports = []
            for scheme, port in (("http", options.http_port), ("https", options.https_port)):
                with naming_the_listener(scheme, options.bind, port):
                    listeners = await nursery.start(
                        partial(self.proxy.serve, scheme=scheme, reuse_port=options.reuse_port),
                        options.bind,
                        port,
                    )
                ports.append(listeners[0].socket.getsockname()[1])
            task_status.started(Listening(ports[0], ports[1], status_port))

    def manifest_source(self) -> ManifestSource:
        """The manifest files the options name, as a source."""
        options = self.options
        return ManifestSource(
            options.manifests,
            watching=options.watch,
            classes=options.classes,
            configmap=options.configmap,
            settings_defaults=options.settings_defaults,
            ssl_passthrough=options.ssl_passthrough,
        )

    async def _follow_the_cluster(self, kube: KubeOptions) -> None:
        """Serve what the Kubernetes API says, until cancelled (``ready`` once all is listed).

        The publisher (when this replica leads) writes Ingress statuses and Events from
        each config installed and the snapshot it was built from.
        """

        def connected() -> tuple[SingleConfig, AsyncClient]:  # reads files: in a thread
            config = load_config(
                kube.kubeconfig, kube.context, service_account=kube.service_account
            )
            return config, connect(config)

        config, client = await trio.to_thread.run_sync(connected)
        log.info(
            "following the Kubernetes API at %s (context %s) in %s",
            config.cluster.server,
            config.context_name,
            ", ".join(kube.namespaces) or "all namespaces",
        )
        async with client:  # the publisher still writes while it shuts down: inside
            publisher = kube.publish.publisher(client)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(publisher.run)
                source = KubeSource(
                    client,
                    namespaces=kube.namespaces,
                    classes=self.options.classes,
                    watch=kube.watch,
                    configmap=self.options.configmap,
                    settings_defaults=self.options.settings_defaults,
                    ssl_passthrough=self.options.ssl_passthrough,
                )
                await self.pipeline.follow(
                    source, on_config=publisher.on_config, debounce=kube.debounce
                )
