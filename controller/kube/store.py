"""The local copy of one kind's objects, and the snapshot ``build_config`` reads.

Sans-IO: a ``Cache`` is fed what a list or a watch event said and answers with the
``Change`` it made, so the diff after a re-list (the only way to learn of deletions missed
while a watch was away) is plain code, tested without a server.

Objects are plain dicts as the API server sent them, with ``kind`` and ``apiVersion`` filled
in (list items carry neither, and ``build_config`` dispatches on ``kind``). A stored dict is
never changed afterwards: an update replaces it. That is what lets a snapshot (a new list of
the same dicts) be read by ``build_config`` in a worker thread while the watches go on.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from fastroute.ingress.secret_refs import named_secrets

__all__ = [
    "Cache",
    "Change",
    "Key",
    "SecretNames",
    "annotated_secrets",
    "key_of",
    "referenced_secrets",
    "snapshot",
    "tls_secrets",
]

Key = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped objects
ChangeType = Literal["ADDED", "MODIFIED", "DELETED"]
TLS_SECRET_TYPE = "kubernetes.io/tls"


@dataclass(frozen=True, slots=True)
class Change:
    """One object added, modified or deleted in a cache (its last state for a deletion)."""

    type: ChangeType
    kind: str
    key: Key
    obj: Mapping[str, Any]
    previous: Mapping[str, Any] | None = None  # what a modification replaced


def key_of(obj: Mapping[str, Any]) -> Key:
    """The cache key of an object.

    Raises:
        ValueError: the object has no ``metadata.name`` (it cannot be kept or removed).
    """
    metadata = obj.get("metadata")
    if not isinstance(metadata, Mapping):
        raise ValueError("the object has no metadata")
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError("the object has no metadata.name")
    namespace = metadata.get("namespace")
    return (namespace if isinstance(namespace, str) else "", name)


def _version(obj: Mapping[str, Any]) -> object:
    metadata = obj.get("metadata")
    return metadata.get("resourceVersion") if isinstance(metadata, Mapping) else None


class Cache:
    """The objects of one kind (in one namespace, or all) as last listed and watched."""

    def __init__(self, kind: str, api_version: str) -> None:
        self.kind = kind
        self.api_version = api_version
        self._objects: dict[Key, Mapping[str, Any]] = {}

    def __len__(self) -> int:
        return len(self._objects)

    def __iter__(self) -> Iterator[Mapping[str, Any]]:
        return iter(self._objects.values())

    def get(self, key: Key) -> Mapping[str, Any] | None:
        return self._objects.get(key)

    def _typed(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        typed = dict(obj)  # one shallow copy: the stored dict is ours alone
        typed.setdefault("kind", self.kind)
        typed.setdefault("apiVersion", self.api_version)
        return typed

    def replace(self, items: Iterable[Mapping[str, Any]]) -> tuple[list[Change], list[str]]:
        """Take a complete list's items as the new content; the changes, and the items skipped.

        An object missing from the list was deleted while nobody watched; one whose
        ``resourceVersion`` differs was modified. Items without a name are skipped (and
        named in the second list), so one bad object never hides the others.
        """
        fresh: dict[Key, Mapping[str, Any]] = {}
        skipped: list[str] = []
        for n, item in enumerate(items):
            try:
                fresh[key_of(item)] = self._typed(item)
            except (ValueError, TypeError, AttributeError) as error:
                skipped.append(f"item #{n}: {error}")
        changes: list[Change] = []
        for key, obj in self._objects.items():
            if key not in fresh:
                changes.append(Change("DELETED", self.kind, key, obj))
        for key, obj in fresh.items():
            old = self._objects.get(key)
            if old is None:
                changes.append(Change("ADDED", self.kind, key, obj))
            elif _version(old) != _version(obj) or _version(obj) is None:
                changes.append(Change("MODIFIED", self.kind, key, obj, old))
            else:
                fresh[key] = old  # unchanged: keep the dict snapshots already hold
        self._objects = fresh
        return changes, skipped

    def apply(self, event_type: str, obj: Mapping[str, Any]) -> Change:
        """Apply one watch event (``ADDED``, ``MODIFIED`` or ``DELETED``); the change made.

        Raises:
            ValueError: an unknown event type, or an object without a name.
        """
        key = key_of(obj)
        if event_type == "DELETED":
            last = self._objects.pop(key, None)
            return Change("DELETED", self.kind, key, last if last is not None else obj)
        if event_type not in ("ADDED", "MODIFIED"):
            raise ValueError(f"unknown watch event type {event_type!r}")
        typed = self._typed(obj)
        previous = self._objects.get(key)
        self._objects[key] = typed
        if previous is None:
            return Change("ADDED", self.kind, key, typed)
        return Change("MODIFIED", self.kind, key, typed, previous)


def snapshot(caches: Iterable[Cache], by_name: Iterable[Cache] = ()) -> list[Mapping[str, Any]]:
    """Every cached object, as one list for ``build_config`` (the dicts are shared: read only).

    ``by_name``: the caches of Secrets watched one by one; their objects come after the
    others, each unless a Secret cache in ``caches`` holds the same Secret (a Secret
    deleted and created again with another type can be in both for a moment), so that a
    Secret is in the snapshot once.
    """
    caches = list(caches)
    objects: list[Mapping[str, Any]] = []
    for cache in caches:
        objects.extend(cache)
    secrets = [cache for cache in caches if cache.kind == "Secret"]
    for cache in by_name:
        for obj in cache:
            if not any(held.get(key_of(obj)) is not None for held in secrets):
                objects.append(obj)
    return objects


def referenced_secrets(ingresses: Iterable[Mapping[str, Any]]) -> set[Key]:
    """The (namespace, name) of every Secret that an Ingress's ``spec.tls`` names.

    Only these Secrets, and those the annotations name (``annotated_secrets``), can change
    a RouteConfig; a change to any other TLS Secret in the cluster (cert-manager renews
    many) needs no rebuild.
    """
    found: set[Key] = set()
    for ingress in ingresses:
        found |= tls_secrets(ingress)
    return found


def _namespace(ingress: Mapping[str, Any]) -> str:
    metadata = ingress.get("metadata")
    namespace = metadata.get("namespace") if isinstance(metadata, Mapping) else None
    return namespace if isinstance(namespace, str) and namespace else "default"


def tls_secrets(ingress: Mapping[str, Any]) -> set[Key]:
    """The (namespace, name) of the Secrets one Ingress's ``spec.tls`` names."""
    spec = ingress.get("spec")
    tls = spec.get("tls") if isinstance(spec, Mapping) else None
    namespace = _namespace(ingress)
    found: set[Key] = set()
    for entry in tls if isinstance(tls, list) else ():
        name = entry.get("secretName") if isinstance(entry, Mapping) else None
        if isinstance(name, str) and name:
            found.add((namespace, name))
    return found


