"""What ``match`` accepts: str, bytes and None; odd request paths; wrong types; identity."""

from __future__ import annotations

import pytest

from fastroute import PATH_TYPES, Router


def test_path_types_constant() -> None:
    assert set(PATH_TYPES) == {"Exact", "Prefix", "ImplementationSpecific"}
    assert len(PATH_TYPES) == 3


def _hosts_router() -> Router:
    router = Router()
    router.add("", "/", "Prefix", "any")
    router.add("foo.com", "/", "Prefix", "foo")
    return router


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        pytest.param("foo.com", "foo", id="str"),
        pytest.param(b"foo.com", "foo", id="bytes"),
        pytest.param(b"FOO.com:80", "foo", id="bytes-with-case-and-port"),
        pytest.param(None, "any", id="none"),
        pytest.param("", "any", id="empty-str"),
        pytest.param(b"", "any", id="empty-bytes"),
    ],
)
def test_host_forms(host: str | bytes | None, expected: str) -> None:
    router = _hosts_router()
    assert router.match(host, "/x") == expected
    assert router.match(host, b"/x") == expected


def test_host_case_folding_is_ascii_only() -> None:
    """U+212A KELVIN SIGN lower-cases to "k" in Unicode; a Host header must not alias k.com."""
    router = Router()
    router.add("k.com", "/", "Prefix", "k")
    router.add("", "/", "Prefix", "any")
    assert router.match("K.com", "/") == "k"
    assert router.match("\u212a.com", "/") == "any"
    assert router.match("\u212a.com".encode(), b"/") == "any"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param("", "exact-root", id="empty-is-root"),
        pytest.param(b"", "exact-root", id="empty-bytes-is-root"),
        pytest.param("/", "exact-root", id="root"),
        pytest.param("*", "default", id="asterisk-form"),
        pytest.param("foo", "default", id="no-leading-slash"),
        pytest.param(b"foo", "default", id="no-leading-slash-bytes"),
        pytest.param("http://foo.com/api", "default", id="absolute-form"),
        pytest.param("?x=1", "default", id="query-only"),
        pytest.param("//", "prefix-root", id="double-slash"),
        pytest.param("/api?x=1", "prefix-root", id="query-is-not-stripped"),
        pytest.param("/api/", "api", id="api-trailing-slash"),
        pytest.param("/API", "prefix-root", id="case-sensitive"),
        pytest.param("/api%2fx", "prefix-root", id="encoded-slash-is-not-a-separator"),
    ],
)
def test_unusual_request_paths(path: str | bytes, expected: str) -> None:
    router = Router()
    router.set_default("default")
    router.add("", "/", "Exact", "exact-root")
    router.add("", "/", "Prefix", "prefix-root")
    router.add("", "/api", "Prefix", "api")
    assert router.match("foo.com", path) == expected


def test_exact_match_is_the_whole_path_not_a_c_string() -> None:
    """An embedded NUL must not end the comparison early."""
    router = Router()
    router.add("", "/foo", "Exact", "foo")
    router.add("", "/bar", "Prefix", "bar")
    assert router.match("", "/foo\x00bar") is None
    assert router.match("", b"/foo\x00bar") is None
    assert router.match("", "/bar\x00") is None
    assert router.match("", "/bar/\x00") == "bar"


def test_very_long_paths() -> None:
    router = Router()
    router.add("", "/", "Prefix", "root")
    deep = "/a" * 2000
    router.add("", deep, "Prefix", "deep")
    router.add("", "/" + "x" * 10_000, "Exact", "long-exact")
    assert router.match("", deep) == "deep"
    assert router.match("", deep + "/b" * 50_000) == "deep"
    assert router.match("", deep[:-1] + "b") == "root"
    assert router.match("", "/" + "x" * 10_000) == "long-exact"
    assert router.match("", "/" + "x" * 10_001) == "root"
    assert router.match("", ("/" + "y" * 1_000_000).encode()) == "root"


