"""Warning Events on the Ingresses we cannot serve, so ``kubectl describe ingress`` says why,
and on the controller's ConfigMap when a key of it is rejected.

Core ``v1`` Events, not ``events.k8s.io/v1``: both APIs are views of the same objects, but
``kubectl describe`` finds Events through core v1's ``involvedObject`` field selectors,
every cluster version serves it, and ingress-nginx's recorder posts them the same way (so
a ClusterRole carried over from it already allows them). What events.k8s.io/v1 adds,
``series`` for repeated events, is not needed: repeats are not posted at all.

Repeats: one Event per Ingress, reason and message, until the Ingress's spec changes
(``metadata.generation``; not resourceVersion, which our own status write changes) or
``repeat_after`` has passed (Events expire, after 1 h by default, while the problem may
stay). Without permission to post Events (403), each rejection is logged once instead,
with one line saying why; other failures are logged too: Events are best effort.

RBAC: ``create`` on ``events`` in the core group, in the Ingresses' (and the ConfigMap's)
namespaces.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
import trio
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.core_v1 import EventSource, ObjectReference
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Event

from controller.kube.leader import describe_error
from fastroute.ingress.objects import mapping, name, namespace, text

__all__ = ["COMPONENT", "EventRecorder"]

log = logging.getLogger("fastroute.controller.events")

COMPONENT = "fastroute-controller"
MESSAGE_LIMIT = 1024  # the API server's limit on an Event's message (note), in bytes
NAME_LIMIT = 253 - 17  # room for ".<nanoseconds in hex>" in the Event's name


class EventRecorder:
    """Posts Warning Events about Ingresses (or ConfigMaps), each once.

    Args:
        client: the API client.
        component: ``source.component`` / ``reportingComponent`` (what ``kubectl
            describe`` shows as "From").
        instance: ``source.host`` / ``reportingInstance``: which replica (its pod name).
        repeat_after: seconds after which the same Event may be posted again.
        remember: how many posted Events are remembered (the oldest are forgotten).
    """

    def __init__(
        self,
        client: AsyncClient,
        *,
        component: str = COMPONENT,
        instance: str = "",
        repeat_after: float = 3600.0,
        remember: int = 4096,
    ) -> None:
        if remember < 1:
            raise ValueError(f"remember must be at least 1, got {remember}")
        self._client = client
        self.component = component
        self.instance = instance
        self.repeat_after = repeat_after
        self._remember = remember
        self._posted: OrderedDict[tuple[str, ...], float] = OrderedDict()  # key -> when
        self._forbidden = False
        self.posted = 0  # Events created, for metrics and logs

    async def rejected(self, ingress: Mapping[str, Any], reason: str, message: str) -> None:
        """Say (once) that ``ingress`` (or a ConfigMap: the object's ``kind`` says) was
        rejected: ``reason`` is a short CamelCase word (``Rejected``), ``message`` what is
        wrong, for a person."""
        meta = mapping(ingress.get("metadata"))
        key = (
            namespace(ingress),
            name(ingress),
            text(meta.get("uid")),
            str(meta.get("generation", "")),
            reason,
            message,
        )
        now = trio.current_time()
        last = self._posted.get(key)
        if last is not None and now - last < self.repeat_after:
            self._posted.move_to_end(key)
            return
        self._posted[key] = now
        self._posted.move_to_end(key)
        while len(self._posted) > self._remember:
            self._posted.popitem(last=False)
        try:
            await self._client.create(self._event(ingress, reason, message))
        except ApiError as error:
            if error.status.code != 403:
                self._log(
                    ingress, reason, message, f"cannot post an Event: {describe_error(error)}"
                )
                return
            if not self._forbidden:
                log.warning(
                    "not allowed to post Events (grant create on events); "
                    "logging rejected Ingresses instead: %s",
                    describe_error(error),
                )
                self._forbidden = True
            self._log(ingress, reason, message, "")
            return
        except httpx.HTTPError as error:
            self._log(ingress, reason, message, f"cannot post an Event: {describe_error(error)}")
            return
        self.posted += 1

    def _event(self, ingress: Mapping[str, Any], reason: str, message: str) -> Event:
        meta = mapping(ingress.get("metadata"))
        where = namespace(ingress)
        now = datetime.now(UTC).replace(microsecond=0)  # a Time: whole seconds
        return Event(
            # client-go's naming: the object's name and the time, unique enough
            metadata=ObjectMeta(
                name=f"{name(ingress)[:NAME_LIMIT]}.{time.time_ns():x}", namespace=where
            ),
            involvedObject=ObjectReference(
                apiVersion=text(ingress.get("apiVersion")) or "networking.k8s.io/v1",
                kind=text(ingress.get("kind")) or "Ingress",
                name=name(ingress),
                namespace=where,  # the Event must be in its object's namespace
                uid=text(meta.get("uid")) or None,
                resourceVersion=text(meta.get("resourceVersion")) or None,
            ),
            type="Warning",
            reason=reason,
            message=_truncated(message),
            source=EventSource(component=self.component, host=self.instance or None),
            reportingComponent=self.component,
            reportingInstance=self.instance or None,
            firstTimestamp=now,
            lastTimestamp=now,
            count=1,
        )

    def _log(self, ingress: Mapping[str, Any], reason: str, message: str, why: str) -> None:
        """The fallback: the Event as a log line."""
        log.warning(
            "%s %s/%s %s: %s%s",
            text(ingress.get("kind")) or "Ingress",
            namespace(ingress),
            name(ingress),
            reason,
            message,
            f" ({why})" if why else "",
        )


def _truncated(message: str) -> str:
    data = message.encode()
    if len(data) <= MESSAGE_LIMIT:
        return message
    return data[: MESSAGE_LIMIT - 3].decode(errors="ignore") + "..."
