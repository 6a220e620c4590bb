"""Fuzz target: the compiled matcher (``fastroute._match.Router``) against the reference.

An input is a short program: each operation is a byte naming it, followed by the bytes
it reads (missing bytes read as 0). Operations add and remove rules, remove a present
rule respelled, set the default, copy the router, and match or explain a request, on
both the compiled ``Router`` and ``tests/reference.py``'s ``ReferenceRouter``; after
each one the two must agree: the same rules in the same order, the same answer, the
same refusal. Hosts and paths come from a small alphabet that makes rules overlap, or
are raw bytes (any text, invalid UTF-8 included) so that the fuzzer can reach every
character class.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from fastroute import Route, RouteConflictError, RouteError, RouteNotFoundError, Router
from tests.reference import ReferenceExplanation, ReferenceRouter, respelled

MAX_OPS = 12
PATH_TYPES = ("Exact", "Prefix", "ImplementationSpecific")
RULE_HOSTS = (
    "", "a.com", "b.a.com", "*.a.com", "x.b.a.com", "*.b.a.com", "A.com", "b.a.com.",
    "*.A.COM", "*", "a..com", "*.*.a.com", "1.2.3.4", "a.com:80", "-a.com", "xn--bcher-kva.com",
)  # fmt: skip
REQUEST_HOSTS = (
    "", "a.com", "b.a.com", "x.b.a.com", "q.a.com", "q.b.a.com", "c.x.b.a.com", "com",
    "*.a.com", ".a.com", "127.0.0.1", "[::1]", "A.COM.", "a.com:8080", "b.a.com.:1", "\u212a.com",
)  # fmt: skip
SEGMENTS = ("a", "b", "aa", "", "A", ".", "..", "%2f", "%2F", "a b", "\u00e9", "a?b")
Text = str | bytes | None


class Program:
    """Reads an input's bytes in order; past the end, every byte is 0."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def byte(self) -> int:
        value = self.data[self.at] if self.at < len(self.data) else 0
        self.at += 1
        return value

    def more(self) -> bool:
        return self.at < len(self.data)

    def raw(self) -> bytes:
        """Up to 31 bytes, length first."""
        n = self.byte() & 31
        chunk = self.data[self.at : self.at + n]
        self.at += n
        return chunk

    def rule_path(self) -> str:
        shape = self.byte()
        segments = [SEGMENTS[self.byte() % len(SEGMENTS)] for _ in range(shape & 3)]
        path = "/" + "/".join(segments)
        if segments and shape & 4:
            path += "/"
        if shape & 8:
            path += "/"
        if shape & 0xF0 == 0xF0:
            path = path[1:]
        return path

    def rule(self) -> tuple[str, str, str]:
        host = RULE_HOSTS[self.byte() % len(RULE_HOSTS)]
        return host, self.rule_path(), PATH_TYPES[self.byte() % len(PATH_TYPES)]

    def raw_rule(self) -> tuple[str, str, str]:
        """A rule of any text: bytes read as UTF-8, lone surrogates for the invalid ones."""
        host = self.raw().decode("utf-8", "surrogateescape")
        path = self.raw().decode("utf-8", "surrogateescape")
        return host, path, PATH_TYPES[self.byte() % len(PATH_TYPES)]

    def request(self, rules: list[Route]) -> tuple[Text, str | bytes]:
        how = self.byte()
        host: str | None
        if how & 3 == 0:
            host = None
        elif how & 3 == 1 and rules:
            host = rules[self.byte() % len(rules)].host.replace("*", "q")
        else:
            host = REQUEST_HOSTS[self.byte() % len(REQUEST_HOSTS)]
        if rules and how & 4:
            path = rules[self.byte() % len(rules)].path
            path += ("", "/", "/a", "a", "//")[self.byte() % 5]
        else:
            path = self.rule_path()
        if how & 8:
            path = path.swapcase()
        if how & 16 and host:
            host = host.upper()
        # now str, now bytes: the router takes either
        return (
            host.encode() if how & 32 and host is not None else host,
            path.encode() if how & 64 else path,
        )

    def raw_request(self) -> tuple[bytes, bytes]:
        return self.raw(), self.raw()


# --------------------------------------------------------------------------- agreement


