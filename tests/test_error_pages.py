"""Error pages and where requests go, end to end: ``custom-http-errors`` sends the page
request to the route's error backend, ``default-backend`` takes the requests of a route
without endpoints, ``service-upstream`` sends to the Service's cluster IP.

The proxy, the route's upstream and the error backend are real sockets on 127.0.0.1
(``raw.py``): each test sees what the client got and what each backend received.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import trio

from fastroute.ingress import ConfigBuilder, build_config
from fastroute.ingress.model import Target
from fastroute.proxy.server import Proxy
from tests.polling import DEADLINE, wait_for
from tests.polling import run_within as run
from tests.raw import BackendConnection, RawBackend, RawClient, Request, response
from tests.sites import closed_port
from tests.test_ingress import endpoint_slice, ingress, service

Obj = dict[str, Any]
PREFIX = "nginx.ingress.kubernetes.io/"
HOST = b"site.example.com"


def annotated(obj: Obj, **annotations: str) -> Obj:
    """``obj`` with ingress-nginx annotations (``custom_http_errors=`` for its dashes)."""
    found = obj["metadata"].setdefault("annotations", {})
    for key, value in annotations.items():
        found[PREFIX + key.replace("_", "-")] = value
    return obj


def upstream_answer(connection: BackendConnection, request: Request) -> Any:
    """The route's upstream: ``/status/N`` answers N, anything else 200."""
    path = request.target.partition(b"?")[0]
    status = int(path.rsplit(b"/", 1)[1]) if path.startswith(b"/status/") else 200
    return connection.send(response(b"upstream %d" % status, status))


def error_page(status: Callable[[int], int] = lambda code: code) -> Any:
    """An error backend: the page for ``X-Code``, with ``status(code)`` as its status."""

    async def answer(connection: BackendConnection, request: Request) -> None:
        code = int((request.header(b"x-code") or [b"0"])[0])
        await connection.send(response(b"error page %d" % code, status(code)))

    return answer


@dataclass
class Site:
    port: int
    upstream: RawBackend
    errors: RawBackend

    async def ask(
        self, target: bytes, extra: bytes = b"", method: bytes = b"GET", body: bytes = b""
    ) -> tuple[int, bytes]:
        """One request on a new connection: the status and body of the answer."""
        client = await RawClient.connect(self.port)
        try:
            head = b"%s %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (method, target, HOST, extra)
            await client.send(head + body)
            reply = await client.reply(method)
            assert reply is not None, "the proxy closed without an answer"
            return reply.status, reply.body
        finally:
            await client.aclose()


Objects = Callable[[int, int], list[Obj]]


@asynccontextmanager
async def serving(
    objects: Objects, errors: RawBackend | None = None, upstream: RawBackend | None = None
) -> AsyncIterator[Site]:
    """The proxy with ``objects(upstream port, error backend port)``, both backends up."""
    upstream = upstream or RawBackend(upstream_answer)
    errors = errors or RawBackend(error_page())
    async with trio.open_nursery() as nursery:
        upstream_port = await nursery.start(upstream.serve)
        errors_port = await nursery.start(errors.serve)
        config = build_config(objects(upstream_port, errors_port))
        assert not config.problems, config.problems
        proxy = Proxy(config)
        listeners = await nursery.start(proxy.serve, "127.0.0.1", 0)
        yield Site(listeners[0].socket.getsockname()[1], upstream, errors)
        nursery.cancel_scope.cancel()


def with_error_backend(codes: str = "404,503", **more: str) -> Objects:
    """site.example.com/ -> Service web (the upstream), with ``custom-http-errors: codes``
    and ``default-backend: errors`` (the error backend)."""

    def objects(upstream_port: int, errors_port: int) -> list[Obj]:
        app = ingress("app", (HOST.decode(), "/", "Prefix", "web", 80))
        return [
            service("web", 80),
            endpoint_slice("web", upstream_port, "127.0.0.1"),
            service("errors", 80),
            endpoint_slice("errors", errors_port, "127.0.0.1"),
            annotated(app, custom_http_errors=codes, default_backend="errors", **more),
        ]

    return objects


def one(backend: RawBackend) -> Request:
    """The one request ``backend`` received."""
    assert len(backend.requests) == 1, [r.target for r in backend.requests]
    return backend.requests[0]


