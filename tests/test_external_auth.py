"""External authentication (auth-url and its family), end to end and by parts.

A real auth service (trio + h11 on 127.0.0.1) and a real backend (``echo.Echo``) sit
behind the real proxy; a client sends real requests. The cases follow ingress-nginx's
e2e tests (``test/e2e/annotations/auth.go``, ``settings/global_external_auth.go``) and
its template: what the auth service is sent, what passes on a 2xx, the 401/403 answers,
the sign-in redirect with ``rd=``, and a 500 for everything else.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import h11
import httpx
import pytest
import trio

from fastroute.ingress import build_config
from fastroute.ingress.annotations import read_policy
from fastroute.ingress.external_auth import (
    CacheRule,
    ExternalAuth,
    read_cache_duration,
    read_template,
)
from fastroute.ingress.settings import Settings
from fastroute.proxy.external_auth import AuthCache, Outcome, Request
from fastroute.proxy.metrics import Metrics
from fastroute.proxy.server import Proxy
from tests.echo import Echo, next_event
from tests.polling import DEADLINE, run_within, wait_for
from tests.raw import BackendConnection, RawBackend
from tests.raw import Request as RawRequest
from tests.raw import response as raw_response
from tests.sites import HOST, closed_port, site_objects

N = "nginx.ingress.kubernetes.io/"
CM = "ingress/fastroute"


# -- the auth service ---------------------------------------------------------------


@dataclass
class Asked:
    """One request the auth service received."""

    method: str
    target: str
    headers: list[tuple[str, str]]

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name.lower()), None)


Reply = tuple[int, list[tuple[str, str]]]
Decide = Callable[[Asked], Awaitable[Reply]]


async def allow(asked: Asked) -> Reply:
    return 200, []


class AuthService(Echo):
    """An auth service on 127.0.0.1 answering each request by ``decide``."""

    def __init__(self, decide: Decide = allow) -> None:
        super().__init__("auth")
        self.decide = decide
        self.asked: list[Asked] = []

    async def _exchange(self, stream: trio.SocketStream, conn: h11.Connection) -> bool:
        request = await next_event(stream, conn)
        if not isinstance(request, h11.Request):
            return False
        while not isinstance(event := await next_event(stream, conn), h11.EndOfMessage):
            if not isinstance(event, h11.Data):
                return False
        asked = Asked(
            request.method.decode(),
            request.target.decode(),
            [(n.decode(), v.decode()) for n, v in request.headers],
        )
        self.asked.append(asked)
        status, headers = await self.decide(asked)
        body = b"auth says %d" % status
        fields = [(n.encode(), v.encode()) for n, v in headers]
        fields.append((b"content-length", b"%d" % len(body)))
        for event in (h11.Response(status_code=status, headers=fields), h11.Data(data=body)):
            await stream.send_all(conn.send(event) or b"")
        await stream.send_all(conn.send(h11.EndOfMessage()) or b"")
        return True


# -- the proxy in front of it ---------------------------------------------------------


def _objects(
    backend_port: int, annotations: dict[str, str], extra_paths: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    objects = site_objects(backend_port)
    ingress = objects[-1]
    ingress["metadata"]["annotations"] = annotations
    if annotations.get("test/any-host"):  # the rule for every host
        del ingress["spec"]["rules"][0]["host"]
    if extra_paths:  # another Ingress on the same host, without annotations
        plain = json.loads(json.dumps(ingress))
        plain["metadata"] = {"name": "plain"}
        plain["spec"]["rules"][0]["http"]["paths"][0]["path"] = extra_paths[0]
        objects.append(plain)
    return objects


@dataclass
class Setup:
    proxy: Proxy
    url: str
    auth: AuthService
    backend: Echo
    auth_port: int

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.url, headers={"Host": HOST}, follow_redirects=False, timeout=DEADLINE
        )


@asynccontextmanager
async def serving(
    annotations: Callable[[int], dict[str, str]],
    decide: Decide = allow,
    configmap: Callable[[int], dict[str, str]] | None = None,
    extra_paths: tuple[str, ...] = (),
    service: RawBackend | None = None,
    backend_service: RawBackend | None = None,
    extra_objects: tuple[dict[str, Any], ...] = (),
) -> AsyncIterator[Setup]:
    """The proxy routing site.example.com to an Echo backend, annotated with
    ``annotations(auth_port)``; the ConfigMap ``configmap(auth_port)`` when given; the
    auth service answers by ``decide`` (or is ``service``, which writes raw bytes)."""
    auth, backend = AuthService(decide), Echo("web")
    async with trio.open_nursery() as nursery:
        auth_port = await nursery.start(service.serve if service else auth.serve)
        backend_port = await nursery.start(
            backend_service.serve if backend_service else backend.serve
        )
        objects = [*_objects(backend_port, annotations(auth_port), extra_paths), *extra_objects]
        kwargs: dict[str, Any] = {}
        if configmap is not None:
            namespace, _, name = CM.partition("/")
            objects.append(
                {
                    "kind": "ConfigMap",
                    "metadata": {"name": name, "namespace": namespace},
                    "data": configmap(auth_port),
                }
            )
            kwargs["configmap"] = CM
        proxy = Proxy(build_config(objects, **kwargs), metrics=Metrics())
        listeners = await nursery.start(proxy.serve, "127.0.0.1", 0)
        port = listeners[0].socket.getsockname()[1]
        yield Setup(proxy, f"http://127.0.0.1:{port}", auth, backend, auth_port)
        nursery.cancel_scope.cancel()


def run(test: Callable[[], Awaitable[None]]) -> None:
    run_within(test, DEADLINE * 2)


def auth_url(path: str = "/auth", **more: str) -> Callable[[int], dict[str, str]]:
    def annotations(port: int) -> dict[str, str]:
        found = {N + "auth-url": f"http://127.0.0.1:{port}{path}"}
        found.update({N + name.replace("_", "-"): value for name, value in more.items()})
        return found

    return annotations


def received(response: httpx.Response) -> dict[str, str]:
    """The fields the backend received (the Echo backend's answer), by lower-case name."""
    assert response.status_code == 200, response.text
    return {name.lower(): value for name, value in response.json()["headers"]}


def answering(status: int, *headers: tuple[str, str]) -> Decide:
    async def decide(asked: Asked) -> Reply:
        return status, list(headers)

    return decide


# -- end to end -------------------------------------------------------------------------


@pytest.mark.e2e
def test_a_2xx_from_the_auth_service_lets_the_request_through() -> None:
    async def main() -> None:
        async with serving(auth_url(), answering(202)) as setup, setup.client() as client:
            response = await client.get("/page?x=1")
            assert response.status_code == 200
            assert response.json()["target"] == "/page?x=1"
            assert len(setup.auth.asked) == 1

    run(main)


@pytest.mark.e2e
def test_the_auth_service_is_asked_as_nginx_auth_request_asks() -> None:
    async def main() -> None:
        async with serving(auth_url("/check?from=edge")) as setup, setup.client() as client:
            headers = {
                "Cookie": "session=abc",
                "Authorization": "Bearer t0ken",
                "X-Original-URL": "http://forged.example/",
                "X-Forwarded-Host": "forged.example",
            }
            response = await client.post("/orders/7?q=a%20b", content=b"payload", headers=headers)
            assert response.status_code == 200
            assert response.json()["body_length"] == len(b"payload")  # the backend got it
            (asked,) = setup.auth.asked
            assert asked.method == "POST"  # the request's own method
            assert asked.target == "/check?from=edge"
            assert asked.header("host") == "127.0.0.1"  # the auth URL's host, as ingress-nginx
            assert asked.header("x-original-url") == f"http://{HOST}/orders/7?q=a%20b"
            assert asked.header("x-original-method") == "POST"
            assert asked.header("x-auth-request-redirect") == "/orders/7?q=a%20b"
            assert asked.header("x-forwarded-host") == HOST
            assert asked.header("x-forwarded-proto") == "http"
            assert asked.header("x-forwarded-for") == "127.0.0.1"
            assert asked.header("x-real-ip") == "127.0.0.1"
            assert asked.header("x-sent-from") == "nginx-ingress-controller"
            assert asked.header("cookie") == "session=abc"
            assert asked.header("authorization") == "Bearer t0ken"
            # no body, and nothing that would frame one
            assert asked.header("content-length") is None
            assert asked.header("transfer-encoding") is None
            assert [v for k, v in asked.headers if k == "x-original-url"] == [
                f"http://{HOST}/orders/7?q=a%20b"
            ]

    run(main)


@pytest.mark.e2e
def test_the_auth_url_host_may_be_the_requests_own_host() -> None:
    def annotations(port: int) -> dict[str, str]:
        return {N + "auth-url": f"http://$host:{port}/auth?for=$host", "test/any-host": "1"}

    async def main() -> None:
        async with serving(annotations) as setup:
            async with setup.client() as client:
                response = await client.get("/", headers={"Host": "127.0.0.1"})
            assert response.status_code == 200
            (asked,) = setup.auth.asked
            assert asked.target == "/auth?for=127.0.0.1"
            assert asked.header("host") == "127.0.0.1"

    run(main)


@pytest.mark.e2e
def test_auth_method_and_request_redirect_change_what_is_sent() -> None:
    async def main() -> None:
        annotations = auth_url(auth_method="GET", auth_request_redirect="https://app.example/")
        async with serving(annotations) as setup, setup.client() as client:
            assert (await client.put("/doc")).status_code == 200
            (asked,) = setup.auth.asked
            assert asked.method == "GET"
            assert asked.header("x-original-method") == "PUT"
            assert asked.header("x-original-uri") == "/doc"
            assert asked.header("x-scheme") == "http"
            assert asked.header("x-auth-request-redirect") == "https://app.example/"

    run(main)


@pytest.mark.e2e
def test_a_403_from_the_auth_service_is_the_answer() -> None:
    async def main() -> None:
        async with serving(auth_url(), answering(403)) as setup, setup.client() as client:
            response = await client.get("/")
            assert response.status_code == 403
            assert "auth says" not in response.text  # the proxy's page, as nginx's
            assert setup.backend.connections == 0

    run(main)


@pytest.mark.e2e
def test_a_401_keeps_the_auth_services_challenge() -> None:
    challenge = ("WWW-Authenticate", 'Basic realm="team"')

    async def main() -> None:
        async with serving(auth_url(), answering(401, challenge)) as setup:
            async with setup.client() as client:
                response = await client.get("/")
            assert response.status_code == 401
            assert response.headers["www-authenticate"] == 'Basic realm="team"'
            assert setup.backend.connections == 0

    run(main)


@pytest.mark.e2e
def test_a_401_with_auth_signin_redirects_there_with_rd_the_original_url() -> None:
    async def main() -> None:
        annotations = auth_url(auth_signin="http://$host/auth/start")
        async with serving(annotations, answering(401)) as setup, setup.client() as client:
            response = await client.get("/", params={"a": "b", "c": "d"})
            assert response.status_code == 302
            expected = f"http://{HOST}/auth/start?rd=http://{HOST}{quote('/?a=b&c=d', safe='')}"
            assert response.headers["location"] == expected
            assert setup.backend.connections == 0

    run(main)


@pytest.mark.e2e
def test_auth_signin_redirect_param_names_the_parameter() -> None:
    async def main() -> None:
        annotations = auth_url(
            auth_signin="https://login.example/start?client=7", auth_signin_redirect_param="orig"
        )
        async with serving(annotations, answering(401)) as setup, setup.client() as client:
            response = await client.get("/x y")
            assert response.status_code == 302
            assert response.headers["location"] == (
                f"https://login.example/start?client=7&orig=http://{HOST}%2Fx%2520y"
            )

    run(main)


@pytest.mark.e2e
def test_a_signin_url_that_sets_rd_itself_is_used_as_written_with_its_variables() -> None:
    async def main() -> None:
        annotations = auth_url(auth_signin="https://$host/oauth2/start?rd=$escaped_request_uri")
        async with serving(annotations, answering(401)) as setup, setup.client() as client:
            response = await client.get("/app?tab=2")
            assert response.headers["location"] == (
                f"https://{HOST}/oauth2/start?rd=%2Fapp%3Ftab%3D2"
            )

    run(main)


@pytest.mark.e2e
def test_auth_response_headers_are_copied_and_client_copies_are_never_passed() -> None:
    async def main() -> None:
        decide = answering(200, ("X-User", "alice"), ("X-Email", "a@example.com"))
        annotations = auth_url(auth_response_headers="X-User, X-Email, X-Groups")
        async with serving(annotations, decide) as setup, setup.client() as client:
            forged = {"X-User": "mallory", "X-Groups": "admins", "X-Other": "kept"}
            fields = received(await client.get("/", headers=forged))
            assert fields["x-user"] == "alice"
            assert fields["x-email"] == "a@example.com"
            # the auth service did not set it: the client's copy is removed all the same
            assert "x-groups" not in fields
            assert fields["x-other"] == "kept"

    run(main)


@pytest.mark.parametrize(
    "field",
    [b"X-User: alice\rX-Admin: 1", b"X-User: al\x00ice"],
)
@pytest.mark.e2e
def test_an_auth_answer_with_cr_lf_or_nul_in_a_field_is_a_500(field: bytes) -> None:
    async def crafted(connection: BackendConnection, request: RawRequest) -> None:
        await connection.send(b"HTTP/1.1 200 OK\r\n" + field + b"\r\nContent-Length: 0\r\n\r\n")

    async def main() -> None:
        annotations = auth_url(auth_response_headers="X-User, X-Admin")
        async with serving(annotations, service=RawBackend(crafted)) as setup:
            async with setup.client() as client:
                response = await client.get("/")
            assert response.status_code == 500
            assert setup.backend.connections == 0

    run(main)


@pytest.mark.e2e
def test_the_auth_service_down_is_a_500() -> None:
    async def main() -> None:
        down = closed_port()

        def annotations(_: int) -> dict[str, str]:
            return {N + "auth-url": f"http://127.0.0.1:{down}/auth"}

        async with serving(annotations) as setup, setup.client() as client:
            response = await client.get("/")
            assert response.status_code == 500
            assert setup.backend.connections == 0

    run(main)


@pytest.mark.e2e
def test_a_slow_auth_service_is_a_500_after_the_routes_read_timeout() -> None:
    release = trio.Event()

    async def slow(asked: Asked) -> Reply:
        await release.wait()
        return 200, []

    async def main() -> None:
        annotations = auth_url(proxy_read_timeout="300ms")
        async with serving(annotations, slow) as setup, setup.client() as client:
            started = trio.current_time()
            response = await client.get("/")
            took = trio.current_time() - started
            release.set()
            assert response.status_code == 500
            assert 0.25 < took < 3.0
            assert setup.backend.connections == 0
            # the late answer is never read: its connection was closed, not kept
            await wait_for(lambda: setup.auth.closed == 1, "the slow connection to close")
            assert (await client.get("/")).status_code == 200
            assert setup.auth.connections == 2

    run(main)


@pytest.mark.parametrize("status", [500, 502, 404, 302, 400])
@pytest.mark.e2e
def test_any_other_status_from_the_auth_service_is_a_500(status: int) -> None:
    async def main() -> None:
        async with serving(auth_url(), answering(status)) as setup, setup.client() as client:
            response = await client.get("/")
            assert response.status_code == 500
            assert setup.backend.connections == 0

    run(main)


@pytest.mark.e2e
def test_connections_to_the_auth_service_are_kept_alive() -> None:
    async def main() -> None:
        async with serving(auth_url()) as setup, setup.client() as client:
            for _ in range(5):
                assert (await client.get("/")).status_code == 200
            assert len(setup.auth.asked) == 5
            assert setup.auth.connections == 1

    run(main)


@pytest.mark.e2e
def test_auth_keepalive_zero_opens_a_connection_per_request() -> None:
    async def main() -> None:
        async with serving(auth_url(auth_keepalive="0")) as setup, setup.client() as client:
            for _ in range(3):
                assert (await client.get("/")).status_code == 200
            assert setup.auth.connections == 3

    run(main)


@pytest.mark.e2e
def test_auth_proxy_set_headers_sets_the_configmaps_headers_on_the_auth_request() -> None:
    headers = {
        "kind": "ConfigMap",
        "metadata": {"name": "auth-headers", "namespace": "default"},
        "data": {"X-Tenant": "shop"},
    }

    async def main() -> None:
        annotations = auth_url(auth_proxy_set_headers="auth-headers")
        async with serving(annotations, extra_objects=(headers,)) as setup:
            async with setup.client() as client:
                assert (await client.get("/", headers={"X-Tenant": "mallory"})).status_code == 200
            (asked,) = setup.auth.asked
            assert [v for k, v in asked.headers if k == "x-tenant"] == ["shop"]

    run(main)


@pytest.mark.e2e
def test_the_cache_answers_for_the_same_key_and_not_for_another() -> None:
    async def main() -> None:
        annotations = auth_url(auth_cache_key="$http_authorization", auth_cache_duration="200 1m")
        async with serving(annotations) as setup, setup.client() as client:
            for _ in range(3):
                response = await client.get("/", headers={"Authorization": "Bearer one"})
                assert response.status_code == 200
            assert len(setup.auth.asked) == 1
            await client.get("/", headers={"Authorization": "Bearer two"})
            assert len(setup.auth.asked) == 2

    run(main)


@pytest.mark.e2e
def test_a_cached_answer_expires() -> None:
    async def main() -> None:
        annotations = auth_url(auth_cache_key="fixed", auth_cache_duration="200 401 200ms")
        async with serving(annotations) as setup, setup.client() as client:
            assert (await client.get("/")).status_code == 200
            assert (await client.get("/")).status_code == 200
            assert len(setup.auth.asked) == 1

            async def asks_again() -> bool:
                await client.get("/")
                return len(setup.auth.asked) > 1

            with trio.move_on_after(DEADLINE):
                while not await asks_again():
                    await trio.sleep(0.05)
            assert len(setup.auth.asked) == 2

    run(main)


@pytest.mark.e2e
def test_no_cache_key_no_cache() -> None:
    async def main() -> None:
        annotations = auth_url(auth_cache_duration="200 10m")
        async with serving(annotations) as setup, setup.client() as client:
            for _ in range(3):
                await client.get("/")
            assert len(setup.auth.asked) == 3

    run(main)


@pytest.mark.e2e
def test_a_cached_401_still_redirects_to_signin_for_each_request() -> None:
    async def main() -> None:
        annotations = auth_url(
            auth_cache_key="$cookie_session", auth_signin="https://login.example/"
        )
        async with serving(annotations, answering(401)) as setup, setup.client() as client:
            first = await client.get("/one", headers={"Cookie": "session=x"})
            second = await client.get("/two", headers={"Cookie": "session=x"})
            assert len(setup.auth.asked) == 1
            assert first.headers["location"].endswith("%2Fone")
            assert second.headers["location"].endswith("%2Ftwo")

    run(main)


@pytest.mark.e2e
def test_the_auth_cookie_reaches_the_client_only_on_a_success_unless_always_set() -> None:
    """As ingress-nginx's e2e "user retains cookie by default" / "does not retain cookie if
    upstream returns error status code" / "with auth-always-set-cookie retains it"."""

    async def by_path(connection: BackendConnection, request: RawRequest) -> None:
        status = 503 if request.target.startswith(b"/error") else 200
        await connection.send(raw_response(b"page", status))

    decide = answering(200, ("Set-Cookie", "alma=armud"), ("Set-Cookie", "b=2"))

    async def main() -> None:
        async with (
            serving(auth_url(), decide, backend_service=RawBackend(by_path)) as setup,
            setup.client() as client,
        ):
            ok = await client.get("/")
            assert ok.status_code == 200
            assert ok.headers.get_list("set-cookie") == ["alma=armud", "b=2"]
            error = await client.get("/error")
            assert error.status_code == 503
            assert "set-cookie" not in error.headers
        always = auth_url(auth_always_set_cookie="true")
        async with (
            serving(always, decide, backend_service=RawBackend(by_path)) as setup,
            setup.client() as client,
        ):
            error = await client.get("/error")
            assert error.status_code == 503
            assert error.headers.get_list("set-cookie") == ["alma=armud", "b=2"]

    run(main)


@pytest.mark.e2e
def test_a_route_without_auth_is_not_asked_about() -> None:
    async def main() -> None:
        async with serving(auth_url(), answering(403), extra_paths=("/open",)) as setup:
            async with setup.client() as client:
                assert (await client.get("/open/page")).status_code == 200
                assert (await client.get("/closed")).status_code == 403
            assert len(setup.auth.asked) == 1
            assert setup.auth.asked[0].header("x-original-url") == f"http://{HOST}/closed"

    run(main)


@pytest.mark.e2e
def test_global_auth_url_protects_every_ingress_unless_it_opts_out() -> None:
    def configmap(port: int) -> dict[str, str]:
        return {
            "global-auth-url": f"http://127.0.0.1:{port}/global",
            "global-auth-response-headers": "X-User",
            "global-auth-signin": "https://login.example/",
        }

    async def main() -> None:
        decide = answering(200, ("X-User", "bob"))
        async with serving(lambda _: {}, decide, configmap) as setup, setup.client() as client:
            assert received(await client.get("/"))["x-user"] == "bob"
            assert setup.auth.asked[0].target == "/global"

        opt_out = {N + "enable-global-auth": "false"}
        async with serving(lambda _: opt_out, decide, configmap) as setup:
            async with setup.client() as client:
                assert "x-user" not in received(await client.get("/"))
            assert setup.auth.asked == []

    run(main)


@pytest.mark.e2e
def test_global_auth_signin_redirects_a_401_with_its_own_parameter() -> None:
    def configmap(port: int) -> dict[str, str]:
        return {
            "global-auth-url": f"http://127.0.0.1:{port}/global",
            "global-auth-signin": "https://login.example/start",
            "global-auth-signin-redirect-param": "back",
        }

    async def main() -> None:
        async with (
            serving(lambda _: {}, answering(401), configmap) as setup,
            setup.client() as client,
        ):
            response = await client.get("/cart")
            assert response.status_code == 302
            assert response.headers["location"] == (
                f"https://login.example/start?back=http://{HOST}%2Fcart"
            )

    run(main)


@pytest.mark.e2e
def test_an_ingress_auth_url_wins_over_the_global_one() -> None:
    def configmap(port: int) -> dict[str, str]:
        return {"global-auth-url": f"http://127.0.0.1:{port}/global"}

    async def main() -> None:
        async with serving(auth_url("/own"), configmap=configmap) as setup:
            async with setup.client() as client:
                assert (await client.get("/")).status_code == 200
            assert [a.target for a in setup.auth.asked] == ["/own"]

    run(main)


@pytest.mark.e2e
def test_no_auth_locations_skips_global_auth_for_those_paths() -> None:
    def configmap(port: int) -> dict[str, str]:
        return {
            "global-auth-url": f"http://127.0.0.1:{port}/global",
            "no-auth-locations": "/.well-known/acme-challenge, /public",
        }

    async def main() -> None:
        async with (
            serving(lambda _: {}, answering(403), configmap, extra_paths=("/public",)) as setup,
            setup.client() as client,
        ):
            assert (await client.get("/public/x")).status_code == 200
            assert (await client.get("/")).status_code == 403

    run(main)


@pytest.mark.e2e
def test_a_malformed_global_auth_url_fails_every_route_closed() -> None:
    async def main() -> None:
        async with serving(
            lambda _: {}, configmap=lambda _: {"global-auth-url": "ftp://x/"}
        ) as setup:
            async with setup.client() as client:
                response = await client.get("/")
            assert response.status_code == 503
            assert setup.backend.connections == 0

    run(main)


@pytest.mark.parametrize(
    "annotations",
    [
        {N + "auth-url": "not a url"},
        {N + "auth-url": "http:///no-host"},
        {N + "auth-url": "http://auth.example/$request_body"},
        {N + "auth-url": "http://$http_x_target/auth"},
        {N + "auth-url": "http://user:secret@auth.example/"},
        {N + "auth-url": "http://auth.example/", N + "auth-method": "FETCH"},
        {N + "auth-url": "http://auth.example/", N + "auth-cache-duration": "5m 200"},
        {N + "auth-url": "http://auth.example/", N + "auth-response-headers": "X-User:"},
        {N + "auth-url": "http://auth.example/", N + "auth-signin": "https://x/$nope"},
        {N + "auth-url": "http://auth.example/", N + "auth-signin": "login.example/start"},
    ],
)
@pytest.mark.e2e
def test_a_malformed_auth_annotation_fails_its_ingress_closed(annotations: dict[str, str]) -> None:
    async def main() -> None:
        async with serving(lambda _: annotations) as setup, setup.client() as client:
            response = await client.get("/")
            assert response.status_code == 503
            assert setup.backend.connections == 0
            assert setup.auth.asked == []

    run(main)


@pytest.mark.e2e
def test_auth_metrics_count_outcomes_and_time_subrequests() -> None:
    async def main() -> None:
        annotations = auth_url(auth_cache_key="$http_authorization")
        async with serving(annotations) as setup, setup.client() as client:
            for _ in range(3):
                await client.get("/", headers={"Authorization": "Bearer a"})
            assert setup.proxy.metrics is not None
            text = setup.proxy.metrics.text().decode()
        assert (
            'fastroute_auth_requests_total{cached="false",ingress="default/site",'
            'outcome="allowed"} 1.0' in text
        )
        assert (
            'fastroute_auth_requests_total{cached="true",ingress="default/site",'
            'outcome="allowed"} 2.0' in text
        )
        assert 'fastroute_auth_request_duration_seconds_count{ingress="default/site"} 1.0' in text

    run(main)


# -- by parts ---------------------------------------------------------------------------


def test_cache_duration_reads_nginx_proxy_cache_valid_entries() -> None:
    assert read_cache_duration("200 202 10m, 401 1m30s") == (
        CacheRule(frozenset({200, 202}), 600.0),
        CacheRule(frozenset({401}), 90.0),
    )
    assert read_cache_duration("5m") == (CacheRule(frozenset({200, 301, 302}), 300.0),)
    assert read_cache_duration("any 500ms")[0].covers(503)


@pytest.mark.parametrize("text", ["", "200", "5m 200", "2000 5m", "200 5 minutes", "abc 5m"])
def test_cache_duration_refuses_what_nginx_would(text: str) -> None:
    with pytest.raises(ValueError, match=repr(text) if text else "expected"):
        read_cache_duration(text)


def test_templates_expand_the_request_variables() -> None:
    request = Request(
        b"GET",
        b"/a b/c?x=1&y=two",
        b"Site.Example.com:8080",
        "https",
        "192.0.2.7",
        (
            (b"host", b"Site.Example.com:8080"),
            (b"cookie", b"a=1; session=s3"),
            (b"authorization", b"Basic dXNlcjpwYXNz"),
            (b"x-team", b"blue"),
        ),
    )
    template = read_template(
        "$scheme|$host|$http_host|$request_uri|$escaped_request_uri|$uri|$args|$is_args|"
        "$remote_addr|$remote_user|$cookie_session|$arg_y|${http_x_team}|$request_method"
    )
    assert template.expand(request.variable).split("|") == [
        "https",
        "site.example.com",
        "Site.Example.com:8080",
        "/a b/c?x=1&y=two",
        "%2Fa%20b%2Fc%3Fx%3D1%26y%3Dtwo",
        "/a b/c",
        "x=1&y=two",
        "?",
        "192.0.2.7",
        "user",
        "s3",
        "two",
        "blue",
        "GET",
    ]


@pytest.mark.parametrize("text", ["$request_body", "$upstream_addr", "a$", "$http_"])
def test_templates_refuse_variables_fastroute_does_not_expand(text: str) -> None:
    with pytest.raises(ValueError, match="variable"):
        read_template(text)


def test_the_signin_url_is_built_as_ingress_nginx_builds_it() -> None:
    def signin(**annotations: str) -> str:
        values = {N + "auth-url": "http://auth/"}
        values.update({N + k.replace("_", "-"): v for k, v in annotations.items()})
        policy, _ = read_policy(values)
        assert policy.external_auth is not None
        assert policy.external_auth.signin is not None
        return policy.external_auth.signin.text

    tail = "$pass_access_scheme://$http_host$escaped_request_uri"
    assert signin(auth_signin="https://l/start") == f"https://l/start?rd={tail}"
    assert signin(auth_signin="https://l/start?a=1") == f"https://l/start?a=1&rd={tail}"
    assert signin(auth_signin="https://l/?rd=/home") == "https://l/?rd=/home"
    assert signin(auth_signin="/oauth2/start") == f"/oauth2/start?rd={tail}"
    assert signin(auth_signin="$scheme://$host/in") == f"$scheme://$host/in?rd={tail}"
    assert signin(auth_signin="https://l/", auth_signin_redirect_param="next") == (
        f"https://l/?next={tail}"
    )


def test_global_auth_is_read_from_the_settings_and_enable_global_auth_opts_out() -> None:
    settings = Settings(global_auth_url="http://auth.example/check", global_auth_method="GET")
    policy, _ = read_policy({}, settings)
    assert isinstance(policy.external_auth, ExternalAuth)
    assert policy.external_auth.origin == "global-auth-url"
    assert policy.external_auth.method == "GET"
    assert policy.gated
    policy, notes = read_policy({N + "enable-global-auth": "false"}, settings)
    assert policy.external_auth is None
    assert not policy.gated
    assert notes == []
    policy, _ = read_policy({N + "enable-global-auth": "false"})
    assert policy.plain  # without a global auth the annotation changes nothing


def test_a_malformed_cache_duration_is_named_in_the_refusal() -> None:
    annotations = {
        N + "auth-url": "http://auth/",
        N + "auth-cache-key": "$remote_addr",
        N + "auth-cache-duration": "200 soon",
    }
    policy, notes = read_policy(annotations)
    assert policy.refused.startswith(N + "auth-cache-duration is malformed")
    assert [(key, warning) for key, _, warning in notes] == [(N + "auth-cache-duration", False)]


def test_auth_annotations_without_auth_url_are_reported_unused() -> None:
    policy, notes = read_policy({N + "auth-signin": "https://login/"})
    assert policy.external_auth is None
    assert not policy.refused
    assert notes == [(N + "auth-signin", "has no effect without auth-url; ignored", True)]


def test_the_auth_cache_forgets_expired_and_least_recently_used_answers() -> None:
    cache = AuthCache(size=2)
    allowed = Outcome(200)
    cache.put("a", allowed, expires=10.0)
    cache.put("b", allowed, expires=10.0)
    assert cache.get("a", now=1.0) is allowed  # "a" is now the most recently used
    cache.put("c", allowed, expires=10.0)
    assert cache.get("b", now=1.0) is None
    assert cache.get("a", now=1.0) is allowed
    assert cache.get("c", now=10.0) is None  # expired
    assert len(cache) == 1
