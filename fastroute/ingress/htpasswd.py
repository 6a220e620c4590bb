"""htpasswd files and auth maps: who may pass ``auth-type: basic``, and checking a password.

The formats are those ``htpasswd`` writes and nginx's ``auth_basic_user_file`` reads:
one ``user:hash`` a line (a third ``:field`` is ignored, as nginx does), ``#`` comments
and blank lines skipped. A hash is one of

- bcrypt: ``$2y$``, ``$2b$``, ``$2a$`` (``htpasswd -B``), checked by the ``bcrypt`` library;
- apr1: ``$apr1$`` (Apache's MD5, ``htpasswd``'s default);
- ``{SHA}``: base64 of the password's SHA-1 (``htpasswd -s``);
- crypt: ``$1$`` (MD5), ``$5$`` (SHA-256), ``$6$`` (SHA-512) and 13-character DES
  (``htpasswd -d``), as glibc's ``crypt()`` reads them.

apr1 is checked by ``libpass`` (the maintained passlib). The crypt schemes are checked
by the platform's ``crypt()`` where Python still has it (3.11 and 3.12: it is C, and a
SHA-512 hash takes a millisecond), else by libpass's pure-Python versions (SHA-512's
default 5000 rounds then take about half a second of CPU, in a worker thread).

A line whose hash is none of these is skipped with a warning naming its number. That
includes plaintext passwords (``htpasswd -p``): nginx on Linux would hand them to
``crypt()``, where they never match, so they are refused rather than compared as text.
yescrypt (``$y$``) and other schemes libpass does not implement are skipped the same way.

Nothing here reports a hash or a password: warnings name line numbers and users only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import warnings
from collections.abc import Callable, Iterable, Mapping

import bcrypt
from passlib.hash import apr_md5_crypt, des_crypt, md5_crypt, sha256_crypt, sha512_crypt

__all__ = [
    "BCRYPT_MAX_PASSWORD",
    "MAX_BCRYPT_COST",
    "MAX_CRYPT_ROUNDS",
    "SCHEMES",
    "Users",
    "check_password",
    "read_auth_map",
    "read_htpasswd",
    "scheme_of",
]

Users = tuple[tuple[bytes, str], ...]  # (user, hash), in the file's order, users unique

# bcrypt reads at most 72 bytes of a password; the hash htpasswd wrote was made from them
BCRYPT_MAX_PASSWORD = 72

_BCRYPT = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
# A check's cost grows with these, and one that never ends holds a worker thread that
# every basic-auth route of the proxy shares: bcrypt cost 14 takes about a second of
# CPU (htpasswd's default is 5, and it writes at most 17); SHA-crypt's default is 5000
# rounds.
MAX_BCRYPT_COST = 14
MAX_CRYPT_ROUNDS = 100_000
_SALT = r"[./A-Za-z0-9]"
_CRYPT_SCHEMES = {
    "apr1": (re.compile(rf"\$apr1\${_SALT}{{1,8}}\${_SALT}{{22}}"), apr_md5_crypt),
    "md5-crypt": (re.compile(rf"\$1\${_SALT}{{1,8}}\${_SALT}{{22}}"), md5_crypt),
    "sha256-crypt": (
        re.compile(rf"\$5\$(rounds=[0-9]+\$)?{_SALT}{{1,16}}\${_SALT}{{43}}"),
        sha256_crypt,
    ),
    "sha512-crypt": (
        re.compile(rf"\$6\$(rounds=[0-9]+\$)?{_SALT}{{1,16}}\${_SALT}{{86}}"),
        sha512_crypt,
    ),
    "des-crypt": (re.compile(rf"{_SALT}{{13}}"), des_crypt),
}
_SHA = re.compile(r"\{SHA\}[A-Za-z0-9+/]{27}=")
SCHEMES = ("bcrypt", "sha1", *_CRYPT_SCHEMES)


def _platform_crypt() -> Callable[[str, str], str | None] | None:
    """The C library's ``crypt()``, where this Python still offers it (before 3.13)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt
    except ImportError:
        return None
    function: Callable[[str, str], str | None] = crypt.crypt
    return function


_CRYPT = _platform_crypt()


def scheme_of(hashed: str) -> str | None:
    """The scheme of a hash as htpasswd writes it, or None when fastroute cannot check it."""
    if _BCRYPT.fullmatch(hashed):
        return "bcrypt"
    if _SHA.fullmatch(hashed):
        return "sha1"
    for name, (pattern, _) in _CRYPT_SCHEMES.items():
        if pattern.fullmatch(hashed):
            return name
    return None


