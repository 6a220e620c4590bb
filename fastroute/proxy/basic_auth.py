"""``auth-type: basic`` at request time: the ``Authorization`` field against the route's users.

A bcrypt check costs milliseconds of CPU by design, so it runs in a worker thread,
never on the event loop, and at most ``threads`` of them at once: a flood of wrong
passwords queues instead of taking every core. A check that cannot finish in
``timeout`` seconds is a 500 (fail closed), as ingress-nginx's auth phase errors are.

Verified credentials are remembered for ``ttl`` seconds (at most ``size`` of them),
keyed by a keyed digest of the user, the password and the hash it matched: a changed
Secret changes the hash, so the old password stops passing at once; the password
itself is never kept. Refusals are never remembered: each costs a full check.

A user the Secret does not list is checked against another user's hash and refused
whatever the result, so an unknown user costs what a wrong password costs and the
answer's timing does not say which users exist. Every refusal is the same 401 with
the realm's challenge; the reason is for the log only. The upstream receives the
``Authorization`` field as the client sent it, as nginx passes it on.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable

import trio

from fastroute.ingress.htpasswd import check_password
from fastroute.ingress.model import BasicAuth
from fastroute.proxy.decide import Answer

__all__ = ["BasicAuthCheck", "credentials"]


def credentials(value: bytes | None) -> tuple[bytes, bytes] | None:
    """(user, password) of an ``Authorization: Basic`` value; None when it is not one.

    As nginx reads it: the scheme in any case, then base64 of ``user:password`` (the
    password may hold more colons).
    """
    if value is None:
        return None
    scheme, _, token = value.strip().partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, colon, password = decoded.partition(b":")
    return (user, password) if colon else None


class BasicAuthCheck:
    """Checks passwords for every basic-auth route of a proxy (its cache and threads)."""

    def __init__(
        self,
        *,
        threads: int = max(1, min(4, os.cpu_count() or 1)),
        ttl: float = 30.0,
        size: int = 4096,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        count: Callable[[str], None] | None = None,
    ) -> None:
        self.limiter = trio.CapacityLimiter(threads)  # password checks at once
        self.ttl = ttl
        self.size = size
        self.timeout = timeout
        self.clock = clock
        self.count = count  # each check's result (metrics): cached, passed, refused, timeout
        self.checks = 0  # password hashes checked (cache hits are not counted)
        self._key = secrets.token_bytes(32)  # this process's: cache keys mean nothing outside
        self._verified: OrderedDict[bytes, float] = OrderedDict()  # key -> until

    async def check(self, auth: BasicAuth, authorization: bytes | None) -> Answer | None:
        """None when the request's credentials pass; else the answer refusing it (401
        with the challenge; 500 when the check took too long)."""
        found = credentials(authorization)
        if found is None:
            why = "no credentials" if authorization is None else "malformed Authorization"
            return self._challenge(auth, why)
        user, password = found
        hashed = auth.by_user.get(user)
        key = None if hashed is None else self._cache_key(user, password, hashed)
        if key is not None and self._remembered(key):
            self._counted("cached")
            return None
        if hashed is None:
            if not auth.users:
                return self._challenge(auth, "no users")
            hashed = auth.users[0][1]  # a decoy: the same cost as a wrong password
        self.checks += 1
        with trio.move_on_after(self.timeout):
            matched = await trio.to_thread.run_sync(
                check_password, password, hashed, limiter=self.limiter, abandon_on_cancel=True
            )
            if matched and key is not None:
                self._remember(key)
                self._counted("passed")
                return None
            self._counted("refused")
            return self._challenge(auth, "wrong user or password")
        self._counted("timeout")
        return Answer(500, reason=f"basic auth: the password check took over {self.timeout} s")

    def _counted(self, result: str) -> None:
        if self.count is not None:
            self.count(result)

    def _challenge(self, auth: BasicAuth, why: str) -> Answer:
        return Answer(401, lines=auth.challenge, reason=f"basic auth: {why}")

    def _cache_key(self, user: bytes, password: bytes, hashed: str) -> bytes:
        # lengths first, so that no two (user, password) pairs make the same message
        message = b"%d:%d:%s%s%s" % (len(user), len(password), user, password, hashed.encode())
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def _remembered(self, key: bytes) -> bool:
        until = self._verified.get(key)
        if until is None:
            return False
        if until < self.clock():
            del self._verified[key]
            return False
        return True

    def _remember(self, key: bytes) -> None:
        self._verified[key] = self.clock() + self.ttl
        self._verified.move_to_end(key)
        while len(self._verified) > self.size:
            self._verified.popitem(last=False)