def fields(request: Request, *names: bytes) -> dict[bytes, bytes]:
    """The values of ``names`` the request carried (each once at most)."""
    found = {}
    for name in names:
        values = request.header(name)
        assert len(values) <= 1, (name, values)
        if values:
            found[name] = values[0]
    return found


ERROR_FIELDS = (
    b"x-code",
    b"x-format",
    b"x-original-uri",
    b"x-namespace",
    b"x-ingress-name",
    b"x-service-name",
    b"x-service-port",
    b"x-request-id",
)


# ------------------------------------------------------------------ custom-http-errors


@pytest.mark.e2e
def test_a_listed_status_is_answered_by_the_error_backend_told_what_happened() -> None:
    async def scenario() -> None:
        async with serving(with_error_backend()) as site:
            extra = b"Accept: text/html\r\nX-Request-ID: req-42\r\nX-Code: 999\r\n"
            assert await site.ask(b"/status/404?q=1", extra) == (404, b"error page 404")
            assert one(site.upstream).target == b"/status/404?q=1"
            page = one(site.errors)
            assert (page.method, page.target, page.body) == (b"GET", b"/", b"")
            assert page.header(b"host") == [HOST]
            assert fields(page, *ERROR_FIELDS) == {
                b"x-code": b"404",  # the client's own X-Code is not passed on
                b"x-format": b"text/html",
                b"x-original-uri": b"/status/404?q=1",
                b"x-namespace": b"default",
                b"x-ingress-name": b"app",
                b"x-service-name": b"web",
                b"x-service-port": b"80",
                b"x-request-id": b"req-42",
            }

    run(scenario)


@pytest.mark.e2e
def test_statuses_not_listed_reach_the_client_as_the_upstream_sent_them() -> None:
    async def scenario() -> None:
        async with serving(with_error_backend("503")) as site:
            assert await site.ask(b"/status/404") == (404, b"upstream 404")
            assert await site.ask(b"/status/500") == (500, b"upstream 500")
            assert await site.ask(b"/ok") == (200, b"upstream 200")
            assert await site.ask(b"/status/503") == (503, b"error page 503")
            assert [fields(r, b"x-code") for r in site.errors.requests] == [{b"x-code": b"503"}]

    run(scenario)


@pytest.mark.e2e
def test_the_client_gets_the_error_backends_status_not_the_upstreams() -> None:
    async def scenario() -> None:
        errors = RawBackend(error_page(status=lambda code: 200))
        async with serving(with_error_backend(), errors) as site:
            assert await site.ask(b"/status/503") == (200, b"error page 503")

    run(scenario)


@pytest.mark.e2e
def test_a_head_request_asks_the_error_backend_with_head_and_gets_no_body() -> None:
    async def scenario() -> None:
        async with serving(with_error_backend()) as site:
            assert await site.ask(b"/status/404", method=b"HEAD") == (404, b"")
            assert one(site.errors).method == b"HEAD"

    run(scenario)


@pytest.mark.e2e
def test_a_request_body_goes_to_the_upstream_and_never_to_the_error_backend() -> None:
    async def scenario() -> None:
        async with serving(with_error_backend()) as site:
            body = b"name=value"
            extra = b"Content-Length: %d\r\n" % len(body)
            status, _ = await site.ask(b"/status/404", extra, method=b"POST", body=body)
            assert status == 404
            assert one(site.upstream).body == body
            page = one(site.errors)
            assert (page.method, page.body, page.header(b"content-length")) == (b"GET", b"", [])

    run(scenario)