def annotated_secrets(ingress: Mapping[str, Any]) -> set[Key]:
    """The (namespace, name) of the Secrets one Ingress's annotations name.

    ``auth-secret``, ``auth-tls-secret`` and ``proxy-ssl-secret``, with either prefix, as
    ``name`` or ``namespace/name``. A reference that is malformed or names another
    namespace than the Ingress's is left out: the builder refuses it, so the Secret is
    never fetched.
    """
    metadata = ingress.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, Mapping) else None
    if not isinstance(annotations, Mapping) or not annotations:
        return set()
    return {ref.key for ref in named_secrets(annotations, _namespace(ingress))}


class SecretNames:
    """Which Secrets the Ingresses name, kept up to date one Ingress change at a time.

    Sans-IO, for the source: ``update`` says which annotation-named Secrets just gained
    their first Ingress (start watching them) or lost their last (stop), and ``in``
    answers whether a Secret's change can matter to the build (spec.tls or annotations).
    """

    def __init__(self) -> None:
        self._by_ingress: dict[Key, tuple[frozenset[Key], frozenset[Key]]] = {}
        self._tls: Counter[Key] = Counter()
        self._annotated: Counter[Key] = Counter()

    def __contains__(self, secret: object) -> bool:
        return secret in self._tls or secret in self._annotated

    @property
    def annotated(self) -> set[Key]:
        """The Secrets some Ingress's annotations name."""
        return set(self._annotated)

    def update(self, ingress: Key, obj: Mapping[str, Any] | None) -> tuple[set[Key], set[Key]]:
        """Take an Ingress's new version (None: deleted); the annotation-named Secrets that
        no Ingress named before, and those no Ingress names any more."""
        old_tls, old_annotated = self._by_ingress.pop(ingress, (frozenset(), frozenset()))
        new_tls = frozenset(tls_secrets(obj)) if obj is not None else frozenset()
        new_annotated = frozenset(annotated_secrets(obj)) if obj is not None else frozenset()
        if new_tls or new_annotated:
            self._by_ingress[ingress] = (new_tls, new_annotated)
        self._tls.update(new_tls)
        self._tls.subtract(old_tls)
        self._annotated.update(new_annotated)
        self._annotated.subtract(old_annotated)
        for counter, keys in ((self._tls, old_tls), (self._annotated, old_annotated)):
            for key in keys:
                if counter[key] <= 0:
                    del counter[key]
        started = {key for key in new_annotated - old_annotated if self._annotated[key] == 1}
        stopped = {key for key in old_annotated - new_annotated if key not in self._annotated}
        return started, stopped
