"""``Router.explain``: it agrees with ``match`` and says which rules it weighed and skipped."""

from __future__ import annotations

import pytest

from fastroute import Explanation, Route, Router

DEFAULT = "default-backend"


def _router() -> Router:
    router = Router()
    router.set_default(DEFAULT)
    router.add("", "/", "Prefix", "any-root")
    router.add("", "/api", "Prefix", "any-api")
    router.add("", "/zzz", "Prefix", "any-zzz")
    router.add("*.foo.com", "/api", "Prefix", "wild-api")
    router.add("*.foo.com", "/", "Exact", "wild-root")
    router.add("bar.foo.com", "/api/v1", "Prefix", "bar-v1")
    router.add("bar.foo.com", "/api", "Exact", "bar-api-exact")
    router.add("bar.foo.com", "/api/", "Prefix", "bar-api")
    return router


def _keys(routes: tuple[Route, ...]) -> set[tuple[str, str, str]]:
    return {(r.host, r.path, r.path_type) for r in routes}


def test_explain_returns_an_explanation() -> None:
    explanation = _router().explain("bar.foo.com", "/api")
    assert isinstance(explanation, Explanation)
    assert isinstance(explanation.reason, str)
    assert explanation.reason


def test_exact_beats_prefix_on_equal_length() -> None:
    explanation = _router().explain("bar.foo.com", "/api")
    assert explanation.host == "bar.foo.com"
    assert explanation.path == "/api"
    assert explanation.scope == "exact"
    assert explanation.rule_host == "bar.foo.com"
    assert explanation.candidates == (
        Route("bar.foo.com", "/api", "Exact", "bar-api-exact"),
        Route("bar.foo.com", "/api/", "Prefix", "bar-api"),
    )
    assert explanation.winner == Route("bar.foo.com", "/api", "Exact", "bar-api-exact")
    assert explanation.backend == "bar-api-exact"
    # the wildcard's and the host-less rules for /api match too, but were not consulted
    assert _keys(explanation.not_consulted) == {
        ("*.foo.com", "/api", "Prefix"),
        ("", "/api", "Prefix"),
        ("", "/", "Prefix"),
    }


def test_candidates_are_best_first() -> None:
    explanation = _router().explain("BAR.foo.com:8443", "/api/v1/users")
    assert explanation.host == "bar.foo.com"
    assert [(r.path, r.path_type) for r in explanation.candidates] == [
        ("/api/v1", "Prefix"),
        ("/api/", "Prefix"),
    ]
    assert explanation.winner is not None
    assert explanation.winner.backend == "bar-v1"


def test_selected_host_without_a_match_gives_the_default_and_lists_skipped_rules() -> None:
    explanation = _router().explain("bar.foo.com", "/other")
    assert explanation.scope == "exact"
    assert explanation.candidates == ()
    assert explanation.winner is None
    assert explanation.backend == DEFAULT
    # "/" on any host would have matched; it was not consulted (no fallthrough)
    assert _keys(explanation.not_consulted) == {("", "/", "Prefix")}
    assert "none" in str(explanation)


def test_wildcard_scope() -> None:
    explanation = _router().explain("Baz.Foo.com.", "/api/x")
    assert explanation.host == "baz.foo.com"
    assert explanation.scope == "wildcard"
    assert explanation.rule_host == "*.foo.com"
    assert explanation.candidates == (Route("*.foo.com", "/api", "Prefix", "wild-api"),)
    assert explanation.winner == Route("*.foo.com", "/api", "Prefix", "wild-api")
    assert explanation.backend == "wild-api"
    # the exact host bar.foo.com is not less specific and does not cover baz.foo.com
    assert _keys(explanation.not_consulted) == {("", "/api", "Prefix"), ("", "/", "Prefix")}


def test_any_host_scope_consults_everything_it_has() -> None:
    explanation = _router().explain("example.org", "/api/x")
    assert explanation.scope == "any"
    assert explanation.rule_host == ""
    assert explanation.candidates == (
        Route("", "/api", "Prefix", "any-api"),
        Route("", "/", "Prefix", "any-root"),
    )
    assert explanation.not_consulted == ()
    assert explanation.backend == "any-api"


@pytest.mark.parametrize(
    "host",
    [
        pytest.param(None, id="none"),
        pytest.param("", id="empty"),
        pytest.param("127.0.0.1:80", id="ipv4"),
        pytest.param("[::1]:80", id="ipv6"),
        pytest.param(b"[::1]", id="ipv6-bytes"),
    ],
)
def test_no_named_host(host: str | bytes | None) -> None:
    explanation = _router().explain(host, "/api")
    assert explanation.host == ""
    assert explanation.scope == "any"
    assert explanation.backend == "any-api"


def test_not_consulted_lists_only_rules_whose_path_matches() -> None:
    explanation = _router().explain("bar.foo.com", "/api/v1")
    assert ("", "/zzz", "Prefix") not in _keys(explanation.not_consulted)
    assert ("*.foo.com", "/", "Exact") not in _keys(explanation.not_consulted)
    assert ("", "/api", "Prefix") in _keys(explanation.not_consulted)


def test_nothing_matches_at_all() -> None:
    router = Router()
    router.add("", "/api", "Exact", "api")
    explanation = router.explain("x.com", "/other")
    assert explanation.scope == "any"
    assert explanation.candidates == ()
    assert explanation.not_consulted == ()
    assert explanation.winner is None
    assert explanation.backend is None
    assert explanation.reason


def test_empty_router() -> None:
    explanation = Router().explain("x.com", "/")
    assert explanation.winner is None
    assert explanation.backend is None
    assert explanation.candidates == ()


def test_str_marks_the_winner() -> None:
    text = str(_router().explain("bar.foo.com", "/api"))
    winner_lines = [line for line in text.splitlines() if "->" in line]
    assert len(winner_lines) == 1
    assert "Exact '/api'" in winner_lines[0]
    assert "'bar-api-exact'" in winner_lines[0]
    assert "Prefix '/api/'" in text  # the losing candidate is listed too
    assert "not consulted" in text


def test_str_of_a_default_result_names_the_default_backend() -> None:
    text = str(_router().explain("bar.foo.com", "/other"))
    assert repr(DEFAULT) in text
    assert "the default backend: the catch-all for requests no rule matches" in text
    assert "->" not in text
    without = _router()
    without.set_default(None)
    assert "; no default backend" in str(without.explain("bar.foo.com", "/other"))


def test_backend_is_identical_to_match() -> None:
    router = Router()
    default = object()
    api = object()
    router.set_default(default)
    router.add("foo.com", "/api", "Prefix", api)
    requests: list[tuple[str | bytes | None, str | bytes]] = [
        ("foo.com", "/api"),
        ("foo.com", "/other"),
        ("bar.com", "/api"),
        (b"FOO.COM", b"/api/x"),
        (None, ""),
    ]
    for host, path in requests:
        assert router.explain(host, path).backend is router.match(host, path)
    assert router.explain("foo.com", "/api").backend is api
    assert router.explain("foo.com", "/other").backend is default


def test_explain_follows_remove() -> None:
    router = _router()
    router.remove("bar.foo.com", "/api", "Exact")
    router.remove("bar.foo.com", "/api", "Prefix")
    router.remove("bar.foo.com", "/api/v1", "Prefix")
    explanation = router.explain("bar.foo.com", "/api")
    assert explanation.scope == "wildcard"
    assert explanation.backend == "wild-api"