@pytest.mark.e2e
def test_the_client_connection_goes_on_after_an_error_page() -> None:
    async def scenario() -> None:
        async with serving(with_error_backend()) as site:
            client = await RawClient.connect(site.port)
            try:
                for target, expected in [
                    (b"/status/404", (404, b"error page 404")),
                    (b"/ok", (200, b"upstream 200")),
                    (b"/status/503", (503, b"error page 503")),
                    (b"/ok", (200, b"upstream 200")),
                ]:
                    await client.send(b"GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (target, HOST))
                    reply = await client.reply()
                    assert reply is not None, target
                    assert (reply.status, reply.body) == expected, target
            finally:
                await client.aclose()

    run(scenario)


@pytest.mark.e2e
def test_a_discarded_response_with_its_body_still_coming_closes_its_upstream_connection() -> None:
    async def answer(connection: BackendConnection, request: Request) -> None:
        if request.target == b"/big":
            # 404 with a body that is not all sent: nothing of it may reach the client,
            # and the connection cannot carry another request
            await connection.send(b"HTTP/1.1 404 X\r\nContent-Length: 100000\r\n\r\npart")
            return
        await upstream_answer(connection, request)

    async def scenario() -> None:
        upstream = RawBackend(answer)
        async with serving(with_error_backend(), upstream=upstream) as site:
            assert await site.ask(b"/big") == (404, b"error page 404")
            with trio.fail_after(DEADLINE):
                await upstream.connections[0].closed.wait()
            assert await site.ask(b"/ok") == (200, b"upstream 200")
            assert len(upstream.connections) == 2

    run(scenario)


@pytest.mark.e2e
def test_a_discarded_response_read_whole_leaves_its_upstream_connection_in_use() -> None:
    async def scenario() -> None:
        async with serving(with_error_backend()) as site:
            assert await site.ask(b"/status/404") == (404, b"error page 404")
            assert await site.ask(b"/ok") == (200, b"upstream 200")
            assert len(site.upstream.connections) == 1  # the second request reused it

    run(scenario)


@pytest.mark.e2e
def test_an_unreachable_error_backend_answers_502() -> None:
    def objects(upstream_port: int, errors_port: int) -> list[Obj]:
        found = with_error_backend()(upstream_port, errors_port)
        found[3] = endpoint_slice("errors", closed_port(), "127.0.0.1")
        return found

    async def scenario() -> None:
        async with serving(objects) as site:
            assert (await site.ask(b"/status/404"))[0] == 502
            assert (await site.ask(b"/ok")) == (200, b"upstream 200")

    run(scenario)


@pytest.mark.e2e
def test_without_default_backend_the_catch_all_answers_the_listed_statuses() -> None:
    def objects(upstream_port: int, errors_port: int) -> list[Obj]:
        app = ingress("app", (HOST.decode(), "/", "Prefix", "web", 80))
        catch_all = ingress(
            "global", defaultBackend={"service": {"name": "errors", "port": {"number": 80}}}
        )
        return [
            service("web", 80),
            endpoint_slice("web", upstream_port, "127.0.0.1"),
            service("errors", 80),
            endpoint_slice("errors", errors_port, "127.0.0.1"),
            catch_all,
            annotated(app, custom_http_errors="500"),
        ]

    async def scenario() -> None:
        async with serving(objects) as site:
            assert await site.ask(b"/status/500") == (500, b"error page 500")
            assert await site.ask(b"/status/404") == (404, b"upstream 404")
            assert fields(one(site.errors), b"x-code", b"x-ingress-name") == {
                b"x-code": b"500",
                b"x-ingress-name": b"app",
            }

    run(scenario)


@pytest.mark.e2e
def test_the_configmaps_custom_http_errors_send_those_statuses_to_the_error_backend() -> None:
    """The controller ConfigMap's list holds for every route; an Ingress's annotation
    replaces it on that Ingress's routes."""

    def objects(upstream_port: int, errors_port: int) -> list[Obj]:
        found = with_error_backend()(upstream_port, errors_port)
        del found[-1]["metadata"]["annotations"][PREFIX + "custom-http-errors"]
        other = ingress("other", ("other.example.com", "/", "Prefix", "web", 80))
        configmap = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "fastroute", "namespace": "ingress"},
            "data": {"custom-http-errors": "500"},
        }
        return [
            *found,
            annotated(other, default_backend="errors", custom_http_errors="404"),
            configmap,
        ]

    async def scenario() -> None:
        upstream, errors = RawBackend(upstream_answer), RawBackend(error_page())
        async with trio.open_nursery() as nursery:
            ports = await nursery.start(upstream.serve), await nursery.start(errors.serve)
            config = build_config(objects(*ports), configmap="ingress/fastroute")
            assert not config.problems, config.problems
            listeners = await nursery.start(Proxy(config).serve, "127.0.0.1", 0)
            site = Site(listeners[0].socket.getsockname()[1], upstream, errors)
            assert await site.ask(b"/status/500") == (500, b"error page 500")
            assert await site.ask(b"/status/404") == (404, b"upstream 404")
            other = await RawClient.connect(site.port)
            try:
                for target, expected in [
                    (b"/status/404", (404, b"error page 404")),
                    (b"/status/500", (500, b"upstream 500")),
                ]:
                    await other.send(b"GET %s HTTP/1.1\r\nHost: other.example.com\r\n\r\n" % target)
                    reply = await other.reply()
                    assert reply is not None
                    assert (reply.status, reply.body) == expected, target
            finally:
                await other.aclose()
            nursery.cancel_scope.cancel()

    run(scenario)


