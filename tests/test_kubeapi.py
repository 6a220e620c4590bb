"""The Kubernetes API emulator (``tests/kubeapi``) held to real clients and to the wire.

Three layers: kubectl through a generated kubeconfig (HTTPS, bearer token or client
certificate); lightkube's sync and async clients; raw httpx and sockets for the details
clients depend on without showing them (chunk framing, bookmarks, both forms of 410, continue
tokens, authentication and authorization failures). Every wait is bounded by a deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import trio
import yaml
from lightkube import AsyncClient, Client, KubeConfig
from lightkube.core.exceptions import ApiError as LightkubeError
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.networking_v1 import Ingress
from lightkube.types import PatchType

from tests.kubeapi import PKI, TEST_TOKEN, KubeAPI

pytestmark = pytest.mark.e2e

pytest_plugins = ["tests.kubeapi.fixtures"]

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
INGRESSES = "/apis/networking.k8s.io/v1/ingresses"
DEFAULT_INGRESSES = "/apis/networking.k8s.io/v1/namespaces/default/ingresses"
SERVICES = "/api/v1/namespaces/default/services"
STREAM_TIMEOUT = httpx.Timeout(5.0)  # every read from a watch stream is bounded


def _ingress(name: str, namespace: str = "default", **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"rules": [{"host": f"{name}.example.com"}]},
    }


def _service(name: str, namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"ports": [{"port": 80}]},
    }


def _events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """A watch stream's events; each read is bounded by the client's read timeout."""
    return (json.loads(line) for line in response.iter_lines())


def _take(events: Iterator[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    return [next(events) for _ in range(count)]


@pytest.fixture
def http(kubeapi: KubeAPI) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=kubeapi.url, timeout=STREAM_TIMEOUT) as client:
        yield client


# -- (a) kubectl -------------------------------------------------------------------------


def _kubectl(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    home = kubeconfig.parent
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "KUBECONFIG": str(kubeconfig)}
    command = ["kubectl", f"--cache-dir={home / 'kube-cache'}", "--request-timeout=10s", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_create_get_replace_delete(
    kubeapi_tls: KubeAPI, kubeconfig_file: Path, tmp_path: Path
) -> None:
    api = kubeapi_tls
    manifest = EXAMPLES / "03-name-based-virtual-hosts.yaml"

    created = _kubectl(kubeconfig_file, "create", "-f", str(manifest), "--validate=false")
    assert created.returncode == 0, created.stderr
    assert "ingress.networking.k8s.io/echo-v1 created" in created.stdout
    stored = api.get("Ingress", "echo-v1")
    assert stored is not None
    assert stored["spec"]["rules"][0]["host"] == "v1.echo.192.168.49.5.sslip.io"
    assert stored["metadata"]["generation"] == 1
    assert api.get("Service", "echo-v2") is not None

    listed = _kubectl(kubeconfig_file, "get", "ingress", "-A", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    items = json.loads(listed.stdout)["items"]
    assert [(i["metadata"]["namespace"], i["metadata"]["name"]) for i in items] == [
        ("default", "echo-v1"),
        ("default", "echo-v2"),
    ]
    assert items[0]["metadata"]["uid"] == stored["metadata"]["uid"]

    documents = list(yaml.safe_load_all(manifest.read_text()))
    documents[0]["spec"]["rules"][0]["host"] = "v1.replaced.example.com"
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump_all(documents))
    replaced = _kubectl(kubeconfig_file, "replace", "-f", str(changed), "--validate=false")
    assert replaced.returncode == 0, replaced.stderr
    after = api.get("Ingress", "echo-v1")
    assert after is not None
    assert after["spec"]["rules"][0]["host"] == "v1.replaced.example.com"
    assert after["metadata"]["generation"] == 2
    assert after["metadata"]["uid"] == stored["metadata"]["uid"]
    # echo-v2 was sent unchanged: a no-op write keeps its resourceVersion.
    unchanged = api.get("Ingress", "echo-v2")
    assert unchanged is not None
    assert unchanged["metadata"]["generation"] == 1

    deleted = _kubectl(kubeconfig_file, "delete", "-f", str(changed))
    assert deleted.returncode == 0, deleted.stderr
    assert api.list("Ingress") == []
    assert api.get("Service", "echo-v1") is None
    assert api.count("delete", f"{DEFAULT_INGRESSES}/echo-v1") == 1
    assert [w.verb for w in api.writes_to(f"{DEFAULT_INGRESSES}/echo-v1")] == [
        "update",
        "delete",
    ]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_client_certificate_and_refused_token(
    kubeapi_tls: KubeAPI, kube_pki: PKI, tmp_path: Path
) -> None:
    by_cert = kubeapi_tls.write_kubeconfig(
        tmp_path / "cert.kubeconfig", client=kube_pki.client("alice", ["admins"])
    )
    namespaces = _kubectl(by_cert, "get", "namespaces", "-o", "name")
    assert namespaces.returncode == 0, namespaces.stderr
    assert "namespace/default" in namespaces.stdout.split()

    wrong = kubeapi_tls.write_kubeconfig(tmp_path / "bad.kubeconfig", token="not-the-token")
    refused = _kubectl(wrong, "get", "ingress")
    assert refused.returncode != 0
    assert "Unauthorized" in refused.stderr


# -- (b) lightkube ---------------------------------------------------------------------


@pytest.fixture
def lightkube_client(kubeconfig_file: Path) -> Iterator[Client]:
    with Client(config=KubeConfig.from_file(kubeconfig_file)) as client:
        yield client


def test_lightkube_lists_in_pages(kubeapi_tls: KubeAPI, lightkube_client: Client) -> None:
    kubeapi_tls.create_many(_ingress(f"ing-{n:04}", f"ns-{n % 3}") for n in range(1200))

    listed = lightkube_client.list(Ingress, namespace="*", chunk_size=500)
    names = [i.metadata.name for i in listed if i.metadata is not None]

    assert len(names) == 1200
    assert listed.resourceVersion == kubeapi_tls.resource_version
    assert kubeapi_tls.count("list", INGRESSES) == 3  # 500 + 500 + 200
    in_one = list(lightkube_client.list(Ingress, namespace="ns-1", chunk_size=500))
    assert len(in_one) == 400


def test_lightkube_watch_sees_added_modified_deleted(
    kubeapi_tls: KubeAPI, lightkube_client: Client
) -> None:
    api = kubeapi_tls
    since = api.resource_version
    api.create(_ingress("web"))
    api.patch("Ingress", "web", {"metadata": {"labels": {"tier": "front"}}})
    api.delete("Ingress", "web")

    seen = []
    for kind, obj in lightkube_client.watch(Ingress, namespace="*", resource_version=since):
        assert obj.metadata is not None
        seen.append((kind, obj.metadata.name, obj.metadata.resourceVersion))
        if len(seen) == 3:
            break

    assert [(kind, name) for kind, name, _ in seen] == [
        ("ADDED", "web"),
        ("MODIFIED", "web"),
        ("DELETED", "web"),
    ]
    versions = [int(rv or 0) for _, _, rv in seen]
    assert versions == sorted(versions)
    assert str(versions[-1]) == api.resource_version  # DELETED carries the deletion's version


def test_lightkube_status_patch_writes_only_status(
    kubeapi_tls: KubeAPI, lightkube_client: Client
) -> None:
    api = kubeapi_tls
    api.create(_ingress("web"))
    status = {"status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.7"}]}}}
    sneaky = {**status, "spec": {"rules": [{"host": "evil.example.com"}]}}

    patched = lightkube_client.patch(
        Ingress.Status, "web", sneaky, namespace="default", patch_type=PatchType.MERGE
    )

    assert patched.status is not None
    assert patched.status.loadBalancer is not None
    assert patched.status.loadBalancer.ingress is not None
    assert patched.status.loadBalancer.ingress[0].ip == "10.0.0.7"
    stored = api.get("Ingress", "web")
    assert stored is not None
    assert stored["spec"]["rules"][0]["host"] == "web.example.com"
    (write,) = api.writes_to(f"{DEFAULT_INGRESSES}/web/status")
    assert (write.verb, write.body, write.code) == ("patch", sneaky, 200)

    # And the main resource leaves .status alone.
    ingress = lightkube_client.get(Ingress, "web", namespace="default")
    assert ingress.status is not None
    assert ingress.status.loadBalancer is not None
    ingress.status.loadBalancer.ingress = []
    assert ingress.spec is not None
    assert ingress.spec.rules is not None
    ingress.spec.rules[0].host = "new.example.com"
    replaced = lightkube_client.replace(ingress)
    assert replaced.status is not None
    assert replaced.status.loadBalancer is not None
    assert replaced.status.loadBalancer.ingress is not None
    assert replaced.status.loadBalancer.ingress[0].ip == "10.0.0.7"


def test_lightkube_lease_replace_conflicts_on_stale_version(lightkube_client: Client) -> None:
    lease = Lease(
        metadata=ObjectMeta(name="fastroute-leader", namespace="default"),
        spec=LeaseSpec(holderIdentity="pod-a", leaseDurationSeconds=15),
    )
    created = lightkube_client.create(lease)
    assert created.metadata is not None
    assert created.spec is not None

    created.spec.holderIdentity = "pod-b"
    renewed = lightkube_client.replace(created)
    assert renewed.metadata is not None
    assert created.metadata is not None
    assert renewed.metadata.resourceVersion != created.metadata.resourceVersion

    created.spec.holderIdentity = "pod-c"  # still the old resourceVersion
    with pytest.raises(LightkubeError) as refused:
        lightkube_client.replace(created)
    assert refused.value.status.code == 409
    assert refused.value.status.reason == "Conflict"
    current = lightkube_client.get(Lease, "fastroute-leader", namespace="default")
    assert current.spec is not None
    assert current.spec.holderIdentity == "pod-b"

    with pytest.raises(LightkubeError) as exists:
        lightkube_client.create(lease)
    assert exists.value.status.reason == "AlreadyExists"


def test_lightkube_async_client_under_trio(kubeapi_tls: KubeAPI, kubeconfig_file: Path) -> None:
    api = kubeapi_tls
    api.create_many(_ingress(f"old-{n}") for n in range(5))

    async def main() -> list[tuple[str, str]]:
        client = AsyncClient(config=KubeConfig.from_file(kubeconfig_file))
        listed = client.list(Ingress, namespace="*", chunk_size=2)
        names = [i.metadata.name async for i in listed if i.metadata is not None]
        assert len(names) == 5
        seen: list[tuple[str, str]] = []

        async def watch() -> None:
            stream = client.watch(Ingress, namespace="*", resource_version=listed.resourceVersion)
            # An async generator at run time; typed as an AsyncIterable, which has no aclose.
            generator = cast("AsyncGenerator[tuple[str, Ingress], None]", stream)
            async with contextlib.aclosing(generator) as events:
                async for kind, obj in events:
                    assert obj.metadata is not None
                    assert obj.metadata.name is not None
                    seen.append((kind, obj.metadata.name))
                    if len(seen) == 3:
                        return

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                await trio.to_thread.run_sync(api.wait_for_watchers, 1, "ingresses")
                api.create(_ingress("live"))
                api.patch("Ingress", "old-0", {"spec": {"rules": []}})
                api.delete("Ingress", "old-1")
        await client.close()
        return seen

    assert trio.run(main) == [("ADDED", "live"), ("MODIFIED", "old-0"), ("DELETED", "old-1")]


# -- (c) the wire ------------------------------------------------------------------------


def test_watch_is_chunked_json_lines_and_timeout_ends_it(kubeapi: KubeAPI) -> None:
    kubeapi.create(_service("a"))
    kubeapi.create(_service("b"))
    request = (
        f"GET {SERVICES}?watch=true&resourceVersion=0&timeoutSeconds=1 HTTP/1.1\r\n"
        f"Host: 127.0.0.1\r\n\r\n"
    ).encode()
    started = time.monotonic()
    data = b""
    with socket.create_connection(("127.0.0.1", kubeapi.port), timeout=5) as sock:
        sock.sendall(request)
        while not data.endswith(b"\r\n0\r\n\r\n"):  # bounded: each recv times out at 5 s
            received = sock.recv(65536)
            if not received:
                break
            data += received
    elapsed = time.monotonic() - started

    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"Transfer-Encoding: chunked" in head
    assert b"Content-Type: application/json" in head
    chunks = []
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line, 16)
        chunks.append(rest[:size])
        assert rest[size : size + 2] == b"\r\n"
        body = rest[size + 2 :]
    assert chunks[-1] == b""  # the server ended the stream cleanly
    lines = b"".join(chunks).splitlines()
    events = [json.loads(line) for line in lines]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "a"),
        ("ADDED", "b"),
    ]
    assert events[0]["object"]["kind"] == "Service"  # watch objects carry kind/apiVersion
    assert 0.9 <= elapsed < 4


def test_bookmarks_carry_only_the_resource_version(kubeapi: KubeAPI, http: httpx.Client) -> None:
    kubeapi.bookmark_interval = 0.05
    since = kubeapi.resource_version
    params = {"watch": "1", "resourceVersion": since, "allowWatchBookmarks": "true"}
    with http.stream("GET", INGRESSES, params=params) as response:
        events = _events(response)
        kubeapi.wait_for_watchers(1, "ingresses")
        kubeapi.create(_ingress("web"))
        added = next(events)
        assert added["type"] == "ADDED"
        bookmark = next(events)
    assert bookmark == {
        "type": "BOOKMARK",
        "object": {
            "kind": "Ingress",
            "apiVersion": "networking.k8s.io/v1",
            "metadata": {"resourceVersion": kubeapi.resource_version},
        },
    }


def test_watch_applies_selectors_and_reports_moves(kubeapi: KubeAPI, http: httpx.Client) -> None:
    kubeapi.create(_ingress("in", tier="front"))
    kubeapi.create(_ingress("out", tier="back"))
    params = {"watch": "true", "labelSelector": "tier=front"}
    with http.stream("GET", INGRESSES, params=params) as response:
        events = _events(response)
        assert next(events)["object"]["metadata"]["name"] == "in"
        kubeapi.patch("Ingress", "out", {"metadata": {"labels": {"tier": "front"}}})
        kubeapi.patch("Ingress", "in", {"metadata": {"labels": {"tier": "back"}}})
        moves = [(e["type"], e["object"]["metadata"]["name"]) for e in _take(events, 2)]
    assert moves == [("ADDED", "out"), ("DELETED", "in")]


def test_secrets_watched_by_type(kubeapi: KubeAPI, http: httpx.Client) -> None:
    for name, kind in (("tls", "kubernetes.io/tls"), ("plain", "Opaque")):
        kubeapi.create(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": kind,
                "metadata": {"name": name, "namespace": "default"},
            }
        )
    params = {"watch": "true", "fieldSelector": "type=kubernetes.io/tls"}
    with http.stream("GET", "/api/v1/secrets", params=params) as response:
        assert next(_events(response))["object"]["metadata"]["name"] == "tls"
    listed = http.get("/api/v1/secrets", params={"fieldSelector": "type!=kubernetes.io/tls"})
    assert [i["metadata"]["name"] for i in listed.json()["items"]] == ["plain"]
    refused = http.get("/api/v1/secrets", params={"fieldSelector": "data.x=1"})
    assert (refused.status_code, refused.json()["reason"]) == (400, "BadRequest")


def test_secrets_watched_by_name_and_type_and_what_was_sent(
    kubeapi: KubeAPI, http: httpx.Client
) -> None:
    for name, kind in (("site-tls", "kubernetes.io/tls"), ("htpasswd", "Opaque")):
        kubeapi.create(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": kind,
                "metadata": {"name": name, "namespace": "default"},
            }
        )
    kubeapi.create(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "htpasswd", "namespace": "x"}}
    )
    selector = "metadata.name=htpasswd,type!=kubernetes.io/tls"
    params = {"watch": "true", "fieldSelector": selector}
    path = "/api/v1/namespaces/default/secrets"
    with http.stream("GET", path, params=params) as response:
        events = _events(response)
        first = next(events)
        assert (first["type"], first["object"]["metadata"]["name"]) == ("ADDED", "htpasswd")
        assert kubeapi.watch_selectors("Secret") == [("default", selector)]
        kubeapi.patch("Secret", "htpasswd", {"data": {"auth": "eA=="}}, namespace="default")
        assert next(events)["type"] == "MODIFIED"
    tls_only = http.get(
        path, params={"fieldSelector": "metadata.name=site-tls,type!=kubernetes.io/tls"}
    )
    assert tls_only.json()["items"] == []
    assert kubeapi.served_objects("Secret") == {("default", "htpasswd")}
    kubeapi.clear_records()
    assert kubeapi.served_objects("Secret") == set()


@pytest.mark.parametrize(
    ("selector", "names"),
    [
        ("app=web", ["a", "b"]),
        ("app==web,tier!=back", ["a"]),
        ("tier in (front, back)", ["a", "b", "c"]),
        ("tier notin (front)", ["b", "c", "d"]),
        ("app", ["a", "b"]),
        ("!app", ["c", "d"]),
    ],
)
def test_label_selectors(
    kubeapi: KubeAPI, http: httpx.Client, selector: str, names: list[str]
) -> None:
    kubeapi.create(_ingress("a", app="web", tier="front"))
    kubeapi.create(_ingress("b", app="web", tier="back"))
    kubeapi.create(_ingress("c", tier="back"))
    kubeapi.create(_ingress("d"))
    listed = http.get(INGRESSES, params={"labelSelector": selector})
    assert [i["metadata"]["name"] for i in listed.json()["items"]] == names


def test_gone_as_http_status_and_as_error_event(kubeapi: KubeAPI, http: httpx.Client) -> None:
    old = kubeapi.resource_version
    kubeapi.create(_ingress("web"))
    kubeapi.expire("ingresses")
    params = {"watch": "true", "resourceVersion": old}

    kubeapi.gone = "http"
    refused = http.get(INGRESSES, params=params)
    assert refused.status_code == 410
    assert refused.headers["content-type"] == "application/json"
    body = refused.json()
    assert (body["kind"], body["status"], body["reason"], body["code"]) == (
        "Status",
        "Failure",
        "Expired",
        410,
    )
    assert body["message"].startswith(f"too old resource version: {old} (")

    kubeapi.gone = "event"
    with http.stream("GET", INGRESSES, params=params) as response:
        assert response.status_code == 200
        events = [json.loads(line) for line in response.iter_lines()]  # the stream ends
    assert len(events) == 1
    assert events[0]["type"] == "ERROR"
    assert events[0]["object"]["code"] == 410
    assert events[0]["object"]["reason"] == "Expired"

    # A watch from now is fine: only history was forgotten.
    fresh = {"watch": "true", "resourceVersion": kubeapi.resource_version, "timeoutSeconds": "1"}
    with http.stream("GET", INGRESSES, params=fresh) as response:
        assert response.status_code == 200


def test_history_window_is_bounded() -> None:
    with KubeAPI(history=3, gone="http") as api, httpx.Client(base_url=api.url) as http:
        before = api.resource_version
        api.create(_ingress("web"))
        first = api.resource_version
        for n in range(3):
            api.patch("Ingress", "web", {"metadata": {"labels": {"n": str(n)}}})
        too_old = http.get(INGRESSES, params={"watch": "1", "resourceVersion": before})
        assert too_old.status_code == 410
        with http.stream(
            "GET", INGRESSES, params={"watch": "1", "resourceVersion": first}, timeout=5
        ) as response:
            assert [e["type"] for e in _take(_events(response), 3)] == ["MODIFIED"] * 3


def test_dropped_watch_ends_abruptly_and_resume_gets_410(
    kubeapi: KubeAPI, http: httpx.Client
) -> None:
    kubeapi.gone = "http"
    kubeapi.create(_ingress("web"))
    with http.stream("GET", INGRESSES, params={"watch": "true"}) as response:
        events = _events(response)
        added = next(events)
        kubeapi.wait_for_watchers(1, "ingresses")
        assert kubeapi.drop_watches() == 1
        with pytest.raises(httpx.RemoteProtocolError):
            next(events)  # the stream was cut before its last chunk
    kubeapi.expire()
    since = added["object"]["metadata"]["resourceVersion"]
    resumed = http.get(INGRESSES, params={"watch": "true", "resourceVersion": since})
    assert (resumed.status_code, resumed.json()["reason"]) == (410, "Expired")
    assert kubeapi.watchers() == 0


def test_continue_tokens_page_a_consistent_snapshot(kubeapi: KubeAPI, http: httpx.Client) -> None:
    kubeapi.create_many(_ingress(f"ing-{n}") for n in range(5))
    first = http.get(INGRESSES, params={"limit": "2"}).json()
    meta = first["metadata"]
    assert [i["metadata"]["name"] for i in first["items"]] == ["ing-0", "ing-1"]
    assert meta["remainingItemCount"] == 3
    assert "kind" not in first["items"][0]  # list items carry no kind/apiVersion

    kubeapi.create(_ingress("ing-00"))  # after the snapshot: not in its pages
    second = http.get(INGRESSES, params={"limit": "2", "continue": meta["continue"]}).json()
    assert [i["metadata"]["name"] for i in second["items"]] == ["ing-2", "ing-3"]
    assert second["metadata"]["resourceVersion"] == meta["resourceVersion"]

    kubeapi.expire("ingresses")
    token = second["metadata"]["continue"]
    expired = http.get(INGRESSES, params={"limit": "2", "continue": token})
    assert expired.status_code == 410
    status = expired.json()
    assert (status["reason"], status["code"]) == ("Expired", 410)
    inconsistent = status["metadata"]["continue"]  # offered to finish with today's data
    rest = http.get(INGRESSES, params={"limit": "2", "continue": inconsistent}).json()
    assert [i["metadata"]["name"] for i in rest["items"]] == ["ing-4"]
    assert "continue" not in rest["metadata"]


def test_token_rotation(kubeapi_tls: KubeAPI, kube_pki: PKI) -> None:
    context = kube_pki.client_context()
    with httpx.Client(base_url=kubeapi_tls.url, verify=context) as http:
        ok = http.get("/api/v1/namespaces", headers={"Authorization": f"Bearer {TEST_TOKEN}"})
        assert ok.status_code == 200
        kubeapi_tls.tokens = {"rotated"}
        old = http.get("/api/v1/namespaces", headers={"Authorization": f"Bearer {TEST_TOKEN}"})
        assert old.status_code == 401
        assert old.json() == {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": "Unauthorized",
            "reason": "Unauthorized",
            "code": 401,
        }
        new = http.get("/api/v1/namespaces", headers={"Authorization": "Bearer rotated"})
        assert new.status_code == 200
        assert http.get("/version").status_code == 401


def test_client_certificate_authenticates(kubeapi_tls: KubeAPI, kube_pki: PKI) -> None:
    context = kube_pki.client_context(kube_pki.client("controller"))
    with httpx.Client(base_url=kubeapi_tls.url, verify=context) as http:
        assert http.get(INGRESSES).status_code == 200
    stranger = PKI.generate()  # a certificate from another CA fails the handshake
    context = kube_pki.client_context(stranger.client("mallory"))
    with (
        httpx.Client(base_url=kubeapi_tls.url, verify=context) as http,
        pytest.raises(httpx.TransportError),
    ):
        http.get(INGRESSES)


def test_forbidden_verb_gets_403(kubeapi: KubeAPI, http: httpx.Client) -> None:
    kubeapi.forbid("create", "events")
    event = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e1"}, "reason": "Sync"}
    refused = http.post("/api/v1/namespaces/default/events", json=event)
    assert refused.status_code == 403
    status = refused.json()
    assert status["reason"] == "Forbidden"
    assert 'cannot create resource "events" in API group ""' in status["message"]
    new_api = {**event, "apiVersion": "events.k8s.io/v1"}
    assert (
        http.post("/apis/events.k8s.io/v1/namespaces/default/events", json=new_api).status_code
        == 403
    )
    assert http.get("/api/v1/events").status_code == 200  # other verbs still allowed
    kubeapi.allow("create", "events")
    assert http.post("/api/v1/namespaces/default/events", json=event).status_code == 201


def test_stop_and_start_on_the_same_port_keep_the_data(kubeapi: KubeAPI) -> None:
    kubeapi.create(_ingress("web"))
    port = kubeapi.port
    kubeapi.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/version", timeout=2)
    kubeapi.start()
    assert kubeapi.port == port
    listed = httpx.get(f"{kubeapi.url}{INGRESSES}", timeout=5).json()
    assert [i["metadata"]["name"] for i in listed["items"]] == ["web"]


def test_put_conflict_noop_and_patch_types(kubeapi: KubeAPI, http: httpx.Client) -> None:
    created = http.post(DEFAULT_INGRESSES, json=_ingress("web")).json()
    url = f"{DEFAULT_INGRESSES}/web"
    same = http.put(url, json=created).json()
    assert same["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]

    changed = {**created, "spec": {"rules": []}}
    updated = http.put(url, json=changed).json()
    assert updated["metadata"]["generation"] == 2
    stale = http.put(url, json={**changed, "spec": {}})
    assert (stale.status_code, stale.json()["reason"]) == (409, "Conflict")

    json_patch = [{"op": "add", "path": "/metadata/labels", "value": {"a": "b"}}]
    patched = http.patch(
        url, json=json_patch, headers={"Content-Type": "application/json-patch+json"}
    )
    assert patched.json()["metadata"]["labels"] == {"a": "b"}
    strategic = http.patch(
        url,
        json={"metadata": {"labels": {"a": None, "c": "d"}}},
        headers={"Content-Type": "application/strategic-merge-patch+json"},
    )
    assert strategic.json()["metadata"]["labels"] == {"c": "d"}
    apply = http.patch(url, content=b"{}", headers={"Content-Type": "application/apply-patch+yaml"})
    assert apply.status_code == 415


def test_errors_and_generated_names(kubeapi: KubeAPI, http: httpx.Client) -> None:
    missing = http.get(f"{DEFAULT_INGRESSES}/nope").json()
    assert (missing["reason"], missing["code"]) == ("NotFound", 404)
    assert missing["message"] == 'ingresses.networking.k8s.io "nope" not found'
    assert missing["details"] == {"name": "nope", "group": "networking.k8s.io", "kind": "ingresses"}
    unknown = http.get("/apis/example.com/v1/widgets")
    assert (unknown.status_code, unknown.json()["kind"]) == (404, "Status")
    wrong_kind = http.post(DEFAULT_INGRESSES, json=_service("svc"))
    assert (wrong_kind.status_code, wrong_kind.json()["reason"]) == (400, "BadRequest")
    invalid = http.post(DEFAULT_INGRESSES, json=_ingress("Not_Valid"))
    assert (invalid.status_code, invalid.json()["reason"]) == (422, "Invalid")

    generated = http.post(
        DEFAULT_INGRESSES, json={"kind": "Ingress", "metadata": {"generateName": "web-"}}
    ).json()
    name = generated["metadata"]["name"]
    assert name.startswith("web-")
    assert len(name) == len("web-") + 5
    assert generated["metadata"]["uid"]
    assert generated["metadata"]["creationTimestamp"]
    gone = http.delete(f"{DEFAULT_INGRESSES}/{name}").json()
    assert (gone["kind"], gone["status"]) == ("Status", "Success")
    svc = http.post(SERVICES, json=_service("svc")).json()
    assert svc["spec"]["clusterIP"]
    assert http.delete(f"{SERVICES}/svc").json()["kind"] == "Service"  # Services return it


def test_dry_run_delete_collection_and_put_creating_a_lease(
    kubeapi: KubeAPI, http: httpx.Client
) -> None:
    dry = http.post(DEFAULT_INGRESSES, params={"dryRun": "All"}, json=_ingress("ghost"))
    assert dry.status_code == 201
    assert kubeapi.get("Ingress", "ghost") is None
    kubeapi.create(_ingress("a", team="x"))
    kubeapi.create(_ingress("b", team="y"))
    swept = http.delete(DEFAULT_INGRESSES, params={"labelSelector": "team=x"})
    assert swept.json()["status"] == "Success"
    assert [i["metadata"]["name"] for i in kubeapi.list("ingresses")] == ["b"]
    # Leases, like Endpoints, may be created by PUT (the registry's AllowCreateOnUpdate).
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l"}}
    put = http.put("/apis/coordination.k8s.io/v1/namespaces/default/leases/l", json=lease)
    assert put.status_code == 200
    assert kubeapi.get("leases", "l") is not None


def test_strict_namespaces_refuse_creates_into_missing_ones() -> None:
    with KubeAPI(strict_namespaces=True) as api, httpx.Client(base_url=api.url) as http:
        missing = http.post(
            "/apis/networking.k8s.io/v1/namespaces/nowhere/ingresses",
            json=_ingress("web", "nowhere"),
        )
        assert (missing.status_code, missing.json()["message"]) == (
            404,
            'namespaces "nowhere" not found',
        )
        assert http.post(DEFAULT_INGRESSES, json=_ingress("web")).status_code == 201


def test_discovery_documents(http: httpx.Client) -> None:
    assert http.get("/api").json()["versions"] == ["v1"]
    groups = {g["name"] for g in http.get("/apis").json()["groups"]}
    assert groups == {
        "networking.k8s.io",
        "discovery.k8s.io",
        "coordination.k8s.io",
        "events.k8s.io",
    }
    networking = http.get("/apis/networking.k8s.io/v1").json()
    by_name = {r["name"]: r for r in networking["resources"]}
    assert by_name["ingresses"]["shortNames"] == ["ing"]
    assert by_name["ingresses/status"]["verbs"] == ["get", "patch", "update"]
    assert by_name["ingressclasses"]["namespaced"] is False
    core = {r["name"] for r in http.get("/api/v1").json()["resources"]}
    assert {"namespaces", "services", "endpoints", "secrets", "events", "nodes", "pods"} <= core
    assert http.get("/version").json()["major"] == "1"


def test_scale_lists_in_pages_of_500(kubeapi: KubeAPI, http: httpx.Client) -> None:
    """10,000 Ingresses, Services and EndpointSlices listed in pages of 500, fast."""
    count = 10_000
    kubeapi.create_many(_ingress(f"ing-{n}", f"ns-{n % 50}") for n in range(count))
    kubeapi.create_many(_service(f"svc-{n}", f"ns-{n % 50}") for n in range(count))
    kubeapi.create_many(
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"svc-{n}-abcde",
                "namespace": f"ns-{n % 50}",
                "labels": {"kubernetes.io/service-name": f"svc-{n}"},
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["127.0.0.1"]}],
            "ports": [{"port": 8080}],
        }
        for n in range(count)
    )
    started = time.perf_counter()
    for path in (INGRESSES, "/api/v1/services", "/apis/discovery.k8s.io/v1/endpointslices"):
        seen = 0
        token = ""
        for _ in range(count // 500 + 1):  # bounded: one request per page
            params = {"limit": "500", **({"continue": token} if token else {})}
            page = http.get(path, params=params).json()
            seen += len(page["items"])
            token = page["metadata"].get("continue", "")
            if not token:
                break
        assert seen == count
    elapsed = time.perf_counter() - started
    assert elapsed < 2.0, f"listing 3 x {count} objects took {elapsed:.2f}s"
