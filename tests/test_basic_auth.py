"""``auth-type: basic``: htpasswd and auth-map Secrets, served by the real proxy.

The cases follow ingress-nginx's e2e tests (test/e2e/annotations/auth.go): no
credentials and wrong ones are a 401 with the realm's challenge, right ones reach the
backend with their ``Authorization`` field, a Secret that cannot be used is a 503 on its
Ingress alone. Hashes are made in the test, by the ``bcrypt`` library, ``libpass``, and
``hashlib`` for ``{SHA}`` (independently of the code under test).
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import bcrypt
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from passlib.hash import apr_md5_crypt, des_crypt, md5_crypt, sha256_crypt, sha512_crypt

from fastroute.ingress import ConfigBuilder, build_config
from fastroute.ingress.annotations import read_policy
from fastroute.ingress.htpasswd import check_password, read_auth_map, read_htpasswd, scheme_of
from fastroute.ingress.model import RouteConfig
from fastroute.proxy.basic_auth import credentials
from fastroute.proxy.metrics import Metrics
from fastroute.proxy.server import Proxy
from tests.objects import secret as secret_object
from tests.objects import service_at
from tests.polling import DEADLINE, wait_for
from tests.polling import run_within as run
from tests.raw import RawBackend, RawClient, Reply

Obj = dict[str, Any]
SITE = b"site.example.com"  # Ingress "site", protected
OPEN = b"open.example.com"  # Ingress "open", not protected, same backend
PREFIX = "nginx.ingress.kubernetes.io/"
PASSWORD = b"s3cret:with:colons"


def _sha(password: bytes) -> str:
    return "{SHA}" + base64.b64encode(hashlib.sha1(password).digest()).decode()


def _bcrypt(prefix: bytes) -> Callable[[bytes], str]:
    def make(password: bytes) -> str:
        hashed = bcrypt.hashpw(password, bcrypt.gensalt(4))  # $2b$; htpasswd -B writes $2y$
        return (prefix + hashed[4:]).decode()

    return make


HASHES: dict[str, Callable[[bytes], str]] = {
    "bcrypt-2y": _bcrypt(b"$2y$"),
    "bcrypt-2b": _bcrypt(b"$2b$"),
    "bcrypt-2a": _bcrypt(b"$2a$"),
    "apr1": lambda p: str(apr_md5_crypt.hash(p)),
    "sha1": _sha,
    "des-crypt": lambda p: str(des_crypt.hash(p)),
    "md5-crypt": lambda p: str(md5_crypt.hash(p)),
    "sha256-crypt": lambda p: str(sha256_crypt.using(rounds=1000).hash(p)),
    "sha512-crypt": lambda p: str(sha512_crypt.using(rounds=1000).hash(p)),
}


def basic(user: bytes, password: bytes) -> bytes:
    return b"Basic " + base64.b64encode(user + b":" + password)


def secret(name: str = "users", namespace: str = "default", **data: bytes) -> Obj:
    """An Opaque Secret as ``kubectl create secret generic`` makes it (base64 ``data``)."""
    return secret_object(name, data, namespace)


def htpasswd(*entries: tuple[bytes, str]) -> Obj:
    return secret(auth=b"".join(user + b":" + hashed.encode() + b"\n" for user, hashed in entries))


def _rule(host: bytes) -> Obj:
    backend = {"service": {"name": "web", "port": {"number": 80}}}
    path = {"path": "/", "pathType": "Prefix", "backend": backend}
    return {"host": host.decode(), "http": {"paths": [path]}}


def objects(port: int, annotations: Mapping[str, str], *secrets: Obj) -> list[Obj]:
    """Service web (one endpoint on ``port``) behind Ingress site (``annotations``, with
    the prefix added) and Ingress open (none), and ``secrets``."""
    prefixed = {PREFIX + key: value for key, value in annotations.items()}
    return [
        *service_at(port),
        {
            "kind": "Ingress",
            "metadata": {"name": "site", "namespace": "default", "annotations": prefixed},
            "spec": {"ingressClassName": "fastroute", "rules": [_rule(SITE)]},
        },
        {
            "kind": "Ingress",
            "metadata": {"name": "open", "namespace": "default"},
            "spec": {"ingressClassName": "fastroute", "rules": [_rule(OPEN)]},
        },
        *secrets,
    ]


AUTH = {"auth-type": "basic", "auth-secret": "users", "auth-realm": "test auth"}


@dataclass
class Site:
    proxy: Proxy
    port: int
    backend: RawBackend
    config: RouteConfig

    def counted(self, result: str) -> float:
        """``fastroute_basic_auth_checks_total`` for ``result``, as /metrics shows it."""
        assert self.proxy.metrics is not None
        line = b'fastroute_basic_auth_checks_total{result="%s"} ' % result.encode()
        found = [row for row in self.proxy.metrics.text().splitlines() if row.startswith(line)]
        return float(found[0][len(line) :]) if found else 0.0

    @property
    def checks(self) -> int:
        """Password hashes the proxy checked (cache hits not counted)."""
        return self.proxy.gate.basic_auth.checks

    async def ask(
        self, authorization: bytes | None = None, host: bytes = SITE, extra: bytes = b""
    ) -> Reply:
        """One GET on a new connection; the reply must come."""
        lines = b"Authorization: %s\r\n" % authorization if authorization is not None else b""
        client = await RawClient.connect(self.port)
        try:
            await client.send(b"GET / HTTP/1.1\r\nHost: %s\r\n%s%s\r\n" % (host, lines, extra))
            reply = await client.reply()
        finally:
            await client.aclose()
        assert reply is not None, "the proxy closed without an answer"
        return reply


@asynccontextmanager
async def serving(
    make: Callable[[int], list[Obj]], builder: ConfigBuilder | None = None
) -> AsyncIterator[Site]:
    """The proxy in front of a raw backend, serving ``make(backend_port)``."""
    backend = RawBackend()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(backend.serve)
        if builder is None:
            config = build_config(make(port))
        else:
            for obj in make(port):
                builder.put(obj)
            config = builder.build()
        proxy = Proxy(config, metrics=Metrics())
        listeners = await nursery.start(proxy.serve, "127.0.0.1", 0)
        yield Site(proxy, listeners[0].socket.getsockname()[1], backend, config)
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------- end to end


@pytest.mark.parametrize("scheme", sorted(HASHES))
@pytest.mark.e2e
def test_each_hash_format_lets_the_right_password_through_and_nothing_else(scheme: str) -> None:
    users = htpasswd((b"alice", HASHES[scheme](PASSWORD)), (b"bob", HASHES[scheme](b"other")))

    async def main() -> None:
        async with serving(lambda port: objects(port, AUTH, users)) as site:
            assert site.config.problems == ()
            nothing = await site.ask()
            assert nothing.status == 401
            assert nothing.header(b"www-authenticate") == b'Basic realm="test auth"'
            wrong = await site.ask(basic(b"alice", b"s3cret"))
            assert wrong.status == 401
            assert wrong.header(b"www-authenticate") == b'Basic realm="test auth"'
            assert (await site.ask(basic(b"alice", b"other"))).status == 401  # bob's
            assert (await site.ask(basic(b"carol", PASSWORD))).status == 401  # unknown
            assert site.backend.requests == []
            right = await site.ask(basic(b"alice", PASSWORD))
            assert right.status == 200
            assert (await site.ask(basic(b"bob", b"other"))).status == 200
            received = site.backend.requests[0]
            # the upstream gets the credentials as sent, as nginx passes them on
            assert received.header(b"authorization") == [basic(b"alice", PASSWORD)]

    run(main)


HTPASSWD_TOOL = shutil.which("htpasswd")


@pytest.mark.skipif(HTPASSWD_TOOL is None, reason="Apache's htpasswd tool is not installed")
@pytest.mark.parametrize("option", ["-B", "-m", "-s", "-d", "-2", "-5"])
@pytest.mark.e2e
def test_hashes_written_by_the_htpasswd_tool_are_read(option: str) -> None:
    assert HTPASSWD_TOOL is not None
    made = subprocess.run(
        [HTPASSWD_TOOL, "-nb", option, "alice", "pass8chr"],
        capture_output=True,
        check=False,
        timeout=DEADLINE,
    )
    if made.returncode != 0 and option in ("-2", "-5"):
        pytest.skip(f"this htpasswd has no {option} (SHA-crypt came in a later Apache)")
    assert made.returncode == 0, made.stderr
    users, warnings = read_htpasswd(made.stdout)
    assert warnings == []
    assert [user for user, _ in users] == [b"alice"]
    assert check_password(b"pass8chr", users[0][1])
    assert not check_password(b"pass8chX", users[0][1])


@pytest.mark.e2e
def test_an_auth_map_secret_lists_a_user_per_key() -> None:
    users = secret(alice=HASHES["apr1"](b"a-pass").encode(), bob=_sha(b"b-pass").encode())
    annotations = {**AUTH, "auth-secret-type": "auth-map"}

    async def main() -> None:
        async with serving(lambda port: objects(port, annotations, users)) as site:
            assert (await site.ask(basic(b"alice", b"a-pass"))).status == 200
            assert (await site.ask(basic(b"bob", b"b-pass"))).status == 200
            assert (await site.ask(basic(b"bob", b"a-pass"))).status == 401
            assert (await site.ask()).status == 401

    run(main)


GOOD = htpasswd((b"alice", _sha(PASSWORD)))


@pytest.mark.parametrize(
    ("annotations", "secrets", "reason"),
    [
        (AUTH, [], "Secret default/users not found"),
        (AUTH, [secret(htpasswd=b"alice:" + _sha(PASSWORD).encode())], "no 'auth' key"),
        (AUTH, [secret(auth=b"alice:plaintext\n# only this\n")], "lists no usable user"),
        (AUTH, [secret(auth=b"")], "lists no usable user"),
        ({**AUTH, "auth-secret-type": "auth-map"}, [secret()], "it has no keys"),
        ({**AUTH, "auth-type": "digest"}, [GOOD], "digest authentication is not supported"),
        ({**AUTH, "auth-type": "ntlm"}, [GOOD], "expected basic"),
        ({**AUTH, "auth-secret": "other/users"}, [GOOD], "another namespace"),
        ({**AUTH, "auth-secret": "Not_A_Name"}, [GOOD], "expected 'namespace/name'"),
        ({**AUTH, "auth-secret-type": "auth-json"}, [GOOD], "expected auth-file or auth-map"),
        ({**AUTH, "auth-realm": "two\nlines"}, [GOOD], "a realm is one line"),
        ({"auth-type": "basic"}, [GOOD], "needs auth-secret"),
        ({"auth-secret": "users"}, [GOOD], "without a usable auth-type"),
    ],
)
@pytest.mark.e2e
def test_an_unusable_setup_fails_closed_on_its_ingress_alone(
    annotations: Mapping[str, str], secrets: list[Obj], reason: str
) -> None:
    async def main() -> None:
        async with serving(lambda port: objects(port, annotations, *secrets)) as site:
            errors = [str(p) for p in site.config.rejected() if p.name == "default/site"]
            named = [error for error in errors if reason in error]
            assert named, errors
            assert f"metadata.annotations[{PREFIX}auth-" in named[0]  # which annotation
            for authorization in (None, basic(b"alice", PASSWORD)):
                reply = await site.ask(authorization)
                assert reply.status == 503
                assert reply.header(b"www-authenticate") is None
            assert (await site.ask(host=OPEN)).status == 200
            assert len(site.backend.requests) == 1  # the open Ingress's

    run(main)


@pytest.mark.e2e
def test_bad_lines_are_skipped_with_their_numbers_and_the_good_ones_serve() -> None:
    text = (
        b"# users\n"
        b"alice:" + _sha(PASSWORD).encode() + b"\n"
        b"bob:plaintext\n"
        b"no colon here\n"
        b"carol:$2y$04$short\n"
        b"alice:" + _sha(b"second").encode() + b"\n"
    )
    users = secret(auth=text)

    async def main() -> None:
        async with serving(lambda port: objects(port, AUTH, users)) as site:
            warnings = [p.reason for p in site.config.warnings() if p.name == "default/site"]
            assert [w.split(":")[1].strip() for w in warnings] == [
                "line 3 (user 'bob')",
                "line 4",
                "line 5 (user 'carol')",
                "line 6",
            ]
            assert not any(_sha(PASSWORD) in w for w in warnings)  # hashes are not shown
            assert (await site.ask(basic(b"alice", PASSWORD))).status == 200
            assert (await site.ask(basic(b"alice", b"second"))).status == 401  # the first counts
            assert (await site.ask(basic(b"bob", b"plaintext"))).status == 401

    run(main)


@pytest.mark.parametrize(
    "authorization",
    [
        b"Basic",
        b"Basic ",
        b"Basic !!!!",
        b"Basic " + base64.b64encode(b"alice"),  # no colon
        b"Basic " + base64.b64encode(b"alice:" + PASSWORD)[:-2],  # cut short
        b"Bearer " + base64.b64encode(b"alice:" + PASSWORD),
        b"Digest username=alice",
        base64.b64encode(b"alice:" + PASSWORD),  # no scheme
    ],
)
@pytest.mark.e2e
def test_malformed_credentials_are_a_401_with_the_challenge(authorization: bytes) -> None:
    async def main() -> None:
        async with serving(lambda port: objects(port, AUTH, GOOD)) as site:
            reply = await site.ask(authorization)
            assert reply.status == 401
            assert reply.header(b"www-authenticate") == b'Basic realm="test auth"'
            assert site.backend.requests == []

    run(main)


@pytest.mark.e2e
def test_two_authorization_fields_are_a_400_as_nginx_answers() -> None:
    async def main() -> None:
        async with serving(lambda port: objects(port, AUTH, GOOD)) as site:
            second = b"Authorization: Bearer not-checked\r\n"
            reply = await site.ask(basic(b"alice", PASSWORD), extra=second)
            assert reply.status == 400
            assert site.backend.requests == []

    run(main)


@pytest.mark.e2e
def test_the_scheme_is_read_in_any_case_and_the_password_keeps_its_colons() -> None:
    token = base64.b64encode(b"alice:" + PASSWORD)

    async def main() -> None:
        async with serving(lambda port: objects(port, AUTH, GOOD)) as site:
            assert (await site.ask(b"basic " + token)).status == 200
            assert (await site.ask(b"BASIC   " + token)).status == 200

    run(main)


@pytest.mark.e2e
def test_the_realm_is_quoted_and_empty_by_default() -> None:
    async def main() -> None:
        quoted = {**AUTH, "auth-realm": 'the "staff" \\ area'}
        async with serving(lambda port: objects(port, quoted, GOOD)) as site:
            challenge = (await site.ask()).header(b"www-authenticate")
            assert challenge == b'Basic realm="the \\"staff\\" \\\\ area"'
        default = {"auth-type": "basic", "auth-secret": "default/users"}
        async with serving(lambda port: objects(port, default, GOOD)) as site:
            assert (await site.ask()).header(b"www-authenticate") == b'Basic realm=""'

    run(main)


@pytest.mark.e2e
def test_a_401_carries_the_cors_fields_and_its_body_says_nothing_of_why() -> None:
    async def main() -> None:
        annotations = {**AUTH, "enable-cors": "true"}
        async with serving(lambda port: objects(port, annotations, GOOD)) as site:
            bodies = set()
            for authorization in (None, basic(b"alice", b"wrong"), basic(b"nobody", b"x")):
                reply = await site.ask(authorization, extra=b"Origin: https://app.test\r\n")
                assert reply.status == 401
                assert reply.header(b"access-control-allow-origin") == b"*"
                bodies.add(reply.body)
            assert len(bodies) == 1

    run(main)


@pytest.mark.e2e
def test_a_refused_request_with_a_body_never_reaches_the_backend() -> None:
    async def main() -> None:
        async with serving(lambda port: objects(port, AUTH, GOOD)) as site:
            client = await RawClient.connect(site.port)
            try:
                await client.send(
                    b"POST / HTTP/1.1\r\nHost: %s\r\nContent-Length: 5\r\n\r\nhello" % SITE
                )
                reply = await client.reply(b"POST")
                assert reply is not None
                assert reply.status == 401
            finally:
                await client.aclose()
            assert site.backend.connections == []

    run(main)


@pytest.mark.e2e
def test_verified_credentials_are_cached_and_refusals_are_not() -> None:
    users = htpasswd((b"alice", HASHES["bcrypt-2y"](PASSWORD)))

    async def main() -> None:
        async with serving(lambda port: objects(port, AUTH, users)) as site:
            assert (await site.ask(basic(b"alice", PASSWORD))).status == 200
            assert site.checks == 1
            for _ in range(3):
                assert (await site.ask(basic(b"alice", PASSWORD))).status == 200
            assert site.checks == 1  # remembered
            for expected in (2, 3):
                assert (await site.ask(basic(b"alice", b"wrong"))).status == 401
                assert site.checks == expected  # each refusal costs a check
            # an unknown user costs a check too: its timing does not say it is unknown
            assert (await site.ask(basic(b"mallory", PASSWORD))).status == 401
            assert site.checks == 4
            assert len(site.backend.requests) == 4
            results = ("passed", "cached", "refused", "timeout")
            assert [site.counted(result) for result in results] == [1, 3, 3, 0]

    run(main)


@pytest.mark.e2e
def test_the_cache_expires() -> None:
    users = htpasswd((b"alice", _sha(PASSWORD)))

    async def main() -> None:
        async with serving(lambda port: objects(port, AUTH, users)) as site:
            now = [1000.0]
            site.proxy.gate.basic_auth.clock = lambda: now[0]
            assert (await site.ask(basic(b"alice", PASSWORD))).status == 200
            now[0] += site.proxy.gate.basic_auth.ttl - 1
            assert (await site.ask(basic(b"alice", PASSWORD))).status == 200
            assert site.checks == 1
            now[0] += 2
            assert (await site.ask(basic(b"alice", PASSWORD))).status == 200
            assert site.checks == 2

    run(main)


@pytest.mark.e2e
def test_a_changed_secret_applies_on_the_next_incremental_build() -> None:
    builder = ConfigBuilder()
    before = htpasswd((b"alice", HASHES["apr1"](PASSWORD)))
    after = htpasswd((b"alice", HASHES["apr1"](b"new password")), (b"bob", _sha(b"b")))

    async def main() -> None:
        async with serving(lambda port: objects(port, AUTH, before), builder) as site:
            assert (await site.ask(basic(b"alice", PASSWORD))).status == 200  # now cached
            builder.put(after)
            site.proxy.swap(builder.build())
            assert (await site.ask(basic(b"alice", PASSWORD))).status == 401
            assert (await site.ask(basic(b"alice", b"new password"))).status == 200
            assert (await site.ask(basic(b"bob", b"b"))).status == 200
            builder.delete(after)
            config = builder.build()
            site.proxy.swap(config)
            assert (await site.ask(basic(b"alice", b"new password"))).status == 503
            assert any("not found" in p.reason for p in config.rejected())
            assert (await site.ask(host=OPEN)).status == 200

    run(main)


@pytest.mark.e2e
def test_a_slow_bcrypt_check_never_holds_up_other_connections() -> None:
    users = htpasswd((b"alice", bcrypt.hashpw(PASSWORD, bcrypt.gensalt(13)).decode()))

    async def main() -> None:
        async with serving(lambda port: objects(port, AUTH, users)) as site:
            done: list[int] = []

            async def slow() -> None:
                done.append((await site.ask(basic(b"alice", PASSWORD))).status)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(slow)
                await wait_for(lambda: site.checks == 1, "the bcrypt check to start")
                answered = await site.ask(host=OPEN)
                assert answered.status == 200
                assert done == [], "the other connection waited for the bcrypt check"
            assert done == [200]

    run(main)


@pytest.mark.e2e
def test_a_check_that_takes_too_long_is_a_500_never_a_pass() -> None:
    users = htpasswd((b"alice", bcrypt.hashpw(PASSWORD, bcrypt.gensalt(12)).decode()))

    async def main() -> None:
        async with serving(lambda port: objects(port, AUTH, users)) as site:
            check = site.proxy.gate.basic_auth
            check.timeout = 0.01
            reply = await site.ask(basic(b"alice", PASSWORD))
            assert reply.status == 500
            assert site.backend.requests == []
            assert site.counted("timeout") == 1
            # the abandoned check still holds its thread until bcrypt returns
            await wait_for(lambda: check.limiter.borrowed_tokens == 0, "the check's thread")

    run(main)


@pytest.mark.e2e
def test_a_canary_of_a_protected_route_is_protected_by_the_main_ingress() -> None:
    def make(port: int) -> list[Obj]:
        made = objects(port, AUTH, GOOD)
        rule = _rule(SITE)
        rule["http"]["paths"][0]["backend"]["service"]["name"] = "canary"
        canary: Obj = {
            "kind": "Ingress",
            "metadata": {
                "name": "site-canary",
                "namespace": "default",
                # its own auth annotations are ignored: the main Ingress's apply
                "annotations": {
                    PREFIX + "canary": "true",
                    PREFIX + "canary-weight": "100",
                    PREFIX + "auth-type": "basic",
                    PREFIX + "auth-secret": "nobody",
                },
            },
            "spec": {"ingressClassName": "fastroute", "rules": [rule]},
        }
        return [*made, canary, *service_at(port, "canary")]

    async def main() -> None:
        async with serving(make) as site:
            assert site.config.rejected() == ()
            assert site.config.match(SITE, "/").split is not None  # the canary is merged
            assert (await site.ask()).status == 401
            assert (await site.ask(basic(b"alice", b"wrong"))).status == 401
            assert (await site.ask(basic(b"alice", PASSWORD))).status == 200
            assert len(site.backend.requests) == 1

    run(main)


def test_the_hashes_are_never_shown_in_a_policy() -> None:
    hashed = _sha(PASSWORD)
    config = build_config(objects(8080, AUTH, htpasswd((b"alice", hashed))))
    policy = config.match(SITE, "/").policy
    assert policy.basic_auth.users == ((b"alice", hashed),)
    assert hashed not in repr(policy)
    assert not any(hashed in str(problem) for problem in config.problems)


def test_plain_routes_are_not_gated() -> None:
    config = build_config(objects(8080, AUTH, GOOD))
    assert config.match(SITE, "/").policy.gated
    assert not config.match(OPEN, "/").policy.gated


# ---------------------------------------------------------------- annotations


def test_the_annotations_alone_protect_with_nobody_allowed_until_the_secret_is_read() -> None:
    policy, notes = read_policy({PREFIX + k: v for k, v in AUTH.items()}, namespace="default")
    assert notes == []
    assert policy.gated
    assert policy.basic_auth is not None
    assert policy.basic_auth.secret == ("default", "users")
    assert policy.basic_auth.users == ()


def test_realm_and_secret_type_without_auth_type_are_reported_unused() -> None:
    annotations = {PREFIX + "auth-realm": "x", PREFIX + "auth-secret-type": "auth-map"}
    policy, notes = read_policy(annotations, namespace="default")
    assert policy.basic_auth is None
    assert not policy.refused
    assert sorted(key for key, _, warning in notes if warning) == sorted(annotations)


# ---------------------------------------------------------------- htpasswd reading


def test_every_scheme_is_recognised_and_checks_its_own_password() -> None:
    for name, make in HASHES.items():
        hashed = make(PASSWORD)
        expected = "bcrypt" if name.startswith("bcrypt") else name
        assert scheme_of(hashed) == expected
        assert check_password(PASSWORD, hashed)
        assert not check_password(b"x" + PASSWORD, hashed)
        assert not check_password(b"\0", hashed)


def test_bcrypt_reads_the_first_72_bytes_as_htpasswd_hashed_them() -> None:
    long = b"x" * 72
    hashed = bcrypt.hashpw(long, bcrypt.gensalt(4)).decode()
    assert check_password(long + b"ignored", hashed)
    assert not check_password(long[:-1], hashed)


def test_plaintext_and_unknown_schemes_are_refused() -> None:
    users, warnings = read_htpasswd(b"a:secret\nb:$y$j9T$abc$def\nc:{SSHA}abc\n")
    assert users == ()
    assert len(warnings) == 3
    assert "plaintext" in warnings[0]
    assert "$y$" in warnings[1]


def test_hashes_too_costly_to_check_are_skipped() -> None:
    costly = bcrypt.hashpw(b"x", bcrypt.gensalt(4)).replace(b"$04$", b"$15$")
    fine = bcrypt.hashpw(b"x", bcrypt.gensalt(4)).replace(b"$04$", b"$14$")
    many = str(sha512_crypt.using(rounds=1000).hash(b"x")).replace("1000", "100001")
    text = b"a:%s\nb:%s\nc:%s\n" % (costly, fine, many.encode())
    users, warnings = read_htpasswd(text)
    assert [user for user, _ in users] == [b"b"]
    assert [w.split(":")[0] for w in warnings] == ["line 1 (user 'a')", "line 3 (user 'c')"]
    assert "cost 15" in warnings[0]
    assert "100001 rounds" in warnings[1]


def test_an_auth_map_value_is_one_hash() -> None:
    users, warnings = read_auth_map({"alice": _sha(b"a").encode() + b"\n", "bob": b"a:b"})
    assert users == ((b"alice", _sha(b"a")),)
    assert len(warnings) == 1
    assert "'bob'" in warnings[0]


USER = st.binary(min_size=1, max_size=12).filter(
    lambda u: b":" not in u and b"\n" not in u and not u.startswith(b"#") and u.strip() != b""
)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(USER, st.binary(max_size=16)), max_size=8),
    st.sampled_from([b"\n", b"\r\n"]),
    st.booleans(),
)
def test_reading_an_htpasswd_file_gives_each_users_first_line(
    entries: list[tuple[bytes, bytes]], newline: bytes, comments: bool
) -> None:
    lines = []
    for user, password in entries:
        if comments:
            lines.append(b"# " + user)
            lines.append(b"")
        lines.append(user.rstrip(b"\r") + b":" + _sha(password).encode() + b":a comment")
    users, warnings = read_htpasswd(newline.join(lines) + newline)
    expected: dict[bytes, str] = {}
    for user, password in entries:
        expected.setdefault(user.rstrip(b"\r"), _sha(password))
    assert dict(users) == expected
    assert [u for u, _ in users] == list(expected)
    assert len(warnings) == len(entries) - len(expected)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_read_as_users_or_warnings_naming_a_line(text: bytes) -> None:
    users, warnings = read_htpasswd(text)
    lines = text.split(b"\n")
    for warning in warnings:
        number = int(warning.split()[1].rstrip(":"))
        assert 1 <= number <= len(lines)
    for user, hashed in users:
        assert user
        assert b":" not in user
        assert scheme_of(hashed) is not None


@given(st.binary(max_size=20).filter(lambda u: b":" not in u), st.binary(max_size=20))
def test_credentials_round_trip(user: bytes, password: bytes) -> None:
    found = credentials(basic(user, password))
    assert found == (user, password)
