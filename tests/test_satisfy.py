"""``satisfy``: how an allow list and authentication combine on one route.

ingress-nginx's ``satisfy: any`` is nginx's: a client the allow list admits is served
without a password, and one it refuses is served once it authenticates; ``all`` (the
default) needs both. The client here is 127.0.0.1: ``127.0.0.1/32`` admits it,
``10.0.0.0/8`` refuses it.
"""

from __future__ import annotations

from typing import Any

import pytest

from fastroute.ingress.annotations import read_policy
from tests.polling import run_within as run
from tests.test_basic_auth import AUTH, HASHES, PASSWORD, basic, htpasswd, objects, serving

ADMITS, REFUSES = "127.0.0.1/32", "10.0.0.0/8"


def _users() -> dict[str, Any]:
    return htpasswd((b"alice", HASHES["sha1"](PASSWORD)))


@pytest.mark.parametrize(
    ("satisfy", "allow", "credentials", "status"),
    [
        # any: either one suffices
        ("any", ADMITS, None, 200),
        ("any", ADMITS, b"wrong", 200),
        ("any", REFUSES, None, 401),
        ("any", REFUSES, b"wrong", 401),
        ("any", REFUSES, PASSWORD, 200),
        # all (written, and by default): both must pass
        ("all", ADMITS, None, 401),
        ("all", ADMITS, PASSWORD, 200),
        ("all", REFUSES, PASSWORD, 403),
        (None, REFUSES, PASSWORD, 403),
        (None, ADMITS, None, 401),
    ],
)
@pytest.mark.e2e
def test_satisfy_combines_the_allow_list_and_basic_auth_as_nginx(
    satisfy: str | None, allow: str, credentials: bytes | None, status: int
) -> None:
    annotations = {**AUTH, "whitelist-source-range": allow}
    if satisfy is not None:
        annotations["satisfy"] = satisfy
    authorization = basic(b"alice", credentials) if credentials is not None else None

    async def main() -> None:
        async with serving(lambda port: objects(port, annotations, _users())) as site:
            assert site.config.problems == ()
            reply = await site.ask(authorization)
            assert reply.status == status
            assert len(site.backend.requests) == (1 if status == 200 else 0)
            if status == 401:
                assert reply.header(b"www-authenticate") == b'Basic realm="test auth"'

    run(main)


@pytest.mark.e2e
def test_satisfy_any_without_an_allow_list_still_asks_for_the_password() -> None:
    """nginx's access module has no rule to grant with: authentication decides alone."""

    async def main() -> None:
        annotations = {**AUTH, "satisfy": "any"}
        async with serving(lambda port: objects(port, annotations, _users())) as site:
            assert (await site.ask()).status == 401
            assert (await site.ask(basic(b"alice", PASSWORD))).status == 200

    run(main)


@pytest.mark.e2e
def test_satisfy_any_without_authentication_keeps_the_allow_list_a_403() -> None:
    async def main() -> None:
        annotations = {"whitelist-source-range": REFUSES, "satisfy": "any"}
        async with serving(lambda port: objects(port, annotations)) as site:
            assert (await site.ask()).status == 403
            assert site.backend.requests == []

    run(main)


@pytest.mark.parametrize("value", ["some", "ANY ", "", "true"])
def test_a_malformed_satisfy_is_refused_and_both_must_pass(value: str) -> None:
    policy, notes = read_policy({"nginx.ingress.kubernetes.io/satisfy": value})
    assert not policy.satisfy_any
    (note,) = [n for n in notes if n[0].endswith("satisfy")]
    assert "'any' or 'all'" in note[1]
