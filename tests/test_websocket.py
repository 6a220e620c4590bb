"""WebSocket through the proxy: a real backend and a real client (the websockets library).

The backend is the websockets library's threaded server; the client its sync client in
a worker thread; the proxy runs in the test's trio loop. An upgrade that the upstream
accepts (101) becomes a byte tunnel that lives on across config swaps; one it declines
is relayed as an ordinary response.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import trio
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect
from websockets.sync.server import Server, ServerConnection, serve

from fastroute.ingress import build_config
from fastroute.ingress.model import RouteConfig
from fastroute.proxy.server import Proxy
from tests.echo import Echo
from tests.objects import endpoint_slice, service
from tests.polling import DEADLINE
from tests.polling import run_within as run

pytestmark = pytest.mark.e2e


def _echo_messages(websocket: ServerConnection) -> None:
    """Echo every message; say which path and client address the upgrade carried."""
    request = websocket.request
    assert request is not None
    websocket.send(f"hello {request.path} for {request.headers.get('X-Forwarded-For')}")
    try:
        for message in websocket:
            if message == "bye":
                websocket.close(code=1000, reason="server says bye")
                return
            websocket.send(message)
    except ConnectionClosed:
        return


@contextmanager
def websocket_backend() -> Iterator[int]:
    server: Server = serve(_echo_messages, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.socket.getsockname()[1]
    finally:
        server.shutdown()
        thread.join(DEADLINE)


def _config(routes: dict[str, int]) -> RouteConfig:
    """Host-less Prefix routes: path -> a Service on 127.0.0.1:port."""
    objects: list[dict[str, Any]] = []
    paths = []
    for index, (path, port) in enumerate(routes.items()):
        name = f"svc{index}"
        objects += [service(name), endpoint_slice(name, port, name=name)]
        paths.append(
            {
                "path": path,
                "pathType": "Prefix",
                "backend": {"service": {"name": name, "port": {"number": 80}}},
            }
        )
    objects.append(
        {
            "kind": "Ingress",
            "metadata": {"name": "ws"},
            "spec": {"ingressClassName": "fastroute", "rules": [{"http": {"paths": paths}}]},
        }
    )
    return build_config(objects)


@dataclass
class Running:
    proxy: Proxy
    port: int

    async def in_thread(self, work: Any) -> Any:
        return await trio.to_thread.run_sync(work)


@asynccontextmanager
async def proxy_for(config: RouteConfig) -> AsyncIterator[Running]:
    async with trio.open_nursery() as nursery:
        proxy = Proxy(config)
        listeners = await nursery.start(proxy.serve, "127.0.0.1", 0)
        yield Running(proxy, listeners[0].socket.getsockname()[1])
        nursery.cancel_scope.cancel()


def test_messages_are_tunnelled_both_ways() -> None:
    with websocket_backend() as ws_port:

        async def scenario() -> None:
            async with proxy_for(_config({"/chat": ws_port})) as running:

                def talk() -> list[str | bytes]:
                    url = f"ws://127.0.0.1:{running.port}/chat/room1"
                    with connect(url, open_timeout=DEADLINE) as ws:
                        got = [ws.recv(timeout=DEADLINE)]
                        ws.send("text message")
                        got.append(ws.recv(timeout=DEADLINE))
                        ws.send(b"\x00\x01binary" * 5000)  # larger than one read
                        got.append(ws.recv(timeout=DEADLINE))
                    return got

                greeting, text, binary = await running.in_thread(talk)
                assert greeting == "hello /chat/room1 for 127.0.0.1"
                assert text == "text message"
                assert binary == b"\x00\x01binary" * 5000

        run(scenario)


def test_an_open_websocket_survives_a_config_swap() -> None:
    with websocket_backend() as ws_port:

        async def scenario() -> None:
            async with proxy_for(_config({"/chat": ws_port})) as running:
                url = f"ws://127.0.0.1:{running.port}/chat"
                opened = trio.Event()
                swapped = threading.Event()
                token = trio.lowlevel.current_trio_token()

                def talk() -> str | bytes:
                    with connect(url, open_timeout=DEADLINE) as ws:
                        ws.recv(timeout=DEADLINE)
                        trio.from_thread.run_sync(opened.set, trio_token=token)
                        assert swapped.wait(DEADLINE)
                        ws.send("still here")
                        return ws.recv(timeout=DEADLINE)

                async with trio.open_nursery() as nursery:
                    result: list[str | bytes] = []

                    async def client() -> None:
                        result.append(await running.in_thread(talk))

                    nursery.start_soon(client)
                    await opened.wait()
                    running.proxy.swap(_config({"/other": ws_port}))  # /chat is gone
                    swapped.set()
                assert result == ["still here"]

                def new_connection() -> int:
                    try:
                        with connect(url, open_timeout=DEADLINE):
                            return 101
                    except InvalidStatus as refused:
                        return refused.response.status_code

                assert await running.in_thread(new_connection) == 404

        run(scenario)


def test_a_backend_closing_the_websocket_closes_the_client() -> None:
    with websocket_backend() as ws_port:

        async def scenario() -> None:
            async with proxy_for(_config({"/": ws_port})) as running:

                def talk() -> tuple[int | None, str | None]:
                    with connect(f"ws://127.0.0.1:{running.port}/", open_timeout=DEADLINE) as ws:
                        ws.recv(timeout=DEADLINE)
                        ws.send("bye")
                        with pytest.raises(ConnectionClosed) as closed:
                            ws.recv(timeout=DEADLINE)
                        frame = closed.value.rcvd
                        return (frame.code, frame.reason) if frame else (None, None)

                assert await running.in_thread(talk) == (1000, "server says bye")

        run(scenario)


def test_an_upgrade_the_backend_declines_is_an_ordinary_response() -> None:
    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            plain = Echo("plain")  # an HTTP backend that knows nothing of WebSocket
            port = await nursery.start(plain.serve)
            async with proxy_for(_config({"/": port})) as running:

                def upgrade() -> httpx.Response:
                    with httpx.Client(trust_env=False, timeout=DEADLINE) as client:
                        return client.get(
                            f"http://127.0.0.1:{running.port}/x",
                            headers={"connection": "upgrade", "upgrade": "websocket"},
                        )

                response = await running.in_thread(upgrade)
                assert response.status_code == 200
                seen = dict(response.json()["headers"])
                assert seen["upgrade"] == "websocket"  # asked upstream again, explicitly
                assert seen["connection"] == "upgrade"
            nursery.cancel_scope.cancel()

    run(scenario)