@pytest.mark.e2e
def test_a_route_without_custom_errors_passes_its_errors_on() -> None:
    def objects(upstream_port: int, errors_port: int) -> list[Obj]:
        plain = ingress("plain", ("other.example.com", "/", "Prefix", "web", 80))
        return [*with_error_backend()(upstream_port, errors_port), plain]

    async def scenario() -> None:
        async with serving(objects) as site:
            client = await RawClient.connect(site.port)
            try:
                await client.send(b"GET /status/404 HTTP/1.1\r\nHost: other.example.com\r\n\r\n")
                reply = await client.reply()
            finally:
                await client.aclose()
            assert reply is not None
            assert (reply.status, reply.body) == (404, b"upstream 404")
            assert site.errors.requests == []

    run(scenario)


# ------------------------------------------------------------------ no endpoints


def without_endpoints(annotations: dict[str, str]) -> Objects:
    """site.example.com/ -> Service web, which has no endpoints; Service errors has one."""

    def objects(upstream_port: int, errors_port: int) -> list[Obj]:
        app = ingress("app", (HOST.decode(), "/", "Prefix", "web", 80))
        return [
            service("web", 80),
            service("errors", 80),
            endpoint_slice("errors", errors_port, "127.0.0.1"),
            annotated(app, **annotations),
        ]

    return objects


@pytest.mark.e2e
def test_a_route_without_endpoints_goes_to_its_default_backend_told_why() -> None:
    async def scenario() -> None:
        errors = RawBackend(error_page(status=lambda code: 200))
        async with serving(without_endpoints({"default_backend": "errors"}), errors) as site:
            extra = b"Accept: application/json\r\nX-Request-ID: req-7\r\n"
            assert await site.ask(b"/alma/armud?x=1", extra) == (200, b"error page 503")
            request = one(site.errors)
            assert request.target == b"/alma/armud?x=1"  # the request itself, path and all
            assert request.header(b"host") == [HOST]
            assert fields(request, *ERROR_FIELDS) == {
                b"x-code": b"503",
                b"x-format": b"application/json",
                b"x-namespace": b"default",
                b"x-ingress-name": b"app",
                b"x-service-name": b"web",
                b"x-service-port": b"80",
                b"x-request-id": b"req-7",
            }

    run(scenario)


@pytest.mark.e2e
def test_a_route_without_endpoints_and_without_default_backend_answers_503() -> None:
    async def scenario() -> None:
        async with serving(without_endpoints({"custom_http_errors": "404"})) as site:
            assert (await site.ask(b"/"))[0] == 503
            assert site.errors.requests == []

    run(scenario)


# ------------------------------------------------------------------ service-upstream


def cluster_ip(address: str, port: int, **spec: Any) -> Obj:
    """Service web with this cluster IP, its port ``port``."""
    obj = service("web", port)
    obj["spec"].update(clusterIP=address, **spec)
    return obj


@pytest.mark.e2e
def test_service_upstream_sends_to_the_cluster_ip_not_the_endpoints() -> None:
    """The Service's cluster IP (127.0.0.1, port = the cluster backend's) is asked; its
    EndpointSlice points at another backend, which hears nothing."""

    def objects(endpoints_port: int, cluster_port: int) -> list[Obj]:
        app = ingress("app", (HOST.decode(), "/", "Prefix", "web", cluster_port))
        return [
            cluster_ip("127.0.0.1", cluster_port),
            endpoint_slice("web", endpoints_port, "127.0.0.1"),
            annotated(app, service_upstream="true"),
        ]

    async def scenario() -> None:
        cluster = RawBackend()
        async with serving(objects, errors=cluster) as site:
            for _ in range(3):
                assert (await site.ask(b"/"))[0] == 200
            assert len(cluster.requests) == 3
            assert site.upstream.requests == []

    run(scenario)


