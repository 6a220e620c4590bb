"""The emulator's storage: objects, resourceVersions, watch history and list snapshots.

No HTTP here: the server and the test hooks both call these methods, under one lock.

Invariants (the ones clients can observe):

* One resourceVersion counter for every kind, as etcd's revision is: each write takes the
  next number; an object's ``metadata.resourceVersion`` is the number of its last write and a
  list's is the counter when it was taken.
* Stored objects are never mutated; a write stores a new ``Stored``. That is what lets a list
  snapshot (a tuple of ``Stored``) stay consistent while writes go on, and lets list pages and
  watch events reuse the JSON encoded once per write.
* Each kind keeps the last ``history`` events (the watch cache window). A watch from a
  resourceVersion older than the newest event that fell out of the window is answered 410
  Expired, as is anything older than the last ``expire()`` (etcd compaction), which also
  expires continue tokens.
* A write that changes nothing (same object but for resourceVersion) stores nothing and
  emits no event, as on the real server.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import json
import re
import secrets
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from .patch import apply_patch
from .resources import RESOURCES, ResourceType
from .selectors import Selector
from .status import (
    CONTINUE_EXPIRED,
    STALE,
    already_exists,
    bad_request,
    conflict,
    expired,
    invalid,
    not_found,
)

__all__ = ["Event", "ListPage", "Store", "Stored", "WatchStart"]

Key = tuple[str, str]  # (namespace or "", name): etcd's key order, so list order
_LAST_NAME = "\U0010ffff"  # sorts after any name: the end of one namespace's key range
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
# What apiserver's generateName appends: 5 characters, no vowels nor look-alikes.
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_SNAPSHOTS = 32  # list snapshots kept for continue tokens (an LRU)
# Kinds whose registry strategy sets metadata.generation (and bumps it on spec changes).
_GENERATION = {"ingresses", "ingressclasses", "endpointslices"}
# Kinds whose registry allows PUT to create a missing object (AllowCreateOnUpdate).
_CREATE_ON_UPDATE = {"leases", "endpoints"}


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


@cache
def _prefix(rt: ResourceType) -> bytes:
    # kind and apiVersion, spliced in front of an encoded item to make the full object.
    return _dumps({"kind": rt.kind, "apiVersion": rt.api_version})[:-1] + b","


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Stored:
    """One version of one object, kept as its JSON encoding (plus its key and labels).

    Only the bytes are kept, not the decoded tree: bytes are invisible to the cyclic garbage
    collector, while 30,000 decoded objects (a dozen containers each) make every full
    collection in the test process walk them all, which tripled the time of a scale run.
    ``obj`` decodes on demand.
    """

    __slots__ = ("item", "key", "labels", "rt", "rv")

    def __init__(self, rt: ResourceType, obj: Mapping[str, Any]) -> None:
        self.rt = rt
        meta = obj["metadata"]
        self.key: Key = (meta.get("namespace", ""), meta["name"])
        self.rv = int(meta["resourceVersion"])
        labels = meta.get("labels")
        self.labels: dict[str, str] | None = dict(labels) if labels else None
        # List items carry no kind/apiVersion (the list says them once), as on the real server.
        self.item = _dumps({k: v for k, v in obj.items() if k not in ("kind", "apiVersion")})

    def full(self) -> bytes:
        """The object as GET and watch events send it, with kind and apiVersion."""
        return _prefix(self.rt) + self.item[1:]

    @property
    def obj(self) -> dict[str, Any]:
        """The object, freshly decoded: a private copy the caller may keep or change."""
        decoded: dict[str, Any] = json.loads(self.full())
        return decoded

    def copy(self) -> dict[str, Any]:
        """A private deep copy for a caller to keep or change (same as ``obj``)."""
        return self.obj


@dataclass(frozen=True, slots=True)
class Event:
    """One change, as a watch sends it; ``old`` is the previous state for selector moves."""

    rv: int
    type: str  # ADDED, MODIFIED or DELETED
    new: Stored
    old: Stored | None


@dataclass(frozen=True, slots=True)
class ListPage:
    """One page of a list: items, the list's resourceVersion and what comes next."""

    items: list[Stored]
    rv: int
    continue_token: str
    remaining: int | None


@dataclass(frozen=True, slots=True)
class WatchStart:
    """Where a new watch begins: synthetic ADDED objects, then history from ``position``."""

    initial: tuple[Stored, ...]
    position: int
    rv: int


