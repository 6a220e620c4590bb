"""Redirects, what the upstream is sent, what the client gets back, and the annotations
fastroute refuses to run, end to end: Ingress annotations given to ``build_config``,
served by the real proxy on 127.0.0.1 to a raw backend, asked by raw and httpx clients.

The expected redirects are ingress-nginx's (its e2e tests ``redirect.go``, ``approot.go``,
``fromtowwwredirect.go``), except where a test says why fastroute differs.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx
import pytest
import trio

from fastroute.ingress import build_config
from fastroute.ingress.model import RouteConfig
from fastroute.proxy.server import Proxy
from fastroute.proxy.tls import TLSContexts
from tests.objects import ingress, service_at, tls_section
from tests.polling import DEADLINE
from tests.polling import run_within as run
from tests.raw import BackendConnection, RawBackend, RawClient, Reply, Request, response

pytestmark = pytest.mark.e2e

HOST = "app.example.com"
SECURE = "secure.example.com"  # listed under the Ingress's TLS section
NGINX = "nginx.ingress.kubernetes.io/"


def _ingress(
    name: str,
    host: str,
    annotations: Mapping[str, str] | None = None,
    path: str = "/",
    tls: tuple[str, ...] = (),
) -> dict[str, Any]:
    sections = [tls_section(*tls)] if tls else []
    paths = [(path, "Prefix", "web")]
    return ingress(name, host, paths=paths, annotations=annotations or {}, tls=sections)


def _service(port: int) -> list[dict[str, Any]]:
    """Service ``web``, its one endpoint the raw backend on 127.0.0.1:port."""
    return service_at(port)


Objects = Callable[[int], list[dict[str, Any]]]


def _one(annotations: Mapping[str, str], host: str = HOST, **options: Any) -> Objects:
    """Objects for ``serving``: one Ingress with ``annotations`` for ``host``."""
    return lambda port: [*_service(port), _ingress("app", host, annotations, **options)]


@dataclass
class Served:
    config: RouteConfig
    port: int  # plain HTTP
    https_port: int
    backend: RawBackend

    async def ask(self, data: bytes, method: bytes = b"GET") -> Reply:
        """One request, exact bytes, on a new connection: the answer (which must come)."""
        client = await RawClient.connect(self.port)
        try:
            await client.send(data)
            reply = await client.reply(method)
        finally:
            await client.aclose()
        assert reply is not None, "the proxy closed without an answer"
        return reply

    async def https(self, path: str, host: str) -> httpx.Response:
        """A GET over TLS (the proxy's own certificate), by httpx in a worker thread."""

        def call() -> httpx.Response:
            with httpx.Client(trust_env=False, timeout=DEADLINE, verify=False) as client:
                url = f"https://127.0.0.1:{self.https_port}{path}"
                return client.get(url, headers={"host": host})

        return await trio.to_thread.run_sync(call)


@asynccontextmanager
async def serving(objects: Objects, backend: RawBackend | None = None) -> AsyncIterator[Served]:
    """The proxy on HTTP and HTTPS listeners in front of a raw backend; ``objects(port)``
    are the Kubernetes objects to build the config from."""
    backend = backend or RawBackend()
    async with trio.open_nursery() as nursery:
        backend_port = await nursery.start(backend.serve)
        built = build_config(objects(backend_port))
        proxy = Proxy(built, tls=TLSContexts())
        plain = await nursery.start(proxy.serve, "127.0.0.1", 0)
        secure = await nursery.start(partial(proxy.serve, scheme="https"), "127.0.0.1", 0)
        yield Served(
            built,
            plain[0].socket.getsockname()[1],
            secure[0].socket.getsockname()[1],
            backend,
        )
        nursery.cancel_scope.cancel()


def get(path: str = "/", host: str = HOST, extra: bytes = b"") -> bytes:
    return b"GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (path.encode(), host.encode(), extra)


# ------------------------------------------------------------------ redirects


@pytest.mark.parametrize(
    ("annotations", "status"),
    [
        ({"permanent-redirect": "https://new.example.org/landing?from=old"}, 301),
        (
            {
                "permanent-redirect": "https://new.example.org/landing?from=old",
                "permanent-redirect-code": "308",
            },
            308,
        ),
        ({"temporal-redirect": "https://new.example.org/landing?from=old"}, 302),
        (
            {
                "temporal-redirect": "https://new.example.org/landing?from=old",
                "temporal-redirect-code": "307",
            },
            307,
        ),
    ],
)
def test_a_redirect_annotation_answers_every_path_with_its_url_and_code(
    annotations: dict[str, str], status: int
) -> None:
    """ingress-nginx's ``return <code> <url>``: the URL as written, whatever was asked."""

    async def scenario() -> None:
        async with serving(_one({NGINX + k: v for k, v in annotations.items()})) as site:
            for path in ("/", "/deep/page?x=1"):
                reply = await site.ask(get(path))
                assert reply.status == status
                assert reply.header(b"location") == b"https://new.example.org/landing?from=old"
            assert site.backend.connections == []

    run(scenario)


def test_a_redirect_code_out_of_range_is_rejected_and_the_default_code_kept() -> None:
    annotations = {
        NGINX + "permanent-redirect": "https://new.example.org/",
        NGINX + "permanent-redirect-code": "404",
    }

    async def scenario() -> None:
        async with serving(_one(annotations)) as site:
            reply = await site.ask(get("/x"))
            assert (reply.status, reply.header(b"location")) == (301, b"https://new.example.org/")
            (problem,) = site.config.rejected()
            assert "permanent-redirect-code" in problem.field
            assert "'404'" in problem.reason

    run(scenario)


def test_app_root_redirects_only_the_root() -> None:
    """``if ($uri = /) { return 302 $scheme://$http_host<app-root>; }``: the Host as sent,
    port included; every other path is served. ingress-nginx drops the query; fastroute
    keeps it, so that a link's parameters reach the application."""

    async def scenario() -> None:
        async with serving(_one({NGINX + "app-root": "/app1"})) as site:
            reply = await site.ask(get("/"))
            assert (reply.status, reply.header(b"location")) == (
                302,
                b"http://app.example.com/app1",
            )
            reply = await site.ask(get("/", host=HOST + ":8080"))
            assert reply.header(b"location") == b"http://app.example.com:8080/app1"
            reply = await site.ask(get("/?lang=fr"))
            assert reply.header(b"location") == b"http://app.example.com/app1?lang=fr"
            assert site.backend.connections == []
            reply = await site.ask(get("/app1/page"))
            assert (reply.status, reply.body) == (200, b"c0-r0")
            assert site.backend.requests[0].target == b"/app1/page"
            over_tls = await site.https("/", HOST)
            assert over_tls.status_code == 302
            assert over_tls.headers["location"] == "https://app.example.com/app1"

    run(scenario)


@pytest.mark.parametrize(
    ("named", "asked"),
    [(HOST, "www." + HOST), ("www." + HOST, HOST)],
)
def test_from_to_www_redirects_the_other_spelling_with_its_path_and_query(
    named: str, asked: str
) -> None:
    """ingress-nginx writes ``$scheme://<other>:$server_port$request_uri`` with a trailing
    ``/`` dropped. fastroute writes the port the client used (its Host's), which is the
    listening port unless a Service maps it, and keeps the path as sent: dropping the
    slash sends a client to ``/docs`` that then goes back to ``/docs/``."""

    async def scenario() -> None:
        async with serving(_one({NGINX + "from-to-www-redirect": "true"}, host=named)) as site:
            reply = await site.ask(get("/foo/bar?q=1&r=2", host=asked))
            assert reply.status == 308
            assert reply.header(b"location") == f"http://{named}/foo/bar?q=1&r=2".encode()
            reply = await site.ask(get("/docs/", host=asked))
            assert reply.header(b"location") == f"http://{named}/docs/".encode()
            # the port the client reached the proxy on stays in the redirect
            reply = await site.ask(get("/foo", host=asked + ":8080"))
            assert reply.header(b"location") == f"http://{named}:8080/foo".encode()
            over_tls = await site.https("/foo", asked)
            assert over_tls.status_code == 308
            assert over_tls.headers["location"] == f"https://{named}/foo"
            assert site.backend.connections == []
            reply = await site.ask(get("/foo", host=named))
            assert reply.status == 200

    run(scenario)


def test_without_from_to_www_the_other_spelling_is_not_routed() -> None:
    async def scenario() -> None:
        async with serving(_one({})) as site:
            assert (await site.ask(get("/foo", host="www." + HOST))).status == 404

    run(scenario)


# ------------------------------------------------------------------ what the upstream is sent


def test_upstream_vhost_is_the_host_the_backend_sees_and_forwarded_host_the_clients() -> None:
    async def scenario() -> None:
        annotations = {NGINX + "upstream-vhost": "internal.svc.local:8080"}
        async with serving(_one(annotations)) as site:
            assert (await site.ask(get("/x"))).status == 200
            # absolute form: its authority is the host asked for, whatever Host says
            absolute = b"GET http://%s/x HTTP/1.1\r\nHost: elsewhere.example\r\n\r\n"
            assert (await site.ask(absolute % HOST.encode())).status == 200
            for request in site.backend.requests:
                assert request.header(b"host") == [b"internal.svc.local:8080"]
                assert request.header(b"x-forwarded-host") == [HOST.encode()]
            assert len(site.backend.requests) == 2

    run(scenario)


def test_x_forwarded_prefix_reaches_the_backend_and_replaces_the_clients() -> None:
    async def scenario() -> None:
        async with serving(_one({NGINX + "x-forwarded-prefix": "/api"})) as site:
            assert (await site.ask(get("/x"))).status == 200
            assert (await site.ask(get("/x", extra=b"X-Forwarded-Prefix: /evil\r\n"))).status
            first, second = site.backend.requests
            assert first.header(b"x-forwarded-prefix") == [b"/api"]
            assert second.header(b"x-forwarded-prefix") == [b"/api"]

    run(scenario)


def test_rewrite_target_with_x_forwarded_prefix() -> None:
    """The app mounted at /api sees ``/`` and learns its public prefix from the header."""
    annotations = {NGINX + "rewrite-target": "/", NGINX + "x-forwarded-prefix": "/api"}

    async def scenario() -> None:
        async with serving(_one(annotations, path="/api")) as site:
            assert (await site.ask(get("/api/users?page=2"))).status == 200
            (request,) = site.backend.requests
            assert request.target == b"/?page=2"
            assert request.header(b"x-forwarded-prefix") == [b"/api"]

    run(scenario)


def test_proxy_http_version_1_0_sends_http_1_0_and_does_not_keep_the_connection() -> None:
    async def scenario() -> None:
        async with serving(_one({NGINX + "proxy-http-version": "1.0"})) as site:
            client = await RawClient.connect(site.port)
            for expected in (b"c0-r0", b"c1-r0"):
                await client.send(get("/x"))
                reply = await client.reply()
                assert reply is not None
                assert (reply.status, reply.body) == (200, expected)
            await client.aclose()
            for connection in site.backend.connections:
                assert bytes(connection.received).startswith(b"GET /x HTTP/1.0\r\n")
                assert connection.requests[0].header(b"connection") == [b"close"]
                with trio.fail_after(DEADLINE):
                    await connection.closed.wait()

    run(scenario)


def test_proxy_http_version_1_0_relays_an_http_1_0_backends_answer_ended_by_its_close() -> None:
    async def answer(connection: BackendConnection, request: Request) -> None:
        await connection.send(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nold ")
        await connection.send(b"server")
        await connection.stream.aclose()

    async def scenario() -> None:
        annotations = {NGINX + "proxy-http-version": "1.0"}
        async with serving(_one(annotations), RawBackend(answer)) as site:
            client = await RawClient.connect(site.port)
            await client.send(get("/x"))
            reply = await client.reply()
            assert reply is not None
            assert (reply.status, reply.body) == (200, b"old server")
            assert await client.closed()  # the length was the backend's close
            await client.aclose()

    run(scenario)


def test_proxy_http_version_1_0_forwards_a_sized_body() -> None:
    async def scenario() -> None:
        async with serving(_one({NGINX + "proxy-http-version": "1.0"})) as site:
            post = b"POST /up HTTP/1.1\r\nHost: %s\r\nContent-Length: 5\r\n\r\nhello" % (
                HOST.encode()
            )
            assert (await site.ask(post, b"POST")).status == 200
            (request,) = site.backend.requests
            assert request.body == b"hello"

    run(scenario)


def test_proxy_http_version_1_0_answers_a_chunked_body_411() -> None:
    """HTTP/1.0 has no chunked framing: the client is asked for a Content-Length."""

    async def scenario() -> None:
        async with serving(_one({NGINX + "proxy-http-version": "1.0"})) as site:
            post = (
                b"POST /up HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n0\r\n\r\n" % HOST.encode()
            )
            assert (await site.ask(post, b"POST")).status == 411
            assert site.backend.connections == []

    run(scenario)


def test_the_default_http_version_keeps_the_upstream_connection() -> None:
    async def scenario() -> None:
        async with serving(_one({})) as site:
            for expected in (b"c0-r0", b"c0-r1"):
                assert (await site.ask(get("/x"))).body == expected
            assert bytes(site.backend.connections[0].received).startswith(b"GET /x HTTP/1.1\r\n")

    run(scenario)


# ------------------------------------------------------------------ what the client gets


def test_enable_access_log_false_leaves_that_route_out_of_the_access_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def objects(port: int) -> list[dict[str, Any]]:
        return [
            *_service(port),
            _ingress("quiet", "quiet.example.com", {NGINX + "enable-access-log": "false"}),
            _ingress(
                "loud",
                "loud.example.com",
                {NGINX + "enable-access-log": "true", NGINX + "app-root": "/loud-app"},
            ),
        ]

    async def scenario() -> None:
        async with serving(objects) as site:
            assert (await site.ask(get("/quiet-path", host="quiet.example.com"))).status == 200
            assert (await site.ask(get("/loud-path", host="loud.example.com"))).status == 200
            assert (await site.ask(get("/", host="loud.example.com"))).status == 302

    with caplog.at_level(logging.INFO, logger="fastroute.access"):
        run(scenario)
    lines = [r.getMessage() for r in caplog.records if r.name == "fastroute.access"]
    assert any("/loud-path" in line and "default/loud" in line for line in lines)
    # what the proxy answers itself is logged under the route's Ingress too
    assert any('"GET /" 302' in line and "default/loud" in line for line in lines)
    assert not any("/quiet-path" in line for line in lines)


def test_enable_access_log_false_also_leaves_out_what_the_proxy_answers_itself(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """nginx's ``access_log off`` is the location's: its redirects and 403s are not logged."""
    annotations = {
        NGINX + "enable-access-log": "false",
        NGINX + "app-root": "/quiet-app",
        NGINX + "denylist-source-range": "127.0.0.1/32",
    }

    async def scenario() -> None:
        async with serving(_one(annotations)) as site:
            assert (await site.ask(get("/"))).status == 302
            assert (await site.ask(get("/quiet-denied"))).status == 403

    with caplog.at_level(logging.INFO, logger="fastroute.access"):
        run(scenario)
    lines = [r.getMessage() for r in caplog.records if r.name == "fastroute.access"]
    assert lines == []


def test_custom_headers_from_a_configmap_replace_the_backends() -> None:
    async def answer(connection: BackendConnection, request: Request) -> None:
        await connection.send(response(b"ok", 200, b"X-Team: backend", b"X-Other: kept"))

    def objects(port: int) -> list[dict[str, Any]]:
        headers = {
            "kind": "ConfigMap",
            "metadata": {"name": "response-headers", "namespace": "default"},
            "data": {"X-Team": "platform", "X-Build": "42"},
        }
        annotations = {NGINX + "custom-headers": "response-headers"}
        return [*_service(port), headers, _ingress("app", HOST, annotations)]

    async def scenario() -> None:
        async with serving(objects, RawBackend(answer)) as site:
            assert site.config.problems == ()
            reply = await site.ask(get("/x"))
            assert reply.status == 200
            assert [v for k, v in reply.headers if k == b"x-team"] == [b"platform"]
            assert reply.header(b"x-build") == b"42"
            assert reply.header(b"x-other") == b"kept"

    run(scenario)


class _OwnHsts:
    """A backend that sends its own Strict-Transport-Security."""

    async def __call__(self, connection: BackendConnection, request: Request) -> None:
        await connection.send(response(b"ok", 200, b"Strict-Transport-Security: max-age=0"))


HSTS = b"max-age=31536000; includeSubDomains"


@pytest.mark.parametrize(
    "annotations",
    [{}, {NGINX + "ssl-redirect": "false", NGINX + "x-forwarded-prefix": "/p"}],
    ids=["plain-route", "annotated-route"],
)
def test_hsts_on_https_responses_of_tls_hosts_only_replacing_the_backends(
    annotations: dict[str, str],
) -> None:
    def objects(port: int) -> list[dict[str, Any]]:
        return [
            *_service(port),
            _ingress("secure", SECURE, annotations, tls=(SECURE,)),
            _ingress("app", HOST, annotations),
        ]

    async def scenario() -> None:
        async with serving(objects, RawBackend(_OwnHsts())) as site:
            secure = await site.https("/", SECURE)
            assert secure.status_code == 200
            assert secure.headers.get_list("strict-transport-security") == [HSTS.decode()]
            # HTTPS for a host without TLS section: the backend's own field passes
            other = await site.https("/", HOST)
            assert other.headers.get_list("strict-transport-security") == ["max-age=0"]
            if annotations:  # plain HTTP (no redirect to HTTPS): never HSTS from the proxy
                reply = await site.ask(get("/", host=SECURE))
                assert reply.status == 200
                values = [v for k, v in reply.headers if k == b"strict-transport-security"]
                assert values == [b"max-age=0"]

    run(scenario)


def test_hsts_on_what_a_tls_hosts_route_answers_itself_over_https() -> None:
    annotations = {NGINX + "app-root": "/app", NGINX + "denylist-source-range": "127.0.0.1"}

    def objects(port: int) -> list[dict[str, Any]]:
        return [*_service(port), _ingress("secure", SECURE, annotations, tls=(SECURE,))]

    async def scenario() -> None:
        async with serving(objects) as site:
            for path, status in (("/", 302), ("/x", 403)):
                answer = await site.https(path, SECURE)
                assert answer.status_code == status
                assert answer.headers.get_list("strict-transport-security") == [HSTS.decode()]
            # over plain HTTP a TLS host is redirected to HTTPS, without HSTS
            reply = await site.ask(get("/x", host=SECURE))
            assert reply.status == 308
            assert reply.header(b"strict-transport-security") is None

    run(scenario)


# ------------------------------------------------------------------ never executed


@pytest.mark.parametrize(
    ("snippet", "replacement"),
    [
        ("configuration-snippet", "custom-headers"),
        ("server-snippet", "server-alias"),
        ("auth-snippet", "auth-"),
        ("modsecurity-snippet", "allowlist-source-range"),
    ],
)
def test_a_snippet_is_never_executed_and_a_warning_names_the_typed_replacement(
    snippet: str, replacement: str
) -> None:
    text = 'more_set_headers "X-Snippet: ran";\nreturn 418;'

    async def scenario() -> None:
        async with serving(_one({NGINX + snippet: text})) as site:
            reply = await site.ask(get("/x"))
            assert (reply.status, reply.body) == (200, b"c0-r0")
            assert reply.header(b"x-snippet") is None
            assert site.config.rejected() == ()
            (warning,) = site.config.warnings()
            assert warning.field == f"metadata.annotations[{NGINX}{snippet}]"
            assert "never executed" in warning.reason
            assert replacement in warning.reason

    run(scenario)


@pytest.mark.parametrize(("protocol", "needs"), [("GRPC", "HTTP/2"), ("FCGI", "FastCGI")])
def test_an_unsupported_backend_protocol_is_rejected_and_the_route_served_in_http(
    protocol: str, needs: str
) -> None:
    async def scenario() -> None:
        async with serving(_one({NGINX + "backend-protocol": protocol})) as site:
            (problem,) = site.config.rejected()
            assert problem.field == f"metadata.annotations[{NGINX}backend-protocol]"
            assert needs in problem.reason
            assert "HTTP" in problem.reason
            reply = await site.ask(get("/x"))
            assert (reply.status, reply.body) == (200, b"c0-r0")
            assert bytes(site.backend.connections[0].received).startswith(b"GET /x HTTP/1.1")

    run(scenario)


def test_a_malformed_auth_url_fails_closed_and_leaves_other_ingresses_of_the_host_working() -> None:
    """An auth-url fastroute cannot ask (not http or https): the Ingress answers 503 rather
    than serve unprotected, and another Ingress of the same host is unaffected."""

    def objects(port: int) -> list[dict[str, Any]]:
        return [
            *_service(port),
            _ingress(
                "private", HOST, {NGINX + "auth-url": "ftp://auth.example/check"}, path="/admin"
            ),
            _ingress("public", HOST, {}, path="/"),
        ]

    async def scenario() -> None:
        async with serving(objects) as site:
            assert (await site.ask(get("/admin/users"))).status == 503
            assert (await site.https("/admin/users", HOST)).status_code == 503
            assert all(b"/admin" not in r.target for r in site.backend.requests)
            assert (await site.ask(get("/home"))).status == 200
            (problem,) = site.config.rejected()
            assert (problem.name, problem.field) == (
                "default/private",
                f"metadata.annotations[{NGINX}auth-url]",
            )
            assert "ftp://auth.example/check" in problem.reason

    run(scenario)


def test_from_to_www_redirects_even_when_a_default_backend_catches_other_hosts() -> None:
    """ingress-nginx gives the other spelling a server of its own: it is not "any host"."""

    def objects(port: int) -> list[dict[str, Any]]:
        # its own from-to-www-redirect has no host to act on: never "www." + any host
        catch_all = _ingress(
            "fallback", "fallback.example.com", {NGINX + "from-to-www-redirect": "true"}
        )
        del catch_all["spec"]["rules"]
        catch_all["spec"]["defaultBackend"] = {"service": {"name": "web", "port": {"number": 80}}}
        return [
            *_service(port),
            _ingress("app", HOST, {NGINX + "from-to-www-redirect": "true"}),
            catch_all,
        ]

    async def scenario() -> None:
        async with serving(objects) as site:
            reply = await site.ask(get("/foo", host="www." + HOST))
            assert (reply.status, reply.header(b"location")) == (308, b"http://app.example.com/foo")
            for other in ("other.example.com", "www.other.example.com"):
                assert (await site.ask(get("/foo", host=other))).status == 200

    run(scenario)


# ------------------------------------------------------------------ malformed values


def _host_is_the_clients(request: Request) -> bool:
    return request.header(b"host") == [HOST.encode()]


def _no_prefix(request: Request) -> bool:
    return request.header(b"x-forwarded-prefix") == []


@pytest.mark.parametrize(
    ("annotation", "value", "asked", "as_without"),
    [
        ("permanent-redirect", "ftp://files.example.org/", "/x", _host_is_the_clients),
        ("permanent-redirect", "/relative", "/x", _host_is_the_clients),
        ("temporal-redirect", "https://new.example.org/a b", "/x", _host_is_the_clients),
        ("app-root", "app", "/", _host_is_the_clients),
        ("app-root", "/a pp", "/", _host_is_the_clients),
        ("upstream-vhost", "bad host!", "/x", _host_is_the_clients),
        ("upstream-vhost", "internal.local:99999", "/x", _host_is_the_clients),
        ("x-forwarded-prefix", "", "/x", _no_prefix),
        ("x-forwarded-prefix", "/api\x01", "/x", _no_prefix),
        ("proxy-http-version", "2.0", "/x", _host_is_the_clients),
        ("custom-headers", "no-such-configmap", "/x", _host_is_the_clients),
        ("custom-headers", "Not_A/Name", "/x", _host_is_the_clients),
    ],
)
def test_a_malformed_value_is_rejected_naming_it_and_the_ingress_served_without_it(
    annotation: str, value: str, asked: str, as_without: Callable[[Request], bool]
) -> None:
    """The Ingress is served as if the annotation were absent, the problem names the
    value, and another Ingress of the same host is untouched."""

    def objects(port: int) -> list[dict[str, Any]]:
        return [
            *_service(port),
            _ingress("bad", HOST, {NGINX + annotation: value}),
            _ingress("good", HOST, {NGINX + "x-forwarded-prefix": "/good"}, path="/good"),
        ]

    async def scenario() -> None:
        async with serving(objects) as site:
            (problem,) = site.config.rejected()
            assert (problem.name, problem.field) == (
                "default/bad",
                f"metadata.annotations[{NGINX}{annotation}]",
            )
            assert repr(value) in problem.reason
            reply = await site.ask(get(asked))
            assert (reply.status, reply.body, reply.header(b"location")) == (200, b"c0-r0", None)
            (request,) = site.backend.requests
            assert as_without(request)
            assert bytes(site.backend.connections[0].received).startswith(
                b"GET %s HTTP/1.1\r\n" % asked.encode()
            )
            reply = await site.ask(get("/good/x"))
            assert reply.status == 200
            assert site.backend.requests[-1].header(b"x-forwarded-prefix") == [b"/good"]

    run(scenario)


def test_a_malformed_from_to_www_redirect_redirects_nothing() -> None:
    annotations = {NGINX + "from-to-www-redirect": "sometimes"}

    async def scenario() -> None:
        async with serving(_one(annotations)) as site:
            (problem,) = site.config.rejected()
            assert "'sometimes'" in problem.reason
            assert (await site.ask(get("/x", host="www." + HOST))).status == 404
            assert (await site.ask(get("/x"))).status == 200

    run(scenario)


def test_from_to_www_redirects_nothing_when_the_other_spelling_has_rules_of_its_own() -> None:
    def objects(port: int) -> list[dict[str, Any]]:
        return [
            *_service(port),
            _ingress("app", HOST, {NGINX + "from-to-www-redirect": "true"}),
            _ingress("www", "www." + HOST, {NGINX + "x-forwarded-prefix": "/www"}),
        ]

    async def scenario() -> None:
        async with serving(objects) as site:
            reply = await site.ask(get("/foo", host="www." + HOST))
            assert (reply.status, reply.header(b"location")) == (200, None)
            assert site.backend.requests[0].header(b"x-forwarded-prefix") == [b"/www"]

    run(scenario)


def test_a_server_alias_host_is_served_by_the_ingress_rules_and_others_are_not() -> None:
    """``server-alias``: the alias host reaches the same backend with the same paths, as
    ingress-nginx adds it to the server's names; a host nobody names is still a 404."""

    async def scenario() -> None:
        annotations = {NGINX + "server-alias": "alias.example.com, *.aliases.example.com"}
        async with serving(_one(annotations)) as site:
            for host in (HOST, "alias.example.com", "one.aliases.example.com"):
                reply = await site.ask(get("/x?y=1", host))
                assert reply.status == 200, host
                assert site.backend.requests[-1].target == b"/x?y=1"
                assert site.backend.requests[-1].header(b"host") == [host.encode()]
            assert (await site.ask(get("/x", "other.example.com"))).status == 404
            assert len(site.backend.requests) == 3

    run(scenario)