def test_very_long_host() -> None:
    router = Router()
    router.add("", "/", "Prefix", "any")
    assert router.match("a" * 100_000 + ".com", "/") == "any"
    assert router.match(b"a." * 50_000, "/") == "any"


def test_non_ascii_path_as_str_and_as_utf8_bytes() -> None:
    router = Router()
    router.add("", "/café", "Exact", "cafe")
    router.add("", "/日本", "Prefix", "japan")
    assert router.match("", "/café") == "cafe"
    assert router.match("", "/café".encode()) == "cafe"
    assert router.match("", b"/caf\xc3\xa9") == "cafe"
    assert router.match("", "/cafe") is None
    assert router.match("", "/日本/東京") == "japan"
    assert router.match("", "/日本/東京".encode()) == "japan"
    assert router.match("", "/日本語") is None
    assert router.match("", "/日本語".encode()) is None


def test_str_and_bytes_may_be_mixed() -> None:
    router = Router()
    router.add("foo.com", "/api", "Prefix", "api")
    assert router.match("foo.com", b"/api/x") == "api"
    assert router.match(b"foo.com", "/api/x") == "api"
    assert router.match(b"foo.com", b"/api/x") == "api"


@pytest.mark.parametrize(
    ("host", "path"),
    [
        pytest.param(1, "/", id="int-host"),
        pytest.param(["foo.com"], "/", id="list-host"),
        pytest.param("foo.com", None, id="none-path"),
        pytest.param("foo.com", 1, id="int-path"),
        pytest.param("foo.com", ["/"], id="list-path"),
    ],
)
def test_wrong_types_raise_type_error(host: object, path: object) -> None:
    router = Router()
    router.add("", "/", "Prefix", "any")
    with pytest.raises(TypeError):
        router.match(host, path)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        router.explain(host, path)  # type: ignore[arg-type]


class _EqualToEverything:
    """A backend that compares equal to anything, to catch substitution by equality."""

    def __eq__(self, other: object) -> bool:
        return True

    def __hash__(self) -> int:
        return 0


def test_backends_are_returned_by_identity() -> None:
    router = Router()
    backends = [_EqualToEverything() for _ in range(4)]
    unhashable: dict[str, int] = {"port": 8080}
    router.add("", "/a", "Prefix", backends[0])
    router.add("", "/a", "Exact", backends[1])
    router.add("foo.com", "/a", "Prefix", backends[2])
    router.add("*.foo.com", "/a", "Prefix", unhashable)
    router.set_default(backends[3])
    assert router.match("", "/a/x") is backends[0]
    assert router.match("", "/a") is backends[1]
    assert router.match("foo.com", "/a") is backends[2]
    assert router.match("x.foo.com", "/a") is unhashable
    assert router.match("", "/b") is backends[3]
    assert router.remove("foo.com", "/a", "Prefix") is backends[2]
    assert [id(r.backend) for r in router.routes()] == [
        id(backends[0]),
        id(backends[1]),
        id(unhashable),
    ]


def test_one_backend_object_may_serve_many_rules() -> None:
    router = Router()
    shared = object()
    router.add("", "/a", "Prefix", shared)
    router.add("foo.com", "/b", "Exact", shared)
    assert router.match("", "/a") is shared
    assert router.match("foo.com", "/b") is shared
    assert router.remove("", "/a", "Prefix") is shared
    assert router.match("foo.com", "/b") is shared


def test_routers_are_independent() -> None:
    first, second = Router(), Router()
    first.add("", "/", "Prefix", "first")
    first.set_default("d1")
    assert second.match("", "/") is None
    assert len(second) == 0
    assert second.default is None


def test_routes_returns_an_iterator_of_routes() -> None:
    router = Router()
    router.add("", "/a", "Prefix", "a")
    routes = router.routes()
    assert iter(routes) is routes
    assert [r.path for r in routes] == ["/a"]
