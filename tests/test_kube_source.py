"""The controller following the Kubernetes API: real proxy, real backends, the API emulator.

A real controller (``Controller`` with ``Options.kubernetes``) lists and watches the emulator
in ``tests/kubeapi`` over HTTP or HTTPS with a token, and serves on 127.0.0.1 in front of
real echo backends. The tests change objects through the emulator's hooks (or kubectl),
break the API on purpose (dropped watches, expired history in both 410 forms, the server
down, a silent stream, a forbidden list, rotated credentials) and poll the proxy, with a
deadline, until the traffic says the controller followed.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
import trio
import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID
from lightkube import AsyncClient, KubeConfig
from lightkube.config.models import UserExec

from controller.app import Controller, KubeOptions, Listening, Options
from controller.kube.client import ExecAuth, TokenFileAuth
from controller.kube.reflector import Backoff, Reflector, WatchOptions
from controller.kube.source import KINDS, KubeSource
from controller.kube.store import Cache
from fastroute.ingress import ConfigBuilder
from fastroute.ingress.certs import self_signed_certificate, tls_secret
from tests.cli import run_controller
from tests.echo import Echo
from tests.kubeapi import PKI, KubeAPI
from tests.objects import endpoint_slice, ingress_class, service, tls_section
from tests.objects import ingress as ingress_object
from tests.polling import DEADLINE, wait_for

pytest_plugins = ["tests.kubeapi.fixtures"]

HOST = "site.example.com"
FAST = WatchOptions(
    page_size=2, watch_timeout=30, backoff_initial=0.05, backoff_max=0.3, request_timeout=5
)
INGRESSES = "/apis/networking.k8s.io/v1/ingresses"
SERVICES = "/api/v1/services"
SLICES = "/apis/discovery.k8s.io/v1/endpointslices"
SECRETS = "/api/v1/secrets"


# -- objects -----------------------------------------------------------------------------


def endpoints(port: int, service_name: str = "web", namespace: str = "default") -> dict[str, Any]:
    return endpoint_slice(service_name, port, namespace)


def ingress(
    path: str = "/",
    *,
    name: str = "site",
    namespace: str = "default",
    host: str = HOST,
    class_name: str = "fastroute",
    tls_secret_name: str | None = None,
) -> dict[str, Any]:
    tls = [] if tls_secret_name is None else [tls_section(host, secret=tls_secret_name)]
    paths = [(path, "Prefix", "web")]
    return ingress_object(name, host, paths=paths, namespace=namespace, cls=class_name, tls=tls)


def certificate_secret(common_name: str, name: str = "site-tls") -> dict[str, Any]:
    certificate = self_signed_certificate([HOST], common_name=common_name)
    return tls_secret("default", name, certificate)


def site(api: KubeAPI, port: int, **options: Any) -> None:
    """A Service, its EndpointSlice (one echo backend) and an Ingress routing ``HOST`` to it."""
    api.create(service())
    api.create(endpoints(port))
    api.create(ingress(**options))


# -- the controller and requests through it ----------------------------------------------


@dataclass
class Running:
    controller: Controller
    listening: Listening
    ports: dict[str, int]  # backend name -> port

    @property
    def source(self) -> KubeSource:
        source = self.controller.source
        assert isinstance(source, KubeSource)
        return source

    def reflector(self, kind: str) -> Reflector:
        (found,) = [r for r in self.source.reflectors if r.cache.kind == kind]
        return found


@dataclass(frozen=True)
class Reply:
    status: int
    backend: str | None


async def fetch(port: int, path: str = "/", host: str = HOST) -> Reply:
    def call() -> Reply:
        with httpx.Client(trust_env=False, timeout=DEADLINE) as client:
            response = client.get(f"http://127.0.0.1:{port}{path}", headers={"host": host})
        backend = response.json()["backend"] if response.status_code == 200 else None
        return Reply(response.status_code, backend)

    return await trio.to_thread.run_sync(call)


async def readyz(port: int | None) -> int:
    assert port is not None

    def call() -> int:
        with httpx.Client(trust_env=False, timeout=DEADLINE) as client:
            return client.get(f"http://127.0.0.1:{port}/readyz").status_code

    return await trio.to_thread.run_sync(call)


async def served_by(port: int, backend: str | None, path: str = "/", host: str = HOST) -> None:
    """Wait until ``path`` is answered by ``backend`` (None: until it answers 404)."""

    async def check() -> bool:
        reply = await fetch(port, path, host)
        return reply.backend == backend if backend else reply.status == 404

    await wait_for(check, f"{host}{path} served by {backend or 'nobody (404)'}")


async def wait_ready(controller: Controller) -> None:
    async def check() -> bool:
        return controller.ready

    await wait_for(check, "the controller is ready")


@asynccontextmanager
async def backends(*names: str) -> AsyncIterator[dict[str, int]]:
    async with trio.open_nursery() as nursery:
        yield {name: await nursery.start(Echo(name).serve) for name in names}
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def running(
    kubeconfig: Path | None,
    ports: dict[str, int],
    *,
    ready: bool = True,
    configmap: str | None = None,
    **kube: Any,
) -> AsyncIterator[Running]:
    """A controller following the emulator (ready, unless told not to wait)."""
    kube.setdefault("debounce", 0.05)
    kube.setdefault("watch", FAST)
    options = Options(
        manifests=[],
        bind="127.0.0.1",
        http_port=0,
        https_port=0,
        status_port=0,
        kubernetes=KubeOptions(kubeconfig=kubeconfig, **kube),
        configmap=configmap,
    )
    controller = Controller(options)
    async with trio.open_nursery() as nursery:
        listening = await nursery.start(controller.run)
        if ready:
            await wait_ready(controller)
        yield Running(controller, listening, ports)
        nursery.cancel_scope.cancel()


def plain_kubeconfig(api: KubeAPI, tmp_path: Path) -> Path:
    return api.write_kubeconfig(tmp_path / "kubeconfig")


# -- initial sync, then every kind changing real traffic -----------------------------------


@pytest.mark.e2e
def test_initial_sync_in_pages_then_traffic_over_tls_with_a_token(
    kubeapi_tls: KubeAPI, kubeconfig_file: Path
) -> None:
    api = kubeapi_tls

    async def scenario() -> None:
        async with backends("a") as ports:
            site(api, ports["a"])
            api.create_many(service(f"extra-{n}") for n in range(4))
            async with running(kubeconfig_file, ports) as run:
                reply = await fetch(run.listening.http_port)
                assert reply == Reply(200, "a")
                assert await fetch(run.listening.http_port, host="other.example.com") == Reply(
                    404, None
                )
                # five Services in pages of two: three list requests, one sync
                assert api.count("list", SERVICES) == 3
                assert run.reflector("Service").lists == 1
                assert len(run.reflector("Service").cache) == 5
                assert run.controller.reloads == 1
                metrics = await trio.to_thread.run_sync(
                    lambda: httpx.get(f"http://127.0.0.1:{run.listening.status_port}/metrics")
                )
                assert 'fastroute_config_reloads_total{result="success"} 1.0' in metrics.text

    trio.run(scenario)


@pytest.mark.e2e
def test_the_source_is_ready_only_once_it_has_said_so(kubeapi: KubeAPI) -> None:
    """Every kind listed is not yet ready: the pipeline builds when the source is ready and
    again on ``changed()``, so a source ready before it said so (its last list in, its
    watch not yet past the waits for the others) had its first config built twice."""

    async def scenario() -> None:
        client = AsyncClient(config=KubeConfig.from_dict(kubeapi.kubeconfig()))
        source = KubeSource(client, watch=FAST)
        for reflector in source.reflectors:  # every kind listed, as if just now
            reflector.synced.set()
        assert not source.ready
        said: list[bool] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(source.watch, lambda: said.append(source.ready))
            await wait_for(lambda: said, "the source saying it is listed")
            nursery.cancel_scope.cancel()
        assert said == [True]  # ready as it said so, and said so once
        assert source.ready

    trio.run(scenario)


@pytest.mark.e2e
def test_endpointslice_and_service_changes_move_traffic(kubeapi: KubeAPI, tmp_path: Path) -> None:
    api = kubeapi

    async def scenario() -> None:
        async with backends("a", "b") as ports:
            site(api, ports["a"])
            async with running(plain_kubeconfig(api, tmp_path), ports) as run:
                port = run.listening.http_port
                await served_by(port, "a")
                api.update({**endpoints(ports["b"])})  # the pod moved
                await served_by(port, "b")

                api.delete("Service", "web", namespace="default")

                async def unavailable() -> bool:
                    return (await fetch(port)).status == 503

                await wait_for(unavailable, "503 once the Service is gone")
                api.create(service())
                await served_by(port, "b")

                api.delete("EndpointSlice", "web-1", namespace="default")
                await wait_for(unavailable, "503 once the endpoints are gone")
                api.create(endpoints(ports["a"]))
                await served_by(port, "a")

    trio.run(scenario)


@pytest.mark.e2e
def test_ingress_and_ingressclass_changes_move_traffic(kubeapi: KubeAPI, tmp_path: Path) -> None:
    api = kubeapi

    async def scenario() -> None:
        async with backends("a") as ports:
            site(api, ports["a"], path="/old")
            async with running(plain_kubeconfig(api, tmp_path), ports) as run:
                port = run.listening.http_port
                await served_by(port, "a", "/old/page")
                api.update(ingress("/new"))
                await served_by(port, "a", "/new/page")
                assert (await fetch(port, "/old/page")).status == 404

                # a class that is not ours, until an IngressClass says it is
                api.update(ingress("/new", class_name="custom"))
                await served_by(port, None, "/new/page")
                api.create(ingress_class("custom"))
                await served_by(port, "a", "/new/page")
                api.delete("IngressClass", "custom")
                await served_by(port, None, "/new/page")

                api.update(ingress("/new"))
                await served_by(port, "a", "/new/page")
                api.delete("Ingress", "site", namespace="default")
                await served_by(port, None, "/new/page")

    trio.run(scenario)


def common_name(port: int) -> str:
    """The common name of the certificate the proxy serves for ``HOST``."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as raw,
        context.wrap_socket(raw, server_hostname=HOST) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    names = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value)


