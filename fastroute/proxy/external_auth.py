"""The auth subrequest: a route's ``auth-url`` asked about each request, as nginx's
``auth_request`` asks.

The request goes to the auth service without its body: the client's method (or
``auth-method``) and fields, less those that frame a body or route a message, plus
what ingress-nginx sets (``X-Original-URL``, ``X-Original-Method``, ``X-Forwarded-*``,
``X-Real-IP``, ``X-Auth-Request-Redirect``, ``X-Sent-From``). A 2xx answer lets the
request through with the ``auth-response-headers`` it carries; 401 and 403 are the
client's answer (a 401 becomes the ``auth-signin`` redirect when one is set); anything
else, a timeout, an unreachable service or a malformed answer is a 500, never a pass.

Connections are kept alive in a ``Pool`` per auth endpoint. Answers are cached only
when the route sets ``auth-cache-key``, for the time ``auth-cache-duration`` gives their
status, in a bounded LRU (``AuthCache``).
"""

from __future__ import annotations

import base64
import logging
import re
import ssl
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from urllib.parse import quote_from_bytes

import trio

from fastroute._http import ChunkedError, ChunkedScanner, ResponseHead, parse_response
from fastroute.errors import BadGatewayError
from fastroute.ingress.external_auth import ExternalAuth
from fastroute.ingress.model import Policy
from fastroute.proxy.channel import UpstreamChannel, connect, connect_tls
from fastroute.proxy.decide import Answer
from fastroute.proxy.pool import Pool
from fastroute.proxy.state import CONNECTION_FAILURES, ProxyState

__all__ = ["AUTH_TIMEOUT", "AuthCache", "ExternalAuthCheck", "Outcome", "Request"]

log = logging.getLogger("fastroute.proxy")

# The longest an auth subrequest may take, connecting included: nginx would wait the
# route's proxy timeouts (60 s by default), but a login check that slow is broken, and the
# client is better served by a 500 it can retry. A route's shorter proxy-read-timeout wins.
AUTH_TIMEOUT = 10.0
CACHE_SIZE = 10_000  # cached answers kept, all routes together (least recently used go)
_BODY_KEPT = 64 * 1024  # an answer body read (and dropped) to keep its connection; else closed
_DEFAULT_IDLE = 16  # idle connections kept per auth endpoint when auth-keepalive is not set
_POOLS = 64  # pools kept, one per (auth-keepalive, auth-keepalive-timeout) in use

# client fields never passed to the auth service: they frame a body, route the message,
# or are what the proxy itself tells the service
_NOT_PASSED = frozenset(
    {
        b"content-length",
        b"transfer-encoding",
        b"host",
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"upgrade",
        b"expect",
        b"http2-settings",
        b"x-original-url",
        b"x-original-uri",
        b"x-original-method",
        b"x-auth-request-redirect",
        b"x-sent-from",
        b"x-real-ip",
        b"x-forwarded-for",
        b"x-forwarded-host",
        b"x-forwarded-port",
        b"x-forwarded-proto",
        b"x-scheme",
    }
)
_URL = re.compile(
    r"(https?)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::([0-9]{1,5}))?((?:[/?][!-~]*)?)"
)
_UNSAFE = re.compile(rb"[^!-~]")


@dataclass(slots=True)
class Request:
    """The request being asked about, as the variables see it (bytes as received).

    Made for every request asked about, never changed after (not frozen: a frozen
    dataclass's ``__init__`` costs several times as much).
    """

    method: bytes
    target: bytes
    host: bytes  # the Host as sent (or the plan's host)
    scheme: str
    client: str
    headers: Sequence[tuple[bytes, bytes]]  # as received (read only)

    def field(self, name: bytes) -> bytes | None:
        values = [value for field, value in self.headers if field == name]
        return b", ".join(values) if values else None

    @property
    def uri(self) -> bytes:
        """Path and query as sent (an absolute-form target loses its scheme and authority)."""
        target = self.target
        if target.startswith(b"/"):
            return target
        after = target.partition(b"://")[2]
        slash = after.find(b"/")
        return after[slash:] if slash >= 0 else b"/"

    def variable(self, name: str) -> str:
        """An nginx variable's value (``ingress/external_auth.VARIABLES``)."""
        value: bytes
        if name == "host":  # the common cache key: nothing else to work out
            return _host_name(self.host).lower().decode("latin-1")
        if name in ("http_host", "best_http_host"):
            return self.host.decode("latin-1")
        if name in ("scheme", "pass_access_scheme"):
            return self.scheme
        uri = self.uri
        path, question, query = uri.partition(b"?")
        if name == "request_uri":
            value = uri
        elif name == "escaped_request_uri":
            return quote_from_bytes(uri, safe="")
        elif name == "uri":
            value = path
        elif name in ("args", "query_string"):
            value = query
        elif name == "is_args":
            return "?" if question else ""
        elif name == "request_method":
            value = self.method
        elif name == "remote_addr":
            return self.client
        elif name == "remote_user":
            value = _basic_user(self.field(b"authorization"))
        elif name.startswith("http_"):
            value = self.field(name[5:].replace("_", "-").lower().encode()) or b""
        elif name.startswith("cookie_"):
            value = _cookie(self.field(b"cookie"), name[7:].encode())
        elif name.startswith("arg_"):
            value = _argument(query, name[4:].encode())
        else:
            raise KeyError(name)
        return value.decode("latin-1")