class _Table:
    """Everything stored for one resource type."""

    def __init__(self) -> None:
        self.objects: dict[Key, Stored] = {}
        self.ordered: tuple[Stored, ...] | None = ()  # sorted by key; None when stale
        self.events: list[Event] = []
        self.event_rvs: list[int] = []  # parallel to events, for bisect
        self.offset = 0  # absolute index of events[0]; positions are absolute
        self.window_floor = 0  # rv of the newest event dropped from the window
        self.compacted = 0  # continue tokens and watches below this rv are expired

    def sorted_items(self) -> tuple[Stored, ...]:
        if self.ordered is None:
            self.ordered = tuple(sorted(self.objects.values(), key=lambda s: s.key))
        return self.ordered


def _encode_continue(rv: int, start: Key) -> str:
    # The same shape as apiserver's (a base64url JSON with version, rv and start key), so a
    # token looks and behaves like the real thing; clients must treat it as opaque anyway.
    token = {"v": "meta.k8s.io/v1", "rv": rv, "start": "/".join(start) + "\x00"}
    return base64.urlsafe_b64encode(_dumps(token)).rstrip(b"=").decode()


def _decode_continue(token: str) -> tuple[int, Key]:
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded))
        rv = int(data["rv"])
        start = str(data["start"])
    except (ValueError, KeyError, TypeError, binascii.Error) as error:
        raise bad_request(f"continue key is not valid: {error}") from None
    namespace, _, name = start.rpartition("/")
    return rv, (namespace, name)


def _without(obj: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in keys}