@pytest.mark.e2e
def test_tls_secret_changes_change_the_certificate(kubeapi: KubeAPI, tmp_path: Path) -> None:
    api = kubeapi
    # a Secret of another type is never listed: the watch selects kubernetes.io/tls only
    api.create({**certificate_secret("opaque"), "type": "Opaque", "metadata": {"name": "other"}})

    async def scenario() -> None:
        async with backends("a") as ports:
            site(api, ports["a"], tls_secret_name="site-tls")
            async with running(plain_kubeconfig(api, tmp_path), ports) as run:
                https = run.listening.https_port

                async def serves(name: str) -> bool:
                    return await trio.to_thread.run_sync(common_name, https) == name

                assert await serves("fastroute default certificate")
                assert len(run.reflector("Secret").cache) == 0
                api.create(certificate_secret("version 1"))
                await wait_for(lambda: serves("version 1"), "the Secret's certificate")
                api.update(certificate_secret("version 2"))
                await wait_for(lambda: serves("version 2"), "the renewed certificate")
                api.delete("Secret", "site-tls", namespace="default")
                await wait_for(lambda: serves("fastroute default certificate"), "the default again")
                # a TLS Secret no Ingress names is watched but asks for no rebuild (the
                # cache and the rebuild flag change in the same step, so this is no race)
                source = run.source

                async def settled() -> bool:
                    return not source.pending

                await wait_for(settled, "no rebuild pending")
                rebuilds = run.controller.reloads
                api.create(certificate_secret("unused", name="unused-tls"))

                async def cached() -> bool:
                    return len(run.reflector("Secret").cache) == 1

                await wait_for(cached, "the unused Secret in the cache")
                assert not source.pending
                assert run.controller.reloads == rebuilds

    trio.run(scenario)