def _host_name(host: bytes) -> bytes:
    if host.startswith(b"["):
        return host[: host.find(b"]") + 1]
    return host.partition(b":")[0]


def _basic_user(authorization: bytes | None) -> bytes:
    if not authorization or authorization[:6].lower() != b"basic ":
        return b""
    try:
        decoded = base64.b64decode(authorization[6:].strip(), validate=True)
    except ValueError:
        return b""
    return decoded.partition(b":")[0]


def _cookie(header: bytes | None, name: bytes) -> bytes:
    for pair in (header or b"").replace(b",", b";").split(b";"):
        key, _, value = pair.strip().partition(b"=")
        if key == name:
            return value
    return b""


def _argument(query: bytes, name: bytes) -> bytes:
    for pair in query.split(b"&"):
        key, _, value = pair.partition(b"=")
        if key == name:
            return value
    return b""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the auth service answered, as far as the proxy uses it (and caches it)."""

    status: int
    upstream_lines: bytes = b""  # auth-response-headers, as whole lines
    cookies: bytes = b""  # its Set-Cookie fields, as whole lines
    challenges: tuple[bytes, ...] = ()  # its WWW-Authenticate values (a 401)
    reason: str = ""  # for a 500: what went wrong


class AuthCache:
    """Answers by key, each until it expires; the least recently used go beyond ``size``."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self._entries: OrderedDict[Hashable, tuple[float, Outcome]] = OrderedDict()

    def get(self, key: Hashable, now: float) -> Outcome | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, outcome = entry
        if now >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return outcome

    def put(self, key: Hashable, outcome: Outcome, expires: float) -> None:
        self._entries[key] = expires, outcome
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class _Connection:
    __slots__ = ("channel", "requests")

    def __init__(self, channel: UpstreamChannel) -> None:
        self.channel = channel
        self.requests = 0


class _FailedError(Exception):
    """The subrequest failed; ``outcome`` names how, for the metrics."""

    def __init__(self, reason: str, outcome: str = "error") -> None:
        super().__init__(reason)
        self.outcome = outcome


