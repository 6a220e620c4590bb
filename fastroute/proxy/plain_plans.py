"""The plans of requests to plain routes, kept for the next request with the same target.

A route without annotations that act per request (``Policy.plain``) gets the same plan
for the same config, target, Host and scheme: ``decide`` reads nothing else for it. Most
traffic asks for the same few URLs again and again, and ``decide`` costs more than a dict
lookup (parsing the target, the trie, the plan), so the proxy keeps those plans for the
config in force, and forgets them when it installs another (they hold its routes). Emptied
when full, so a client sending endless distinct targets costs a miss each, never memory.

Each plan is kept with what the request loop reads of it on its short way (``Kept``),
looked up once when it is kept rather than on every request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastroute.proxy.decide import Forward
from fastroute.proxy.real_ip import ClientTrust

if TYPE_CHECKING:
    from fastroute.ingress.model import RouteConfig

__all__ = ["Kept", "PlainPlans"]

PlanKey = tuple[bytes, bytes | None, str]  # target, Host, scheme


class Kept:
    """A plain route's plan, and what the short way reads of it, at hand."""

    __slots__ = (
        "host",
        "ingress",
        "logged",
        "override_host",
        "plan",
        "service",
        "short",
        "target",
    )

    def __init__(self, plan: Forward, short: bool) -> None:
        route = plan.route
        self.plan = plan
        self.target: bytes = plan.target
        self.host: bytes = plan.host
        self.override_host: bool = plan.host_from_target
        self.ingress: str = route.ingress
        self.service: str = route.backend.name
        self.logged: bool = route.policy.access_log
        # the config needs nothing of a client but its address (no real-IP headers to
        # read): a request without a body can go the short way
        self.short = short


class PlainPlans:
    """Plain routes' ``Forward`` plans under one config, by target, Host and scheme."""

    __slots__ = ("_config", "_plans", "_short", "size")

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._config: RouteConfig | None = None
        self._plans: dict[PlanKey, Kept] = {}
        self._short = False

    def get(self, config: RouteConfig | None, key: PlanKey) -> Kept | None:
        """The plan kept for ``key`` under ``config``, if any."""
        if config is not self._config:
            return None
        return self._plans.get(key)

    def keep(self, config: RouteConfig, key: PlanKey, plan: object) -> None:
        """Keep ``plan`` for ``key`` if it is a plain route's: nothing in it depends on
        anything but the key (no client, no field, no clock, no slot held)."""
        if not (isinstance(plan, Forward) and plan.route.policy.plain and plan.held is None):
            return
        if config is not self._config:
            self._config = config
            self._plans = {}
            self._short = not ClientTrust.wanted(config.settings)
        elif len(self._plans) >= self.size:
            self._plans.clear()
        self._plans[key] = Kept(plan, self._short)

    def forget(self) -> None:
        """Drop every plan, and the config they were made under (another is installed)."""
        self._config = None
        self._plans = {}

    def __len__(self) -> int:
        return len(self._plans)