# -- the watch: resumed, expired, down, bookmarks, watchdog -------------------------------


@pytest.mark.e2e
def test_a_dropped_watch_resumes_without_a_relist(kubeapi: KubeAPI, tmp_path: Path) -> None:
    api = kubeapi

    async def scenario() -> None:
        async with backends("a", "b") as ports:
            site(api, ports["a"])
            async with running(plain_kubeconfig(api, tmp_path), ports) as run:
                port = run.listening.http_port
                await trio.to_thread.run_sync(api.wait_for_watchers, len(KINDS))
                lists = {path: api.count("list", path) for path in (SLICES, INGRESSES)}
                watches = api.count("watch", SLICES)
                assert api.drop_watches() == len(KINDS)
                api.update(endpoints(ports["b"]))  # while nobody watches
                await served_by(port, "b")
                assert api.count("watch", SLICES) > watches
                assert {path: api.count("list", path) for path in lists} == lists

    trio.run(scenario)


@pytest.mark.parametrize("gone", ["http", "event"])
@pytest.mark.e2e
def test_an_expired_resource_version_relists_and_sees_deletions_made_meanwhile(
    kubeapi: KubeAPI, tmp_path: Path, gone: Literal["http", "event"]
) -> None:
    api = kubeapi
    api.gone = gone

    async def scenario() -> None:
        async with backends("a") as ports:
            site(api, ports["a"])
            api.create(ingress("/", name="other", host="other.example.com"))
            async with running(plain_kubeconfig(api, tmp_path), ports) as run:
                port = run.listening.http_port
                await served_by(port, "a", host="other.example.com")
                lists = api.count("list", INGRESSES)
                api.stop()
                api.delete("Ingress", "other", namespace="default")  # no watch sees this
                api.expire()  # and the history that would tell it is gone
                api.start()
                await served_by(port, None, host="other.example.com")
                assert api.count("list", INGRESSES) == lists + 1
                assert await fetch(port) == Reply(200, "a")
                assert run.reflector("Ingress").cache.get(("default", "other")) is None

    trio.run(scenario)


