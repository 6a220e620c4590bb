"""The listening side's small parts: sockets, accept errors, reserve descriptors, log throttling.

Shared by the traffic listeners (``server.Proxy``) and the status listener of an application
(the controller's ``/healthz``, ``/readyz``, ``/metrics``):

- ``listening_sockets``: bound, non-blocking listening sockets for a host and port.
- ``AcceptBackoff``: what to do when ``accept()`` fails. Some errors belong to one
  connection that went away before it was accepted (retry at once); the others
  (``EMFILE``, ``ENFILE``, ``ENOBUFS``, ``ENOMEM``: the process or the system is out of
  descriptors or memory) would fail again at once, so the listener pauses, longer while
  the failures go on (as nginx stops accepting for a while on ``EMFILE``), with one log
  line when an episode starts, a reminder a minute and one when accepting works again,
  instead of a line per attempt.
- ``ReserveDescriptors``: a few descriptors held open so a listener that must keep answering
  at the descriptor limit (the status port: liveness probes) can close one and accept.
  This is the "idle descriptor" trick of libev and Node.js, used for probes rather than to
  turn clients away.
- ``LogThrottle``: at most one line per interval for an event a client can cause at will.
- ``warn_about_descriptor_limit``: nginx's "worker_connections exceed open file resource
  limit" warning, for ``--max-connections``.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import resource
import socket
import time
from collections.abc import Callable

__all__ = [
    "DESCRIPTOR_ERRORS",
    "AcceptBackoff",
    "LogThrottle",
    "ReserveDescriptors",
    "error_name",
    "listening_sockets",
    "warn_about_descriptor_limit",
]

# accept() fails with these while the process (EMFILE) or the system (ENFILE) is out of
# descriptors: closing a descriptor of ours lets the next accept() through
DESCRIPTOR_ERRORS = frozenset({errno.EMFILE, errno.ENFILE})

# accept(2) on Linux: "already-pending network errors on the new socket" and a connection
# reset before it was accepted are reported by accept(); the next accept works.
# (EPERM: a firewall rule refused that connection.)
_ONE_CONNECTION_ERRORS = frozenset(
    getattr(errno, name)
    for name in (
        "ECONNABORTED",
        "EPROTO",
        "EPERM",
        "EINTR",
        "ENETDOWN",
        "ENOPROTOOPT",
        "EHOSTDOWN",
        "ENONET",
        "EHOSTUNREACH",
        "EOPNOTSUPP",
        "ENETUNREACH",
    )
    if hasattr(errno, name)
)


def error_name(error: OSError) -> str:
    """The errno's symbolic name (``EMFILE``), for metrics labels and logs."""
    return errno.errorcode.get(error.errno or 0, "other")


