"""What the parts of the proxy share: its limits, the config in use, the phases of a client.

``Proxy`` (``server``) owns one ``ProxyState``; the accept loop (``accepting``), the
HTTP/1 front end (``http1``) and the upstream side (``forwarding``) each keep a
reference to it, so a ``swap`` or a ``drain`` is seen by all of them at once.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from fastroute.ingress.model import Endpoint, RouteConfig
    from fastroute.proxy.headers import TrustedProxies
    from fastroute.proxy.metrics import Metrics
    from fastroute.proxy.tls import TLSContexts

__all__ = ["CONNECTION_FAILURES", "ClientGoneError", "Limits", "Phase", "ProxyState"]

# A connection (client or upstream) that broke: the exchange cannot go on on it.
CONNECTION_FAILURES = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)


class ClientGoneError(Exception):
    """The client's connection broke, or must close: nothing more can be sent to it."""


@dataclass(frozen=True)
class Limits:
    """Every limit the proxy enforces, with defaults close to nginx's."""

    max_head_bytes: int = 32 * 1024  # request line and headers: 431 beyond
    max_body_bytes: int = 100 * 1024 * 1024  # request body: 413 beyond
    # to receive a request head: 408 beyond; also how long a new connection may stay
    # silent (between requests, the keep-alive setting applies)
    head_timeout: float = 60.0
    connect_timeout: float = 5.0  # to connect to an endpoint: the next one is tried
    upstream_timeout: float = 60.0  # between reads from an upstream: 504 beyond
    # client connections open at once; at the limit the idle ones close to make room,
    # else more wait in the kernel's backlog (not accepted)
    max_connections: int = 10_000
    # A request body must average this many bytes per second once BODY_RATE_GRACE
    # (``http1``) has passed (0: no minimum), so a client trickling a body cannot hold
    # an upstream connection for as long as it likes: 408 beyond.
    min_body_rate: int = 1024

    def __post_init__(self) -> None:
        for name in ("max_head_bytes", "max_body_bytes", "max_connections"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.min_body_rate < 0:
            raise ValueError(f"min_body_rate must be 0 or more, got {self.min_body_rate}")
        for name in ("head_timeout", "connect_timeout", "upstream_timeout"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive number of seconds, got {value}")


class Phase(enum.Enum):
    """Where a client connection is: what a passed deadline means there."""

    IDLE = "idle"  # between requests: close quietly
    HEAD = "head"  # part of a head received: 408
    BODY = "body"  # reading the request body: 408
    AUTH = "auth"  # waiting for access checks (gate.py): 500, never a pass
    UPSTREAM = "upstream"  # waiting for the upstream: 504 (if nothing was answered yet)
    RESPONSE = "response"  # relaying: the response is cut off


class ProxyState:
    """The settings and switches every part of one proxy reads.

    ``config``, ``https_redirect_port`` and ``draining`` change while the proxy runs, so
    the parts read them here each time; the others are fixed for the proxy's life.
    """

    __slots__ = (
        "config",
        "draining",
        "https_redirect_port",
        "limits",
        "metrics",
        "tick",
        "tick_shortened",
        "tls",
        "trusted",
    )

    def __init__(
        self,
        config: RouteConfig | None,
        limits: Limits,
        trusted: TrustedProxies,
        tls: TLSContexts | None,
        https_redirect_port: int,
        metrics: Metrics | None,
    ) -> None:
        self.config = config
        self.limits = limits
        self.trusted = trusted
        self.tls = tls
        self.https_redirect_port = https_redirect_port
        self.metrics = metrics
        self.draining = False  # drain has begun: no new connections, no keep-alive
        # how often the watchdog looks for passed deadlines: a quarter of the shortest
        # timeout in use, at most half a second
        self.tick = min(0.5, limits.head_timeout / 4, limits.upstream_timeout / 4)
        # set when a route's timeout shortens ``tick``: the watchdog, which may be in the
        # middle of a longer sleep, looks at once (else a first request could be late)
        self.tick_shortened = trio.Event()

    def closes_after(self, head_keeps_alive: bool) -> bool:
        """Whether a client connection closes after the response to a request that asked
        to keep it (``head_keeps_alive``) or not: a drain, or ``keep-alive: 0``, closes it."""
        config = self.config
        return (
            not head_keeps_alive
            or self.draining
            or (config is not None and config.settings.keep_alive <= 0)
        )

    def keep_alive(self, told: float) -> tuple[float, float] | None:
        """How long an idle client connection stays open under the config in force (0:
        it closes after each response, which said so), and the keep-alive timeout the
        watchdog has been told of (``told``: the one it was told of before); None while
        there is no config. Read, not held: an idle connection keeps no config alive."""
        config = self.config
        if config is None:
            return None
        idle = config.settings.keep_alive
        if idle > 0 and idle != told:
            self.shortest_timeout(idle)
            told = idle
        return idle, told

    def shortest_timeout(self, seconds: float) -> None:
        """A route uses a timeout of ``seconds``: the watchdog must look often enough."""
        if seconds / 4 < self.tick:
            self.tick = max(seconds / 4, 0.01)
            self.tick_shortened.set()

    def upstream_error(self, service: str, endpoint: Endpoint, reason: str) -> None:
        """Count an exchange with ``endpoint`` that failed (``reason``: connect, broken...)."""
        if self.metrics is not None:
            self.metrics.upstream_error(service, endpoint, reason)