@pytest.mark.e2e
def test_the_last_config_serves_while_the_api_is_down_and_state_converges_after(
    kubeapi: KubeAPI, tmp_path: Path
) -> None:
    api = kubeapi

    async def scenario() -> None:
        async with backends("a", "b") as ports:
            site(api, ports["a"])
            async with running(plain_kubeconfig(api, tmp_path), ports) as run:
                port = run.listening.http_port
                lists = api.count("list", SLICES)
                api.stop()
                api.update(endpoints(ports["b"]))  # changed while the controller cannot see
                for _ in range(10):  # the last good config keeps serving, and ready
                    assert await fetch(port) == Reply(200, "a")
                    assert await readyz(run.listening.status_port) == 200
                    await trio.sleep(0.05)
                api.start()
                await served_by(port, "b")
                # the history was still there: resumed, not re-listed
                assert api.count("list", SLICES) == lists

    trio.run(scenario)


@pytest.mark.e2e
def test_bookmarks_advance_the_resume_point(kubeapi: KubeAPI, tmp_path: Path) -> None:
    api = kubeapi
    api.bookmark_interval = 0.05

    async def scenario() -> None:
        async with backends("a") as ports:
            site(api, ports["a"])
            async with running(plain_kubeconfig(api, tmp_path), ports) as run:
                ingresses = run.reflector("IngressClass")  # nothing of this kind changes
                before = ingresses.resource_version
                api.create_many(service(f"more-{n}") for n in range(3))
                latest = api.resource_version
                assert before != latest

                async def advanced() -> bool:
                    return ingresses.resource_version == latest

                await wait_for(advanced, "the bookmark's resourceVersion taken")
                lists = api.count("list", "/apis/networking.k8s.io/v1/ingressclasses")
                api.drop_watches()
                api.create(ingress_class("late"))

                async def seen() -> bool:
                    return ingresses.cache.get(("", "late")) is not None

                await wait_for(seen, "the IngressClass created after the resume")
                assert api.count("list", "/apis/networking.k8s.io/v1/ingressclasses") == lists

    trio.run(scenario)


@pytest.mark.e2e
def test_a_silent_watch_is_given_up_by_the_watchdog(kubeapi: KubeAPI, tmp_path: Path) -> None:
    api = kubeapi
    api.bookmark_interval = 3600  # no bookmarks: a watch with no events is silent

    async def scenario() -> None:
        async with backends("a", "b") as ports:
            site(api, ports["a"])
            watchdog = replace(FAST, watchdog=0.2)
            async with running(plain_kubeconfig(api, tmp_path), ports, watch=watchdog) as run:
                watches = api.count("watch", SLICES)

                async def reconnected() -> bool:
                    return api.count("watch", SLICES) >= watches + 2

                await wait_for(reconnected, "two watchdog reconnects")
                assert api.count("list", SLICES) == 1
                api.update(endpoints(ports["b"]))
                await served_by(run.listening.http_port, "b")

    trio.run(scenario)


