"""Which endpoint a request of an annotated route tries first, and the cookie that says so.

The seam between ``decide`` and ``Forwarder.forward`` for ``affinity``,
``upstream-hash-by`` and ``load-balance: ewma``, in ingress-nginx's order of precedence
(affinity, else hashing, else the load-balance algorithm):

* ``decide`` reads what the choice depends on from the request (``request_choice``): the
  hash key, or the affinity cookie with what its Set-Cookie depends on. It is pure.
* ``Chooser.attempts`` turns the balancer's round-robin list (healthy endpoints first)
  into the list to try: the chosen endpoint first, then the others in the balancer's
  order, so ``proxy-next-upstream`` retries still go where the balancer would send them.
* ``Chooser.answered`` says which Set-Cookie line, if any, goes on the response once an
  endpoint answered.

Nothing here reads a clock or touches a socket: times come in as arguments, and the
random draws (a balanced session's key, a subset's member, EWMA's two choices) come from
one ``random.Random``, which tests seed.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from fastroute.ingress.model import Backend, Endpoint, Policy, Target
from fastroute.proxy.affinity import (
    cookie_path,
    endpoint_token,
    is_session_key,
    session_key,
    set_cookie_line,
    tokens,
)
from fastroute.proxy.balancer import Balancer
from fastroute.proxy.ewma import PeakEwma
from fastroute.proxy.hashing import Ring, request_cookie, request_key, subsets
from fastroute.proxy.memo import ByIdentity

__all__ = ["Choice", "Chooser", "request_choice"]

# a balanced session's key is drawn again while it lands on an endpoint that is down:
# with one of N down, the chance all draws land on it is (1/N) ** this
_KEY_DRAWS = 20


@dataclass(slots=True)
class Choice:
    """What one request carries for the choice of its endpoint."""

    key: bytes  # upstream-hash-by: the request's key; affinity: the cookie's value (b"": none)
    https: bool = False  # the request came over HTTPS (the cookie is Secure)
    user_agent: bytes | None = None  # for session-cookie-conditional-samesite-none
    # what attempts() found, for answered(): the endpoint a valid cookie names (None: the
    # request had no valid cookie), and a new balanced session's key
    sticky: Endpoint | None = None
    issue: bytes = b""


def request_choice(
    policy: Policy,
    *,
    target: bytes,
    host: bytes,
    client: str,
    scheme: str,
    header: Callable[[bytes], bytes | None],
) -> Choice | None:
    """What the route's affinity or upstream-hash-by reads from this request, if either
    is set (None: the load-balance algorithm alone chooses)."""
    affinity = policy.affinity
    if affinity is not None:
        value = request_cookie(header(b"cookie"), affinity.name.encode()) or b""
        return Choice(value, scheme == "https", header(b"user-agent"))
    if policy.upstream_hash is not None:
        key = request_key(
            policy.upstream_hash,
            target=target,
            host=host,
            client=client,
            scheme=scheme,
            header=header,
        )
        return Choice(key)
    return None


class Chooser:
    """The proxy's state for these choices: rings and tokens per backend, EWMA readings.

    Rings and tokens are worked out once per backend object (a config swap brings new
    ones, built to the same values for the same endpoints).
    """

    def __init__(self, balancer: Balancer, rng: random.Random | None = None) -> None:
        self.balancer = balancer
        self.rng = rng or random.Random()
        self.ewma = PeakEwma(rng=self.rng)
        self._rings: ByIdentity[Backend, Ring] = ByIdentity(_ring, size=1024)
        self._subsets: dict[tuple[int, int], tuple[Backend, Ring, list[tuple[Endpoint, ...]]]]
        self._subsets = {}
        self._tokens: ByIdentity[Backend, dict[bytes, Endpoint]] = ByIdentity(
            lambda b: tokens(b, b.usable()), size=1024
        )

    def attempts(
        self, route: Target, choice: Choice | None, order: list[Endpoint], now: float
    ) -> list[Endpoint]:
        """The endpoints to try: ``order`` (the balancer's) with the chosen one first."""
        if not order or (len(order) < 2 and (choice is None or route.policy.affinity is None)):
            return order  # nothing to choose (none left: the forwarder answers 503)
        policy = route.policy
        backend = route.backend
        if choice is None:  # load-balance: ewma
            down = [e for e in order if self.balancer.is_down(e, now)]
            healthy = [e for e in order if e not in down] if down else order
            return self.ewma.order(healthy, now) + down
        affinity = policy.affinity
        if affinity is None:
            chosen = self._hashed(backend, policy, choice.key)
        elif affinity.mode == "persistent":
            chosen = self._persistent(backend, choice, order)
        else:
            chosen = self._balanced(backend, choice, now)
        if chosen is None:
            return order
        return [chosen, *(e for e in order if e != chosen)]

    def answered(
        self, route: Target, choice: Choice | None, endpoint: Endpoint, wall_now: float
    ) -> bytes:
        """The Set-Cookie line for a response ``endpoint`` gave, or b"" when none is due:
        a request without a valid cookie gets one naming the endpoint that answered; one
        whose sticky endpoint failed gets one only with session-cookie-change-on-failure."""
        affinity = route.policy.affinity
        if affinity is None or choice is None:
            return b""
        persistent = affinity.mode == "persistent"
        if choice.sticky is None:
            value = choice.issue
            if persistent:
                value = endpoint_token(route.backend, endpoint)
            elif affinity.change_on_failure and self._rings(route.backend).find(value) != endpoint:
                value = self._key_on(route.backend, endpoint) or value
        elif endpoint != choice.sticky and affinity.change_on_failure:
            if persistent:
                value = endpoint_token(route.backend, endpoint)
            else:
                value = self._key_on(route.backend, endpoint)
        else:
            return b""
        if not value:
            return b""
        return set_cookie_line(
            affinity,
            value,
            path=cookie_path(affinity, route.path),
            https=choice.https,
            user_agent=choice.user_agent,
            wall_now=wall_now,
        )

    def forget_missing(self, live: set[Endpoint]) -> None:
        self.ewma.forget_missing(live)

    def forget(self, endpoints: Iterable[Endpoint]) -> None:
        """Drop the EWMA readings of ``endpoints``, which left the config (rings and tokens
        are per backend object: a new config's replace them)."""
        self.ewma.forget(endpoints)

    # ------------------------------------------------------------------ internals

    def _hashed(self, backend: Backend, policy: Policy, key: bytes) -> Endpoint | None:
        if not policy.upstream_hash_subset:
            found = self._rings(backend).find(key)
            assert isinstance(found, Endpoint)
            return found
        size = policy.upstream_hash_subset_size
        cached = self._subsets.get((id(backend), size))
        if cached is None or cached[0] is not backend:
            groups = subsets(backend.usable(), size)
            cached = backend, Ring([f"set{i + 1}" for i in range(len(groups))]), groups
            if len(self._subsets) >= 1024:
                self._subsets.clear()
            self._subsets[(id(backend), size)] = cached
        _, ring, groups = cached
        group = groups[ring.index(key)]
        return group[self.rng.randrange(len(group))]

    def _persistent(self, backend: Backend, choice: Choice, order: list[Endpoint]) -> Endpoint:
        named = self._tokens(backend).get(choice.key) if choice.key else None
        if named is not None:
            choice.sticky = named
            return named
        return order[0]  # the cookie will name whichever endpoint answers

    def _balanced(self, backend: Backend, choice: Choice, now: float) -> Endpoint:
        ring = self._rings(backend)
        if is_session_key(backend, choice.key):
            found = ring.find(choice.key)
            assert isinstance(found, Endpoint)
            choice.sticky = found
            return found
        key = b""
        found = None
        for _ in range(_KEY_DRAWS):
            key = session_key(backend, self.rng.getrandbits(96))
            found = ring.find(key)
            assert isinstance(found, Endpoint)
            if not self.balancer.is_down(found, now):
                break
        assert isinstance(found, Endpoint)
        choice.issue = key
        return found

    def _key_on(self, backend: Backend, endpoint: Endpoint) -> bytes:
        """A balanced session key the ring gives to ``endpoint`` (b"" if none was drawn)."""
        ring = self._rings(backend)
        for _ in range(_KEY_DRAWS * max(1, len(ring.members))):
            key = session_key(backend, self.rng.getrandbits(96))
            if ring.find(key) == endpoint:
                return key
        return b""


def _ring(backend: Backend) -> Ring:
    return Ring(backend.usable())