class Store:
    """All objects of all served types; every public method is thread-safe."""

    def __init__(self, *, history: int = 1000, strict_namespaces: bool = False) -> None:
        if history < 1:
            raise ValueError(f"history must be at least 1, not {history}")
        # One lock for everything, shared with the watch streams that wait on it. Reentrant:
        # a PUT that creates and a delete-collection call the single-object methods.
        self.cond = threading.Condition(threading.RLock())
        self.history = history
        self.strict_namespaces = strict_namespaces
        self.rv = 0
        self._tables: dict[ResourceType, _Table] = {rt: _Table() for rt in RESOURCES}
        self._snapshots: OrderedDict[tuple[ResourceType, int], tuple[Stored, ...]] = OrderedDict()
        self._cluster_ips = 0
        for name in ("default", "kube-system", "kube-public", "kube-node-lease"):
            namespaces = RESOURCES[0]
            self.create(namespaces, None, {"metadata": {"name": name}}, from_client=False)

    # -- reads ---------------------------------------------------------------------------

    def get(self, rt: ResourceType, namespace: str | None, name: str) -> Stored:
        """One object, or 404."""
        with self.cond:
            found = self._tables[rt].objects.get((namespace or "", name))
        if found is None:
            raise not_found(name, rt.group, rt.plural)
        return found

    def list_page(
        self,
        rt: ResourceType,
        namespace: str | None,
        selector: Selector,
        *,
        limit: int = 0,
        continue_token: str = "",
    ) -> ListPage:
        """A page of a list in key order; ``limit`` 0 means everything."""
        with self.cond:
            table = self._tables[rt]
            if continue_token:
                rv, start = _decode_continue(continue_token)
                if rv < table.compacted and rv != -1:
                    # The inconsistent continuation the real server offers: same position,
                    # today's data.
                    raise expired(CONTINUE_EXPIRED, continue_token=_encode_continue(-1, start))
                items = self._snapshots.get((rt, rv))
                if items is None or rv == -1:
                    rv, items = self.rv, table.sorted_items()
            else:
                rv, items, start = self.rv, table.sorted_items(), ("", "")
                if limit:
                    self._remember(rt, rv, items)
        return self._page(items, rv, namespace, selector, limit, start)

    def _remember(self, rt: ResourceType, rv: int, items: tuple[Stored, ...]) -> None:
        self._snapshots[(rt, rv)] = items
        self._snapshots.move_to_end((rt, rv))
        while len(self._snapshots) > _SNAPSHOTS:
            self._snapshots.popitem(last=False)

    @staticmethod
    def _page(
        items: tuple[Stored, ...],
        rv: int,
        namespace: str | None,
        selector: Selector,
        limit: int,
        start: Key,
    ) -> ListPage:
        def key(stored: Stored) -> Key:
            return stored.key

        low, high = 0, len(items)
        if namespace is not None:
            low = bisect.bisect_left(items, (namespace, ""), key=key)
            high = bisect.bisect_right(items, (namespace, _LAST_NAME), key=key)
        low = max(low, bisect.bisect_left(items, start, key=key))
        page: list[Stored] = []
        index = low
        while index < high and (not limit or len(page) < limit):
            stored = items[index]
            if selector.empty or selector.matches(stored):
                page.append(stored)
            index += 1
        if index >= high or not page:
            return ListPage(page, rv, "", None)
        # More keys remain in range (they may not match the selector: the real server does
        # not look ahead either, so a page can be short and still carry a token).
        last = page[-1].key
        token = _encode_continue(rv, (last[0], last[1] + "\x00"))
        remaining = high - index if selector.empty else None
        return ListPage(page, rv, token, remaining)

    # -- watch support -------------------------------------------------------------------

    def watch_start(self, rt: ResourceType, resource_version: str) -> WatchStart:
        """Where a watch from ``resource_version`` starts; 410 Expired if it is too old."""
        with self.cond:
            table = self._tables[rt]
            end = table.offset + len(table.events)
            if resource_version in ("", "0"):
                # "Any version": the current state as synthetic ADDED events, then live.
                return WatchStart(table.sorted_items(), end, self.rv)
            try:
                since = int(resource_version)
            except ValueError:
                raise bad_request(f"invalid resource version: {resource_version!r}") from None
            oldest = max(table.window_floor, table.compacted)
            if since < oldest:
                raise expired(f"too old resource version: {since} ({oldest})")
            position = table.offset + bisect.bisect_right(table.event_rvs, since)
            return WatchStart((), position, self.rv)

    def events_since(self, rt: ResourceType, position: int) -> tuple[list[Event], int] | None:
        """Events from an absolute position on, and the next position; None if they are gone.

        Call with ``cond`` held. None means the watcher fell behind the window: the real
        cacher closes such a watch, and the client's re-watch then gets 410.
        """
        table = self._tables[rt]
        if position < table.offset:
            return None
        events = table.events[position - table.offset :]
        return events, position + len(events)

    # -- writes --------------------------------------------------------------------------

    def create(
        self,
        rt: ResourceType,
        namespace: str | None,
        body: Mapping[str, Any],
        *,
        from_client: bool = True,
        dry_run: bool = False,
        take: bool = False,
    ) -> Stored:
        """POST: a new object (409 AlreadyExists if the name is taken).

        ``from_client`` is False for test hooks: they may set ``.status`` and a stale
        ``resourceVersion`` is dropped instead of refused. ``take`` skips the private deep
        copy of ``body`` (bulk setup that hands its objects over, for speed).
        """
        obj = self._checked_body(rt, body, take=take)
        meta = dict(obj.get("metadata") or {})
        namespace = self._namespace(rt, namespace, meta)
        if meta.get("resourceVersion") and from_client:
            raise bad_request("resourceVersion should not be set on objects to be created")
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = str(meta["generateName"]) + "".join(
                secrets.choice(_SUFFIX_ALPHABET) for _ in range(5)
            )
        name = str(meta.get("name") or "")
        self._check_name(rt, name)
        for field in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(field, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now()
        if rt.plural in _GENERATION:
            meta["generation"] = 1
        if rt.status_subresource and from_client:
            obj.pop("status", None)  # PrepareForCreate: clients cannot set status on create
        with self.cond:
            table = self._tables[rt]
            if (namespace, name) in table.objects:
                raise already_exists(name, rt.group, rt.plural)
            if (
                rt.namespaced
                and self.strict_namespaces
                and ("", namespace) not in (self._tables[RESOURCES[0]].objects)
            ):
                raise not_found(namespace, "", "namespaces")
            obj["metadata"] = meta
            self._defaults(rt, obj)
            return self._commit(rt, "ADDED", obj, None, dry_run=dry_run)

    def replace(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        body: Mapping[str, Any],
        *,
        subresource: str | None = None,
        from_client: bool = True,
        dry_run: bool = False,
    ) -> Stored:
        """PUT: replace an object; 409 Conflict if its resourceVersion is not the current one."""
        obj = self._checked_body(rt, body)
        meta = dict(obj.get("metadata") or {})
        namespace = self._namespace(rt, namespace, meta)
        if meta.get("name", name) != name:
            raise bad_request(
                f"the name of the object ({meta.get('name')}) does not match the name on the "
                f"URL ({name})"
            )
        meta["name"] = name
        obj["metadata"] = meta
        with self.cond:
            old = self._tables[rt].objects.get((namespace, name))
            if old is None:
                if rt.plural in _CREATE_ON_UPDATE and not subresource:
                    meta.pop("resourceVersion", None)
                    return self.create(rt, namespace, obj, from_client=from_client, dry_run=dry_run)
                raise not_found(name, rt.group, rt.plural)
            return self._update(rt, old, obj, subresource, from_client, dry_run)

    def patch(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        content_type: str,
        patch: Any,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> Stored:
        """PATCH: apply a merge, strategic-merge (as merge) or JSON patch, then update."""
        with self.cond:
            old = self._tables[rt].objects.get((namespace or "", name))
            if old is None:
                raise not_found(name, rt.group, rt.plural)
            patched = apply_patch(content_type, old.obj, patch)
            obj = self._checked_body(rt, patched)
            meta = dict(obj.get("metadata") or {})
            if meta.get("name") != name or meta.get("namespace", "") != (namespace or ""):
                raise bad_request("a patch cannot change the name or namespace of an object")
            return self._update(rt, old, obj, subresource, True, dry_run)

    def delete(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        *,
        preconditions: Mapping[str, Any] | None = None,
        dry_run: bool = False,
    ) -> Stored:
        """DELETE: remove an object now (no finalizers, no grace period); returns its last state.

        The returned state carries the resourceVersion of the deletion, as the DELETED watch
        event does on the real server.
        """
        with self.cond:
            old = self._tables[rt].objects.get((namespace or "", name))
            if old is None:
                raise not_found(name, rt.group, rt.plural)
            obj = old.obj
            meta = obj["metadata"]
            for field in ("uid", "resourceVersion"):
                wanted = (preconditions or {}).get(field)
                if wanted and wanted != meta.get(field):
                    why = (
                        f"Precondition failed: {field.capitalize().replace('Uid', 'UID')} in "
                        f"precondition: {wanted}, {field} in object meta: {meta.get(field)}"
                    )
                    raise conflict(name, rt.group, rt.plural, why)
            return self._commit(rt, "DELETED", obj, old, dry_run=dry_run)

    def delete_collection(
        self, rt: ResourceType, namespace: str | None, selector: Selector
    ) -> list[Stored]:
        """DELETE on a collection: every selected object, one DELETED event each."""
        with self.cond:
            page = self.list_page(rt, namespace, selector)
            return [self.delete(rt, s.key[0] or None, s.key[1]) for s in page.items]

    def expire(self, rts: Iterable[ResourceType]) -> None:
        """Forget history (like an etcd compaction): older watches and continues get 410."""
        rts = tuple(rts)
        with self.cond:
            self.rv += 1  # so that a list taken now is newer than the compaction point
            for rt in rts:
                table = self._tables[rt]
                table.offset += len(table.events)
                table.events.clear()
                table.event_rvs.clear()
                table.compacted = self.rv
            for key in [key for key in self._snapshots if key[0] in rts]:
                del self._snapshots[key]
            self.cond.notify_all()

    # -- internals (call with cond held) -------------------------------------------------

    def _update(
        self,
        rt: ResourceType,
        old: Stored,
        obj: dict[str, Any],
        subresource: str | None,
        from_client: bool,
        dry_run: bool,
    ) -> Stored:
        meta = obj["metadata"]
        old_obj = old.obj
        old_meta = old_obj["metadata"]
        wanted = meta.get("resourceVersion")
        if wanted and str(wanted) != old_meta["resourceVersion"]:
            raise conflict(old.key[1], rt.group, rt.plural, STALE)
        if subresource == "status":
            # The status subresource writes .status and nothing else.
            new = dict(old_obj)
            if "status" in obj:
                new["status"] = obj["status"]
            else:
                new.pop("status", None)
        else:
            new = obj
            if rt.status_subresource and from_client:
                # ...and the main resource leaves .status alone.
                if "status" in old_obj:
                    new["status"] = old_obj["status"]
                else:
                    new.pop("status", None)
            # Fields the server owns; what the client sent for them is ignored.
            new_meta = dict(meta)
            for field in ("uid", "creationTimestamp", "generation"):
                if field in old_meta:
                    new_meta[field] = old_meta[field]
                else:
                    new_meta.pop(field, None)
            new_meta["namespace"] = old_meta.get("namespace")
            if not rt.namespaced:
                new_meta.pop("namespace", None)
            new["metadata"] = new_meta
            self._defaults(rt, new, old_obj)
            if "generation" in old_meta and _without(new, "metadata", "status") != _without(
                old_obj, "metadata", "status"
            ):
                new_meta["generation"] = int(old_meta["generation"]) + 1
        new["metadata"] = dict(new["metadata"], resourceVersion=old_meta["resourceVersion"])
        if new == old_obj:
            return old  # a no-op write: no new resourceVersion, no event
        return self._commit(rt, "MODIFIED", new, old, dry_run=dry_run)

    def _commit(
        self,
        rt: ResourceType,
        kind: str,
        obj: dict[str, Any],
        old: Stored | None,
        *,
        dry_run: bool,
    ) -> Stored:
        rv = self.rv + 1
        obj["metadata"] = dict(obj["metadata"], resourceVersion=str(rv))
        stored = Stored(rt, obj)
        if dry_run:
            return stored
        self.rv = rv
        table = self._tables[rt]
        if kind == "DELETED":
            del table.objects[stored.key]
        else:
            table.objects[stored.key] = stored
        table.ordered = None
        table.events.append(Event(rv, kind, stored, old))
        table.event_rvs.append(rv)
        excess = len(table.events) - self.history
        if excess > 0:
            table.window_floor = table.event_rvs[excess - 1]
            del table.events[:excess]
            del table.event_rvs[:excess]
            table.offset += excess
        self.cond.notify_all()
        return stored

    @staticmethod
    def _checked_body(rt: ResourceType, body: Any, *, take: bool = False) -> dict[str, Any]:
        if not isinstance(body, Mapping):
            raise bad_request(f"the body of the request is not a {rt.kind} object")
        # A private deep copy, so nothing the caller holds can change what is stored
        # (a JSON round trip: the fastest deep copy, and it proves the body is JSON).
        obj: dict[str, Any] = dict(body) if take else json.loads(_dumps(body))
        if obj.setdefault("apiVersion", rt.api_version) != rt.api_version:
            raise bad_request(
                f"the API version in the data ({obj['apiVersion']}) does not match the "
                f"expected API version ({rt.api_version})"
            )
        if obj.setdefault("kind", rt.kind) != rt.kind:
            raise bad_request(
                f"the kind in the data ({obj['kind']}) does not match the expected kind ({rt.kind})"
            )
        if not isinstance(obj.get("metadata", {}), dict):
            raise bad_request("metadata must be an object")
        return obj

    @staticmethod
    def _namespace(rt: ResourceType, namespace: str | None, meta: dict[str, Any]) -> str:
        if not rt.namespaced:
            meta.pop("namespace", None)
            return ""
        in_body = meta.get("namespace")
        if namespace and in_body and in_body != namespace:
            raise bad_request(
                "the namespace of the provided object does not match the namespace sent on "
                "the request"
            )
        meta["namespace"] = namespace or in_body or "default"
        return str(meta["namespace"])

    @staticmethod
    def _check_name(rt: ResourceType, name: str) -> None:
        if not name:
            raise invalid(
                name, rt.group, rt.kind, "metadata.name", name, "name or generateName is required"
            )
        if len(name) > 253 or not _NAME.match(name):
            why = (
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                "characters, '-' or '.', and must start and end with an alphanumeric character"
            )
            raise invalid(name, rt.group, rt.kind, "metadata.name", name, why)

    def _defaults(
        self, rt: ResourceType, obj: dict[str, Any], old: Mapping[str, Any] | None = None
    ) -> None:
        # The few defaults clients commonly read back; real defaulting does far more.
        if rt.kind == "Secret":
            obj.setdefault("type", "Opaque")
        elif rt.kind == "Ingress":
            obj.setdefault("status", {"loadBalancer": {}})
        elif rt.kind == "Namespace":
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
            obj.setdefault("status", {"phase": "Active"})
        elif rt.kind == "Service":
            spec = obj.setdefault("spec", {})
            spec.setdefault("type", "ClusterIP")
            if spec["type"] != "ExternalName" and not spec.get("clusterIP"):
                old_spec = (old or {}).get("spec") or {}
                spec["clusterIP"] = old_spec.get("clusterIP") or self._cluster_ip()
                spec.setdefault("clusterIPs", [spec["clusterIP"]])
            for port in spec.get("ports") or []:
                if isinstance(port, dict):
                    port.setdefault("protocol", "TCP")
                    port.setdefault("targetPort", port.get("port"))

    def _cluster_ip(self) -> str:
        self._cluster_ips += 1
        return f"10.96.{self._cluster_ips // 250}.{self._cluster_ips % 250 + 1}"
