"""The syntax of ``upstream-hash-by`` keys and the ``session-cookie-*`` values.

ingress-nginx's syntax, so that migrated manifests mean what they meant there; what
fastroute cannot honour is refused with the reason, never guessed.
"""

from __future__ import annotations

import re

from fastroute.ingress.balancing import HashKey
from fastroute.ingress.syntax import Malformed, read_header_name, read_host

__all__ = [
    "NAMED_VARIABLES",
    "VARIABLES",
    "read_choice",
    "read_cookie_domain",
    "read_cookie_name",
    "read_cookie_path",
    "read_hash_key",
    "read_samesite",
    "read_seconds",
]

# The nginx variables a hash key may use: each is read from the request in ``decide``.
# Those ending in "_" take a name: $http_x_user, $cookie_session, $arg_id.
VARIABLES = frozenset(
    {"request_uri", "uri", "args", "query_string", "remote_addr", "host", "scheme"}
)
NAMED_VARIABLES = ("http_", "cookie_", "arg_")

# ingress-nginx's split of a complex value: \$name (a literal "$name"), ${name}, $name,
# or text up to the next "$" or backslash
_PART = re.compile(r"\\\$([0-9A-Za-z_]+)|\$\{([0-9A-Za-z_]+)\}|\$([0-9A-Za-z_]+)|(\$|\\|[^$\\]+)")


def read_hash_key(text: str) -> HashKey:
    """``$request_uri``, ``$host$request_uri``, ``${request_uri}-v1``, ``$http_x_user``...

    Raises:
        Malformed: empty, or a variable fastroute does not read from a request (named).
    """
    if not text.strip():
        raise Malformed("expected nginx variables and text such as '$request_uri', got ''")
    parts: list[tuple[str, str]] = []
    for found in _PART.finditer(text):
        escaped, braced, plain, literal = found.groups()
        if escaped is not None:
            parts.append(("", "$" + escaped))
        elif literal is not None:
            parts.append(("", literal))
        else:
            parts.append(_variable(braced or plain, text))
    merged: list[tuple[str, str]] = []
    for part in parts:  # adjacent text is one part
        if merged and not part[0] and not merged[-1][0]:
            merged[-1] = ("", merged[-1][1] + part[1])
        else:
            merged.append(part)
    if all(not kind for kind, _ in merged):
        raise Malformed(
            f"{text!r} names no variable: every request would hash alike and go to one "
            "endpoint; use a variable such as $request_uri or $remote_addr"
        )
    return HashKey(text, tuple(merged))


def _variable(name: str, text: str) -> tuple[str, str]:
    if name in VARIABLES:
        return name, ""
    for kind in NAMED_VARIABLES:
        if name.startswith(kind) and len(name) > len(kind):
            rest = name[len(kind) :]
            # nginx's $http_x_user is the field X-User
            return (kind, rest.lower().replace("_", "-")) if kind == "http_" else (kind, rest)
    known = ", ".join(f"${v}" for v in sorted(VARIABLES))
    raise Malformed(
        f"${name} in {text!r} is not a variable fastroute reads from a request; use {known}, "
        "$http_NAME, $cookie_NAME or $arg_NAME"
    )


_COOKIE_PATH = re.compile(r"/[!-:<-~]*")  # visible ASCII without ";" (it ends an attribute)


def read_cookie_name(text: str) -> str:
    """A cookie name: an HTTP token (RFC 6265 §4.1.1)."""
    try:
        return read_header_name(text.strip())
    except Malformed:
        raise Malformed(
            f"expected a cookie name (letters, digits, - _ . ...), got {text!r}"
        ) from None


def read_cookie_path(text: str) -> str:
    path = text.strip()
    if _COOKIE_PATH.fullmatch(path) is None or "," in path:
        raise Malformed(f"expected a path starting with '/', without spaces or ';', got {text!r}")
    return path


def read_cookie_domain(text: str) -> str:
    """A host name; a leading dot (an old spelling browsers ignore) is kept as written."""
    word = text.strip()
    dot = "." if word.startswith(".") else ""
    try:
        return dot + read_host(word.removeprefix("."))
    except Malformed:
        raise Malformed(f"expected a domain such as example.com, got {text!r}") from None


def read_samesite(text: str) -> str:
    word = text.strip().lower()
    if word not in ("none", "lax", "strict"):
        raise Malformed(f"expected None, Lax or Strict, got {text!r}")
    return word.capitalize()


def read_seconds(text: str) -> int:
    """A whole number of seconds; negative allowed (Max-Age below 1 removes the cookie)."""
    word = text.strip()
    if re.fullmatch(r"-?[0-9]{1,10}", word) is None:
        raise Malformed(f"expected a whole number of seconds, got {text!r}")
    return int(word)


def read_choice(text: str, choices: tuple[str, ...]) -> str:
    word = text.strip().lower()
    if word not in choices:
        raise Malformed(f"expected {' or '.join(choices)}, got {text!r}")
    return word
