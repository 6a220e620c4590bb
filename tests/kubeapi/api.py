"""``KubeAPI``: the emulator as a test sees it — lifecycle, test hooks, knobs and records."""

from __future__ import annotations

import builtins
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from .kubeconfig import kubeconfig, write_kubeconfig
from .patch import merge_patch
from .pki import PKI, Credentials
from .resources import RESOURCES, ResourceType, find_resource
from .routing import ResourceRequest
from .selectors import Selector
from .server import Listener
from .status import ApiError, forbidden, status, unauthorized
from .store import Store, Stored

__all__ = ["TEST_TOKEN", "KubeAPI", "WriteCall"]

TEST_TOKEN = "kubeapi-test-token"  # the bearer token the ``kubeapi_tls`` fixture accepts
ANONYMOUS = "system:anonymous"
TOKEN_USER = "system:serviceaccount:default:fastroute"  # who a valid bearer token is


@dataclass(frozen=True, slots=True)
class WriteCall:
    """One write request as the server received it, and the status code it answered."""

    verb: str  # create update patch delete deletecollection
    path: str
    body: Any  # the parsed JSON body (a patch is the patch, not the result), or None
    code: int


@dataclass
class _Fault:
    """What the next requests of one verb on one resource meet (``inject``)."""

    verb: str
    resource: str
    code: int | None
    delay: float
    left: int


_REASONS = {
    409: "Conflict",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
}


@dataclass
class _Watch:
    rt: ResourceType
    sock: socket.socket
    namespace: str | None = None
    field_selector: str = ""
    dropped: bool = field(default=False)


