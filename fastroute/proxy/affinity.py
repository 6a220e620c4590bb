"""``affinity: cookie``: what the session cookie says, and the Set-Cookie that issues it.

Sans-I/O. What a user of ingress-nginx's sticky sessions relies on, kept true here:

* The cookie names an endpoint without revealing its address, and means the same
  endpoint in every replica and after every config swap that keeps the endpoint: its
  value is derived from the endpoint and the backend, never drawn at random per process.
* ``affinity-mode: persistent``: the value is a token of the endpoint itself, a keyed
  BLAKE2b of the backend's name and the endpoint's address and port (32 hex digits,
  personalised for this use, so it matches no other hash of the same address). While
  that endpoint serves the backend, the session goes there; once it is gone, the request
  is balanced like a new one and a new cookie names the endpoint that answered.
* ``affinity-mode: balanced`` (the default): the value is a session key (random, and
  tagged with the backend), and the endpoint is the one that owns the key on the
  backend's consistent-hash ring
  (``hashing.Ring``), as ingress-nginx's. When pods are added, about the share of
  sessions they take moves to them (the load rebalances); when one goes, only its
  sessions move, each to the same endpoint in every replica; the cookie need not change.
  A new session's key is drawn so that it lands on a healthy endpoint; the key is
  random, but what it means is the ring's, the same everywhere.
* A cookie that names nothing (garbage, an old token of another backend) is treated as
  no cookie: the request is balanced and a new cookie is issued.
* ``session-cookie-change-on-failure``: when the sticky endpoint failed and another
  answered, the cookie moves to the one that answered; otherwise it stays (the next
  request tries the sticky endpoint again).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from email.utils import formatdate

from fastroute.ingress.balancing import Affinity
from fastroute.ingress.model import Backend, Endpoint
from fastroute.proxy.memo import ByIdentity

__all__ = [
    "cookie_path",
    "endpoint_token",
    "is_session_key",
    "names_backend",
    "same_site_none_compatible",
    "session_key",
    "set_cookie_line",
    "tokens",
]

_PERSON = b"fastroute-stick"  # BLAKE2b personalisation: these tokens and nothing else
_SESSION = b"fastroute-sessn"  # and for balanced keys' backend tags
_KEY = re.compile(rb"[0-9a-f]{32}")
_REGEX_SPECIAL = re.compile(r"[\\^$.|?*+()\[\]{}]")


def endpoint_token(backend: Backend, endpoint: Endpoint) -> bytes:
    """The persistent cookie value naming ``endpoint`` of ``backend``."""
    digest = hashlib.blake2b(
        str(endpoint).encode(),
        digest_size=16,
        key=backend.name.encode()[:64],
        person=_PERSON,
    )
    return digest.hexdigest().encode()


def _backend_tag(backend: Backend) -> bytes:
    return (
        hashlib.blake2b(backend.name.encode(), digest_size=4, person=_SESSION).hexdigest().encode()
    )


def session_key(backend: Backend, bits: int) -> bytes:
    """A balanced-mode key: 96 random ``bits`` as 24 hex digits, then 8 naming the backend
    (so that a session can tell which backend it belongs to, as a canary needs)."""
    return b"%024x" % (bits & (1 << 96) - 1) + _backend_tag(backend)


def is_session_key(backend: Backend, value: bytes | None) -> bool:
    """Whether ``value`` is a balanced-mode key of ``backend``."""
    return (
        value is not None
        and _KEY.fullmatch(value) is not None
        and value[24:] == _backend_tag(backend)
    )


def names_backend(backend: Backend, value: bytes | None) -> bool:
    """Whether a cookie's ``value`` is a session of ``backend``: a balanced key of it, or
    the token of one of its endpoints (``affinity-canary-behavior: sticky``)."""
    if value is None:
        return False
    return is_session_key(backend, value) or value in _usable_tokens(backend)


def tokens(backend: Backend, endpoints: Sequence[Endpoint]) -> dict[bytes, Endpoint]:
    """Persistent tokens of the backend's endpoints, to find the one a cookie names."""
    return {endpoint_token(backend, e): e for e in endpoints}


def _tokens_of_usable(backend: Backend) -> dict[bytes, Endpoint]:
    return tokens(backend, backend.usable())


# per backend object: a config swap makes new ones, so the tokens follow the endpoints
_usable_tokens: ByIdentity[Backend, dict[bytes, Endpoint]] = ByIdentity(
    _tokens_of_usable, size=4096
)


def cookie_path(affinity: Affinity, rule_path: str) -> str:
    """The cookie's Path: ``session-cookie-path``, else the rule's path.

    ingress-nginx writes the rule's path as it is, a regular expression included, where no
    browser would match it (it warns that session-cookie-path should be set). fastroute
    uses the regex's literal start instead, cut back to its last ``/`` (``/api/v[0-9]+``
    gives ``/api/``), so the cookie comes back on every path the rule can match.
    """
    if affinity.path is not None:
        return affinity.path
    path = rule_path or "/"
    if affinity.regex_paths:
        special = _REGEX_SPECIAL.search(path)
        if special is not None:
            literal = path[: special.start()]
            path = literal[: literal.rfind("/") + 1] or "/"
    return path


def same_site_none_compatible(user_agent: bytes | None) -> bool:
    """Whether a browser takes ``SameSite=None`` (those that do not drop the cookie, or
    read it as Strict: the Chromium project's list of incompatible clients)."""
    if not user_agent:
        return True
    ua = user_agent
    if b"Chrome/5" in ua or b"Chrome/6" in ua or b"Chrome/4" in ua:
        return False
    if b"CPU iPhone OS 12" in ua or b"iPad; CPU OS 12" in ua:
        return False
    return not (
        b"Macintosh" in ua
        and b"Intel Mac OS X 10_14" in ua
        and b"Safari" in ua
        and b"Chrome" not in ua
    )


def set_cookie_line(
    affinity: Affinity,
    value: bytes,
    *,
    path: str,
    https: bool,
    user_agent: bytes | None,
    wall_now: float,
) -> bytes:
    """The whole ``Set-Cookie: ...\\r\\n`` line issuing ``value``.

    Args:
        affinity: The route's cookie settings.
        value: The cookie's value (a token or a session key).
        path: Its Path (``cookie_path``).
        https: The request came over HTTPS: the cookie is Secure.
        user_agent: The request's User-Agent (session-cookie-conditional-samesite-none).
        wall_now: The wall clock (seconds since the epoch), for Expires.
    """
    parts = [affinity.name.encode() + b"=" + value, b"Path=" + path.encode()]
    if affinity.domain:
        parts.append(b"Domain=" + affinity.domain.encode())
    if affinity.expires is not None:
        parts.append(b"Expires=" + formatdate(wall_now + affinity.expires, usegmt=True).encode())
    if affinity.max_age is not None:
        parts.append(b"Max-Age=%d" % affinity.max_age)
    if affinity.secure or https:
        parts.append(b"Secure")
    parts.append(b"HttpOnly")
    samesite = affinity.samesite
    if samesite and not (
        samesite == "None"
        and affinity.conditional_samesite_none
        and not same_site_none_compatible(user_agent)
    ):
        parts.append(b"SameSite=" + samesite.encode())
    return b"Set-Cookie: " + b"; ".join(parts) + b"\r\n"