# -- readiness and debouncing -----------------------------------------------------------


@pytest.mark.e2e
def test_readyz_is_503_until_every_kind_has_been_listed(kubeapi: KubeAPI, tmp_path: Path) -> None:
    api = kubeapi
    api.forbid("list", "secrets")

    async def scenario() -> None:
        async with backends("a") as ports:
            site(api, ports["a"])
            kubeconfig = plain_kubeconfig(api, tmp_path)
            async with running(kubeconfig, ports, ready=False) as run:
                status = run.listening.status_port

                async def others_listed() -> bool:
                    source = run.controller.source
                    return isinstance(source, KubeSource) and all(
                        r.synced.is_set() for r in source.reflectors if r.cache.kind != "Secret"
                    )

                await wait_for(others_listed, "every kind but Secrets listed")
                await trio.to_thread.run_sync(api.wait_for_watchers, len(KINDS) - 1)
                assert api.count("list", SECRETS) >= 1  # tried, refused
                assert await readyz(status) == 503
                assert (await fetch(run.listening.http_port)).status == 503  # no config yet
                api.allow("list", "secrets")

                async def ready() -> bool:
                    return await readyz(status) == 200

                await wait_for(ready, "/readyz 200 once Secrets are listed")
                assert await fetch(run.listening.http_port) == Reply(200, "a")

    trio.run(scenario)


@pytest.mark.e2e
def test_a_burst_of_200_changes_rebuilds_a_handful_of_times(
    kubeapi: KubeAPI, tmp_path: Path
) -> None:
    api = kubeapi

    async def scenario() -> None:
        async with backends("a", "b") as ports:
            site(api, ports["a"])
            async with running(plain_kubeconfig(api, tmp_path), ports) as run:
                before = run.controller.reloads

                def burst() -> None:
                    for n in range(199):
                        api.create(service(f"burst-{n}"))
                    api.update(endpoints(ports["b"]))  # the 200th: visible in traffic

                await trio.to_thread.run_sync(burst)
                await served_by(run.listening.http_port, "b")
                assert len(run.reflector("Service").cache) == 200
                rebuilds = run.controller.reloads - before
                assert 1 <= rebuilds <= 10, f"{rebuilds} rebuilds for 200 changes"

    trio.run(scenario)