class KubeAPI:
    """A Kubernetes API server emulator on 127.0.0.1, served from background threads.

    Args:
        tls: serve HTTPS with this PKI's server certificate and accept its client
            certificates; None serves plain HTTP.
        tokens: the bearer tokens accepted; None turns authentication off (anyone is
            ``system:anonymous``). Mutable at run time through ``api.tokens``.
        history: events kept per resource type (the watch cache window).
        bookmark_interval: seconds between BOOKMARK events on watches that allow them.
        gone: how a watch from an expired resourceVersion is refused: ``"http"`` answers
            HTTP 410 with a Status body, ``"event"`` a 200 stream with one ERROR event.
        max_watch_seconds: how long a watch without ``timeoutSeconds`` lasts.
        strict_namespaces: refuse creates into a namespace that does not exist (404).
        port: 0 picks a free port; ``stop()``/``start()`` keep the one picked.
    """

    def __init__(
        self,
        *,
        tls: PKI | None = None,
        tokens: Iterable[str] | None = None,
        history: int = 1000,
        bookmark_interval: float = 1.0,
        gone: Literal["http", "event"] = "event",
        max_watch_seconds: float = 1800.0,
        strict_namespaces: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if gone not in ("http", "event"):
            raise ValueError(f"gone must be 'http' or 'event', not {gone!r}")
        if bookmark_interval <= 0 or max_watch_seconds <= 0:
            raise ValueError("bookmark_interval and max_watch_seconds must be positive")
        self.store = Store(history=history, strict_namespaces=strict_namespaces)
        self.pki = tls
        self.tokens: set[str] | None = None if tokens is None else set(tokens)
        self.bookmark_interval = bookmark_interval
        self.gone: Literal["http", "event"] = gone
        self.max_watch_seconds = max_watch_seconds
        self.host = host
        self.port = port
        self.requests: Counter[tuple[str, str]] = Counter()
        self.writes: list[WriteCall] = []
        self.served: Counter[tuple[str, str, str]] = Counter()  # (kind, namespace, name)
        self._forbidden: set[tuple[str, str]] = set()
        self._faults: list[_Fault] = []
        self._record_lock = threading.Lock()
        self._watches: list[_Watch] = []
        self._context = tls.server_context() if tls is not None else None
        self._listener: Listener | None = None

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL clients use (``https://127.0.0.1:PORT`` with TLS)."""
        scheme = "https" if self._context is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether it is accepting connections."""
        return self._listener is not None

    def start(self) -> KubeAPI:
        """Listen (again): on the port of the previous start, with all the data kept."""
        if self._listener is None:
            self._listener = Listener(self, self.host, self.port, self._context)
            self.port = self._listener.port
        return self

    def stop(self) -> None:
        """Stop listening and cut every connection, watches included; the data stays."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()

    def __enter__(self) -> KubeAPI:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- test hooks: objects -------------------------------------------------------------

    def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Store a new object as if POSTed (its ``.status`` kept); returns it as stored."""
        rt = self._type_of(obj)
        return self.store.create(rt, None, obj, from_client=False).copy()

    def create_many(self, objs: Iterable[Mapping[str, Any]]) -> int:
        """Create many objects under one lock hold (fast scale setup); returns the count.

        The objects are handed over, not copied: do not change them afterwards.
        """
        count = 0
        with self.store.cond:
            for obj in objs:
                self.store.create(self._type_of(obj), None, obj, from_client=False, take=True)
                count += 1
        return count

    def update(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Replace an object, ``.status`` included; 409 if a given resourceVersion is stale."""
        rt = self._type_of(obj)
        meta = obj.get("metadata") or {}
        return self.store.replace(
            rt, meta.get("namespace"), str(meta.get("name")), obj, from_client=False
        ).copy()

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Create the object, or replace it if it exists (test setup that may run twice)."""
        try:
            return self.create(obj)
        except ApiError as error:
            if error.reason != "AlreadyExists":
                raise
            meta = dict(obj.get("metadata") or {})
            meta.pop("resourceVersion", None)
            return self.update({**obj, "metadata": meta})

    def patch(
        self,
        resource: str,
        name: str,
        patch: Mapping[str, Any],
        *,
        namespace: str | None = None,
        api_version: str | None = None,
    ) -> dict[str, Any]:
        """Merge-patch an object, ``.status`` included (no subresource split for hooks)."""
        rt = find_resource(resource, api_version)
        ns = self._ns(rt, namespace)
        with self.store.cond:
            old = self.store.get(rt, ns, name)
            new = merge_patch(old.obj, dict(patch))
            return self.store.replace(rt, ns, name, new, from_client=False).copy()

    def delete(
        self,
        resource: str,
        name: str,
        *,
        namespace: str | None = None,
        api_version: str | None = None,
    ) -> dict[str, Any]:
        """Delete an object (emits DELETED); returns its last state."""
        rt = find_resource(resource, api_version)
        return self.store.delete(rt, self._ns(rt, namespace), name).copy()

    def get(
        self,
        resource: str,
        name: str,
        *,
        namespace: str | None = None,
        api_version: str | None = None,
    ) -> dict[str, Any] | None:
        """An object as stored (a private copy), or None."""
        rt = find_resource(resource, api_version)
        try:
            return self.store.get(rt, self._ns(rt, namespace), name).copy()
        except ApiError as error:
            if error.code == 404:
                return None
            raise

    def list(
        self,
        resource: str,
        *,
        namespace: str | None = None,
        api_version: str | None = None,
    ) -> builtins.list[dict[str, Any]]:
        """Every object of a type (in one namespace, or all), in the server's list order."""
        rt = find_resource(resource, api_version)
        return [s.copy() for s in self.store.list_page(rt, namespace, Selector()).items]

    @property
    def resource_version(self) -> str:
        """The current resourceVersion (what a list taken now would report)."""
        with self.store.cond:
            return str(self.store.rv)

    # -- test hooks: failures ------------------------------------------------------------

    def expire(self, resource: str | None = None, *, api_version: str | None = None) -> None:
        """Forget watch history and list snapshots (of one type, or all).

        Watches and continue tokens from any resourceVersion before now get 410 Expired.
        """
        types = RESOURCES if resource is None else (find_resource(resource, api_version),)
        self.store.expire(types)

    def drop_watches(self) -> int:
        """Cut every open watch stream mid-stream, without its final chunk; returns how many."""
        with self.store.cond:
            watches = list(self._watches)
            for watch in watches:
                watch.dropped = True
            self.store.cond.notify_all()
        listener = self._listener
        if listener is not None:
            listener.drop(watch.sock for watch in watches)
        return len(watches)

    def watchers(self, resource: str | None = None, *, api_version: str | None = None) -> int:
        """How many watch streams are open (on one type, or on any)."""
        rt = None if resource is None else find_resource(resource, api_version)
        with self.store.cond:
            return sum(1 for w in self._watches if rt is None or w.rt == rt)

    def watch_selectors(
        self, resource: str, *, api_version: str | None = None
    ) -> builtins.list[tuple[str | None, str]]:
        """The (namespace or None, fieldSelector) of each open watch on one type."""
        rt = find_resource(resource, api_version)
        with self.store.cond:
            return [(w.namespace, w.field_selector) for w in self._watches if w.rt == rt]

    def wait_for_watchers(
        self,
        count: int = 1,
        resource: str | None = None,
        *,
        api_version: str | None = None,
        timeout: float = 5.0,
    ) -> None:
        """Block until at least ``count`` watches are open, so events sent next are seen.

        Raises:
            TimeoutError: not that many within ``timeout`` seconds.
        """
        rt = None if resource is None else find_resource(resource, api_version)
        deadline = time.monotonic() + timeout
        with self.store.cond:
            while sum(1 for w in self._watches if rt is None or w.rt == rt) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"fewer than {count} watches on {resource or 'anything'}")
                self.store.cond.wait(left)

    def forbid(self, verb: str, resource: str) -> None:
        """Answer 403 to ``verb`` on ``resource`` (``events``, ``ingresses/status``, or
        ``events.events.k8s.io`` for one group only)."""
        with self._record_lock:
            self._forbidden.add((verb, resource))

    def allow(self, verb: str, resource: str) -> None:
        """Undo ``forbid``."""
        with self._record_lock:
            self._forbidden.discard((verb, resource))

    def inject(
        self,
        verb: str,
        resource: str,
        *,
        code: int | None = None,
        delay: float = 0.0,
        times: int = 1,
    ) -> None:
        """Make the next ``times`` requests of ``verb`` on ``resource`` (as ``forbid``
        names them: ``ingresses/status``) wait ``delay`` seconds, then fail with ``code``
        (a Status body) or, without one, be served as usual (a slow server)."""
        with self._record_lock:
            self._faults.append(_Fault(verb, resource, code, delay, times))

    # -- records -------------------------------------------------------------------------

    def count(self, verb: str, path: str) -> int:
        """How many requests with this Kubernetes verb hit this path (no query string)."""
        with self._record_lock:
            return self.requests[(verb, path)]

    def served_objects(self, kind: str) -> set[tuple[str, str]]:
        """The (namespace, name) of each object of ``kind`` a get, list or watch sent."""
        with self._record_lock:
            return {(ns, name) for k, ns, name in self.served if k == kind}

    def writes_to(self, path: str, verb: str | None = None) -> builtins.list[WriteCall]:
        """The write calls on one path (e.g. an Ingress's ``/status``), oldest first."""
        with self._record_lock:
            return [w for w in self.writes if w.path == path and verb in (None, w.verb)]

    def clear_records(self) -> None:
        """Forget counted requests and logged writes."""
        with self._record_lock:
            self.requests.clear()
            self.writes.clear()
            self.served.clear()

    # -- kubeconfig ----------------------------------------------------------------------

    def kubeconfig(
        self,
        *,
        token: str | None = None,
        client: Credentials | None = None,
        namespace: str = "default",
    ) -> dict[str, Any]:
        """A kubeconfig document for this server (CA data included when serving TLS)."""
        ca = self.pki.ca_cert_pem if self.pki is not None else None
        return kubeconfig(self.url, ca_pem=ca, token=token, client=client, namespace=namespace)

    def write_kubeconfig(
        self,
        path: Path,
        *,
        token: str | None = None,
        client: Credentials | None = None,
        namespace: str = "default",
    ) -> Path:
        """Write a kubeconfig for this server to ``path``; returns ``path``."""
        document = self.kubeconfig(token=token, client=client, namespace=namespace)
        return write_kubeconfig(path, document)

    # -- called by the server ------------------------------------------------------------

    def _record(self, verb: str, path: str) -> None:
        with self._record_lock:
            self.requests[(verb, path)] += 1

    def _serve(self, stored: Iterable[Stored]) -> None:
        with self._record_lock:
            for one in stored:
                self.served[(one.rt.kind, *one.key)] += 1

    def _log_write(self, verb: str, path: str, body: Any, code: int) -> None:
        with self._record_lock:
            self.writes.append(WriteCall(verb, path, body, code))

    def _authenticate(
        self, authorization: str | None, peer: tuple[str, tuple[str, ...]] | None
    ) -> str:
        if peer is not None:
            return peer[0]  # a client certificate the TLS layer already verified
        tokens = self.tokens
        if tokens is None:
            return ANONYMOUS
        scheme, _, credential = (authorization or "").partition(" ")
        if scheme.lower() == "bearer" and credential.strip() in tokens:
            return TOKEN_USER
        raise unauthorized()

    def _authorize(self, user: str, request: ResourceRequest) -> None:
        rt = request.rt
        suffix = f"/{request.subresource}" if request.subresource else ""
        with self._record_lock:
            refused = {(request.verb, request.resource), (request.verb, rt.name + suffix)}
            if refused & self._forbidden:
                raise forbidden(user, request.verb, request.resource, rt.group, request.namespace)

    def _fault(self, request: ResourceRequest) -> None:
        """Apply the first injected fault that matches the request, if any."""
        suffix = f"/{request.subresource}" if request.subresource else ""
        names = {request.resource, request.rt.name + suffix}
        with self._record_lock:
            fault = next(
                (f for f in self._faults if f.verb == request.verb and f.resource in names), None
            )
            if fault is None:
                return
            fault.left -= 1
            if fault.left <= 0:
                self._faults.remove(fault)
        if fault.delay > 0:
            time.sleep(fault.delay)
        if fault.code is not None:
            reason = _REASONS.get(fault.code, "InternalError")
            raise ApiError(status(fault.code, reason, f"injected: {fault.code} {reason}"))

    def _open_watch(
        self,
        rt: ResourceType,
        sock: socket.socket,
        namespace: str | None = None,
        field_selector: str = "",
    ) -> _Watch:
        watch = _Watch(rt, sock, namespace, field_selector)
        with self.store.cond:
            self._watches.append(watch)
            self.store.cond.notify_all()
        return watch

    def _close_watch(self, watch: _Watch) -> None:
        with self.store.cond:
            self._watches.remove(watch)
            self.store.cond.notify_all()

    @staticmethod
    def _type_of(obj: Mapping[str, Any]) -> ResourceType:
        kind, api_version = obj.get("kind"), obj.get("apiVersion")
        if not isinstance(kind, str) or not isinstance(api_version, str | None):
            raise ValueError("a test object needs its kind (and apiVersion, if any) as strings")
        return find_resource(kind, api_version)

    @staticmethod
    def _ns(rt: ResourceType, namespace: str | None) -> str | None:
        if not rt.namespaced:
            return None
        return namespace or "default"