@pytest.mark.e2e
def test_without_service_upstream_the_endpoints_are_used() -> None:
    def objects(endpoints_port: int, cluster_port: int) -> list[Obj]:
        app = ingress("app", (HOST.decode(), "/", "Prefix", "web", cluster_port))
        return [
            cluster_ip("127.0.0.1", cluster_port),
            endpoint_slice("web", endpoints_port, "127.0.0.1"),
            app,
        ]

    async def scenario() -> None:
        cluster = RawBackend()
        async with serving(objects, errors=cluster) as site:
            assert await site.ask(b"/") == (200, b"upstream 200")
            assert cluster.requests == []

    run(scenario)


def test_service_upstream_of_a_service_without_cluster_ip_is_refused_and_endpoints_used() -> None:
    for spec, why in [
        ({"clusterIP": "None"}, "headless"),
        ({"type": "ExternalName", "externalName": "db.example.com"}, "ExternalName"),
    ]:
        obj = service("web", 80)
        obj["spec"].update(spec)
        app = ingress(
            "app",
            (HOST.decode(), "/", "Prefix", "web", 80),
            ("b.example.com", "/b", "Prefix", "web", 80),
        )
        config = build_config(
            [
                obj,
                endpoint_slice("web", 8080, "127.0.0.1"),
                annotated(app, service_upstream="true"),
            ]
        )
        reasons = [str(p) for p in config.problems]
        assert len(reasons) == 1, reasons  # once, though both hosts route to the Service
        for part in ("default/app", "service-upstream", why, "endpoints are used"):
            assert part in reasons[0], reasons
        target = config.router.match(HOST, b"/")
        assert target is not None
        if why == "headless":
            assert [str(e) for e in target.backend.endpoints] == ["127.0.0.1:8080"]


@pytest.mark.e2e
def test_service_upstream_through_the_proxy_reaches_the_endpoints_of_a_headless_service() -> None:
    def objects(endpoints_port: int, _: int) -> list[Obj]:
        app = ingress("app", (HOST.decode(), "/", "Prefix", "web", 80))
        return [
            cluster_ip("None", 80),
            endpoint_slice("web", endpoints_port, "127.0.0.1"),
            annotated(app, service_upstream="true"),
        ]

    async def scenario() -> None:
        upstream = RawBackend(upstream_answer)
        async with trio.open_nursery() as nursery:
            port = await nursery.start(upstream.serve)
            config = build_config(objects(port, 0))
            assert any("headless" in str(p) for p in config.problems)
            listeners = await nursery.start(Proxy(config).serve, "127.0.0.1", 0)
            site = Site(listeners[0].socket.getsockname()[1], upstream, upstream)
            assert await site.ask(b"/") == (200, b"upstream 200")
            await wait_for(lambda: len(upstream.requests) == 1, "the endpoint's request")
            nursery.cancel_scope.cancel()

    run(scenario)


def test_service_upstream_follows_the_service_as_it_changes() -> None:
    """A Service that gains a cluster IP takes the route there, and the Ingress's problem
    goes; one that loses it sends the route back to its endpoints."""
    builder = ConfigBuilder()
    builder.put(cluster_ip("None", 80))
    builder.put(endpoint_slice("web", 8080, "127.0.0.9"))
    app = ingress("app", (HOST.decode(), "/", "Prefix", "web", 80))
    builder.put(annotated(app, service_upstream="true"))

    def sent_to() -> tuple[list[str], int]:
        config = builder.build()
        route = config.router.match(HOST, b"/")
        assert isinstance(route, Target)
        return [str(e) for e in route.backend.usable()], len(config.problems)

    assert sent_to() == (["127.0.0.9:8080"], 1)
    builder.put(cluster_ip("10.0.0.5", 80))
    assert sent_to() == (["10.0.0.5:80"], 0)
    builder.put(cluster_ip("None", 80))
    assert sent_to() == (["127.0.0.9:8080"], 1)