def listening_sockets(host: str, port: int, *, reuse_port: bool = False) -> list[socket.socket]:
    """Bound, listening, non-blocking sockets for every address ``host`` names.

    ``host`` empty: every address (IPv4 and IPv6). ``reuse_port`` lets several processes
    listen on the same port (SO_REUSEPORT), the kernel spreading connections among them.
    """
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in infos:
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(socket.SOMAXCONN)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class LogThrottle:
    """At most one log line per ``interval`` seconds; the next one says how many were skipped.

    For events a client can cause as often as it likes (a bad TLS ClientHello, a flood of
    connections): each one is worth knowing about, a line per occurrence is a log flood.
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self._clock = clock
        self._next = -math.inf
        self.skipped = 0  # occurrences not logged since the last line

    def log(self, level: int, message: str, *args: object) -> bool:
        """Log ``message % args`` unless a line went out less than ``interval`` s ago."""
        now = self._clock()
        if now < self._next:
            self.skipped += 1
            return False
        self._next = now + self.interval
        if self.skipped:
            message += " (and %d more like it in the last %g s)"
            args = (*args, self.skipped, self.interval)
            self.skipped = 0
        self.logger.log(level, message, *args)
        return True


class AcceptBackoff:
    """What a listener does after ``accept()`` failed: retry at once, or pause; and its log.

    ``retry`` says whether to try again at once: yes for an error of one connection, up
    to ``MAX_RETRIES`` in a row (an error that does not consume the connection must not
    spin the event loop); else ``failed`` gives the pause.

    The pause doubles from ``first`` up to ``longest`` while accepts fail, and starts over
    after one works (descriptors are free again: take the waiting connections at once).

    Logging is per episode, not per attempt: one line when accepts start failing, a
    reminder every ``remind`` seconds while they go on, and one line once an accept works
    ``quiet`` seconds or more after the last failure. At the limit, every connection that
    closes lets one accept through before the next fails: that flapping is one episode.
    """

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        *,
        first: float = 0.01,
        longest: float = 1.0,
        quiet: float = 2.0,
        remind: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.what = what
        self.first = first
        self.longest = longest
        self.quiet = quiet
        self.remind = remind
        self._clock = clock
        self.failing = False  # in an episode of failures
        self.failures = 0  # in the current episode
        self._streak = 0  # failures since the last accept that worked: sets the pause
        self._since = self._last = self._logged = 0.0
        self._retries = 0  # one-connection errors in a row

    MAX_RETRIES = 64

    def retry(self, error: OSError) -> bool:
        """Whether to accept again at once: the error was one connection's."""
        if error.errno not in _ONE_CONNECTION_ERRORS or self._retries >= self.MAX_RETRIES:
            return False
        self._retries += 1
        return True

    def failed(self, error: OSError) -> float:
        """Record a failed accept; the seconds to pause before trying again."""
        now = self._clock()
        reason = error.strerror or str(error)
        if not self.failing:
            self.failing = True
            self.failures = 0
            self._since = self._logged = now
            self.logger.warning(
                "%s: accept failed: %s; pausing accepts (up to %g s at a time) until it works "
                "again. Raise the descriptor limit (ulimit -n) or lower --max-connections",
                self.what,
                reason,
                self.longest,
            )
        elif now - self._logged >= self.remind:
            self._logged = now
            self.logger.warning(
                "%s: accept still failing: %s (%d attempts in %.0f s)",
                self.what,
                reason,
                self.failures + 1,
                now - self._since,
            )
        self.failures += 1
        self._streak += 1
        self._retries = 0
        self._last = now
        return float(min(self.first * 2 ** min(self._streak - 1, 30), self.longest))

    def succeeded(self) -> None:
        """Record an accept that worked: the end of the episode if it came after a lull."""
        self._streak = self._retries = 0
        if self.failing and self._clock() - self._last >= self.quiet:
            self.failing = False
            self.logger.warning(
                "%s: accepting again after %d failed attempts over %.1f s",
                self.what,
                self.failures,
                self._last - self._since,
            )


class ReserveDescriptors:
    """``count`` descriptors (``/dev/null``) held open, to give back when ``accept()`` needs one.

    At the descriptor limit, closing one of these lets the next ``accept()`` succeed (the
    kernel hands out the lowest free number; nothing else runs in between on the event
    loop). ``refill`` takes them back once connections have closed.
    """

    def __init__(self, count: int) -> None:
        self.count = count
        self._fds: list[int] = []
        self.refill()

    def __len__(self) -> int:
        return len(self._fds)

    def release(self) -> bool:
        """Close one reserve descriptor; False when none is left."""
        if not self._fds:
            return False
        os.close(self._fds.pop())
        return True

    def refill(self) -> None:
        """Hold ``count`` again, or as many as the descriptor limit allows now."""
        while len(self._fds) < self.count:
            try:
                self._fds.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
            except OSError:
                return

    def close(self) -> None:
        while self._fds:
            os.close(self._fds.pop())


_warned_limits: set[tuple[int, int]] = set()


def warn_about_descriptor_limit(max_connections: int, logger: logging.Logger) -> None:
    """Warn (once per process and figures) when the descriptor limit is below the
    connection limit: then the descriptor limit is the one that holds, and it is hit
    sooner, since a proxied connection also holds one to its upstream."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= max_connections:
        return
    if (soft, max_connections) in _warned_limits:
        return
    _warned_limits.add((soft, max_connections))
    logger.warning(
        "--max-connections %d exceeds the open file limit %d (ulimit -n): raise the limit, "
        "or lower --max-connections",
        max_connections,
        soft,
    )
