"""HTTPS end to end: certificates picked by SNI from TLS Secrets, real handshakes on 127.0.0.1.

Certificates are generated in the test. Handshakes are made by the stdlib ``ssl`` client,
by httpx, and by ``openssl s_client`` where it is installed.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from cryptography import x509
from cryptography.x509.oid import NameOID

from fastroute.ingress import build_config
from fastroute.ingress.certs import Certificate, self_signed_certificate, tls_secret
from fastroute.ingress.model import RouteConfig
from fastroute.proxy.server import Proxy
from fastroute.proxy.tls import TLSContexts
from tests.echo import Echo
from tests.objects import service_at
from tests.polling import DEADLINE

EXACT = self_signed_certificate(["secure.example.com"], common_name="exact")
WILDCARD = self_signed_certificate(["*.wild.example.com"], common_name="wildcard")


def _config(port: int, exact: Certificate = EXACT) -> RouteConfig:
    def rule(host: str) -> dict[str, Any]:
        path = {
            "path": "/",
            "pathType": "Prefix",
            "backend": {"service": {"name": "a", "port": {"number": 80}}},
        }
        return {"host": host, "http": {"paths": [path]}}

    return build_config(
        [
            tls_secret("default", "exact", exact),
            tls_secret("default", "wild", WILDCARD),
            *service_at(port, "a"),
            {
                "kind": "Ingress",
                "metadata": {"name": "web"},
                "spec": {
                    "ingressClassName": "fastroute",
                    "tls": [
                        {"hosts": ["secure.example.com"], "secretName": "exact"},
                        {"hosts": ["*.wild.example.com"], "secretName": "wild"},
                    ],
                    "rules": [
                        rule("secure.example.com"),
                        rule("*.wild.example.com"),
                        rule("a.example.com"),
                    ],
                },
            },
        ]
    )


@dataclass
class Handshake:
    names: tuple[str, ...]
    common_name: str
    alpn: str | None


def handshake(port: int, server_name: str | None) -> Handshake:
    """A TLS handshake with the proxy; what certificate it served."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        alpn = tls.selected_alpn_protocol()
    assert der is not None
    certificate = x509.load_der_x509_certificate(der)
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = tuple(san.value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = ()
    common = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return Handshake(names, str(common[0].value) if common else "", alpn)


@dataclass
class Setup:
    proxy: Proxy
    https_port: int
    backend_port: int


@asynccontextmanager
async def running() -> AsyncIterator[Setup]:
    async with trio.open_nursery() as nursery:
        backend = Echo("a")
        backend_port = await nursery.start(backend.serve)
        proxy = Proxy(_config(backend_port), tls=TLSContexts())
        listeners = await nursery.start(partial(proxy.serve, scheme="https"), "127.0.0.1", 0)
        yield Setup(proxy, listeners[0].socket.getsockname()[1], backend_port)
        nursery.cancel_scope.cancel()


def run_with_proxy(check: Any) -> None:
    async def scenario() -> None:
        with trio.fail_after(DEADLINE * 3):
            async with running() as setup:
                await trio.to_thread.run_sync(check, setup)

    trio.run(scenario)


@pytest.mark.parametrize(
    ("server_name", "names", "common_name"),
    [
        ("secure.example.com", ("secure.example.com",), "exact"),
        ("SECURE.example.com", ("secure.example.com",), "exact"),
        ("x.wild.example.com", ("*.wild.example.com",), "wildcard"),
        ("unknown.example.org", (), "fastroute default certificate"),
        ("wild.example.com", (), "fastroute default certificate"),
        (None, (), "fastroute default certificate"),
    ],
    ids=["exact", "exact-upper", "wildcard", "unknown", "wildcard-parent", "no-sni"],
)
@pytest.mark.e2e
def test_sni_picks_the_certificate(
    server_name: str | None, names: tuple[str, ...], common_name: str | None
) -> None:
    def check(setup: Setup) -> None:
        seen = handshake(setup.https_port, server_name)
        assert seen.names == names
        if common_name is not None:
            assert seen.common_name == common_name
        assert seen.alpn == "http/1.1"

    run_with_proxy(check)


@pytest.mark.e2e
def test_https_request_verifies_and_is_forwarded_with_the_proto(tmp_path: Path) -> None:
    ca = tmp_path / "exact.pem"
    ca.write_bytes(EXACT.chain_pem)

    def check(setup: Setup) -> None:
        verify = ssl.create_default_context(cafile=str(ca))
        with httpx.Client(verify=verify, trust_env=False, timeout=DEADLINE) as client:
            response = client.get(
                f"https://127.0.0.1:{setup.https_port}/hello",
                headers={"host": "secure.example.com"},
                extensions={"sni_hostname": "secure.example.com"},
            )
        assert response.status_code == 200
        headers = dict(response.json()["headers"])
        assert headers["x-forwarded-proto"] == "https"
        assert headers["host"] == "secure.example.com"

    run_with_proxy(check)


@pytest.mark.e2e
def test_the_host_header_not_sni_picks_the_route() -> None:
    def check(setup: Setup) -> None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with httpx.Client(verify=context, trust_env=False, timeout=DEADLINE) as client:
            response = client.get(
                f"https://127.0.0.1:{setup.https_port}/x",
                headers={"host": "nowhere.example.org"},
                extensions={"sni_hostname": "secure.example.com"},
            )
        assert response.status_code == 404

    run_with_proxy(check)


@pytest.mark.e2e
def test_a_config_swap_changes_the_certificates() -> None:
    renewed = self_signed_certificate(["secure.example.com"], common_name="renewed")

    async def scenario() -> None:
        with trio.fail_after(DEADLINE * 3):
            async with running() as setup:
                before = await trio.to_thread.run_sync(
                    handshake, setup.https_port, "secure.example.com"
                )
                await setup.proxy.load(_config(setup.backend_port, exact=renewed))
                after = await trio.to_thread.run_sync(
                    handshake, setup.https_port, "secure.example.com"
                )
                assert before.common_name == "exact"
                assert after.common_name == "renewed"
                assert after.names == ("secure.example.com",)

    trio.run(scenario)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
@pytest.mark.e2e
def test_openssl_s_client_sees_the_certificate_for_its_server_name() -> None:
    def check(setup: Setup) -> None:
        result = subprocess.run(
            [
                "openssl",
                "s_client",
                "-connect",
                f"127.0.0.1:{setup.https_port}",
                "-servername",
                "x.wild.example.com",
                "-alpn",
                "http/1.1",
            ],
            input=b"",
            capture_output=True,
            timeout=DEADLINE,
            check=False,
        )
        out = result.stdout.decode(errors="replace")
        assert "ALPN protocol: http/1.1" in out
        assert "CN = wildcard" in out

    run_with_proxy(check)


def test_prepared_certificates_serve_no_handshake_until_used_with_their_config() -> None:
    """``prepare`` runs in a worker thread while handshakes go on: it must swap nothing, and
    ``use`` swaps the config and its contexts as one, so no handshake sees a mix."""
    renewed = self_signed_certificate(["secure.example.com"], common_name="renewed")
    tls = TLSContexts()
    tls.install(_config(1))
    prepared = tls.prepare(_config(1, exact=renewed))
    assert tls.certificate_for("secure.example.com").chain_pem == EXACT.chain_pem
    tls.use(prepared)
    assert tls.certificate_for("secure.example.com").chain_pem == renewed.chain_pem
    assert tls.certificate_for("a.wild.example.com").chain_pem == WILDCARD.chain_pem
