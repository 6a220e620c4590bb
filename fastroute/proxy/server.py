"""The trio server: ``Proxy``, the facade over the parts of the proxy that touch sockets.

The parts, one job each, sharing one ``ProxyState`` (``state``):

- ``accepting``: listening sockets' accept loop, connection slots, the TLS handshake;
- ``http1``: one HTTP/1 client connection: heads, ``decide``, request bodies, answers;
- ``forwarding``: the upstream side: endpoints tried in turn, the exchange, the relay
  back, tunnels. It sees the client only as a ``forwarding.ClientSide``.
- ``passthrough``: TLS connections whose SNI names an ``ssl-passthrough`` host, relayed
  undecrypted (``accepting`` hands them over before any TLS is done).

``Proxy`` wires them together, starts one watchdog and one pool sweeper per proxy, and
offers ``swap``/``load`` (the RouteConfig in use) and ``drain``.

Each request uses the RouteConfig that was current when its head arrived. ``swap``
replaces the reference for the requests that come after; requests in flight and open
tunnels finish on the config they started with. What left with the old config is
forgotten then (its metrics series, round-robin turns, endpoint health, EWMA readings),
read from the new config's ``InUse`` (what left since the builder's previous config, else
the differences of the two configs' sets), not by walking their routes.

Timeouts cost one float per phase: each connection records when its current phase
expires, and the watchdog cancels the connections past theirs, a few times per shortest
timeout (registering a trio deadline per read costs more than the read).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from fastroute.ingress.in_use import departed, in_use_of
from fastroute.ingress.model import InUse, RouteConfig
from fastroute.proxy.accepting import Acceptor
from fastroute.proxy.forwarding import Forwarder
from fastroute.proxy.gate import Gate
from fastroute.proxy.headers import TrustedProxies
from fastroute.proxy.heap import settle
from fastroute.proxy.http1 import Http1
from fastroute.proxy.listener import listening_sockets as _listening_sockets
from fastroute.proxy.plain_loop import PlainLoop
from fastroute.proxy.state import Limits, Phase, ProxyState
from fastroute.proxy.tls import TLSContexts

if TYPE_CHECKING:
    from fastroute.proxy.metrics import Metrics

__all__ = ["Limits", "Proxy"]

SWEEP_INTERVAL = 5.0  # seconds between closing upstream connections idle too long


class Proxy:
    """Serves one RouteConfig at a time over HTTP and HTTPS (``serve``), swapped with ``swap``.

    Args:
        config: the first RouteConfig, or None: then every request is answered 503 until
            ``swap`` installs one (``ready`` says which).
        limits: sizes and timeouts.
        trusted: peers whose X-Forwarded-* headers are believed, unless the config's
            settings say who the client is (``use-forwarded-headers``, ``enable-real-ip``:
            ``real_ip``), which they then decide alone.
        tls: certificates for HTTPS listeners (SNI picks one; else the default).
        https_redirect_port: where HTTP-to-HTTPS redirects point (clients see it: behind a
            load balancer that maps 443 to the HTTPS listener, leave it at 443).
        metrics: where requests, upstream errors and their latency are counted.
    """

    def __init__(
        self,
        config: RouteConfig | None = None,
        *,
        limits: Limits | None = None,
        trusted: TrustedProxies | None = None,
        tls: TLSContexts | None = None,
        https_redirect_port: int = 443,
        metrics: Metrics | None = None,
    ) -> None:
        if config is not None and tls is not None:
            tls.install(config)
        state = self._state = ProxyState(
            config,
            limits or Limits(),
            trusted or TrustedProxies(),
            tls,
            https_redirect_port,
            metrics,
        )
        self.tls = tls
        self.limits = state.limits
        self.trusted = state.trusted
        self.metrics = metrics
        self._forwarder = Forwarder(state)
        self.balancer = self._forwarder.balancer
        self.pool = self._forwarder.pool
        self.gate = Gate(state)  # the access checks that wait (auth)
        self._http1 = Http1(state, self._forwarder, self.gate)
        self._acceptor = Acceptor(state, self._http1)
        self.passthrough = self._acceptor.passthrough  # ssl-passthrough relays
        self._listeners: list[trio.SocketListener] = []
        self._housekeeping = False
        self._in_use: InUse | None = None  # what the config in use routes to
        if config is not None:
            self._use_settings(config)
            self._forget_departed(config)
            settle()

    @property
    def config(self) -> RouteConfig | None:
        return self._state.config

    @property
    def ready(self) -> bool:
        """Whether requests can be served: a config is loaded and no drain has begun."""
        return self._state.config is not None and not self._state.draining

    @property
    def plain_loop(self) -> PlainLoop | None:
        """The task serving the plain requests of idle connections, while ``serve`` runs."""
        return self._http1.loop

    @property
    def https_redirect_port(self) -> int:
        """Where HTTP-to-HTTPS redirects point; a change applies from the next request."""
        return self._state.https_redirect_port

    @https_redirect_port.setter
    def https_redirect_port(self, port: int) -> None:
        self._state.https_redirect_port = port

    def swap(self, config: RouteConfig) -> None:
        """Serve ``config`` from the next request on; requests in flight keep theirs.

        Its certificates are loaded here, synchronously; ``load`` does that part in a
        worker thread, which is what a running proxy should use.
        """
        if self.tls is not None:
            self.tls.install(config)
        self._use_settings(config)
        self._state.config = config
        self._forget_departed(config)
        settle()

    async def load(self, config: RouteConfig) -> None:
        """``swap``, with the certificates loaded off the event loop.

        Both references change in one step of the event loop, after the await: no
        handshake or request can see the new certificates with the old config, or the
        other way round.
        """
        if self.tls is not None:
            prepared = await trio.to_thread.run_sync(self.tls.prepare, config)
            self.tls.use(prepared)
        self._use_settings(config)
        self._state.config = config
        self._forget_departed(config)
        settle()

    def _use_settings(self, config: RouteConfig) -> None:
        """The upstream pool's size and idle time from the config's settings
        (``upstream-keepalive-connections``: 0 keeps none; ``upstream-keepalive-timeout``).
        """
        settings = config.settings
        pool = self.pool
        pool.max_idle = max(settings.upstream_keepalive_connections, 0)
        if settings.upstream_keepalive_timeout > 0:
            pool.idle_timeout = settings.upstream_keepalive_timeout
        else:
            pool.max_idle = 0  # no idle time: nothing is kept

    def _forget_departed(self, config: RouteConfig) -> None:
        """Forget the backends and endpoints the previous config used and ``config`` does
        not, and tell the metrics which configuration is served."""
        self._http1.plain_plans.forget()  # made under the previous config, and holding it
        in_use = in_use_of(config)
        before, self._in_use = self._in_use, in_use
        if before is in_use:
            return
        gone = None if before is None else departed(before, in_use)
        if gone is not None:
            self.balancer.forget(gone.endpoints, gone.backends)
            self._forwarder.chooser.forget(gone.endpoints)
        if self.metrics is not None:
            self.metrics.configure(config.ingresses, in_use, gone)

    async def serve(
        self,
        host: str,
        port: int,
        *,
        scheme: str = "http",
        reuse_port: bool = False,
        task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept connections on ``host:port`` (0: an ephemeral port) until cancelled.

        ``scheme="https"`` terminates TLS (the proxy needs ``tls``). ``reuse_port`` lets
        several processes listen on the same port (SO_REUSEPORT), the kernel spreading
        connections among them. ``task_status.started`` gets the listeners, so a caller
        learns the bound port: ``listeners = await nursery.start(proxy.serve, "127.0.0.1", 0)``.
        """
        if scheme == "https" and self.tls is None:
            raise ValueError("an https listener needs the proxy's tls contexts")
        sockets = _listening_sockets(host, port, reuse_port=reuse_port)
        listeners = [trio.SocketListener(trio.socket.from_stdlib_socket(s)) for s in sockets]
        self._listeners.extend(listeners)
        async with trio.open_nursery() as nursery:
            if not self._housekeeping:  # one watchdog and sweeper for all listeners
                self._housekeeping = True
                nursery.start_soon(self._watchdog)
                nursery.start_soon(self._sweep_pool)
                nursery.start_soon(self._http1.run_plain_loop)
            for sock in sockets:
                nursery.start_soon(self._acceptor.accept, sock, scheme, nursery)
            task_status.started(listeners)

    async def drain(self, grace: float) -> None:
        """Stop taking connections and let the ones open finish, for up to ``grace`` s.

        ``ready`` turns False at once. Idle keep-alive connections close now; the others
        close after the response in flight (with ``Connection: close``); ssl-passthrough
        relays when their client or backend closes. Returns when none are left or the grace
        period ends; then the caller cancels what runs ``serve``.
        """
        self._state.draining = True
        for listener in self._listeners:
            await listener.aclose()
        http1 = self._http1
        for connection in list(http1.open):
            if connection.phase is Phase.IDLE:
                connection.scope.cancel()
        with trio.move_on_after(grace):
            if http1.open:
                await http1.all_closed.wait()
            if self.passthrough.open:  # relays end when their client or backend closes
                await self.passthrough.all_closed.wait()
        for upstream in self.pool.drain():
            upstream.channel.close()
        self.gate.close()

    async def _watchdog(self) -> None:
        """Cancel the connections whose phase has lasted past its timeout, and the ones
        whose client left while their request was upstream. It looks a few times per
        shortest timeout in use, a route's own included (``ProxyState.tick``).

        nginx notices a client's close while it waits for the upstream and gives the
        upstream request up; so does this, within two ticks: otherwise clients that send a
        request to a slow endpoint and reset would keep their slot and an upstream
        connection until ``upstream_timeout``. Only requests upstream since before the
        last tick are looked at (a system call each): under load nearly every request in
        flight is younger, and looking at them all made the watchdog's cost grow with the
        number of connections.
        """
        open_connections = self._http1.open
        state = self._state
        while True:
            with trio.move_on_after(state.tick):
                await state.tick_shortened.wait()
            if state.tick_shortened.is_set():
                state.tick_shortened = trio.Event()
            now = trio.current_time()
            waiting_since = now - state.tick  # upstream since before this: look at the client
            for connection in list(open_connections):
                if connection.expires <= now:
                    connection.scope.cancel()
                elif (
                    connection.phase is Phase.UPSTREAM
                    and connection.started < waiting_since
                    and connection.channel.peer_gone()
                ):
                    connection.client_left = True
                    connection.scope.cancel()
            metrics = self.metrics
            if metrics is not None and metrics.in_files:
                metrics.flush()  # other processes read the counts from the files

    async def _sweep_pool(self) -> None:
        """Close upstream connections that sat idle past the pool's timeout."""
        while True:
            # upstream-keepalive-timeout may be short: closed within half of it
            await trio.sleep(min(SWEEP_INTERVAL, self.pool.idle_timeout / 2))
            for old in self.pool.sweep(now=trio.current_time()):
                old.channel.close()