@pytest.mark.e2e
def test_a_status_change_rebuilds_nothing(kubeapi: KubeAPI, tmp_path: Path) -> None:
    """A controller publishing the status of 10,000 Ingresses gets 10,000 new versions back
    from its watch; none of them changes a route, so none may cost a rebuild."""
    api = kubeapi

    async def scenario() -> None:
        async with backends("a", "b") as ports:
            site(api, ports["a"])
            async with running(plain_kubeconfig(api, tmp_path), ports) as run:
                source = run.source
                await wait_for(lambda: _true(not source.pending), "the first build is done")
                status = {"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}]}}
                api.patch("ingresses", "site", {"status": status}, namespace="default")

                async def seen() -> bool:
                    cached = run.reflector("Ingress").cache.get(("default", "site"))
                    return cached is not None and cached.get("status") == status

                await wait_for(seen, "the status change reached the cache")
                assert not source.pending
                # and a change that matters still does (the builder has the new version too)
                api.update(endpoints(ports["b"]))
                await served_by(run.listening.http_port, "b")

    trio.run(scenario)


@pytest.mark.e2e
def test_a_failed_build_keeps_the_last_config_and_the_next_starts_from_the_caches(
    kubeapi: KubeAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A build that breaks while taking changes leaves the builder with some of them and
    not others; the next build must not build on that, but on all the caches hold."""
    api = kubeapi
    real_put = ConfigBuilder.put
    failures: list[Mapping[str, Any]] = []
    armed = False

    def put_failing_once(builder: ConfigBuilder, obj: Mapping[str, Any]) -> None:
        if armed and not failures and obj.get("kind") == "EndpointSlice":
            failures.append(obj)
            raise RuntimeError("a build that breaks")
        real_put(builder, obj)

    monkeypatch.setattr(ConfigBuilder, "put", put_failing_once)

    async def scenario() -> None:
        nonlocal armed
        async with backends("a", "b") as ports:
            site(api, ports["a"])
            async with running(plain_kubeconfig(api, tmp_path), ports) as run:
                failed_reloads = _failed_reloads(run.controller)
                armed = True
                api.update(endpoints(ports["b"]))  # the build taking this change fails
                await wait_for(lambda: _true(bool(failures)), "the build failed")
                await wait_for(
                    lambda: _true(_failed_reloads(run.controller) == failed_reloads + 1),
                    "the failed build is counted",
                )
                assert await fetch(run.listening.http_port) == Reply(200, "a")  # the last one
                api.create(service("unrelated"))  # the next build has the lost change too
                await served_by(run.listening.http_port, "b")

    trio.run(scenario)


async def _true(value: bool) -> bool:
    return value


def _failed_reloads(controller: Controller) -> float:
    """``fastroute_config_reloads_total{result="failure"}``, as /metrics shows it."""
    for line in controller.metrics.text().decode().splitlines():
        if line.startswith('fastroute_config_reloads_total{result="failure"}'):
            return float(line.split()[-1])
    return 0.0


# -- namespaces -------------------------------------------------------------------------


@pytest.mark.e2e
def test_watch_namespaces_follow_only_those(kubeapi: KubeAPI, tmp_path: Path) -> None:
    api = kubeapi

    async def scenario() -> None:
        async with backends("a", "b") as ports:
            for namespace, backend in (("team-a", "a"), ("team-b", "b")):
                api.create(service(namespace=namespace))
                api.create(endpoints(ports[backend], namespace=namespace))
                api.create(
                    ingress(namespace=namespace, host=f"{namespace}.example.com", name="site")
                )
            kubeconfig = plain_kubeconfig(api, tmp_path)
            async with running(kubeconfig, ports, namespaces=("team-a",)) as run:
                port = run.listening.http_port
                assert await fetch(port, host="team-a.example.com") == Reply(200, "a")
                assert (await fetch(port, host="team-b.example.com")).status == 404
                team_a = "/apis/networking.k8s.io/v1/namespaces/team-a/ingresses"
                assert api.count("list", team_a) == 1
                assert api.count("list", INGRESSES) == 0  # never cluster-wide
                assert api.count("list", "/apis/networking.k8s.io/v1/ingressclasses") == 1
                api.update(endpoints(ports["b"], namespace="team-a"))
                await served_by(port, "b", host="team-a.example.com")

    trio.run(scenario)


# -- credentials: TLS, tokens, rotation ---------------------------------------------------

EXEC_PLUGIN = """\
import json, sys
token_file, log_file = sys.argv[1], sys.argv[2]
with open(log_file, "a") as log:
    log.write("ran\\n")
print(json.dumps({
    "apiVersion": "client.authentication.k8s.io/v1",
    "kind": "ExecCredential",
    "status": {"token": open(token_file).read().strip(),
               "expirationTimestamp": sys.argv[3] if len(sys.argv) > 3 else None},
}))
"""


def exec_plugin(tmp_path: Path, token: str, *extra: str) -> tuple[UserExec, Path, Path]:
    script = tmp_path / "plugin.py"
    script.write_text(EXEC_PLUGIN)
    token_file, runs = tmp_path / "token", tmp_path / "runs"
    token_file.write_text(token)
    plugin = UserExec(
        apiVersion="client.authentication.k8s.io/v1",
        command=sys.executable,
        args=[str(script), str(token_file), str(runs), *extra],
    )
    return plugin, token_file, runs


@pytest.mark.e2e
def test_exec_plugin_tokens_rotate_with_the_server(kubeapi_tls: KubeAPI, tmp_path: Path) -> None:
    api = kubeapi_tls
    api.tokens = {"first"}
    plugin, token_file, runs = exec_plugin(tmp_path, "first")
    document = api.kubeconfig()
    document["users"][0]["user"] = {
        "exec": {"apiVersion": plugin.apiVersion, "command": plugin.command, "args": plugin.args}
    }
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(document))

    async def scenario() -> None:
        async with backends("a", "b") as ports:
            site(api, ports["a"])
            async with running(kubeconfig, ports) as run:
                assert await fetch(run.listening.http_port) == Reply(200, "a")
                assert runs.read_text().count("ran") == 1  # one run for every request
                token_file.write_text("second")
                api.tokens = {"second"}  # the old token is refused from now on
                api.drop_watches()
                api.update(endpoints(ports["b"]))
                await served_by(run.listening.http_port, "b")
                assert runs.read_text().count("ran") == 2

    trio.run(scenario)


@pytest.mark.e2e
def test_exec_plugin_runs_again_before_its_token_expires(tmp_path: Path) -> None:
    plugin, token_file, _ = exec_plugin(tmp_path, "first", "2030-01-01T00:00:00Z")
    now = [time.time()]
    auth = ExecAuth(plugin, clock=lambda: now[0])

    async def scenario() -> list[str]:
        tokens = [await auth.token()]
        token_file.write_text("second")
        tokens.append(await auth.token())  # cached: not expired
        now[0] = 1893456000 - 5  # 5 s before the expiry: renewed
        tokens.append(await auth.token())
        return tokens

    assert trio.run(scenario) == ["first", "first", "second"]
    assert auth.runs == 2


@pytest.mark.e2e
def test_in_cluster_token_rotation_is_picked_up(
    kubeapi_tls: KubeAPI, kube_pki: PKI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = kubeapi_tls
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("projected-1")
    (account / "ca.crt").write_bytes(kube_pki.ca_cert_pem)
    (account / "namespace").write_text("default")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(api.port))
    api.tokens = {"projected-1"}

    async def scenario() -> None:
        async with backends("a", "b") as ports:
            site(api, ports["a"])
            async with running(None, ports, service_account=account) as run:
                assert await fetch(run.listening.http_port) == Reply(200, "a")
                (account / "token").write_text("projected-2")  # the kubelet rotates it
                api.tokens = {"projected-2"}
                api.drop_watches()
                api.update(endpoints(ports["b"]))
                await served_by(run.listening.http_port, "b")

    trio.run(scenario)


def test_token_files_are_reread_before_any_401(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("one\n")
    now = [0.0]
    auth = TokenFileAuth(token, refresh=60, clock=lambda: now[0])

    async def scenario() -> list[str]:
        seen = [await auth.token()]
        token.write_text("two\n")
        now[0] = 30
        seen.append(await auth.token())  # within the minute: cached
        now[0] = 61
        seen.append(await auth.token())  # re-read, though the old one was never refused
        return seen

    assert trio.run(scenario) == ["one", "one", "two"]


# -- kubectl and the command line ---------------------------------------------------------


def kubectl(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    home = kubeconfig.parent
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "KUBECONFIG": str(kubeconfig)}
    command = ["kubectl", f"--cache-dir={home / 'kube-cache'}", "--request-timeout=10s", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.e2e
def test_kubectl_create_replace_delete_moves_traffic(
    kubeapi_tls: KubeAPI, kubeconfig_file: Path, tmp_path: Path
) -> None:
    manifest = tmp_path / "site.yaml"

    async def run_kubectl(*args: str) -> None:
        done = await trio.to_thread.run_sync(lambda: kubectl(kubeconfig_file, *args))
        assert done.returncode == 0, done.stderr

    async def scenario() -> None:
        async with backends("a") as ports, running(kubeconfig_file, ports) as run:
            port = run.listening.http_port
            assert (await fetch(port)).status == 404
            objects = [service(), endpoints(ports["a"]), ingress("/v1")]
            manifest.write_text(yaml.safe_dump_all(objects))
            await run_kubectl("create", "-f", str(manifest), "--validate=false")
            await served_by(port, "a", "/v1/x")
            objects[2] = ingress("/v2")
            manifest.write_text(yaml.safe_dump_all(objects))
            await run_kubectl("replace", "-f", str(manifest), "--validate=false")
            await served_by(port, "a", "/v2/x")
            assert (await fetch(port, "/v1/x")).status == 404
            await run_kubectl("delete", "-f", str(manifest))
            await served_by(port, None, "/v2/x")

    trio.run(scenario)


@pytest.mark.e2e
def test_the_command_line_serves_a_cluster_until_sigterm(
    kubeapi_tls: KubeAPI, kubeconfig_file: Path
) -> None:
    """``python -m controller --kubeconfig PATH``: ready, routes, drains and exits 0."""

    async def scenario() -> None:
        async with backends("a") as ports:
            site(kubeapi_tls, ports["a"])
            command = [
                sys.executable,
                "-m",
                "controller",
                "--kubeconfig",
                str(kubeconfig_file),
                "--bind",
                "127.0.0.1",
                *("--http-port", "0", "--https-port", "0", "--status-port", "0"),
                "--shutdown-grace",
                "1",
            ]
            process = await trio.lowlevel.open_process(
                command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL
            )
            try:
                assert process.stderr is not None
                log = b""
                with trio.fail_after(DEADLINE):
                    while b"status " not in log.partition(b"listening on")[2].split(b"\n")[0]:
                        log += await process.stderr.receive_some(65536)
                line = log.partition(b"listening on")[2].split(b"\n")[0].decode()
                http = int(line.split("http ")[1].split(",")[0])
                status = int(line.split("status ")[1].split()[0])

                async def ready() -> bool:
                    return await readyz(status) == 200

                await wait_for(ready, "the command's /readyz")
                assert await fetch(http) == Reply(200, "a")
                process.send_signal(signal.SIGTERM)
                with trio.fail_after(DEADLINE):
                    assert await process.wait() == 0
            finally:
                if process.returncode is None:
                    process.kill()
                    await process.wait()

    trio.run(scenario)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--manifests", ".", "--kubeconfig", "x"], "with --manifests the files are served"),
        (["--watch-namespace", "Not_A_Namespace"], "not a namespace name"),
        (["--kubeconfig", "/nonexistent/kubeconfig"], "/nonexistent/kubeconfig not found"),
        (["--kubeconfig", "/dev/null", "--no-watch"], "--no-watch is for --manifests"),
    ],
)
@pytest.mark.e2e
def test_the_cluster_flags_say_what_is_wrong(arguments: list[str], message: str) -> None:
    result = run_controller(*arguments)
    assert result.returncode == 2
    assert message in result.stderr


# -- the cache's diff and the backoff, without a server -----------------------------------


def test_a_relist_diff_reports_what_changed_while_nobody_watched() -> None:
    cache = Cache("Service", "v1")

    def svc(name: str, version: str) -> dict[str, Any]:
        return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": version}}

    first, skipped = cache.replace([svc("a", "1"), svc("b", "2"), {"metadata": {}}])
    assert [(c.type, c.key) for c in first] == [("ADDED", ("ns", "a")), ("ADDED", ("ns", "b"))]
    assert skipped == ["item #2: the object has no metadata.name"]
    assert cache.get(("ns", "a")) == {**svc("a", "1"), "kind": "Service", "apiVersion": "v1"}
    changes, _ = cache.replace([svc("b", "5"), svc("c", "6")])
    assert sorted((c.type, c.key[1]) for c in changes) == [
        ("ADDED", "c"),
        ("DELETED", "a"),
        ("MODIFIED", "b"),
    ]
    unchanged, _ = cache.replace([svc("b", "5"), svc("c", "6")])
    assert unchanged == []


def test_backoff_doubles_with_jitter_up_to_its_cap() -> None:
    backoff = Backoff(0.8, 30.0, rng=lambda: 1.0)
    assert [backoff.next() for _ in range(8)] == [0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30.0, 30.0]
    backoff.reset()
    low = Backoff(0.8, 30.0, rng=lambda: 0.0)
    assert low.next() == 0.4
    assert backoff.next() == 0.8


@pytest.mark.e2e
def test_watch_events_are_split_on_newlines_only(kubeapi: KubeAPI, tmp_path: Path) -> None:
    """U+2028 and U+0085 in an annotation (JSON leaves them unescaped) do not split an event."""
    api = kubeapi
    odd = "line\u2028separator\x85next"

    async def scenario() -> None:
        async with backends("a") as ports:
            site(api, ports["a"])
            async with running(plain_kubeconfig(api, tmp_path), ports) as run:
                services = run.reflector("Service")
                api.create(
                    {**service("odd"), "metadata": {"name": "odd", "annotations": {"x": odd}}}
                )

                async def cached() -> bool:
                    return services.cache.get(("default", "odd")) is not None

                await wait_for(cached, "the Service with the odd annotation")
                stored = services.cache.get(("default", "odd"))
                assert stored is not None
                assert stored["metadata"]["annotations"] == {"x": odd}
                assert services.lists == 1  # read as one event, not as garbage to re-list

    trio.run(scenario)