class ExternalAuthCheck:
    """Asks auth services about requests; one per proxy (its pools and its cache)."""

    def __init__(self, state: ProxyState) -> None:
        self.state = state
        self.cache = AuthCache()
        self._pools: OrderedDict[Hashable, Pool[_Connection]] = OrderedDict()
        self._tls: ssl.SSLContext | None = None

    async def ask(
        self, auth: ExternalAuth, policy: Policy, request: Request, ingress: str, path: str
    ) -> Outcome:
        """The auth service's answer about ``request`` (from the cache when allowed)."""
        metrics = self.state.metrics
        key: Hashable = None
        if auth.cache_key is not None:
            # as nginx's: per host and rule path (and auth URL: a new one asks afresh)
            key = (
                auth.url.text,
                _host_name(request.host).lower(),
                path,
                auth.cache_key.expand(request.variable),
            )
            cached = self.cache.get(key, trio.current_time())
            if cached is not None:
                if metrics is not None:
                    metrics.auth_request(ingress, _outcome_name(cached.status), True, None)
                return cached
        started = trio.current_time()
        try:
            outcome = await self._subrequest(auth, policy, request)
            name = _outcome_name(outcome.status)
        except _FailedError as failure:
            log.info("auth subrequest for %s failed: %s", ingress, failure)
            outcome = Outcome(500, reason=f"auth service: {failure}")
            name = "error" if failure.outcome == "closed" else failure.outcome
        if metrics is not None:
            metrics.auth_request(ingress, name, False, trio.current_time() - started)
        if key is not None and name in ("allowed", "unauthorized", "forbidden", "refused"):
            seconds = auth.cached_for(outcome.status)
            if seconds > 0 and not outcome.cookies:  # nginx never caches a Set-Cookie answer
                self.cache.put(key, outcome, trio.current_time() + seconds)
        return outcome

    async def _subrequest(self, auth: ExternalAuth, policy: Policy, request: Request) -> Outcome:
        url = auth.url.expand(request.variable)
        found = _URL.fullmatch(url)
        if found is None:
            raise _FailedError(f"auth-url {auth.url.text!r} gave {url!r}, not a URL")
        scheme, host, port_text, rest = found.groups()
        port = int(port_text) if port_text else (443 if scheme == "https" else 80)
        if not 0 < port < 65536:
            raise _FailedError(f"auth-url {url!r}: port out of range")
        address = host.strip("[]")
        target = rest.partition("#")[0]
        head = self._head(auth, request, host, target if target.startswith("/") else "/" + target)
        limits = self.state.limits
        connect_timeout = min(policy.connect_timeout or limits.connect_timeout, AUTH_TIMEOUT)
        total = min(policy.read_timeout or limits.upstream_timeout, AUTH_TIMEOUT)
        endpoint = (scheme, address, port)
        pool = self._pool(auth)
        with trio.move_on_after(total):
            for _ in range(2):  # a kept connection the service closed meanwhile: once more
                connection, reused = self._take(pool, endpoint)
                if connection is None:
                    connection = await self._connect(scheme, address, port, connect_timeout)
                try:
                    return await self._exchange(auth, pool, endpoint, connection, head)
                except _FailedError as failure:
                    connection.channel.close()
                    if not (reused and failure.outcome == "closed"):
                        raise
                except BaseException:  # timed out or cancelled mid-exchange: never kept
                    connection.channel.close()
                    raise
            raise _FailedError("the auth service closed the connection twice")
        raise _FailedError(f"no answer within {total:g}s", "timeout")

    def _head(self, auth: ExternalAuth, request: Request, host: str, target: str) -> bytes:
        """The subrequest's head: the client's fields, less some, plus ingress-nginx's."""
        method = auth.method.encode() if auth.method else request.method
        uri = request.uri
        original_url = b"%s://%s%s" % (request.scheme.encode(), request.host, uri)
        redirect = auth.request_redirect.encode("latin-1") if auth.request_redirect else uri
        own = {name.lower().encode("latin-1") for name, _ in auth.proxy_set_headers}
        lines = [b"%s %s HTTP/1.1" % (method, target.encode("latin-1"))]
        lines.append(b"Host: " + host.encode("latin-1"))  # the name alone, as ingress-nginx
        lines += [
            name + b": " + value
            for name, value in request.headers
            if name not in _NOT_PASSED and name not in own and b"_" not in name
        ]
        lines += [
            b"X-Original-URL: " + original_url,
            b"X-Original-Method: " + request.method,
            b"X-Sent-From: nginx-ingress-controller",
            b"X-Real-IP: " + request.client.encode(),
            b"X-Forwarded-For: " + request.client.encode(),
            b"X-Forwarded-Host: " + request.host,
            b"X-Forwarded-Proto: " + request.scheme.encode(),
            b"X-Auth-Request-Redirect: " + redirect,
        ]
        if auth.method:
            lines += [b"X-Original-URI: " + uri, b"X-Scheme: " + request.scheme.encode()]
        lines += [f"{name}: {value}".encode("latin-1") for name, value in auth.proxy_set_headers]
        return b"\r\n".join(lines) + b"\r\n\r\n"

    def _pool(self, auth: ExternalAuth) -> Pool[_Connection]:
        settings = (auth.keepalive, auth.keepalive_timeout)
        pool = self._pools.get(settings)
        if pool is None:
            pool = Pool(
                max_idle=_DEFAULT_IDLE if auth.keepalive is None else auth.keepalive,
                idle_timeout=auth.keepalive_timeout,
            )
            self._pools[settings] = pool
            while len(self._pools) > _POOLS:
                _, old = self._pools.popitem(last=False)
                for connection in old.drain():
                    connection.channel.close()
        return pool

    def _take(self, pool: Pool[_Connection], endpoint: Hashable) -> tuple[_Connection | None, bool]:
        now = trio.current_time()
        while True:
            connection, expired = pool.take(endpoint, now=now)
            for old in expired:
                old.channel.close()
            if connection is None:
                return None, False
            if connection.channel.stale():
                connection.channel.close()
                continue
            return connection, True

    async def _connect(self, scheme: str, address: str, port: int, timeout: float) -> _Connection:
        with trio.move_on_after(timeout):
            try:
                if scheme == "https":
                    context = await self._tls_context()
                    return _Connection(await connect_tls(address, port, context, address))
                return _Connection(await connect(address, port))
            except OSError as error:
                raise _FailedError(f"connect to {address}:{port}: {error}", "unreachable") from None
        raise _FailedError(f"connect to {address}:{port} timed out", "timeout")

    async def _tls_context(self) -> ssl.SSLContext:
        """The system's trust store, loaded once (off the event loop: it reads files)."""
        if self._tls is None:
            self._tls = await trio.to_thread.run_sync(ssl.create_default_context)
        return self._tls

    async def _exchange(
        self,
        auth: ExternalAuth,
        pool: Pool[_Connection],
        endpoint: Hashable,
        connection: _Connection,
        head: bytes,
    ) -> Outcome:
        """Send ``head``, read the answer; the connection goes back to ``pool`` when its
        answer was read whole (and it may serve more), else it is closed."""
        channel = connection.channel
        is_head = head.startswith(b"HEAD ")
        try:
            await channel.send(head)
            connection.requests += 1
            received = b""
            while True:
                data = await (channel.recv() if received else channel.recv_reply())
                if not data:
                    raise _FailedError(
                        "closed before answering", "closed" if not received else "error"
                    )
                received += data
                response = parse_response(received, self.state.limits.max_head_bytes, is_head)
                if response is None:
                    continue
                received = received[response.size :]
                if response.status >= 200:
                    break
                if response.status == 101:
                    raise _FailedError("answered 101 Switching Protocols")
            outcome = _outcome(auth, response)
            keep = await _finish_body(channel, response, received)
        except BadGatewayError as error:
            raise _FailedError(f"malformed answer: {error.detail}") from None
        except (*CONNECTION_FAILURES, ChunkedError) as error:
            raise _FailedError(
                f"connection failed: {error or type(error).__name__}", "closed"
            ) from None
        if keep and connection.requests < auth.keepalive_requests:
            for old in pool.give(endpoint, connection, now=trio.current_time()):
                old.channel.close()
        else:
            channel.close()
        return outcome

    def close(self) -> None:
        for pool in self._pools.values():
            for connection in pool.drain():
                connection.channel.close()
        self._pools.clear()