def _too_costly(scheme: str, hashed: str) -> str:
    """Why checking a hash would take too long, or "" when it would not."""
    if scheme == "bcrypt" and int(hashed[4:6]) > MAX_BCRYPT_COST:
        return f"bcrypt cost {int(hashed[4:6])} is over {MAX_BCRYPT_COST} (seconds per check)"
    rounds = re.match(r"\$[56]\$rounds=([0-9]+)\$", hashed)
    if rounds and int(rounds[1]) > MAX_CRYPT_ROUNDS:
        return f"{rounds[1]} rounds are over {MAX_CRYPT_ROUNDS} (seconds per check)"
    return ""


def _unusable(hashed: str) -> str:
    """Why a hash cannot be checked (it is not one fastroute reads)."""
    if not hashed:
        return "no password hash"
    if hashed.startswith("$2"):
        return "a malformed bcrypt hash"
    if hashed.startswith("{SHA}"):
        return "a malformed {SHA} hash"
    if hashed.startswith("$"):
        scheme = hashed[1:].partition("$")[0]
        return f"a hash of scheme ${scheme}$ that fastroute does not read (or a malformed one)"
    return (
        "not a recognised hash; plaintext passwords (htpasswd -p) are refused, as nginx "
        "on Linux would read them as crypt()"
    )


def check_password(password: bytes, hashed: str) -> bool:
    """Whether ``password`` is the one ``hashed`` was made from (constant-time compare).

    Slow by design for bcrypt (milliseconds): callers keep it off the event loop.
    """
    scheme = scheme_of(hashed)
    try:
        if scheme == "bcrypt":
            return bcrypt.checkpw(password[:BCRYPT_MAX_PASSWORD], hashed.encode("ascii"))
        if scheme == "sha1":
            digest = base64.b64encode(hashlib.sha1(password).digest())
            return hmac.compare_digest(digest, hashed[5:].encode("ascii"))
        if scheme is None:
            return False
        if _CRYPT is not None and scheme != "apr1" and b"\0" not in password:
            try:
                made = _CRYPT(password.decode("utf-8"), hashed)
            except UnicodeDecodeError:
                made = None  # crypt() takes text: libpass checks other bytes
            if made is not None:
                return hmac.compare_digest(made.encode("ascii", "replace"), hashed.encode())
        return bool(_CRYPT_SCHEMES[scheme][1].verify(password, hashed))
    except ValueError:  # a password the scheme cannot take (a NUL byte for crypt)
        return False
    return False


def read_htpasswd(text: bytes) -> tuple[Users, list[str]]:
    """The users of an htpasswd file, and a warning for each line skipped.

    As nginx reads it: the user is up to the first ``:``, the hash up to the next ``:``
    or the line's end; the first line of a user counts.
    """
    entries: list[tuple[str, bytes, bytes | None]] = []
    for number, raw in enumerate(text.split(b"\n"), start=1):
        line = raw.rstrip(b"\r")
        if not line.strip() or line.startswith(b"#"):
            continue
        user, colon, rest = line.partition(b":")
        entries.append((f"line {number}", user, rest.partition(b":")[0] if colon else None))
    return _users(entries)


def read_auth_map(entries: Mapping[str, bytes]) -> tuple[Users, list[str]]:
    """The users of an ``auth-map`` Secret: each key a user, each value the user's hash."""
    return _users(
        (f"key {user!r}", user.encode("utf-8"), hashed.strip())
        for user, hashed in sorted(entries.items())
    )


def _users(entries: Iterable[tuple[str, bytes, bytes | None]]) -> tuple[Users, list[str]]:
    """(where, user, hash) entries made users; a warning for each one skipped.

    A user's first entry is the one that counts, even when it is skipped (as nginx,
    which stops at a user's first line).
    """
    users: dict[bytes, str] = {}
    seen: set[bytes] = set()
    warnings: list[str] = []
    for where, user, raw in entries:
        if raw is None:
            warnings.append(f"{where}: no ':' between a user and a password hash; skipped")
            continue
        if not user:
            warnings.append(f"{where}: an empty user name; skipped")
            continue
        if user in seen:
            warnings.append(f"{where}: user {_shown(user)} is listed again; the first one counts")
            continue
        seen.add(user)
        try:
            hashed = raw.decode("ascii")
        except UnicodeDecodeError:
            hashed = "\ufffd"  # not a hash: say why below
        scheme = scheme_of(hashed)
        why = _unusable(hashed) if scheme is None else _too_costly(scheme, hashed)
        if why:
            warnings.append(f"{where} (user {_shown(user)}): {why}; skipped")
            continue
        users[user] = hashed
    return tuple(users.items()), warnings


def _shown(user: bytes) -> str:
    return repr(user.decode("utf-8", "backslashreplace"))
