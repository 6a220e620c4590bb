"""The ``e2e`` mark: a test that starts a server, a process or the API emulator carries it.

``python -m pytest -m "not e2e"`` is the fast suite (pure functions, the matcher, the
builder, parsers), ``-m e2e`` the rest. A module of end-to-end tests says so once with
``pytestmark = pytest.mark.e2e``; a module that mixes both marks its end-to-end tests.

A test that starts nothing but sweeps for seconds (a large router against the reference,
every change replayed through the builder) is marked ``slow``; it runs with the e2e half,
so that the fast suite stays under a minute.

The e2e mark is checked, not trusted: while a test without it is set up or runs, listening on
a socket or starting a process fails that test with a message saying what it started and
how to mark it. A new end-to-end test therefore cannot slip into the fast suite unmarked,
and CI, which runs both halves, catches one the moment it is added.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

E2E = "e2e"
SLOW = "slow"


class UnmarkedStartError(RuntimeError):
    """A test without the ``e2e`` mark started a server or a process."""


class _Watch:
    """Which unmarked test is running (None: a marked one, or none), and what it started."""

    test: str | None = None
    started: list[str] = []  # noqa: RUF012  (one watch for the whole session)


def _refuse(what: str, original: Callable[..., Any]) -> Callable[..., Any]:
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if _Watch.test is not None:
            _Watch.started.append(what)
            raise UnmarkedStartError(f"{_Watch.test} {what} but is not marked {E2E}")
        return original(*args, **kwargs)

    return guarded


def pytest_configure(config: pytest.Config) -> None:
    socket.socket.listen = _refuse(  # type: ignore[method-assign]
        "listens on a socket (starts a server)", socket.socket.listen
    )
    subprocess.Popen.__init__ = _refuse(  # type: ignore[method-assign]
        "starts a process", subprocess.Popen.__init__
    )


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker(SLOW) is not None:
            item.add_marker(E2E)


@contextmanager
def _watching(item: pytest.Item) -> Iterator[None]:
    if item.get_closest_marker(E2E) is not None:
        yield
        return
    _Watch.test, _Watch.started = item.nodeid, []
    try:
        yield
    finally:
        started, _Watch.test = _Watch.started, None
        if started:  # this failure replaces whatever the refusal made the test raise
            pytest.fail(
                f"{item.nodeid} {started[0]}: mark it end-to-end, with `pytestmark = "
                f"pytest.mark.{E2E}` in its module or `@pytest.mark.{E2E}` on the test",
                pytrace=False,
            )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    with _watching(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    with _watching(item):
        return (yield)
