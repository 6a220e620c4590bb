"""One list of the cluster's objects, for commands that read it once instead of serving it.

The same reflectors as the controller's (same kinds, field selectors and namespaces), run
until each has listed once, then stopped; then, as the controller does, one list of each
Secret an Ingress annotation names (by name, the types the TLS list left out). A cluster
that does not answer within ``timeout`` seconds is an error, not a wait without end.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import trio
from lightkube import AsyncClient
from lightkube.core.resource import NamespacedResource
from lightkube.resources.core_v1 import ConfigMap, Secret

from controller.kube.reflector import Reflector
from controller.kube.source import KINDS, named_secret_selector
from controller.kube.store import Key, annotated_secrets, snapshot

__all__ = ["ListError", "list_once"]


class ListError(Exception):
    """The API did not give every list in time."""


async def list_once(
    client: AsyncClient,
    *,
    namespaces: Sequence[str] = (),
    configmap: tuple[str, str] | None = None,
    timeout: float = 30.0,
) -> list[Mapping[str, Any]]:
    """Every object the controller follows, plus the ConfigMap (namespace, name) if given.

    The Secrets that Ingress annotations name are in it once each, whatever their type.

    Raises:
        ListError: some list did not complete within ``timeout`` seconds.
    """
    reflectors: list[Reflector] = []
    for kind in KINDS:
        cluster_wide = not namespaces or not issubclass(kind.resource, NamespacedResource)
        for namespace in [None] if cluster_wide else namespaces:
            reflectors.append(
                Reflector(client, kind.resource, namespace, field_selector=kind.field_selector)
            )
    if configmap is not None:
        reflectors.append(
            Reflector(
                client, ConfigMap, configmap[0], field_selector=f"metadata.name={configmap[1]}"
            )
        )
    by_name: list[Reflector] = []
    with trio.move_on_after(timeout):
        await _list_all(reflectors)
        named: set[Key] = set()
        for obj in snapshot(r.cache for r in reflectors if r.cache.kind == "Ingress"):
            named |= annotated_secrets(obj)
        by_name = [
            Reflector(client, Secret, ns, field_selector=named_secret_selector(name))
            for ns, name in sorted(named)
        ]
        await _list_all(by_name)
    waiting = [r.name for r in (*reflectors, *by_name) if not r.synced.is_set()]
    if waiting:
        raise ListError(f"the API did not list {', '.join(waiting)} within {timeout:g} s")
    return snapshot((r.cache for r in reflectors), (r.cache for r in by_name))


async def _list_all(reflectors: Sequence[Reflector]) -> None:
    """Run the reflectors until each has listed once."""
    async with trio.open_nursery() as nursery:
        for reflector in reflectors:
            nursery.start_soon(reflector.run)
        for reflector in reflectors:
            await reflector.synced.wait()
        nursery.cancel_scope.cancel()
