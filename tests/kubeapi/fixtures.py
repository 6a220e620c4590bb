"""pytest fixtures: an emulator per test, plain HTTP or HTTPS, and kubeconfig files for it.

Use them with ``pytest_plugins = ["tests.kubeapi.fixtures"]`` in a test module,
or import the fixture functions by name.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .api import TEST_TOKEN, KubeAPI
from .pki import PKI

__all__ = ["kube_pki", "kubeapi", "kubeapi_tls", "kubeconfig_file"]


@pytest.fixture(scope="session")
def kube_pki() -> PKI:
    """One CA and server certificate for the whole session (client certificates on demand)."""
    return PKI.generate()


@pytest.fixture
def kubeapi() -> Iterator[KubeAPI]:
    """An emulator on plain HTTP without authentication, stopped after the test."""
    with KubeAPI() as api:
        yield api


@pytest.fixture
def kubeapi_tls(kube_pki: PKI) -> Iterator[KubeAPI]:
    """An emulator on HTTPS accepting ``TEST_TOKEN`` or a client certificate from ``kube_pki``."""
    with KubeAPI(tls=kube_pki, tokens={TEST_TOKEN}) as api:
        yield api


@pytest.fixture
def kubeconfig_file(kubeapi_tls: KubeAPI, tmp_path: Path) -> Path:
    """A kubeconfig for ``kubeapi_tls`` with its CA and ``TEST_TOKEN``."""
    return kubeapi_tls.write_kubeconfig(tmp_path / "kubeconfig", token=TEST_TOKEN)
