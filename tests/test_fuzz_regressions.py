"""Inputs the fuzzers (``fuzz/``) found mishandled, each fed as it was found.

Each test names the defect; the input is also in the fuzz target's committed corpus.
"""

from __future__ import annotations

from typing import Any

import h11
import pytest

from fastroute import InvalidRuleError, Router
from fastroute._http import ChunkedScanner, parse_response
from fastroute.ingress import build_config
from tests.reference import ReferenceRouter

SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "web", "namespace": "default"},
    "spec": {"ports": [{"port": 80}]},
}


def ingress(name: str, host: str, path: str) -> dict[str, Any]:
    backend = {"service": {"name": "web", "port": {"number": 80}}}
    http = {"paths": [{"path": path, "pathType": "Prefix", "backend": backend}]}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"ingressClassName": "fastroute", "rules": [{"host": host, "http": http}]},
    }


# A YAML or JSON "\ud800" escape makes a str with a lone surrogate: it has no UTF-8.
LONE_SURROGATES = [
    pytest.param("", "/\udc9f", "path", id="path"),
    pytest.param("\ud800.example", "/", "host", id="host"),
]


@pytest.mark.parametrize(("host", "path", "what"), LONE_SURROGATES)
def test_a_rule_with_a_lone_surrogate_is_invalid_not_an_encoding_error(
    host: str, path: str, what: str
) -> None:
    router = Router()
    with pytest.raises(InvalidRuleError) as refused:
        router.add(host, path, "Prefix", "backend")
    assert refused.value.reason == f"{what} is not valid Unicode text: it has a lone surrogate"
    with pytest.raises(InvalidRuleError):
        router.remove(host, path, "Prefix")
    assert len(router) == 0
    # and the reference refuses it too
    with pytest.raises(InvalidRuleError):
        ReferenceRouter().add(host, path, "Prefix", "backend")


@pytest.mark.parametrize(("host", "path", "what"), LONE_SURROGATES)
def test_an_ingress_with_a_lone_surrogate_does_not_take_the_others_down(
    host: str, path: str, what: str
) -> None:
    config = build_config(
        [SERVICE, ingress("bad", host or "bad.example", path), ingress("good", "good.example", "/")]
    )
    assert config.router.match(b"good.example", b"/") is not None
    reasons = [problem.reason for problem in config.problems if "bad" in str(problem)]
    assert any("lone surrogate" in reason for reason in reasons), config.problems


def test_an_explanation_shows_a_host_that_is_not_utf8_as_replacement_characters() -> None:
    # the matcher fuzzer's input: an explain() of the raw Host b"\x9f"
    router = Router()
    router.add("", "/", "Prefix", "any")
    explanation = router.explain(b"\x9f", b"/")
    assert explanation.host == "\ufffd"
    assert explanation.host.encode("utf-8")  # printable, as text
    assert explanation.backend == "any"
    assert ReferenceRouter().explain(b"\x9f", b"/").host == explanation.host


@pytest.mark.parametrize("host", [".", "..", ".a.example", "a..example"])
def test_a_rule_host_of_empty_labels_is_refused_not_read_as_any_host(host: str) -> None:
    # the matcher fuzzer's input: the reference read "." as "" (a rule for every host)
    for router in (Router(), ReferenceRouter()):
        with pytest.raises(InvalidRuleError):
            router.add(host, "/", "Prefix", "backend")
    config = build_config(
        [SERVICE, ingress("dot", host, "/"), ingress("good", "good.example", "/")]
    )
    assert config.router.match(b"elsewhere.example", b"/") is None
    assert config.router.match(b"good.example", b"/") is not None


# The codec fuzzer's input: a chunked body whose trailer section has a Content-Length of no
# number (and an extension with whitespace before its ";", which the codec takes).
TRAILERED = (
    b'5;a\xffb\r\nhello\r\n00A \t;q="x y"\r\n0123456789\r\n0\r\n'
    b"content-length:0Expires: never\r\nTraoHost: Hoseep-alive,pgrade\r\n"
    b"Upgrade: bekca\r\n\r\nGET"
)


def test_a_malformed_framing_field_in_a_trailer_is_dropped_and_the_upstream_reads_the_body() -> (
    None
):
    # h11 refuses the trailer as it came (a Content-Length must be a number, even there);
    # relay() drops framing and hop-by-hop trailer fields whatever their value
    scanner = ChunkedScanner()
    end, out = scanner.relay(TRAILERED)
    assert scanner.done
    assert end == len(TRAILERED) - len(b"GET")
    assert b"content-length" not in out.lower()
    assert b"upgrade" not in out.lower()
    assert out.endswith(b"0\r\nTraoHost: Hoseep-alive,pgrade\r\n\r\n")
    upstream = h11.Connection(h11.SERVER)
    upstream.receive_data(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert isinstance(upstream.next_event(), h11.Request)
    upstream.receive_data(out.replace(b" \t;", b";"))  # h11 refuses whitespace before ";"
    data = b""
    while not isinstance(event := upstream.next_event(), h11.EndOfMessage):
        assert isinstance(event, h11.Data), event
        data += event.data
    assert data == b"hello0123456789"


def test_a_bodyless_response_has_no_body_whatever_its_transfer_encoding_says() -> None:
    # found by the codec fuzzer: h11 refuses the field; the codec frames no body and
    # does not pass the field on
    head = parse_response(b"HTTP/1.1 204 No\r\nTransfer-Encoding: gzip\r\n\r\n", 1000, False)
    assert head is not None
    assert head.bodyless
    assert not head.chunked
    assert head.client_head(False) == b"HTTP/1.1 204 No\r\n\r\n"
