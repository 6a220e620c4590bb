"""The tests' own helpers: polling gives up at its deadline naming what it waited for, and
the ``e2e`` mark is enforced, so that the fast suite stays the fast suite.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import trio

from tests import conftest
from tests.polling import WaitTimeoutError, wait_for, wait_for_sync

pytest_plugins = ["pytester"]


def test_wait_for_returns_the_first_true_value_of_a_sync_or_async_check() -> None:
    async def scenario() -> None:
        calls: list[int] = []

        def third_time() -> int | None:
            calls.append(1)
            return len(calls) if len(calls) == 3 else None

        async def at_once() -> str:
            return "ready"

        assert await wait_for(third_time, "the third call") == 3
        assert await wait_for(at_once, "an async check") == "ready"

    trio.run(scenario)


def test_wait_for_gives_up_at_its_deadline_naming_what_and_the_last_value() -> None:
    async def scenario() -> None:
        started = trio.current_time()
        with pytest.raises(WaitTimeoutError, match=r"not within 0.2 s: the door open .*\[\]"):
            await wait_for(list, "the door open", 0.2)
        assert 0.2 <= trio.current_time() - started < 5

    trio.run(scenario)


def test_wait_for_sync_polls_from_a_thread_and_gives_up_the_same_way() -> None:
    values = iter([0, 0, "done"])
    assert wait_for_sync(lambda: next(values), "the third value") == "done"
    with pytest.raises(WaitTimeoutError, match=r"not within 0.1 s: nothing \(.* gave False\)"):
        wait_for_sync(lambda: False, "nothing", 0.1)


MARKED = """\
import socket
import pytest


def _listen() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()


def test_unmarked_server() -> None:
    _listen()


@pytest.mark.e2e
def test_marked_server() -> None:
    _listen()


@pytest.mark.slow
def test_slow_sweep() -> None:
    pass


def test_pure() -> None:
    assert 1 + 1 == 2
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    """A project with this conftest and these marks, and a module of each kind of test."""
    pytester.makeconftest(Path(conftest.__file__).read_text())
    pytester.makeini(
        textwrap.dedent("""\
            [pytest]
            addopts = --strict-markers
            markers =
                e2e: end to end
                slow: a long sweep
        """)
    )
    pytester.makepyfile(test_marks=MARKED)
    return pytester


@pytest.mark.e2e
def test_an_unmarked_test_that_starts_a_server_fails_saying_how_to_mark_it(
    project: pytest.Pytester,
) -> None:
    result = project.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(
        ["*test_unmarked_server listens on a socket (starts a server): mark it end-to-end*"]
    )


@pytest.mark.e2e
def test_the_fast_suite_leaves_out_e2e_and_slow_tests(project: pytest.Pytester) -> None:
    fast = project.runpytest_subprocess("-p", "no:cacheprovider", "-m", "not e2e", "-k", "not un")
    fast.assert_outcomes(passed=1, deselected=3)
    rest = project.runpytest_subprocess("-p", "no:cacheprovider", "-m", "e2e")
    rest.assert_outcomes(passed=2, deselected=2)