def _outcome(auth: ExternalAuth, response: ResponseHead) -> Outcome:
    """The parts of an answer the proxy uses; a value with CR or LF is refused (500)."""
    status = response.status
    headers = response.headers
    for _, value in headers:
        if b"\r" in value or b"\n" in value or b"\0" in value:
            raise _FailedError("a field of its answer holds CR, LF or NUL", "error")
    if not 200 <= status < 300 and status not in (401, 403):
        return Outcome(status, reason=f"auth service answered {status}")
    lines = []
    if 200 <= status < 300:
        for name in auth.response_headers:
            wanted = name.lower().encode("latin-1")
            values = [value for field, value in headers if field == wanted]
            if values and any(values):
                lines.append(name.encode("latin-1") + b": " + b", ".join(values) + b"\r\n")
    cookies = b"".join(b"Set-Cookie: " + v + b"\r\n" for f, v in headers if f == b"set-cookie")
    challenges = tuple(v for f, v in headers if f == b"www-authenticate") if status == 401 else ()
    return Outcome(status, b"".join(lines), cookies, challenges)


def _outcome_name(status: int) -> str:
    if 200 <= status < 300:
        return "allowed"
    if status == 401:
        return "unauthorized"
    if status == 403:
        return "forbidden"
    return "refused"  # any other status: a 500 for the client


async def _finish_body(channel: UpstreamChannel, response: ResponseHead, received: bytes) -> bool:
    """Read the answer's body (dropped) when it is short; whether the connection can be kept."""
    if not response.keep_alive or response.until_close:
        return False
    if response.bodyless:
        return not received
    if response.chunked:
        scanner = ChunkedScanner()
        data = received
        total = len(data)
        while True:
            end = scanner.scan(data)
            if scanner.done:
                return end == len(data)
            if total > _BODY_KEPT:
                return False
            data = await channel.recv()
            if not data:
                return False
            total += len(data)
    remaining = response.content_length
    if remaining < 0 or remaining > _BODY_KEPT or len(received) > remaining:
        return False
    remaining -= len(received)
    while remaining > 0:
        data = await channel.recv()
        if not data or len(data) > remaining:
            return False
        remaining -= len(data)
    return True


def verdict(auth: ExternalAuth, outcome: Outcome, request: Request) -> tuple[bytes, bytes] | Answer:
    """(upstream lines, client lines) to admit the request with, or the refusal."""
    if 200 <= outcome.status < 300:
        return outcome.upstream_lines, outcome.cookies
    cookies = outcome.cookies if auth.always_set_cookie else b""
    if outcome.status == 401 and auth.signin is not None:
        location = _UNSAFE.sub(
            lambda m: b"%%%02X" % m[0][0], auth.signin.expand(request.variable).encode("latin-1")
        )
        return Answer(
            302,
            ((b"Location", location),),
            lines=outcome.cookies,
            reason="not signed in: redirected to auth-signin",
        )
    if outcome.status == 401:
        return Answer(
            401,
            tuple((b"WWW-Authenticate", value) for value in outcome.challenges),
            lines=cookies,
            reason="the auth service answered 401",
        )
    if outcome.status == 403:
        return Answer(403, lines=cookies, reason="the auth service answered 403")
    return Answer(500, reason=outcome.reason or f"auth service answered {outcome.status}")