def attempt(action: Callable[[], Any]) -> tuple[Any, Exception | None]:
    """(result, None), or (None, the error): any error, so that the types can be compared."""
    try:
        return action(), None
    except (RouteError, RouteNotFoundError, TypeError, ValueError) as error:
        return None, error


def same_refusal(got: Exception | None, want: Exception | None, what: object) -> None:
    assert type(got) is type(want), (what, got, want)


def same_explanation(
    router: Router, reference: ReferenceRouter, host: Text, path: str | bytes
) -> None:
    want: ReferenceExplanation = reference.explain(host, path)
    got = router.explain(host, path)
    assert router.match(host, path) is want.backend, (host, path)
    assert got.backend is want.backend, (host, path)
    assert (got.host, got.scope, got.rule_host) == (want.host, want.scope, want.rule_host)
    assert got.candidates == want.candidates, (host, path)
    assert got.winner == want.winner, (host, path)
    key = lambda r: (r.host, r.path, r.path_type)  # noqa: E731
    assert sorted(got.not_consulted, key=key) == sorted(want.not_consulted, key=key)


def same_rules(router: Router, reference: ReferenceRouter) -> None:
    assert len(router) == len(reference)
    assert list(router.routes()) == reference.routes()


class Pair:
    """The compiled router and the reference, run in step."""

    def __init__(self) -> None:
        self.router = Router()
        self.reference = ReferenceRouter()
        self.backends = 0
        self.left: list[tuple[Router, list[Route], Any]] = []  # copied away, and what it held

    def add(self, rule: tuple[str, str, str]) -> None:
        self.backends += 1
        backend = f"backend-{self.backends}"
        _, refused = attempt(lambda: self.reference.add(*rule, backend))
        _, error = attempt(lambda: self.router.add(*rule, backend))
        same_refusal(error, refused, rule)
        if isinstance(refused, RouteConflictError):
            assert isinstance(error, RouteConflictError)
            assert error.existing == refused.existing

    def remove(self, rule: tuple[str, str, str]) -> None:
        removed, refused = attempt(lambda: self.reference.remove(*rule))
        got, error = attempt(lambda: self.router.remove(*rule))
        same_refusal(error, refused, rule)
        assert got is removed

    def copy(self, shallow: bool) -> None:
        self.left.append((self.router, self.reference.routes(), self.reference.default))
        self.router = self.router.__copy__() if shallow else self.router.copy()


def run(data: bytes) -> None:
    program = Program(data)
    pair = Pair()
    for _ in range(MAX_OPS):
        if not program.more():
            break
        op = program.byte() % 8
        if op == 0 or op == 1:
            pair.add(program.rule())
        elif op == 2:
            pair.remove(program.rule())
        elif op == 3 and len(pair.reference):
            rules = pair.reference.routes()
            present = rules[program.byte() % len(rules)]
            spell = program.byte()
            rule = (present.host, present.path, present.path_type)
            pair.remove(respelled(present) if spell & 1 else rule)
        elif op == 4:
            host, path = program.request(pair.reference.routes())
            same_explanation(pair.router, pair.reference, host, path)
            continue
        elif op == 5:
            which = program.byte()
            default = f"default-{which}" if which & 1 else None
            pair.router.set_default(default)
            pair.reference.set_default(default)
            assert pair.router.default is default
        elif op == 6:
            pair.copy(shallow=bool(program.byte() & 1))
        elif op == 7:
            if program.byte() & 1:
                pair.add(program.raw_rule())
            else:
                host, path = program.raw_request()
                same_explanation(pair.router, pair.reference, host, path)
                continue
        same_rules(pair.router, pair.reference)
    # every rule is found where it was added, and routers copied away kept what they held
    for route in pair.reference.routes():
        same_explanation(pair.router, pair.reference, route.host.replace("*", "w"), route.path)
    for router, rules, default in pair.left:
        assert list(router.routes()) == rules
        assert router.default is default


def fuzz_one(data: bytes) -> None:
    run(data)


def main() -> None:
    import atheris

    # libFuzzer runs argv[0] again to merge: fuzz.run gives an executable that starts this
    argv = [os.environ.get("FUZZ_LAUNCHER", sys.argv[0]), *sys.argv[1:]]
    atheris.Setup(argv, fuzz_one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
