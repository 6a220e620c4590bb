"""The plans of requests to plain routes, kept for the next request with the same target.

A route without annotations that act per request (``Policy.plain``) gets the same plan
for the same config, target, Host and scheme: ``decide`` reads nothing else for it. Most
traffic asks for the same few URLs again and again, and ``decide`` costs more than a dict
lookup (parsing the target, the trie, the plan), so the proxy keeps those plans for the
config in force, and forgets them when it installs another (they hold its routes). Emptied
when full, so a client sending endless distinct targets costs a miss each, never memory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastroute.proxy.decide import Forward

if TYPE_CHECKING:
    from fastroute.ingress.model import RouteConfig

__all__ = ["PlainPlans"]

PlanKey = tuple[bytes, bytes | None, str]  # target, Host, scheme


class PlainPlans:
    """Plain routes' ``Forward`` plans under one config, by target, Host and scheme."""

    __slots__ = ("_config", "_plans", "size")

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._config: RouteConfig | None = None
        self._plans: dict[PlanKey, Forward] = {}

    def get(self, config: RouteConfig, key: PlanKey) -> Forward | None:
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
        elif len(self._plans) >= self.size:
            self._plans.clear()
        self._plans[key] = plan

    def forget(self) -> None:
        """Drop every plan, and the config they were made under (another is installed)."""
        self._config = None
        self._plans = {}

    def __len__(self) -> int:
        return len(self._plans)
