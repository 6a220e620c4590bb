"""Secrets that Ingress annotations name reach the builder, whatever their type, and only they.

``auth-secret``, ``auth-tls-secret`` and ``proxy-ssl-secret`` name Secrets that are usually
``Opaque`` (``kubectl create secret generic``), which the controller's TLS Secret watch
never lists. A real controller follows the API emulator (``tests/kubeapi``) and serves in
front of a real TLS backend: ``proxy-ssl-secret`` makes the effect of a delivered Secret
visible today (the pod is verified with its ``ca.crt``: 200 with the right CA, 502 with
another, 503 without the Secret). The emulator records which Secrets it ever sent and
which watches are open, so what the controller never fetches is asserted, not assumed.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest
import trio
import yaml

from controller.kube.client import connect, load_config
from controller.kube.listing import list_once
from controller.kube.source import KubeSource, named_secret_selector
from controller.kube.store import SecretNames, annotated_secrets
from controller.manifests import load_manifests
from fastroute.ingress import build_config
from tests.kubeapi import KubeAPI
from tests.objects import ingress_class, secret, service
from tests.polling import DEADLINE, wait_for
from tests.test_kube_source import (
    HOST,
    Running,
    backends,
    certificate_secret,
    endpoints,
    ingress,
    plain_kubeconfig,
    running,
)
from tests.test_upstream_tls import OTHER_ROOT, POD, ROOT, TLSBackend

pytest_plugins = ["tests.kubeapi.fixtures"]

NGINX = "nginx.ingress.kubernetes.io/"
FASTROUTE = "fastroute.io/"
VERIFY = {NGINX + "backend-protocol": "HTTPS", NGINX + "proxy-ssl-verify": "on"}
CA_SELECTOR = named_secret_selector("pods-ca")


def opaque(name: str, ca: bytes, namespace: str = "default") -> dict[str, Any]:
    """A Secret as ``kubectl create secret generic NAME --from-file=ca.crt`` makes it."""
    return secret(name, {"ca.crt": ca}, namespace)


def annotated(annotations: Mapping[str, str], **options: Any) -> dict[str, Any]:
    """``test_kube_source.ingress`` with annotations."""
    obj = ingress(**options)
    obj["metadata"]["annotations"] = dict(annotations)
    return obj


async def status(port: int, host: str = HOST) -> int:
    def call() -> int:
        with httpx.Client(trust_env=False, timeout=DEADLINE) as client:
            return client.get(f"http://127.0.0.1:{port}/", headers={"host": host}).status_code

    return await trio.to_thread.run_sync(call)


async def answers(port: int, code: int, what: str, host: str = HOST) -> None:
    async def check() -> bool:
        return await status(port, host) == code

    await wait_for(check, f"{host} answers {code}: {what}")


def secret_watches(api: KubeAPI) -> list[tuple[str | None, str]]:
    return api.watch_selectors("Secret")


def source_of(run: Running) -> KubeSource:
    return run.source


@asynccontextmanager
async def tls_pod() -> AsyncIterator[int]:
    """A real HTTPS backend whose certificate ``ROOT`` signed; its port."""
    async with trio.open_nursery() as nursery:
        yield await nursery.start(TLSBackend(POD).serve)
        nursery.cancel_scope.cancel()


# -- which Secrets an Ingress names -----------------------------------------------------


@pytest.mark.parametrize(
    ("annotations", "namespace", "named"),
    [
        ({NGINX + "auth-secret": "htpasswd"}, "shop", {("shop", "htpasswd")}),
        ({FASTROUTE + "auth-secret": "shop/htpasswd"}, "shop", {("shop", "htpasswd")}),
        ({NGINX + "auth-tls-secret": "shop/client-ca"}, "shop", {("shop", "client-ca")}),
        ({NGINX + "proxy-ssl-secret": " pods-ca "}, "shop", {("shop", "pods-ca")}),
        (
            {
                NGINX + "auth-secret": "a",
                NGINX + "auth-tls-secret": "shop/b",
                FASTROUTE + "proxy-ssl-secret": "c",
            },
            "shop",
            {("shop", "a"), ("shop", "b"), ("shop", "c")},
        ),
        # the first prefix set wins, as the builder reads it
        (
            {FASTROUTE + "auth-secret": "ours", NGINX + "auth-secret": "theirs"},
            "shop",
            {("shop", "ours")},
        ),
        # another namespace is refused by the builder, so never fetched
        ({NGINX + "auth-secret": "kube-system/admin"}, "shop", set()),
        ({NGINX + "auth-secret": "Not_A_Name"}, "shop", set()),
        ({NGINX + "auth-secret": "shop/"}, "shop", set()),
        ({NGINX + "auth-realm": "shop/realm", NGINX + "auth-url": "http://a/b"}, "shop", set()),
        ({NGINX + "auth-secret": "htpasswd"}, None, {("default", "htpasswd")}),
    ],
)
def test_the_secrets_an_ingress_s_annotations_name(
    annotations: dict[str, str], namespace: str | None, named: set[tuple[str, str]]
) -> None:
    obj = annotated(annotations, namespace=namespace or "default")
    if namespace is None:
        del obj["metadata"]["namespace"]
    assert annotated_secrets(obj) == named


def test_a_secret_is_watched_from_its_first_ingress_to_its_last() -> None:
    names = SecretNames()
    shared = {NGINX + "auth-secret": "htpasswd"}
    first = annotated(shared, name="first", tls_secret_name="site-tls")
    second = annotated(shared, name="second")
    assert names.update(("default", "first"), first) == ({("default", "htpasswd")}, set())
    assert ("default", "site-tls") in names  # spec.tls: rebuilds, but no watch of its own
    assert names.annotated == {("default", "htpasswd")}
    assert names.update(("default", "second"), second) == (set(), set())
    assert names.update(("default", "first"), None) == (set(), set())
    assert ("default", "site-tls") not in names
    changed = annotated({NGINX + "auth-secret": "other"}, name="second")
    assert names.update(("default", "second"), changed) == (
        {("default", "other")},
        {("default", "htpasswd")},
    )
    assert names.update(("default", "second"), None) == (set(), {("default", "other")})
    assert ("default", "other") not in names
    assert names.annotated == set()


# -- the controller following the cluster ------------------------------------------------


@pytest.mark.e2e
def test_an_opaque_secret_an_annotation_names_is_fetched_by_name_and_followed(
    kubeapi: KubeAPI, tmp_path: Path
) -> None:
    api = kubeapi
    api.create(opaque("pods-ca", ROOT.pem))
    api.create(opaque("unrelated", ROOT.pem))  # an Opaque Secret nobody names
    api.create(opaque("pods-ca", ROOT.pem, namespace="elsewhere"))  # named across namespaces

    async def scenario() -> None:
        async with tls_pod() as pod:
            api.create(service())
            api.create(endpoints(pod))
            api.create(annotated(VERIFY | {NGINX + "proxy-ssl-secret": "pods-ca"}))
            across = VERIFY | {NGINX + "proxy-ssl-secret": "elsewhere/pods-ca"}
            api.create(annotated(across, name="across", host="across.example.com"))
            async with running(plain_kubeconfig(api, tmp_path), {}) as run:
                port = run.listening.http_port
                source = source_of(run)
                # the first config already has it: the pod is verified with its CA
                assert await status(port) == 200
                assert run.controller.reloads == 1
                assert await status(port, "across.example.com") == 503
                assert api.served_objects("Secret") == {("default", "pods-ca")}
                assert (api.count("list", "/api/v1/namespaces/default/secrets")) >= 1
                assert set(source.by_name) == {("default", "pods-ca")}
                on_config = [o for o in source.objects() if o["kind"] == "Secret"]
                assert [o["metadata"]["name"] for o in on_config] == ["pods-ca"]

                api.update(opaque("pods-ca", OTHER_ROOT.pem))  # a CA that did not sign it
                await answers(port, 502, "the pod is verified with the changed CA")
                api.delete("Secret", "pods-ca", namespace="default")
                await answers(port, 503, "the Secret is gone")
                api.create(opaque("pods-ca", ROOT.pem))
                await answers(port, 200, "the Secret is back")

                # the Ingress stops naming it: its watch ends, and the pod is verified
                # with the system's CAs only
                api.update(annotated(VERIFY))

                async def unwatched() -> bool:
                    return ("default", CA_SELECTOR) not in secret_watches(api)

                await wait_for(unwatched, "the named Secret's watch is closed")
                assert source.by_name == {}
                await answers(port, 502, "no proxy-ssl-secret any more")
                assert not [o for o in source.objects() if o["kind"] == "Secret"]
                assert ("default", "unrelated") not in api.served_objects("Secret")

    trio.run(scenario)


@pytest.mark.e2e
def test_a_tls_secret_named_by_spec_tls_and_an_annotation_comes_once(
    kubeapi: KubeAPI, tmp_path: Path
) -> None:
    """cert-manager's TLS Secrets carry ``ca.crt``: the TLS watch has them, and the name
    watch (for another type only) adds nothing; a change rebuilds even once only the
    annotation names it."""
    api = kubeapi

    def site_tls(ca: bytes) -> dict[str, Any]:
        secret = certificate_secret("site")
        secret["data"]["ca.crt"] = base64.b64encode(ca).decode()
        return secret

    api.create(site_tls(ROOT.pem))
    plain_http = {NGINX + "ssl-redirect": "false"}
    both = VERIFY | plain_http | {NGINX + "proxy-ssl-secret": "site-tls"}

    async def scenario() -> None:
        async with tls_pod() as pod:
            api.create(service())
            api.create(endpoints(pod))
            api.create(annotated(both, tls_secret_name="site-tls"))
            async with running(plain_kubeconfig(api, tmp_path), {}) as run:
                port = run.listening.http_port
                source = source_of(run)
                # the TLS Secret's client certificate is presented to the pod, which
                # does not ask for one; its ca.crt verifies the pod
                assert await status(port) == 200
                keys = [
                    (o["metadata"]["namespace"], o["metadata"]["name"])
                    for o in source.objects()
                    if o["kind"] == "Secret"
                ]
                assert keys == [("default", "site-tls")]

                async def watched() -> bool:
                    return ("default", named_secret_selector("site-tls")) in secret_watches(api)

                await wait_for(watched, "the name watch (of other types) is open")
                assert len(source.by_name[("default", "site-tls")].reflector.cache) == 0

                api.update(annotated(both))  # no spec.tls any more
                api.update(site_tls(OTHER_ROOT.pem))
                await answers(port, 502, "the changed CA of a Secret only an annotation names")

    trio.run(scenario)


@pytest.mark.e2e
def test_a_named_secret_made_again_with_another_type_is_followed(
    kubeapi: KubeAPI, tmp_path: Path
) -> None:
    """Deleted and created again as ``kubernetes.io/tls`` (the type cannot be changed in
    place), the Secret moves from its name watch to the TLS watch, and back."""
    api = kubeapi

    def as_tls(ca: bytes) -> dict[str, Any]:
        secret = certificate_secret("pods", name="pods-ca")
        secret["data"]["ca.crt"] = base64.b64encode(ca).decode()
        return secret

    api.create(opaque("pods-ca", ROOT.pem))

    async def scenario() -> None:
        async with tls_pod() as pod:
            api.create(service())
            api.create(endpoints(pod))
            api.create(annotated(VERIFY | {NGINX + "proxy-ssl-secret": "pods-ca"}))
            async with running(plain_kubeconfig(api, tmp_path), {}) as run:
                port = run.listening.http_port
                source = source_of(run)

                def secrets() -> list[str]:
                    objects = source.objects()
                    return [o.get("type", "") for o in objects if o["kind"] == "Secret"]

                assert await status(port) == 200
                assert secrets() == ["Opaque"]
                api.delete("Secret", "pods-ca", namespace="default")
                api.create(as_tls(OTHER_ROOT.pem))
                await answers(port, 502, "the TLS Secret's CA, from the TLS watch")
                assert secrets() == ["kubernetes.io/tls"]
                api.delete("Secret", "pods-ca", namespace="default")
                api.create(opaque("pods-ca", ROOT.pem))
                await answers(port, 200, "the Opaque Secret's CA, from the name watch")
                assert secrets() == ["Opaque"]

    trio.run(scenario)


@pytest.mark.e2e
def test_a_named_secret_that_comes_later_rebuilds(kubeapi: KubeAPI, tmp_path: Path) -> None:
    api = kubeapi

    async def scenario() -> None:
        async with tls_pod() as pod:
            api.create(service())
            api.create(endpoints(pod))
            async with running(plain_kubeconfig(api, tmp_path), {}) as run:
                port = run.listening.http_port
                assert await status(port) == 404
                api.create(annotated(VERIFY | {FASTROUTE + "proxy-ssl-secret": "default/pods-ca"}))
                await answers(port, 503, "the Ingress, its Secret missing")
                before = run.controller.reloads
                api.create(opaque("pods-ca", ROOT.pem))
                await answers(port, 200, "the Secret arrived")
                assert run.controller.reloads > before

    trio.run(scenario)


@pytest.mark.e2e
def test_the_secrets_of_another_class_s_ingresses_are_not_fetched(
    kubeapi: KubeAPI, tmp_path: Path
) -> None:
    """In a cluster shared with ingress-nginx, its Ingresses' htpasswd Secrets stay
    unread, until an IngressClass makes their class ours."""
    api = kubeapi
    api.create(opaque("pods-ca", ROOT.pem))

    async def scenario() -> None:
        async with tls_pod() as pod:
            api.create(service())
            api.create(endpoints(pod))
            theirs = VERIFY | {NGINX + "proxy-ssl-secret": "pods-ca"}
            api.create(annotated(theirs, class_name="custom"))
            async with running(plain_kubeconfig(api, tmp_path), {}) as run:
                port = run.listening.http_port
                source = source_of(run)
                assert await status(port) == 404
                assert source.by_name == {}
                assert api.served_objects("Secret") == set()
                api.create(ingress_class("custom"))
                await answers(port, 200, "the Ingress is ours, with its Secret")
                assert api.served_objects("Secret") == {("default", "pods-ca")}
                api.delete("IngressClass", "custom")

                async def unwatched() -> bool:
                    return ("default", CA_SELECTOR) not in secret_watches(api)

                await wait_for(unwatched, "the watch ends with the class")
                await answers(port, 404, "not ours any more")
                assert source.by_name == {}

    trio.run(scenario)


@pytest.mark.e2e
def test_the_check_command_s_list_has_the_named_secrets_once(
    kubeapi: KubeAPI, tmp_path: Path
) -> None:
    api = kubeapi
    api.create(opaque("htpasswd", b"user:hash"))
    api.create(opaque("unrelated", b"x"))
    api.create(certificate_secret("site"))
    api.create(
        annotated(
            {NGINX + "auth-secret": "htpasswd", NGINX + "proxy-ssl-secret": "site-tls"},
            tls_secret_name="site-tls",
        )
    )
    client = connect(load_config(plain_kubeconfig(api, tmp_path)), trust_env=False)
    objects = trio.run(lambda: list_once(client, timeout=DEADLINE))
    secrets = sorted(o["metadata"]["name"] for o in objects if o["kind"] == "Secret")
    assert secrets == ["htpasswd", "site-tls"]
    assert ("default", "unrelated") not in api.served_objects("Secret")


# -- manifest files ---------------------------------------------------------------------


def test_opaque_secrets_in_manifest_files_reach_the_build(tmp_path: Path) -> None:
    documents = [
        service(),
        endpoints(8443),
        annotated(VERIFY | {NGINX + "proxy-ssl-secret": "pods-ca"}),
        opaque("pods-ca", ROOT.pem),
    ]
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump_all(documents))
    loaded = load_manifests([path])
    assert loaded.complete
    config = build_config(loaded.objects)
    route = config.router.match(HOST, "/")
    assert route is not None
    policy = route.policy
    assert not policy.refused
    assert policy.upstream_tls is not None
    assert policy.upstream_tls.ca == ROOT.pem
    assert not [p for p in config.problems if "proxy-ssl-secret" in p.field]


def _htpasswd(user: str, password: str) -> dict[str, Any]:
    """``kubectl create secret generic basic-auth --from-file=auth`` of a bcrypt htpasswd."""
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()
    line = f"{user}:{hashed}\n".encode()
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "basic-auth", "namespace": "default"},
        "type": "Opaque",
        "data": {"auth": base64.b64encode(line).decode()},
    }


@pytest.mark.e2e
def test_basic_auth_from_an_htpasswd_secret_in_the_cluster_follows_its_changes(
    kubeapi: KubeAPI, tmp_path: Path
) -> None:
    """The whole path a migrated cluster takes: an Opaque htpasswd Secret, fetched by
    name, protects the route; a changed password applies without a restart."""
    api = kubeapi
    api.create(_htpasswd("admin", "first"))
    auth = {NGINX + "auth-type": "basic", NGINX + "auth-secret": "basic-auth"}

    async def login(port: int, password: str | None) -> int:
        def call() -> int:
            with httpx.Client(trust_env=False, timeout=DEADLINE) as client:
                credentials = ("admin", password) if password is not None else None
                url = f"http://127.0.0.1:{port}/"
                return client.get(url, headers={"host": HOST}, auth=credentials).status_code

        return await trio.to_thread.run_sync(call)

    async def scenario() -> None:
        async with backends("a") as ports:
            api.create(service())
            api.create(endpoints(ports["a"]))
            api.create(annotated(auth))
            async with running(plain_kubeconfig(api, tmp_path), ports) as run:
                port = run.listening.http_port
                assert await login(port, None) == 401
                assert await login(port, "first") == 200
                api.update(_htpasswd("admin", "second"))

                async def changed() -> bool:
                    return await login(port, "second") == 200

                await wait_for(changed, "the new password is taken")
                assert await login(port, "first") == 401
                api.delete("Secret", "basic-auth", namespace="default")

                async def closed() -> bool:
                    return await login(port, "second") == 503

                await wait_for(closed, "no Secret: the route fails closed")

    trio.run(scenario)
